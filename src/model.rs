//! Domain records: what the collector observes and the aggregator stores.
//!
//! These types know nothing of protobuf (conversion lives in `wire`). Their serde
//! form *is* the JSON output format (`collector --output stdout`, `tail --json`,
//! `query --json`): proto field names, enum values as short upper-case names,
//! times as unix nanoseconds, and kernel bytes (comm, argv, exe, cwd) as strings in
//! which every byte that is not valid UTF-8 is written `\xNN` and a backslash `\\`,
//! so the original bytes can always be recovered (see [`escape_bytes`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

mod audit;
mod text;
pub use audit::{
    AuditLevel, AuditObject, AuditRecord, AuditStage, AuditUser, BindingFacts, ExecAttribution,
    ExecParams, Outcome, PodSpecFacts, RoleFacts,
};
pub use text::{civil_from_days, days_from_civil, push_ip, rfc3339_utc, workload_of};

/// Unix time in nanoseconds.
pub type UnixNanos = u64;

/// Current wall-clock time as unix nanoseconds.
pub fn now_ns() -> UnixNanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// === Flow vocabulary ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Tcp,
    Udp,
    /// An `AF_PACKET` socket (from /proc/net/packet), reported as a listener: it reads
    /// every frame of an interface (or all of them), the shape of a sniffer (T1040).
    Packet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "IPV4")]
    Ipv4,
    #[serde(rename = "IPV6")]
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    #[default]
    Unknown,
    Inbound,
    Outbound,
    Listen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    #[default]
    Unspecified,
    Local,
    EastWest,
    NorthSouth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowPhase {
    Start,
    Update,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndReason {
    #[default]
    Unspecified,
    DestroyEvent,
    Vanished,
    Recovered,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Attribution {
    #[default]
    None,
    Fd,
    Uid,
    Listener,
    /// Inferred, not seen: a connection no dump saw alive (or whose owner no fd table
    /// showed) to a peer that exactly one process held sockets to, by fd, in the last
    /// [`crate::flows::PEER_MEMORY`]; that process is named.
    InferredFromPeer,
}

/// One socket's life, keyed by its kernel cookie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    #[serde(with = "u64_string")]
    pub cookie: u64,
    pub protocol: Protocol,
    pub family: Family,
    pub local_addr: IpAddr,
    pub local_port: u16,
    /// `None` for unconnected UDP sockets.
    pub remote_addr: Option<IpAddr>,
    pub remote_port: Option<u16>,
    pub direction: Direction,
    pub scope: Scope,
    pub phase: FlowPhase,
    /// The kernel's state name; the known names are static, so a record costs no allocation.
    pub state: std::borrow::Cow<'static, str>,
    pub preexisting: bool,
    /// Payload bytes; `None` for UDP (the kernel keeps no counters).
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub segs_out: Option<u64>,
    pub segs_in: Option<u64>,
    pub retransmits: Option<u32>,
    pub total_retrans: Option<u32>,
    pub rtt_us: Option<u32>,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    pub ended_at: Option<UnixNanos>,
    pub uid: Option<u32>,
    pub inode: Option<u64>,
    pub pid: Option<u32>,
    pub process_start_time: Option<UnixNanos>,
    pub attribution: Attribution,
    pub end_reason: EndReason,
    pub reset: bool,
    /// No dump saw the socket alive and the kernel zeroed its peer before the destroy
    /// event (a reset or failed connect): the peer is unknown.
    #[serde(default)]
    pub peer_scrubbed: bool,
    pub cgroup_id: Option<u64>,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerRecord {
    #[serde(with = "u64_string")]
    pub cookie: u64,
    pub protocol: Protocol,
    pub family: Family,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub phase: FlowPhase,
    pub preexisting: bool,
    pub first_seen: UnixNanos,
    pub ended_at: Option<UnixNanos>,
    pub uid: Option<u32>,
    pub inode: Option<u64>,
    pub pid: Option<u32>,
    pub process_start_time: Option<UnixNanos>,
    pub attribution: Attribution,
    pub backlog: Option<u32>,
    /// For a packet socket (protocol `Packet`; its address is 0.0.0.0 port 0): what it
    /// captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet: Option<PacketSocket>,
}

/// What a packet socket captures, as /proc/net/packet shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketSocket {
    /// `SOCK_RAW` (3: whole frames) or `SOCK_DGRAM` (2: without the link header).
    pub sock_type: u16,
    /// The EtherType bound, host order (0x0003 `ETH_P_ALL`: every protocol; 0: none yet).
    pub ethertype: u16,
    /// The interface bound (0: every interface).
    pub ifindex: u32,
}

// === Process vocabulary ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessPhase {
    Start,
    Exec,
    Exit,
}

