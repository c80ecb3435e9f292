//! The fields a condition may name: which exist for which record kind, their types, and
//! how each is read from a record.

use std::net::IpAddr;

use super::super::ka::{self, KaField, KaType, KaValue};
use super::names;
use crate::model::{
    Ancestor, AuditRecord, FlowRecord, ListenerRecord, ProcessRecord, RecordKind, Unavailable,
};

/// A field, resolved to an accessor at compile time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    // process (on process records directly; on flows/listeners through the engine's pid cache)
    Pid,
    Ppid,
    Comm,
    Exe,
    ExeName,
    Cmdline,
    Cwd,
    Uid,
    Euid,
    Tty,
    ExeDeleted,
    Preexisting,
    StdioSocket,
    ContainerId,
    AncestorCount,
    Phase,
    RootPid,
    RootComm,
    CommMatchesExe,
    Argv0,
    KthreadName,
    ForkOfParent,
    ExeReplaced,
    ExeDenied,
    SessionId,
    ParentComm,
    ParentCmdline,
    ParentListens,
    ExecFrom,
    StdinWriterComm,
    StdoutReaderComm,
    PipelineCmdline,
    ProgramInArgv,
    // ancestor inside any(...)
    AComm,
    AExe,
    APid,
    AUid,
    // flow / listener
    RAddr,
    RPort,
    LAddr,
    LPort,
    Direction,
    Scope,
    Protocol,
    BytesSent,
    BytesReceived,
    FlowPhase,
    SockUid,
    // audit records (`ka.*`, see `super::ka`)
    Ka(KaField),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Ty {
    Bytes,
    Int,
    Bool,
    Ip,
}

pub(super) fn resolve(name: &str, kind: RecordKind, in_any: bool) -> Option<(Field, Ty)> {
    use Field::*;
    if name.starts_with("ka.") {
        let (f, ty, _) = ka::resolve(name).filter(|_| kind == RecordKind::Audit)?;
        let ty = match ty {
            KaType::Text | KaType::Enum => Ty::Bytes,
            KaType::Int => Ty::Int,
            KaType::Bool => Ty::Bool,
            KaType::Ip => Ty::Ip,
        };
        return Some((Ka(f), ty));
    }
    let net = matches!(kind, RecordKind::Flow | RecordKind::Listener);
    let f = match name {
        "proc.pid" => (Pid, Ty::Int),
        "proc.ppid" => (Ppid, Ty::Int),
        "proc.comm" | "proc.name" => (Comm, Ty::Bytes),
        "proc.exe" => (Exe, Ty::Bytes),
        "proc.exe_name" => (ExeName, Ty::Bytes),
        "proc.cmdline" => (Cmdline, Ty::Bytes),
        "proc.cwd" => (Cwd, Ty::Bytes),
        "proc.uid" => (Uid, Ty::Int),
        "proc.euid" => (Euid, Ty::Int),
        "proc.tty" => (Tty, Ty::Int),
        "proc.exe_deleted" => (ExeDeleted, Ty::Bool),
        "proc.preexisting" => (Preexisting, Ty::Bool),
        "proc.stdio_is_socket" => (StdioSocket, Ty::Bool),
        "proc.container_id" => (ContainerId, Ty::Bytes),
        "proc.ancestors.count" => (AncestorCount, Ty::Int),
        "proc.phase" => (Phase, Ty::Bytes),
        "proc.root.pid" => (RootPid, Ty::Int),
        "proc.root.comm" => (RootComm, Ty::Bytes),
        "proc.comm_matches_exe" => (CommMatchesExe, Ty::Bool),
        "proc.argv0" => (Argv0, Ty::Bytes),
        "proc.kthread_name" => (KthreadName, Ty::Bool),
        "proc.fork_of_parent" => (ForkOfParent, Ty::Bool),
        "proc.exe_replaced" => (ExeReplaced, Ty::Bool),
        "proc.exe_denied" => (ExeDenied, Ty::Bool),
        "proc.sid" => (SessionId, Ty::Int),
        "proc.pcomm" => (ParentComm, Ty::Bytes),
        "proc.pcmdline" => (ParentCmdline, Ty::Bytes),
        "proc.parent_listens" => (ParentListens, Ty::Bool),
        "proc.exec_from" => (ExecFrom, Ty::Bytes),
        "proc.stdin_writer_comm" => (StdinWriterComm, Ty::Bytes),
        "proc.stdout_reader_comm" => (StdoutReaderComm, Ty::Bytes),
        "proc.pipeline_cmdline" => (PipelineCmdline, Ty::Bytes),
        "proc.program_in_argv" => (ProgramInArgv, Ty::Bool),
        "a.comm" if in_any => (AComm, Ty::Bytes),
        "a.exe" if in_any => (AExe, Ty::Bytes),
        "a.pid" if in_any => (APid, Ty::Int),
        "a.uid" if in_any => (AUid, Ty::Int),
        "fd.rip" | "fd.raddr" if kind == RecordKind::Flow => (RAddr, Ty::Ip),
        "fd.rport" if kind == RecordKind::Flow => (RPort, Ty::Int),
        "fd.lip" | "fd.laddr" if net => (LAddr, Ty::Ip),
        "fd.lport" if net => (LPort, Ty::Int),
        "fd.direction" if kind == RecordKind::Flow => (Direction, Ty::Bytes),
        "fd.scope" if kind == RecordKind::Flow => (Scope, Ty::Bytes),
        "fd.protocol" if net => (Protocol, Ty::Bytes),
        "fd.bytes_sent" if kind == RecordKind::Flow => (BytesSent, Ty::Int),
        "fd.bytes_received" if kind == RecordKind::Flow => (BytesReceived, Ty::Int),
        "fd.phase" if net => (FlowPhase, Ty::Bytes),
        "fd.uid" if net => (SockUid, Ty::Int),
        _ => return None,
    };
    Some(f)
}

