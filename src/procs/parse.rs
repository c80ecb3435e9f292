//! Pure parsers for /proc text. A process names itself whatever it likes (newlines,
//! parentheses, invalid UTF-8), so nothing here trusts the bytes: `comm` is whatever lies
//! between the first `(` and the *last* `)` of stat, and every parser returns `None` rather
//! than panicking on malformed input.

/// The fields of `/proc/<pid>/stat` procflow uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: Vec<u8>,
    pub state: u8,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    pub tty_nr: u32,
    /// The task's `PF_*` flags: [`PF_FORKNOEXEC`] tells a fork still running its parent's
    /// image. Shown to every reader.
    pub flags: u64,
    /// Clock ticks since boot.
    pub starttime: u64,
    /// `startcode`, `endcode`, `startstack`: where the image's text and stack lie. They
    /// differ for every exec (ASLR), but the kernel shows them only to a reader with ptrace
    /// access (others read `1 1 0`), and a process without memory (a zombie, one exiting or
    /// between the two halves of an exec) shows `0 0 0`. Absent in old kernels' stat: 0.
    pub mm: [u64; 3],
}

/// `PF_FORKNOEXEC`: set by fork, cleared by the exec that replaces the image.
pub const PF_FORKNOEXEC: u64 = 0x40;

impl Stat {
    /// Still running the image it was forked with (never exec'd since its fork).
    pub fn forked_no_exec(&self) -> bool {
        self.flags & PF_FORKNOEXEC != 0
    }

    /// The memory layout marks when they tell one image from another: shown (ptrace access)
    /// and of a process with memory.
    pub fn layout(&self) -> Option<[u64; 3]> {
        (self.mm != [1, 1, 0] && self.mm != [0, 0, 0]).then_some(self.mm)
    }

    /// Whether `self`, read after `before` of the same process (same start time), shows an
    /// exec in between: a new name, the fork flag cleared, or another memory layout. An exec
    /// that keeps the name, of a process that had exec'd already, read without ptrace access
    /// shows none of these (its command line may tell).
    /// A zombie keeps its name and flags (its layout reads `0 0 0`): an exec just before
    /// its exit still shows.
    pub fn exec_since(&self, before: &Stat) -> bool {
        self.comm != before.comm
            || (before.forked_no_exec() && !self.forked_no_exec())
            || matches!((before.layout(), self.layout()), (Some(a), Some(b)) if a != b)
    }
}

pub fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = parse_num(trim(&text[..open]))?;
    let comm = text[open + 1..close].to_vec();
    // After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
    let mut fields = text.get(close + 2..)?.split(|&b| b == b' ');
    let state = *fields.next()?.first()?;
    let ppid = parse_num(fields.next()?)?;
    let pgrp = parse_num(fields.next()?)?;
    let session = parse_num(fields.next()?)?;
    let tty_nr = parse_num(fields.next()?)?;
    let _tpgid = fields.next()?;
    let flags = parse_num(fields.next()?)?;
    // minflt … itrealvalue (12 fields), then starttime.
    let starttime = parse_num(fields.nth(12)?)?;
    // vsize rss rsslim, then startcode endcode startstack.
    let mut mm = [0u64; 3];
    let mut rest = fields.skip(3);
    for mark in &mut mm {
        *mark = rest.next().and_then(parse_num).unwrap_or(0);
    }
    Some(Stat {
        pid: u32::try_from(pid).ok()?,
        comm,
        state,
        ppid: u32::try_from(ppid).ok()?,
        pgrp: u32::try_from(pgrp).ok()?,
        session: u32::try_from(session).ok()?,
        tty_nr: u32::try_from(tty_nr).ok()?,
        flags,
        starttime,
        mm,
    })
}

/// Real and effective ids from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

/// What the collector takes from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub ids: Ids,
    /// `FDSize`: the fd table's capacity (a power of two, at least 64), which grows with the
    /// open fds: a free hint of how big the table is.
    pub fd_size: Option<u64>,
}