/// The names the enums serialize to (JSON and the rule language), without serializing:
/// the rules read them for every record.
macro_rules! serialized_names {
    ($($ty:ident { $($variant:ident => $name:literal),+ $(,)? })+) => {
        $(impl $ty {
            pub const VARIANTS: &'static [$ty] = &[$($ty::$variant),+];
            /// `NAMES[v.ordinal()] == v.name()`.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn name(self) -> &'static str {
                Self::NAMES[usize::from(self.ordinal())]
            }

            /// Position in `VARIANTS`: rules compare enum fields as small integers.
            pub fn ordinal(self) -> u8 {
                self as u8
            }
        })+
    };
}

serialized_names! {
    Protocol { Tcp => "TCP", Udp => "UDP", Packet => "PACKET" }
    Direction { Unknown => "UNKNOWN", Inbound => "INBOUND", Outbound => "OUTBOUND", Listen => "LISTEN" }
    Scope { Unspecified => "UNSPECIFIED", Local => "LOCAL", EastWest => "EAST_WEST", NorthSouth => "NORTH_SOUTH" }
    FlowPhase { Start => "START", Update => "UPDATE", End => "END" }
    ProcessPhase { Start => "START", Exec => "EXEC", Exit => "EXIT" }
    Family { Ipv4 => "IPV4", Ipv6 => "IPV6" }
    Attribution { None => "NONE", Fd => "FD", Uid => "UID", Listener => "LISTENER", InferredFromPeer => "INFERRED_FROM_PEER" }
    EndReason { Unspecified => "UNSPECIFIED", DestroyEvent => "DESTROY_EVENT", Vanished => "VANISHED", Recovered => "RECOVERED", Shutdown => "SHUTDOWN" }
}

/// Why a ptrace-guarded field (exe, cwd) is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Unavailable {
    /// The field is present.
    #[default]
    Unspecified,
    PermissionDenied,
    ProcessGone,
    /// Kernel threads and zombies have none.
    None,
}

/// One link of a process's ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub start_time: UnixNanos,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt")]
    pub exe: Option<Vec<u8>>,
    #[serde(with = "escaped_bytes_vec")]
    pub argv: Vec<Vec<u8>>,
    pub exited: bool,
    pub uid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub start_time: UnixNanos,
    pub ppid: u32,
    pub parent_start_time: Option<UnixNanos>,
    pub phase: ProcessPhase,
    #[serde(with = "escaped_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "escaped_bytes_opt")]
    pub exe: Option<Vec<u8>>,
    #[serde(with = "escaped_bytes_vec")]
    pub argv: Vec<Vec<u8>>,
    #[serde(with = "escaped_bytes_opt")]
    pub cwd: Option<Vec<u8>>,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// `tty_nr` from stat; `None` without a controlling terminal.
    pub tty: Option<u32>,
    pub session_id: u32,
    pub pgid: u32,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub exit_time: Option<UnixNanos>,
    /// Parent first, up to the pid namespace's init.
    pub ancestors: Vec<Ancestor>,
    pub exe_unavailable: Unavailable,
    pub cwd_unavailable: Unavailable,
    pub exe_deleted: bool,
    pub seen_at_exit_only: bool,
    /// Already running when the collector started: its exec was not witnessed.
    #[serde(default)]
    pub preexisting: bool,
    /// Whether fd 0, 1 or 2 is an internet socket with a remote peer (not an AF_UNIX
    /// socketpair, not a listener), or stdin and stdout are one AF_UNIX socket whose other
    /// end an ancestor holds beside such a socket (a relay: socat's `EXEC:`). Known only
    /// with fd access.
    pub stdio_is_socket: Option<bool>,
    /// Those internet sockets' inodes (a relay's: the relay's connection).
    pub stdio_socket_inodes: Vec<u64>,
    /// Still running the image it was forked with (`PF_FORKNOEXEC`, world-readable): a
    /// fork, not an execution.
    #[serde(default)]
    pub forked_no_exec: bool,
    /// For a deleted executable: whether its path now holds another root-owned file (a
    /// package upgrade replaced it) or nothing (it was removed, as a runner deleting its
    /// payload does). `None` when not deleted or not readable (needs ptrace access).
    #[serde(default)]
    pub exe_replaced: Option<bool>,
    /// The pipe on stdin and on stdout, by inode (`pipe:[N]` in /proc/PID/fd, so known only
    /// with fd access): a downloader whose stdout is a shell's stdin is `curl … | sh`,
    /// whatever the command lines say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_pipe: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_pipe: Option<u64>,
    /// comm names a link to the executable in the executable's own directory, root's in a
    /// directory only root may write, reaching it through such links only (`gmake` →
    /// `make`): the name it was started under, not a masquerade (`procs::links`). Known
    /// only with exe access.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub comm_is_exe_link: bool,
}

