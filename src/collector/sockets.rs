//! The socket side of the collector: the change trigger, dumps into the flow table (the
//! owners of new sockets read at the trigger's rise, before the dump), destroy events, and
//! the lookups of accepted sockets awaiting their owner.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::budget::DumpBudget;
use super::{EngineConfig, EngineError, QUIET_AFTER};
use crate::attribution::{OwnerLookup, PrefetchReach};
use crate::flows::packet::{self, PacketLine, PacketTable};
use crate::flows::{FlowTable, Scoper};
use crate::model::{now_ns, Family, Record};
use crate::sockdiag::destroy::DestroyStats;
use crate::sockdiag::{trigger::Trigger, DestroyEvent, DestroyListener, Dumper, SocketInfo};
use crate::telemetry::collector::{DumpFailed, DumpFinished, PacketTableUnread, SocketsLookedUp};
use crate::telemetry::InternalEvent;

/// The socket side of the collector: dumps, destroy events and the flow table.
pub struct SocketMonitor {
    dumper: Dumper,
    destroy: DestroyListener,
    destroy_rx: Receiver<DestroyEvent>,
    trigger: Trigger,
    table: FlowTable,
    sockets: Vec<SocketInfo>,
    poll_interval: Duration,
    idle_poll_interval: Duration,
    /// The last time the trigger moved or a socket was destroyed.
    last_change: Instant,
    /// The last time the trigger moved: sockets are opening (see [`SocketMonitor::churning`]).
    last_rise: Option<Instant>,
    /// The trigger moved and no dump has run since. A rise is read once: a check that finds
    /// the next dump not yet allowed (its CPU budget) must not forget it, or the socket
    /// behind it waits for the periodic dump, which a connection of a few hundred ms does
    /// not live to see (how connections were missed alive after a quiet spell).
    pending: bool,
    /// How much the trigger rose since the last dump: the sockets the owners' read before
    /// the next dump looks for.
    pending_rise: u64,
    last_dump: Option<Instant>,
    /// The wall time the last dump took (the walk and the flow table's intake, not its
    /// owners' reads; a failed dump counts too): whether reading owners before a dump is
    /// worth its cost (see [`PREFETCH_DUMP_WALL`]).
    last_dump_wall: Duration,
    /// The CPU time triggered dumps may spend, flow-table diff and attribution included
    /// (and the owners' reads at rises, see [`OwnerLookup::prefetch`]): what bounds the
    /// engine's share of a core under churn, and leaves its time to the process polls.
    budget: DumpBudget,
    resync: bool,
    /// [`DestroyStats::losses`] when last looked at.
    losses_seen: u64,
    /// Scratch: the sockets [`FlowTable::awaiting_owner`] names.
    awaiting: Vec<(u64, Family, SocketAddr, SocketAddr)>,
    packets: Packets,
}

/// The packet sockets of the collector's network namespace, read from /proc/net/packet at
/// dumps and ticks (see [`crate::flows::packet`]), and those of the namespaces that
/// processes it sees made for themselves (see [`ForeignNets`]).
struct Packets {
    /// Open for the collector's life; `None` when the kernel has no packet sockets.
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    lines: Vec<PacketLine>,
    table: PacketTable,
    last_read: Option<Instant>,
    foreign: ForeignNets,
}

/// Network namespaces other than the collector's that processes it sees live in
/// (`unshare -rn` gives an unprivileged process CAP_NET_RAW in a namespace of its own,
/// where a sniffer's socket is not in the pod's /proc/net/packet). Any user reads a
/// process's `/proc/PID/net/packet`, which is its namespace's table, and `stat` of it
/// names the namespace by inode (`/proc/PID/ns/net` needs ptrace access). Each such
/// table is read once per pass, through one process found in it; init's namespace is not
/// (a collector in a pod namespace that sees a host's processes, as the bench's does, is
/// not watching the host's network). Past [`FOREIGN_NETS_MAX`] namespaces a pass reads the
/// next ones after the last pass's, in inode order: a workload that makes decoy namespaces
/// delays when its sniffer's is read, never hides it.
struct ForeignNets {
    /// The inode of the collector's own namespace's table (`None`: not known, nothing
    /// is read beyond the own table).
    own: Option<u64>,
    /// The inode of pid 1's namespace's table, when pid 1 is visible.
    init: Option<u64>,
    /// Scratch: every other namespace found in this pass, by inode, with a pid in it.
    found: Vec<(u64, u32)>,
    /// The inode of the last namespace read when a pass could not read them all.
    cursor: u64,
    /// Scratch: one table's lines.
    lines: Vec<PacketLine>,
    buf: Vec<u8>,
}

