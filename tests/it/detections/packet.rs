//! Packet sockets (T1040), read from /proc/net/packet: a process opening AF_PACKET in the
//! pod's network namespace raises PF-PACKET-SOCKET for a collector without privileges (the
//! socket's uid named) and, for one that can read the sniffer's fds, on the sniffer itself;
//! processes with other sockets only raise nothing.

use std::collections::HashSet;
use std::process::Command;

use procflow::model::{Protocol, Record};

use super::{alerts, fired_on, observe, PY};
use crate::util::{Kids, Netns, UNPRIVILEGED};

/// Holds a raw packet socket on every interface for 7 s: at least one read of the table
/// at the collector's idle poll interval (5 s) falls within it.
const SNIFFER: &str = "import socket,time\ns=socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\ntime.sleep(7)";

/// Sockets of other kinds: UDP, TCP listener, AF_UNIX.
const OTHERS: &str = "import socket,time\nu=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1',0))\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\na,b=socket.socketpair()\ntime.sleep(3)";

#[test]
fn a_packet_socket_fires_in_both_access_modes_and_other_sockets_do_not() {
    let ns = Netns::new("k", &["pod"]);
    let in_ns = ["ip", "netns", "exec", ns.name(0)];
    let run = |code: &str| {
        Command::new("ip")
            .args(["netns", "exec", ns.name(0), PY, "-c", code])
            .spawn()
            .expect("python in the namespace")
    };
    let unprivileged: Vec<&str> = in_ns.iter().chain(UNPRIVILEGED.iter()).copied().collect();
    let packet_records = |records: &[Record]| {
        records
            .iter()
            .filter(|r| matches!(r, Record::Listener(l) if l.protocol == Protocol::Packet))
            .count()
    };

    // The benign twin: no packet socket, no record of one, no alert.
    let (records, _kids) = observe(&unprivileged, || Kids(vec![run(OTHERS)]));
    let all = alerts(&records);
    assert_eq!(packet_records(&records), 0, "{records:?}");
    assert!(
        !all.iter().any(|(r, _, _)| r == "PF-PACKET-SOCKET"),
        "{all:?}"
    );

    // Without privileges the sniffer (root, CAP_NET_RAW) cannot be read: its uid is named.
    let (records, _kids) = observe(&unprivileged, || Kids(vec![run(SNIFFER)]));
    let all = alerts(&records);
    assert!(packet_records(&records) >= 1, "no packet socket reported");
    assert!(
        all.iter()
            .any(|(r, _, out)| r == "PF-PACKET-SOCKET" && out.contains("uid=0")),
        "{all:?}"
    );

    // A collector that can read the sniffer's fds names it.
    let (records, kids) = observe(&in_ns, || Kids(vec![run(SNIFFER)]));
    let all = alerts(&records);
    let sniffer = HashSet::from([kids.0[0].id()]);
    assert!(fired_on(&all, "PF-PACKET-SOCKET", &sniffer), "{all:?}");
}

/// A sniffer in a network namespace of its own (`unshare -rn`: an unprivileged user gets
/// CAP_NET_RAW there), whose socket is not in the pod's /proc/net/packet: read through
/// /proc/PID/net/packet, it fires for a collector without privileges (the uid named) and
/// on the sniffer itself for one that can read its fds; a process in a namespace of its
/// own with other sockets only raises nothing. Before, both sniffers went unseen.
#[test]
fn a_packet_socket_in_a_namespace_of_its_own_fires_in_both_access_modes() {
    let ns = Netns::new("u", &["pod"]);
    let in_ns = ["ip", "netns", "exec", ns.name(0)];
    let unshared = |code: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(0),
                "unshare",
                "-rn",
                PY,
                "-c",
                code,
            ])
            .spawn()
            .expect("python in a namespace of its own")
    };
    let unprivileged: Vec<&str> = in_ns.iter().chain(UNPRIVILEGED.iter()).copied().collect();

    let (records, _kids) = observe(&unprivileged, || Kids(vec![unshared(OTHERS)]));
    let all = alerts(&records);
    assert!(
        !records
            .iter()
            .any(|r| matches!(r, Record::Listener(l) if l.protocol == Protocol::Packet)),
        "{records:?}"
    );
    assert!(
        !all.iter().any(|(r, _, _)| r == "PF-PACKET-SOCKET"),
        "{all:?}"
    );

    let (records, _kids) = observe(&unprivileged, || Kids(vec![unshared(SNIFFER)]));
    let all = alerts(&records);
    assert!(
        all.iter()
            .any(|(r, _, out)| r == "PF-PACKET-SOCKET" && out.contains("uid=0")),
        "{all:?}"
    );

    let (records, kids) = observe(&in_ns, || Kids(vec![unshared(SNIFFER)]));
    let all = alerts(&records);
    let sniffer = HashSet::from([kids.0[0].id()]);
    assert!(fired_on(&all, "PF-PACKET-SOCKET", &sniffer), "{all:?}");
}

/// Decoys first: 80 processes, each in a network namespace of its own, then a sniffer in one
/// more. A pass reads 64 other namespaces' tables at most; before, it read the first 64 in
/// /proc's order every time (the decoys, started first) and never the sniffer's.
#[test]
fn a_sniffer_behind_decoy_namespaces_is_still_seen() {
    const DECOYS: usize = 80;
    let ns = Netns::new("d", &["pod"]);
    let in_ns = ["ip", "netns", "exec", ns.name(0)];
    let unshared = |program: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns.name(0), "unshare", "-rn"])
            .args(program)
            .spawn()
            .expect("a process in a namespace of its own")
    };
    let net_of = |pid: u32| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/net/packet")).map(|m| m.ino())
    };
    let unprivileged: Vec<&str> = in_ns.iter().chain(UNPRIVILEGED.iter()).copied().collect();
    let (records, _kids) = observe(&unprivileged, || {
        let decoys: Vec<_> = (0..DECOYS).map(|_| unshared(&["sleep", "10"])).collect();
        // Each in its own namespace before the sniffer starts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let nets: HashSet<u64> = decoys.iter().filter_map(|d| net_of(d.id()).ok()).collect();
            if nets.len() == DECOYS {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "decoys in {} namespaces",
                nets.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut kids = decoys;
        kids.push(unshared(&[PY, "-c", SNIFFER]));
        Kids(kids)
    });
    let all = alerts(&records);
    assert!(
        all.iter()
            .any(|(r, _, out)| r == "PF-PACKET-SOCKET" && out.contains("uid=0")),
        "{all:?}"
    );
}