// === Collector health ===

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub time: UnixNanos,
    /// Monotonic counters by name (records, drops by reason, errors).
    pub counters: Vec<(String, u64)>,
    pub flows_tracked: u64,
    pub processes_tracked: u64,
    pub rss_bytes: u64,
    pub cpu_time_ns: u64,
    pub features: Vec<String>,
    /// How often the collector sends a heartbeat, ns (0: not said).
    #[serde(default)]
    pub interval_ns: u64,
    /// The last heartbeat before a clean shutdown.
    #[serde(default)]
    pub stopping: bool,
}

// === Alerts ===

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub time: UnixNanos,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    pub count: u64,
    pub output: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub node_name: String,
    pub container_id: Option<String>,
    pub process: Option<Box<ProcessRecord>>,
    pub flows: Vec<FlowRecord>,
    pub evidence: Vec<String>,
    /// Who started the process tree, when an exec audit event was joined with it.
    #[serde(default)]
    pub exec: Option<Box<ExecAttribution>>,
}

// === Envelope ===

/// Everything that travels from a collector to the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Flow(FlowRecord),
    Process(ProcessRecord),
    Listener(ListenerRecord),
    Heartbeat(Heartbeat),
    Alert(AlertRecord),
    /// Made by the aggregator's audit adapters only.
    Audit(Box<AuditRecord>),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Flow(_) => RecordKind::Flow,
            Record::Process(_) => RecordKind::Process,
            Record::Listener(_) => RecordKind::Listener,
            Record::Heartbeat(_) => RecordKind::Heartbeat,
            Record::Alert(_) => RecordKind::Alert,
            Record::Audit(_) => RecordKind::Audit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Flow,
    Process,
    Listener,
    Heartbeat,
    Alert,
    Audit,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Flow,
        RecordKind::Process,
        RecordKind::Listener,
        RecordKind::Heartbeat,
        RecordKind::Alert,
        RecordKind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Flow => "flow",
            RecordKind::Process => "process",
            RecordKind::Listener => "listener",
            RecordKind::Heartbeat => "heartbeat",
            RecordKind::Alert => "alert",
            RecordKind::Audit => "audit",
        }
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown record kind {s:?} (flow, process, listener, heartbeat, alert, audit)"
                )
            })
    }
}

/// Who sent a batch: the pod the collector runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CollectorIdentity {
    pub collector_id: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub pod_ip: String,
    pub node_name: String,
    pub container_images: Vec<String>,
    pub version: String,
}

/// A record with its source, as stored, queried and streamed by the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Shared by every event of a batch (one allocation per batch, not per record).
    pub source: std::sync::Arc<CollectorIdentity>,
    pub received_at: UnixNanos,
    pub record: Record,
}

// === Byte escaping ===