/// Namespaces of others read per pass at most: a workload chooses how many it makes.
const FOREIGN_NETS_MAX: usize = 64;

impl ForeignNets {
    fn new() -> ForeignNets {
        use std::os::unix::fs::MetadataExt;
        ForeignNets {
            own: std::fs::metadata("/proc/self/net/packet")
                .map(|m| m.ino())
                .ok(),
            init: std::fs::metadata("/proc/1/net/packet")
                .map(|m| m.ino())
                .ok(),
            found: Vec::new(),
            cursor: 0,
            lines: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Appends the packet sockets of every other namespace a process lives in to `out`
    /// (at most [`FOREIGN_NETS_MAX`] of them, see [`ForeignNets`]); how many tables could not
    /// be read whole (a process that exited on the way, namespaces past the bound, malformed
    /// lines).
    fn read(&mut self, out: &mut Vec<PacketLine>) -> u64 {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let Some(own) = self.own else { return 0 };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 1;
        };
        self.found.clear();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(net) = std::fs::metadata(format!("/proc/{pid}/net/packet")).map(|m| m.ino())
            else {
                continue; // exited, or a kernel thread
            };
            if net != own && Some(net) != self.init {
                self.found.push((net, pid));
            }
        }
        self.found.sort_unstable_by_key(|&(net, _)| net);
        self.found.dedup_by_key(|&mut (net, _)| net);
        let n = self.found.len();
        let (start, count) = rotation(&self.found, self.cursor, FOREIGN_NETS_MAX);
        let mut unread = (n - count) as u64;
        if count > 0 {
            self.cursor = self.found[(start + count - 1) % n].0;
        }
        for i in (0..count).map(|i| (start + i) % n) {
            let pid = self.found[i].1;
            self.buf.clear();
            let read = std::fs::File::open(format!("/proc/{pid}/net/packet"))
                .and_then(|mut f| f.read_to_end(&mut self.buf));
            if read.is_err() {
                unread += 1;
                continue;
            }
            unread += packet::parse_packet_table(&self.buf, &mut self.lines) as u64;
            out.extend_from_slice(&self.lines);
        }
        unread
    }
}

/// Which of `found` (sorted by inode) a pass reads, as the first index and how many from it,
/// wrapping around: all of them when they are at most `max`, else `max` from the first
/// inode after `cursor`.
fn rotation(found: &[(u64, u32)], cursor: u64, max: usize) -> (usize, usize) {
    let n = found.len();
    if n <= max {
        return (0, n);
    }
    (found.partition_point(|&(net, _)| net <= cursor) % n, max)
}

/// The packet sockets of the reader's network namespace (`/proc/net` is `/proc/self/net`).
const PACKET_TABLE: &str = "/proc/net/packet";

/// Accepted sockets looked up per tick at most (each one request and one reply).
const LOOKUPS_PER_TICK: usize = 64;

/// Below this wall time of a dump, the owners' read at a rise takes only the tables that grew
/// ([`PrefetchReach::Grown`]): the dump reaches a socket within a fraction of a ms of the
/// rise, and the pass after it reads for the sockets still open and unknown. The rise counts sockets that closed already, and guessing their owners among
/// the level tables read 6 tables per rise in a pod's own hash (0.2–0.5 ms a walk): more
/// than the dump, so dumps came half as often. On a host's large hash (1.3–2.3 ms a walk), or
/// on cores so busy that the dump's wall time stretches, a socket of a few ms closes while
/// the dump runs, and the guess at the rise is what finds its owner. Wall time, not CPU: a
/// workload that keeps the cores busy stretches the dump without adding to its CPU.
const PREFETCH_DUMP_WALL: Duration = Duration::from_millis(1);