/// The names an enum field can hold (what its records serialize to), by ordinal.
pub(super) fn enum_names(f: Field) -> Option<&'static [&'static str]> {
    use crate::model::{Direction, FlowPhase, ProcessPhase, Protocol, Scope};
    Some(match f {
        Field::Phase => ProcessPhase::NAMES,
        Field::Direction => Direction::NAMES,
        Field::Scope => Scope::NAMES,
        Field::Protocol => Protocol::NAMES,
        Field::FlowPhase => FlowPhase::NAMES,
        Field::Ka(k) => return ka::enum_names(k),
        _ => return None,
    })
}

/// Reads an enum field as its ordinal (see [`enum_names`]).
pub(super) fn get_ordinal(f: Field, c: &Ctx<'_>) -> Option<u8> {
    match f {
        Field::Phase => c.process.map(|p| p.phase.ordinal()),
        Field::Direction => c.flow.map(|f| f.direction.ordinal()),
        Field::Scope => c.flow.map(|f| f.scope.ordinal()),
        Field::Protocol => c
            .flow
            .map(|f| f.protocol.ordinal())
            .or(c.listener.map(|l| l.protocol.ordinal())),
        Field::FlowPhase => c
            .flow
            .map(|f| f.phase.ordinal())
            .or(c.listener.map(|l| l.phase.ordinal())),
        Field::Ka(k) => c.audit.and_then(|a| ka::ordinal(k, a)),
        _ => None,
    }
}

/// What a condition is evaluated against.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub process: Option<&'a ProcessRecord>,
    pub flow: Option<&'a FlowRecord>,
    pub listener: Option<&'a ListenerRecord>,
    pub ancestor: Option<&'a Ancestor>,
    pub audit: Option<&'a AuditRecord>,
    /// What the engine knows of the record's source (its processes, listeners, pipes),
    /// read by the fields that need it (`None` outside the engine).
    pub source: Option<crate::rules::source::SourceView<'a>>,
    /// The process's command line, joined once per record however many rules read it
    /// (`None`: joined at each read). Belongs to `process`: a copy of the context for
    /// another process must drop it.
    pub cmdline: Option<&'a std::cell::OnceCell<Vec<u8>>>,
}