/// Writes kernel bytes as a string that round-trips: valid UTF-8 stays as is,
/// a backslash becomes `\\`, every other byte of invalid UTF-8 becomes `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Inverse of [`escape_bytes`]. Malformed escapes are kept literally.
pub fn unescape_bytes(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'x') {
                if let Some(hex) = s.get(i + 2..i + 4) {
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        out.push(b);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Makes kernel bytes safe to print on a terminal: control characters (including
/// ESC, newlines) and invalid UTF-8 become visible escapes, never interpreted.
pub fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_display_bytes(&mut out, bytes);
    out
}

/// [`display_bytes`] appended to `out`. Printable ASCII other than a backslash shows as
/// itself, so most names and paths are copied whole (rule keys render them per record).
pub fn push_display_bytes(out: &mut String, bytes: &[u8]) {
    let plain = bytes
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\');
    // Printable ASCII is always UTF-8: the check below cannot fail once `plain` holds.
    match plain.then(|| std::str::from_utf8(bytes).ok()).flatten() {
        Some(text) => out.push_str(text),
        None => push_display_escaped(out, bytes),
    }
}

fn push_display_escaped(out: &mut String, bytes: &[u8]) {
    for c in escape_bytes(bytes).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

pub(crate) mod escaped_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::escape_bytes(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(super::unescape_bytes(&String::deserialize(d)?))
    }
}

pub(crate) mod escaped_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&super::escape_bytes(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|s| super::unescape_bytes(&s)))
    }
}

mod escaped_bytes_vec {
    use serde::{ser::SerializeSeq, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(&super::escape_bytes(b))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| super::unescape_bytes(s))
            .collect())
    }
}

/// Socket cookies are opaque 64-bit ids: written as strings so that JSON
/// consumers with double-precision numbers cannot corrupt them.
mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrStr {
            Num(u64),
            Str(String),
        }
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(n),
            NumOrStr::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn enum_names_are_what_serde_writes() {
        // `name` reads NAMES at the ordinal: serde agreeing with it for every variant
        // checks the names, their order and the ordinals at once.
        fn check<T: Serialize + Copy>(variants: &[T], names: &[&str], name: fn(T) -> &'static str) {
            assert_eq!(variants.len(), names.len());
            for &v in variants {
                assert_eq!(serde_json::to_value(v).expect("json"), name(v));
            }
        }
        check(Protocol::VARIANTS, Protocol::NAMES, Protocol::name);
        check(Direction::VARIANTS, Direction::NAMES, Direction::name);
        check(Scope::VARIANTS, Scope::NAMES, Scope::name);
        check(FlowPhase::VARIANTS, FlowPhase::NAMES, FlowPhase::name);
        check(Family::VARIANTS, Family::NAMES, Family::name);
        check(Attribution::VARIANTS, Attribution::NAMES, Attribution::name);
        check(EndReason::VARIANTS, EndReason::NAMES, EndReason::name);
        check(
            ProcessPhase::VARIANTS,
            ProcessPhase::NAMES,
            ProcessPhase::name,
        );
        check(AuditStage::VARIANTS, AuditStage::NAMES, AuditStage::name);
        check(Outcome::VARIANTS, Outcome::NAMES, Outcome::as_str);
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_bytes_are_escaped_and_round_trip() {
        let hostile = b"evil\n\x1b[31mname\\\xff\xfe(sh)".to_vec();
        let escaped = escape_bytes(&hostile);
        assert_eq!(escaped, "evil\n\u{1b}[31mname\\\\\\xff\\xfe(sh)");
        assert_eq!(unescape_bytes(&escaped), hostile);
        let shown = display_bytes(&hostile);
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
    }

    proptest! {
        #[test]
        fn escape_round_trips_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(unescape_bytes(&escape_bytes(&bytes)), bytes);
        }

        #[test]
        fn plain_names_shown_whole_match_the_escaping_path(
            bytes in proptest::collection::vec(prop_oneof![0x20u8..0x7f, any::<u8>()], 0..64)
        ) {
            let mut whole = String::new();
            push_display_bytes(&mut whole, &bytes);
            let mut escaped = String::new();
            push_display_escaped(&mut escaped, &bytes);
            prop_assert_eq!(whole, escaped);
        }
    }
}