impl SocketMonitor {
    /// Opens the netlink sockets and joins the destroy groups; no dump yet.
    pub fn new(config: &EngineConfig) -> Result<Self, EngineError> {
        let dumper = Dumper::open().map_err(EngineError::OpenSockDiag)?;
        let (destroy, destroy_rx) =
            DestroyListener::start(config.destroy_queue_capacity, config.destroy_rcvbuf)
                .map_err(EngineError::DestroyGroups)?;
        tracing::info!(
            rcvbuf = destroy.rcvbuf,
            "listening for socket destroy events"
        );
        Ok(SocketMonitor {
            dumper,
            destroy,
            destroy_rx,
            trigger: Trigger::new().map_err(EngineError::Trigger)?,
            table: FlowTable::new(
                config.flows.clone(),
                Scoper::new(config.cluster_cidrs.clone()),
            ),
            sockets: Vec::with_capacity(1024),
            poll_interval: config.poll_interval,
            idle_poll_interval: config.idle_poll_interval,
            last_change: Instant::now(),
            last_rise: None,
            pending: false,
            pending_rise: 0,
            last_dump: None,
            last_dump_wall: Duration::ZERO,
            budget: DumpBudget::new(Instant::now(), config.churn_cpu_percent),
            resync: false,
            losses_seen: 0,
            awaiting: Vec::new(),
            packets: Packets {
                file: std::fs::File::open(PACKET_TABLE)
                    .inspect_err(|error| tracing::info!(%error, "no {PACKET_TABLE}: packet sockets are not reported"))
                    .ok(),
                buf: Vec::new(),
                lines: Vec::new(),
                table: PacketTable::default(),
                last_read: None,
                foreign: ForeignNets::new(),
            },
        })
    }

    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// Whether sockets opened within the last [`CHURN_HOLD`]: the engine then checks at its
    /// churn interval, so that a connection of a few ms is dumped (and its owner read)
    /// before it closes.
    pub fn churning(&self) -> bool {
        self.last_rise.is_some_and(|t| t.elapsed() < CHURN_HOLD)
    }

    /// One engine tick: drain destroy events, then dump if the trigger moved (now or at a
    /// check whose dump was held back), the periodic interval passed, or the destroy stream
    /// overflowed. Returns whether a dump ran.
    pub fn tick(&mut self, lookup: &mut dyn OwnerLookup, out: &mut Vec<Record>) -> bool {
        // A dump goes first when a change is pending, so sockets that just opened are seen
        // alive (uid, inode) before their destroy events are applied.
        let rise = match self.trigger.changed() {
            Ok(rise) => rise,
            Err(error) => {
                tracing::warn!(%error, "socket change trigger unreadable; relying on periodic dumps");
                0
            }
        };
        let now = Instant::now();
        if rise > 0 {
            tracing::trace!(target: "procflow::tick", rise, "sockets opened");
            self.last_change = now;
            self.last_rise = Some(now);
            self.pending = true;
            self.pending_rise = self.pending_rise.saturating_add(rise);
        }
        let period =
            if now.duration_since(self.last_change) < QUIET_AFTER || self.table.transferring() {
                self.poll_interval
            } else {
                self.idle_poll_interval
            };
        let due = self
            .last_dump
            .is_none_or(|t| now.duration_since(t) >= period);
        // Under heavy churn, triggered dumps take their share of a core; the periodic
        // dump always runs. The cost is CPU time: a dump that was merely preempted (a busy
        // node) must not hold the next ones back.
        let allowed = due || self.budget.allows(now);
        if (self.pending || self.resync) && !allowed {
            tracing::trace!(target: "procflow::tick", "dump held back");
        }
        let mut dumped = false;
        if (self.pending || due || self.resync) && allowed {
            // The new sockets' owners are read first, just before a dump that takes ms to
            // reach them, and only then: read at every rise of a churn while the dumps are
            // held back, they took the dumps' whole budget (seen alive fell to 4 % at
            // 10-50 ms in the lifetime scenario). Their cost counts against the budget.
            let rise = std::mem::take(&mut self.pending_rise);
            if rise > 0 {
                let reach = if self.last_dump_wall >= PREFETCH_DUMP_WALL {
                    PrefetchReach::Likeliest
                } else {
                    PrefetchReach::Grown
                };
                let cpu_before = crate::sys::clock::thread_cpu_time();
                lookup.prefetch(rise, reach, now_ns(), out);
                self.budget.spend(
                    crate::sys::clock::thread_cpu_time().saturating_sub(cpu_before),
                    now,
                );
            }
            self.dump(lookup, out);
            dumped = true;
        }
        self.drain_destroy(out);
        if dumped {
            return true;
        }
        self.read_packets(lookup, out);
        self.look_up_awaiting_owner(lookup, out);
        self.table.expire(now_ns(), out);
        false
    }