pub enum Val<'a> {
    Null,
    Bytes(std::borrow::Cow<'a, [u8]>),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
}

pub(super) fn basename(b: &[u8]) -> &[u8] {
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

pub(super) fn enum_name(name: &'static str) -> Val<'static> {
    Val::Bytes(std::borrow::Cow::Borrowed(name.as_bytes()))
}

/// Reads a field; absent values are `Null` and never match.
pub fn get<'a>(f: Field, c: &Ctx<'a>) -> Val<'a> {
    use std::borrow::Cow::Borrowed;
    use Field::*;
    let p = c.process;
    let b = |x: &'a [u8]| Val::Bytes(Borrowed(x));
    match f {
        Pid => p
            .map(|p| Val::Int(p.pid.into()))
            .or_else(|| {
                c.flow
                    .and_then(|f| f.pid)
                    .or(c.listener.and_then(|l| l.pid))
                    .map(|x| Val::Int(x.into()))
            })
            .unwrap_or(Val::Null),
        Ppid => p.map(|p| Val::Int(p.ppid.into())).unwrap_or(Val::Null),
        Comm => p.map(|p| b(&p.comm)).unwrap_or(Val::Null),
        Exe => p.and_then(|p| p.exe.as_deref()).map(b).unwrap_or(Val::Null),
        ExeName => p
            .and_then(|p| p.exe.as_deref())
            .map(|e| b(basename(e)))
            .unwrap_or(Val::Null),
        Cmdline => match (p, c.cmdline) {
            (Some(p), Some(cell)) => b(cell.get_or_init(|| p.argv.join(&b' '))),
            (Some(p), None) => Val::Bytes(std::borrow::Cow::Owned(p.argv.join(&b' '))),
            (None, _) => Val::Null,
        },
        Cwd => p.and_then(|p| p.cwd.as_deref()).map(b).unwrap_or(Val::Null),
        Uid => p.map(|p| Val::Int(p.uid.into())).unwrap_or(Val::Null),
        Euid => p.map(|p| Val::Int(p.euid.into())).unwrap_or(Val::Null),
        Tty => p
            .and_then(|p| p.tty)
            .map(|t| Val::Int(t.into()))
            .unwrap_or(Val::Null),
        ExeDeleted => p.map(|p| Val::Bool(p.exe_deleted)).unwrap_or(Val::Null),
        Preexisting => p.map(|p| Val::Bool(p.preexisting)).unwrap_or(Val::Null),
        StdioSocket => p
            .and_then(|p| p.stdio_is_socket)
            .map(Val::Bool)
            .unwrap_or(Val::Null),
        ContainerId => p
            .and_then(|p| p.container_id.as_deref())
            .map(|s| b(s.as_bytes()))
            .unwrap_or(Val::Null),
        AncestorCount => p
            .map(|p| Val::Int(p.ancestors.len() as i64))
            .unwrap_or(Val::Null),
        Phase | Direction | Scope | Protocol | FlowPhase => get_ordinal(f, c)
            .zip(enum_names(f))
            .and_then(|(o, names)| names.get(usize::from(o)))
            .map(|name| enum_name(name))
            .unwrap_or(Val::Null),
        RootPid => p
            .map(|p| Val::Int(p.ancestors.last().map_or(p.pid, |a| a.pid).into()))
            .unwrap_or(Val::Null),
        RootComm => p
            .map(|p| b(p.ancestors.last().map_or(&p.comm, |a| &a.comm)))
            .unwrap_or(Val::Null),
        CommMatchesExe => p
            .and_then(|p| {
                p.exe.as_deref().map(|e| {
                    let argv0 = p.argv.first().map(Vec::as_slice);
                    Val::Bool(p.comm_is_exe_link || names::comm_matches_exe(&p.comm, e, argv0))
                })
            })
            .unwrap_or(Val::Null),
        Argv0 => p
            .and_then(|p| p.argv.first())
            .map(|a| b(a))
            .unwrap_or(Val::Null),
        KthreadName => p
            .map(|p| {
                let argv0 = p.argv.first().map_or(&[][..], Vec::as_slice);
                Val::Bool(names::kernel_thread_like(&p.comm) || names::kernel_thread_like(argv0))
            })
            .unwrap_or(Val::Null),
        ForkOfParent => p.map(|p| Val::Bool(fork_of_parent(p))).unwrap_or(Val::Null),
        ExeReplaced => p
            .and_then(|p| p.exe_replaced)
            .map(Val::Bool)
            .unwrap_or(Val::Null),
        ExeDenied => p
            .map(|p| Val::Bool(p.exe_unavailable == Unavailable::PermissionDenied))
            .unwrap_or(Val::Null),
        SessionId => p
            .map(|p| Val::Int(p.session_id.into()))
            .unwrap_or(Val::Null),
        ParentComm => p
            .and_then(|p| p.ancestors.first())
            .map(|a| b(&a.comm))
            .unwrap_or(Val::Null),
        ParentListens => p
            .zip(c.source)
            .map(|(p, s)| Val::Bool(s.parent_listens(p)))
            .unwrap_or(Val::Null),
        ExecFrom => p
            .zip(c.source)
            .and_then(|(p, s)| s.exec_from(p))
            .map(b)
            .unwrap_or(Val::Null),
        StdinWriterComm => p
            .zip(c.source)
            .and_then(|(p, s)| s.stdin_writers(p).telling())
            .map(b)
            .unwrap_or(Val::Null),
        StdoutReaderComm => p
            .zip(c.source)
            .and_then(|(p, s)| s.stdout_readers(p).telling())
            .map(b)
            .unwrap_or(Val::Null),
        PipelineCmdline => p
            .zip(c.source)
            .map(|(p, s)| Val::Bytes(std::borrow::Cow::Owned(s.pipeline(p))))
            .unwrap_or(Val::Null),
        ProgramInArgv => p
            .map(|p| Val::Bool(names::program_in_argv(&p.comm, &p.argv)))
            .unwrap_or(Val::Null),
        ParentCmdline => p
            .and_then(|p| p.ancestors.first())
            .map(|a| Val::Bytes(std::borrow::Cow::Owned(a.argv.join(&b' '))))
            .unwrap_or(Val::Null),
        AComm => c.ancestor.map(|a| b(&a.comm)).unwrap_or(Val::Null),
        AExe => c
            .ancestor
            .and_then(|a| a.exe.as_deref())
            .map(b)
            .unwrap_or(Val::Null),
        APid => c
            .ancestor
            .map(|a| Val::Int(a.pid.into()))
            .unwrap_or(Val::Null),
        AUid => c
            .ancestor
            .and_then(|a| a.uid)
            .map(|u| Val::Int(u.into()))
            .unwrap_or(Val::Null),
        RAddr => c
            .flow
            .and_then(|f| f.remote_addr)
            .map(Val::Ip)
            .unwrap_or(Val::Null),
        RPort => c
            .flow
            .and_then(|f| f.remote_port)
            .map(|x| Val::Int(x.into()))
            .unwrap_or(Val::Null),
        LAddr => c
            .flow
            .map(|f| f.local_addr)
            .or(c.listener.map(|l| l.local_addr))
            .map(Val::Ip)
            .unwrap_or(Val::Null),
        LPort => c
            .flow
            .map(|f| f.local_port)
            .or(c.listener.map(|l| l.local_port))
            .map(|x| Val::Int(x.into()))
            .unwrap_or(Val::Null),
        BytesSent => c
            .flow
            .and_then(|f| f.bytes_sent)
            .map(|x| Val::Int(x as i64))
            .unwrap_or(Val::Null),
        BytesReceived => c
            .flow
            .and_then(|f| f.bytes_received)
            .map(|x| Val::Int(x as i64))
            .unwrap_or(Val::Null),
        SockUid => c
            .flow
            .and_then(|f| f.uid)
            .or(c.listener.and_then(|l| l.uid))
            .map(|u| Val::Int(u.into()))
            .unwrap_or(Val::Null),
        Ka(k) => c.audit.map_or(Val::Null, |a| ka_val(ka::get(k, a))),
    }
}