/// `None` without both the Uid and the Gid line.
pub fn parse_status(text: &[u8]) -> Option<Status> {
    let mut status = Status::default();
    let (mut have_uid, mut have_gid) = (false, false);
    for line in text.split(|&b| b == b'\n') {
        let (key, rest) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let mut values = rest
            .split(|b| b.is_ascii_whitespace())
            .filter(|v| !v.is_empty())
            .map(parse_num);
        let ids = &mut status.ids;
        match key {
            b"Uid" => {
                ids.uid = u32::try_from(values.next()??).ok()?;
                ids.euid = u32::try_from(values.next()??).ok()?;
                have_uid = true;
            }
            b"Gid" => {
                ids.gid = u32::try_from(values.next()??).ok()?;
                ids.egid = u32::try_from(values.next()??).ok()?;
                have_gid = true;
            }
            // The line after Gid: nothing further is read.
            b"FDSize" => {
                status.fd_size = values.next().flatten();
                break;
            }
            _ => {}
        }
    }
    (have_uid && have_gid).then_some(status)
}

/// NUL-separated arguments, kept as the kernel's bytes. A trailing NUL ends the last one.
pub fn parse_cmdline(text: &[u8]) -> Vec<Vec<u8>> {
    let text = text.strip_suffix(b"\0").unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// Container and pod identity found in `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupIdentity {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Finds a container id (64 hex characters: containerd, CRI-O, docker; or an ECS task's
/// `<task>-<container hash>` form) and a Kubernetes pod uid (`pod<uid>`, with `_` or `-`)
/// in any cgroup v1 or v2 line.
pub fn parse_cgroup(text: &[u8]) -> CgroupIdentity {
    let mut identity = CgroupIdentity::default();
    let text = String::from_utf8_lossy(text);
    for line in text.lines() {
        // "hierarchy-id:controllers:path"
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for segment in path.split('/') {
            if identity.pod_uid.is_none() {
                if let Some(uid) = pod_uid_of(segment) {
                    identity.pod_uid = Some(uid);
                }
            }
            if identity.container_id.is_none() {
                identity.container_id = container_id_of(segment);
            }
        }
    }
    identity
}

fn pod_uid_of(segment: &str) -> Option<String> {
    let start = segment.rfind("pod")? + 3;
    let rest = segment[start..].trim_end_matches(".slice");
    let uid: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-' || *c == '_')
        .collect();
    (uid.len() == 36 && uid.chars().filter(|c| *c == '-' || *c == '_').count() == 4)
        .then(|| uid.replace('_', "-"))
}

fn container_id_of(segment: &str) -> Option<String> {
    // "cri-containerd-<id>.scope", "crio-<id>.scope", "docker-<id>.scope", "<id>",
    // ECS: "<task id>-<container hash>" under /ecs/<task id>/.
    let core = segment.trim_end_matches(".scope");
    let candidate = core.rsplit(['-', ':']).next().unwrap_or(core);
    if candidate.len() == 64 && candidate.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(candidate.to_owned());
    }
    let mut parts = core.splitn(2, '-');
    let (task, hash) = (parts.next()?, parts.next()?);
    (task.len() == 32
        && task.chars().all(|c| c.is_ascii_hexdigit())
        && hash.chars().all(|c| c.is_ascii_digit())
        && !hash.is_empty())
    .then(|| core.to_owned())
}

