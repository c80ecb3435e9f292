//! The entities edges name: processes by (pid, start time) per collector, pods by IP.

use std::net::IpAddr;
use std::sync::Arc;

use super::HashMap;
use crate::model::{CollectorIdentity, ProcessPhase, ProcessRecord, UnixNanos};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ProcessName {
    pub(super) comm: Vec<u8>,
    pub(super) exe: Option<Vec<u8>>,
}

/// Process names by collector and (pid, start time), from process records; the latest image
/// wins, so a process that exec'd is named by what it became.
#[derive(Default, Clone)]
pub struct ProcessNames {
    by_collector: HashMap<String, HashMap<(u32, UnixNanos), ProcessName>>,
}

/// An EXIT record may come without what the process showed alive (exe, argv and ancestors
/// are read while it runs): the live value stays.
pub(super) fn keep_if_exit_lacks<T: Default + PartialEq>(
    update: &ProcessRecord,
    field: &mut T,
    live: T,
) {
    if update.phase == ProcessPhase::Exit && *field == T::default() {
        *field = live;
    }
}

impl ProcessNames {
    pub fn add(&mut self, source: &CollectorIdentity, p: &ProcessRecord) {
        let names = self
            .by_collector
            .entry(source.collector_id.clone())
            .or_default();
        let key = (p.pid, p.start_time);
        let mut name = ProcessName {
            comm: p.comm.clone(),
            exe: p.exe.clone(),
        };
        if let Some(live) = names.remove(&key) {
            keep_if_exit_lacks(p, &mut name.exe, live.exe);
        }
        names.insert(key, name);
    }

    pub(super) fn get(
        &self,
        collector_id: &str,
        pid: u32,
        start_time: UnixNanos,
    ) -> Option<&ProcessName> {
        self.by_collector.get(collector_id)?.get(&(pid, start_time))
    }
}

/// Pods by IP, from the identities of the collectors that reported, so an east-west peer is
/// named by its pod.
#[derive(Default)]
pub struct PodDirectory {
    by_ip: HashMap<IpAddr, (String, String)>,
    last: Option<Arc<CollectorIdentity>>,
}

impl PodDirectory {
    /// [`PodDirectory::note`], once per run of events sharing one identity (a segment's).
    pub fn note_source(&mut self, source: &Arc<CollectorIdentity>) {
        if self
            .last
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, source))
        {
            return;
        }
        self.note(source);
        self.last = Some(source.clone());
    }

    pub fn note(&mut self, source: &CollectorIdentity) {
        if let Ok(ip) = source.pod_ip.parse::<IpAddr>() {
            self.note_pod(ip, &source.pod_name, &source.pod_namespace);
        }
    }

    /// Names `ip` by a pod (the first pod noted for an address keeps it).
    pub fn note_pod(&mut self, ip: IpAddr, pod_name: &str, pod_namespace: &str) {
        if !ip.is_loopback() && !ip.is_unspecified() {
            self.by_ip
                .entry(ip)
                .or_insert_with(|| (pod_name.to_owned(), pod_namespace.to_owned()));
        }
    }

    /// Takes the pods noted in `later` (after this directory's: an address noted here
    /// keeps its pod).
    pub fn extend(&mut self, later: PodDirectory) {
        for (ip, pod) in later.by_ip {
            self.by_ip.entry(ip).or_insert(pod);
        }
    }

    pub(super) fn get(&self, ip: &IpAddr) -> Option<&(String, String)> {
        self.by_ip.get(ip)
    }
}