/// A fork still running its parent's image (no exec since): what it runs was judged as its
/// parent's execution. Told by `PF_FORKNOEXEC` and the parent's executable (or, when
/// neither can be read, its argv[0]) being the same; a fork whose parent was not seen (it
/// exited first, unseen) is judged as an execution.
fn fork_of_parent(p: &ProcessRecord) -> bool {
    let Some(parent) = p.ancestors.first().filter(|_| p.forked_no_exec) else {
        return false;
    };
    let image = |e: &[u8]| e.strip_suffix(b" (deleted)").unwrap_or(e).to_vec();
    match (&p.exe, &parent.exe) {
        (Some(e), Some(pe)) => image(e) == image(pe),
        (None, None) => !p.argv.is_empty() && p.argv.first() == parent.argv.first(),
        _ => false,
    }
}

pub(super) fn ka_val(v: KaValue<'_>) -> Val<'_> {
    use std::borrow::Cow;
    match v {
        KaValue::Null => Val::Null,
        KaValue::Text(t) => Val::Bytes(Cow::Borrowed(t.as_bytes())),
        KaValue::Owned(t) => Val::Bytes(Cow::Owned(t.into_bytes())),
        KaValue::Int(i) => Val::Int(i),
        KaValue::Bool(b) => Val::Bool(b),
        KaValue::Ip(ip) => Val::Ip(ip),
    }
}

pub(super) const FIELD_NAMES: &[&str] = &[
    "proc.pid",
    "proc.ppid",
    "proc.comm",
    "proc.name",
    "proc.exe",
    "proc.exe_name",
    "proc.cmdline",
    "proc.cwd",
    "proc.uid",
    "proc.euid",
    "proc.tty",
    "proc.exe_deleted",
    "proc.preexisting",
    "proc.stdio_is_socket",
    "proc.container_id",
    "proc.ancestors.count",
    "proc.phase",
    "proc.root.pid",
    "proc.root.comm",
    "proc.comm_matches_exe",
    "proc.argv0",
    "proc.kthread_name",
    "proc.fork_of_parent",
    "proc.exe_replaced",
    "proc.exe_denied",
    "proc.sid",
    "proc.pcomm",
    "proc.pcmdline",
    "proc.parent_listens",
    "proc.exec_from",
    "proc.stdin_writer_comm",
    "proc.stdout_reader_comm",
    "proc.pipeline_cmdline",
    "proc.program_in_argv",
    "fd.rip",
    "fd.raddr",
    "fd.rport",
    "fd.lip",
    "fd.laddr",
    "fd.lport",
    "fd.direction",
    "fd.scope",
    "fd.protocol",
    "fd.bytes_sent",
    "fd.bytes_received",
    "fd.phase",
    "fd.uid",
];

/// Every field name usable in output templates.
pub fn field_names() -> &'static [&'static str] {
    FIELD_NAMES
}

pub(super) fn is_list(f: Field) -> bool {
    matches!(f, Field::Ka(k) if ka::is_list(k))
}

/// The accessor for a field name regardless of record kind (templates print `<NA>` when absent).
pub fn field_for_name(name: &str) -> Option<Field> {
    [
        RecordKind::Flow,
        RecordKind::Listener,
        RecordKind::Process,
        RecordKind::Audit,
    ]
    .into_iter()
    .find_map(|k| resolve(name, k, false))
    .map(|(f, _)| f)
}