/// The most recently allocated pid of this pid namespace: the last field of /proc/loadavg.
pub fn loadavg_last_pid(text: &[u8]) -> Option<u32> {
    let last = trim(text).rsplit(|&b| b == b' ').next()?;
    u32::try_from(parse_num(last)?).ok()
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    parse_num(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
}

/// `pipe:[12345]` → 12345 (an anonymous pipe; a named FIFO's link is its path).
pub fn pipe_inode(link: &[u8]) -> Option<u64> {
    parse_num(link.strip_prefix(b"pipe:[")?.strip_suffix(b"]")?)
}

/// One line of `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`: whether the socket it describes,
/// if it is the one with `inode`, has a remote peer (a remote port other than 0: a
/// listener's and an unconnected UDP socket's is 0). `None`: another socket's line, the
/// header, or a malformed one.
pub fn inet_line_has_peer(line: &[u8], inode: u64) -> Option<bool> {
    inet_line(line).and_then(|(i, peer)| (i == inode).then_some(peer))
}

/// One line of a `net/tcp`-like table: the socket's inode and whether it has a remote
/// peer. `None`: the header or a malformed line.
pub fn inet_line(line: &[u8]) -> Option<(u64, bool)> {
    let mut fields = line
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    // sl, local_address, rem_address, st, queues, tr:tm, retrnsmt, uid, timeout, inode.
    let remote = fields.nth(2)?;
    let inode = parse_num(fields.nth(6)?)?;
    let port = remote.rsplit(|&b| b == b':').next()?;
    let port = u16::from_str_radix(std::str::from_utf8(port).ok()?, 16).ok()?;
    Some((inode, port != 0))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn parse_num(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stat_with_hostile_comm() {
        let text = b"4242 (evil) (name\n\xff) S 1 4242 4242 34816 4242 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let stat = parse_stat(text).expect("parses");
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, b"evil) (name\n\xff".to_vec());
        assert_eq!(
            (
                stat.state,
                stat.ppid,
                stat.session,
                stat.tty_nr,
                stat.starttime
            ),
            (b'S', 1, 4242, 34816, 987654)
        );
    }

    /// A real line (6.18, read with ptrace access): the fork flag and the layout marks.
    #[test]
    fn stat_flags_and_layout() {
        let line = b"4243 (sh) S 4242 4243 4243 0 -1 4194368 91 0 0 0 0 0 0 0 20 0 1 0 1234 2682880 226 18446744073709551615 94887961681920 94887961783169 140733288747424 0 0 0 0 0 65538 1 0 0 17 1 0 0 0 0 0\n";
        let fork = parse_stat(line).expect("parses");
        assert!(fork.forked_no_exec());
        assert_eq!(fork.starttime, 1234);
        assert_eq!(
            fork.layout(),
            Some([94887961681920, 94887961783169, 140733288747424])
        );
        // The same process after it exec'd the same binary: same name, flag cleared.
        let exec = Stat {
            flags: 4194304,
            mm: [93938224857088, 93938224958337, 140732810954496],
            ..fork.clone()
        };
        assert!(exec.exec_since(&fork));
        assert!(!exec.exec_since(&exec.clone()));
        // Without ptrace access the marks read 1 1 0: only the name and flag can tell.
        let hidden = |s: &Stat| Stat {
            mm: [1, 1, 0],
            ..s.clone()
        };
        assert_eq!(hidden(&exec).layout(), None);
        assert!(hidden(&exec).exec_since(&hidden(&fork)), "the flag tells");
        let again = Stat {
            mm: [1, 2, 3],
            ..exec.clone()
        };
        assert!(again.exec_since(&exec), "a second exec: another layout");
        assert!(
            !hidden(&again).exec_since(&hidden(&exec)),
            "unseen without access"
        );
        // Exiting (no memory) or a zombie is not an exec; a zombie's name still tells one.
        let exiting = Stat {
            mm: [0, 0, 0],
            ..exec.clone()
        };
        assert!(!exiting.exec_since(&exec));
        let zombie = Stat {
            state: b'Z',
            ..exiting.clone()
        };
        assert!(!zombie.exec_since(&exec));
        let renamed = Stat {
            comm: b"x".to_vec(),
            ..zombie.clone()
        };
        assert!(renamed.exec_since(&exec));
        // An old kernel's shorter line still parses.
        let short =
            parse_stat(b"7 (a) S 1 7 7 0 -1 64 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0\n").expect("parses");
        assert!(short.forked_no_exec());
        assert_eq!((short.starttime, short.layout()), (55, None));
    }

    #[test]
    fn status_ids() {
        let ids = Ids {
            uid: 1000,
            euid: 1001,
            gid: 100,
            egid: 101,
        };
        let text = b"Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1000\t1000\nGid:\t100\t101\t100\t100\n";
        assert_eq!(parse_status(text), Some(Status { ids, fd_size: None }));
        let with_fds =
            b"Uid:\t1000\t1001\t1000\t1000\nGid:\t100\t101\t100\t100\nFDSize:\t256\nGroups:\t\n";
        assert_eq!(
            parse_status(with_fds),
            Some(Status {
                ids,
                fd_size: Some(256)
            })
        );
        assert_eq!(parse_status(b"Name: x\n"), None);
    }

    #[test]
    fn cmdline_keeps_bytes() {
        assert_eq!(
            parse_cmdline(b"sh\0-c\0echo \xff\n\0"),
            vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \xff\n".to_vec()]
        );
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn cgroup_formats() {
        let id = "3f1c2b7a9d8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";
        // containerd (EKS), cgroup v1 with systemd driver
        let containerd = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1d5c2f3e_8a9b_4c1d_9e2f_3a4b5c6d7e8f.slice/cri-containerd-{id}.scope\n");
        let c = parse_cgroup(containerd.as_bytes());
        assert_eq!(c.container_id.as_deref(), Some(id));
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("1d5c2f3e-8a9b-4c1d-9e2f-3a4b5c6d7e8f")
        );
        // CRI-O
        let crio = format!("0::/kubepods.slice/kubepods-pod1d5c2f3e_8a9b_4c1d_9e2f_3a4b5c6d7e8f.slice/crio-{id}.scope\n");
        assert_eq!(
            parse_cgroup(crio.as_bytes()).container_id.as_deref(),
            Some(id)
        );
        // cgroupfs driver, v1
        let cgroupfs = format!(
            "12:memory:/kubepods/besteffort/pod1d5c2f3e-8a9b-4c1d-9e2f-3a4b5c6d7e8f/{id}\n"
        );
        let c = parse_cgroup(cgroupfs.as_bytes());
        assert_eq!(
            (c.container_id.as_deref(), c.pod_uid.as_deref()),
            (Some(id), Some("1d5c2f3e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"))
        );
        // docker
        let docker = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(
            parse_cgroup(docker.as_bytes()).container_id.as_deref(),
            Some(id)
        );
        // ECS on Fargate: /ecs/<task id>/<task id>-<container hash>
        let ecs = "0::/ecs/0123456789abcdef0123456789abcdef/0123456789abcdef0123456789abcdef-2436482521\n";
        assert_eq!(
            parse_cgroup(ecs.as_bytes()).container_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef-2436482521")
        );
        // a host process
        assert_eq!(parse_cgroup(b"0::/init.scope\n"), CgroupIdentity::default());
    }

    #[test]
    fn loadavg_and_socket_links() {
        assert_eq!(
            loadavg_last_pid(b"0.00 0.01 0.05 1/123 45678\n"),
            Some(45678)
        );
        assert_eq!(socket_inode(b"socket:[98765]"), Some(98765));
        assert_eq!(socket_inode(b"pipe:[1]"), None);
        assert_eq!(pipe_inode(b"pipe:[1]"), Some(1));
        assert_eq!(pipe_inode(b"/tmp/.f"), None);
    }

    #[test]
    fn net_tcp_lines_tell_a_peer_by_inode() {
        let header = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        let listener = b"   0: 0100007F:96FD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 16055579 1 0000000000000000 100 0 0 10 0";
        let connected = b"   1: 0100007F:DAC8 0100007F:96FD 01 00000000:00000000 00:00000000 00000000     0        0 16055578 1 0000000000000000 20 4 30 10 -1";
        let v6 = b"   2: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000  1000        0 77 1";
        assert_eq!(inet_line_has_peer(header, 16055579), None);
        assert_eq!(inet_line_has_peer(listener, 16055579), Some(false));
        assert_eq!(inet_line_has_peer(listener, 16055578), None);
        assert_eq!(inet_line_has_peer(connected, 16055578), Some(true));
        assert_eq!(inet_line_has_peer(v6, 77), Some(true));
        assert_eq!(
            inet_line_has_peer(b"   3: 0100007F:1 0100007F:zz 01 a b c d e 9", 9),
            None
        );
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
            let _ = parse_status(&bytes);
            let _ = parse_cmdline(&bytes);
            let _ = parse_cgroup(&bytes);
            let _ = loadavg_last_pid(&bytes);
            let _ = socket_inode(&bytes);
            let _ = inet_line_has_peer(&bytes, 7);
        }

        #[test]
        fn any_comm_round_trips_through_stat(comm in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut text = b"77 (".to_vec();
            text.extend_from_slice(&comm);
            text.extend_from_slice(b") R 5 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0\n");
            let stat = parse_stat(&text).expect("parses");
            prop_assert_eq!(stat.comm, comm);
            prop_assert_eq!((stat.ppid, stat.starttime), (5, 555));
        }
    }
}