    /// Looks up, one by one, the accepted sockets whose START waits for an inode or owner.
    fn look_up_awaiting_owner(&mut self, lookup: &mut dyn OwnerLookup, out: &mut Vec<Record>) {
        self.table.awaiting_owner(&mut self.awaiting);
        if self.awaiting.is_empty() {
            return;
        }
        // An accept backlog is the periodic dump's: the lookups stay a small cost per tick.
        self.awaiting.truncate(LOOKUPS_PER_TICK);
        self.sockets.clear();
        let mut asked = 0u64;
        for &(cookie, family, local, remote) in &self.awaiting {
            asked += 1;
            match self.dumper.lookup(family, local, remote, Some(cookie)) {
                Ok(Some(socket)) => self.sockets.push(socket),
                Ok(None) => {} // closed: its destroy event ends it
                Err(error) => {
                    tracing::debug!(%error, "accepted socket lookup failed; the next dump sees it");
                    break;
                }
            }
        }
        SocketsLookedUp { sockets: asked }.emit();
        self.table
            .apply_lookups(&self.sockets, now_ns(), lookup, out);
    }

    /// Dumps every socket into the flow table now.
    pub fn dump(&mut self, lookup: &mut dyn OwnerLookup, out: &mut Vec<Record>) {
        // Whatever the trigger saw before this point, this dump sees.
        self.pending = false;
        let started = Instant::now();
        let cpu_before = crate::sys::clock::thread_cpu_time();
        // The table takes each datagram's sockets as they arrive.
        let table = &mut self.table;
        table.begin_dump(now_ns());
        let walked = self.dumper.dump_all_with(|batch| table.observe(batch));
        let dumped = started.elapsed();
        self.last_dump_wall = dumped;
        match walked {
            Ok(stats) => {
                let dumper = &mut self.dumper;
                // Closed since the dump (or left to TIME_WAIT or an orphan's close): no fd.
                // A failed lookup says nothing: the socket is looked for.
                let mut still_held = |s: &SocketInfo| match dumper.lookup_again(s) {
                    Ok(found) => found.is_some_and(|now| now.inode != 0 && !now.timewait),
                    Err(_) => true,
                };
                table.finish_dump_probed(!stats.interrupted, lookup, &mut still_held, out);
                DumpFinished {
                    elapsed: started.elapsed(),
                }
                .emit();
                tracing::trace!(
                    target: "procflow::tick",
                    sockets = stats.messages,
                    dump_us = dumped.as_micros() as u64,
                    finish_us = (started.elapsed() - dumped).as_micros() as u64,
                    "dumped"
                );
                if !stats.interrupted {
                    self.resync = false;
                }
            }
            Err(error) => {
                // What it saw before failing is real; nothing is concluded from absences.
                table.finish_dump(false, lookup, out);
                DumpFailed {
                    error: &error,
                    elapsed: started.elapsed(),
                }
                .emit();
            }
        }
        self.read_packets(lookup, out);
        self.last_dump = Some(Instant::now());
        self.budget.spend(
            crate::sys::clock::thread_cpu_time().saturating_sub(cpu_before),
            Instant::now(),
        );
    }

    /// Reads /proc/net/packet at a dump or a tick, at most every [`packet::READ_EVERY`]: a
    /// small file (a header when no packet socket is open), one `pread`; then the tables of
    /// the namespaces other processes made (a `stat` per process, a read per namespace).
    /// Not only at dumps: a sniffer in a namespace of its own moves none of the pod's
    /// socket counters, and a quiet pod dumps every idle poll interval only.
    fn read_packets(&mut self, lookup: &mut dyn OwnerLookup, out: &mut Vec<Record>) {
        let p = &mut self.packets;
        let Some(file) = &p.file else { return };
        if p.last_read
            .is_some_and(|t| t.elapsed() < packet::READ_EVERY)
        {
            return;
        }
        p.last_read = Some(Instant::now());
        let len = match crate::sys::proc::reread(file, &mut p.buf) {
            Ok(len) => len,
            Err(error) => {
                PacketTableUnread {
                    errors: 1,
                    what: &error,
                }
                .emit();
                return;
            }
        };
        let malformed = packet::parse_packet_table(&p.buf[..len], &mut p.lines);
        if malformed > 0 {
            PacketTableUnread {
                errors: malformed as u64,
                what: &"malformed lines",
            }
            .emit();
        }
        let foreign_unread = p.foreign.read(&mut p.lines);
        if foreign_unread > 0 {
            PacketTableUnread {
                errors: foreign_unread,
                what: &"another namespace's table (a process gone, or past the bound)",
            }
            .emit();
        }
        p.table.observe(
            &p.lines,
            malformed == 0 && foreign_unread == 0,
            now_ns(),
            lookup,
            out,
        );
    }

    fn drain_destroy(&mut self, out: &mut Vec<Record>) {
        for DestroyEvent { socket, at } in self.destroy_rx.try_iter() {
            self.last_change = Instant::now();
            let dumper = &mut self.dumper;
            self.table
                .apply_destroy_with(&socket, at, &mut |s| timewait_successor(dumper, s), out);
        }
        let losses = self.destroy.stats.losses();
        // Destroy events were lost: resynchronise with a full dump, and end the flows that
        // went missing meanwhile as `RECOVERED`.
        if losses != self.losses_seen {
            self.losses_seen = losses;
            self.last_change = Instant::now();
            self.table.note_overflow(now_ns());
            self.resync = true;
        }
    }

    pub fn destroy_stats(&self) -> &DestroyStats {
        &self.destroy.stats
    }

    /// Applies the destroy events already received and ends every live flow.
    pub fn shutdown(&mut self, out: &mut Vec<Record>) {
        self.drain_destroy(out);
        self.table.shutdown(now_ns(), out);
        self.packets.table.shutdown(now_ns(), out);
        self.destroy.stop();
    }
}

/// Whether the socket left a TIME_WAIT minisocket behind: only a received FIN does.
fn timewait_successor(dumper: &mut Dumper, socket: &SocketInfo) -> bool {
    match dumper.lookup_state(socket.family, socket.local, socket.remote) {
        Ok(state) => state == Some(crate::sockdiag::msg::TCP_TIME_WAIT),
        Err(error) => {
            tracing::debug!(%error, "TIME_WAIT lookup failed; the FIN stays inferred");
            false
        }
    }
}

/// How long after the trigger last moved the engine keeps checking at the churn interval.
const CHURN_HOLD: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::rotation;

    #[test]
    fn namespaces_past_the_bound_are_read_in_turn_never_left_out() {
        let found: Vec<(u64, u32)> = (1..=10).map(|net| (net * 100, net as u32)).collect();
        assert_eq!(rotation(&found, 0, 64), (0, 10), "all when under the bound");
        assert_eq!(rotation(&found[..0], 0, 4), (0, 0));
        // Four a pass from the start, then on after the last one read, wrapping around.
        let mut cursor = 0;
        let mut read = Vec::new();
        for _ in 0..3 {
            let (start, count) = rotation(&found, cursor, 4);
            let pass: Vec<u64> = (0..count).map(|i| found[(start + i) % 10].0).collect();
            cursor = *pass.last().expect("read some");
            read.push(pass);
        }
        assert_eq!(read[0], [100, 200, 300, 400]);
        assert_eq!(read[1], [500, 600, 700, 800]);
        assert_eq!(read[2], [900, 1000, 100, 200]);
        // The cursor's namespace gone: on from the next inode after it.
        assert_eq!(rotation(&found, 450, 4), (4, 4));
        assert_eq!(rotation(&found, 5000, 4), (0, 4));
    }
}
