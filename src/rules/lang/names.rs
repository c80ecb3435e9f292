//! What a process's names may legitimately differ by: the name a command was started
//! under (comm, argv[0]) and the file it runs (exe) differ when the command is a link to
//! another file — Debian's alternatives (`awk` → `mawk`, `nc` → `nc.openbsd`), versioned
//! links (`python3` → `python3.11`) — and in nothing else a rule should accept.
//!
//! Pure functions over the bytes of a record; hostile names (a process names itself) only
//! ever make them answer false.

/// Links whose target is named after another command: (the name run, targets' names).
/// A target matches by its whole name or as `target.suffix` / `target-suffix`.
const ALTERNATIVES: &[(&[u8], &[&[u8]])] = &[
    (
        b"awk",
        &[b"mawk", b"gawk", b"nawk", b"original-awk", b"busybox"],
    ),
    (b"nawk", &[b"mawk", b"gawk"]),
    (
        b"nc",
        &[
            b"nc.openbsd",
            b"nc.traditional",
            b"ncat",
            b"netcat",
            b"busybox",
        ],
    ),
    (b"netcat", &[b"nc.openbsd", b"nc.traditional", b"ncat"]),
    (b"vi", &[b"vim", b"nvim", b"busybox"]),
    (b"view", &[b"vim"]),
    (b"editor", &[b"vim", b"nano", b"ed"]),
    (b"pager", &[b"less", b"more"]),
    (b"sh", &[b"dash", b"bash", b"busybox"]),
    (b"java", &[b"java"]),
    (b"x-www-browser", &[b"chromium", b"firefox"]),
    (b"which", &[b"which.debianutils"]),
    (b"rename", &[b"file-rename"]),
    (
        b"iptables",
        &[b"xtables-nft-multi", b"xtables-legacy-multi"],
    ),
    (
        b"ip6tables",
        &[b"xtables-nft-multi", b"xtables-legacy-multi"],
    ),
    // Toolchains: the C compiler's generic names and the linker, whose Debian targets
    // carry a GNU triplet (stripped before this table is read) and a version.
    (b"cc", &[b"gcc", b"clang"]),
    (b"c++", &[b"g++", b"clang++"]),
    (b"c89", &[b"gcc"]),
    (b"c99", &[b"gcc"]),
    (b"cpp", &[b"cpp", b"clang-cpp"]),
    (b"ld", &[b"ld.bfd", b"ld.gold", b"ld.lld", b"lld"]),
    // procps: pkill and pidwait are links to pgrep.
    (b"pkill", &[b"pgrep"]),
    (b"pidwait", &[b"pgrep"]),
    // rustup's proxies: `~/.cargo/bin/cargo` and its siblings are links to rustup, which
    // dispatches on argv[0] (a build on a developer's host ran into this under `make run`).
    (b"cargo", &[b"rustup"]),
    (b"rustc", &[b"rustup"]),
    (b"rustdoc", &[b"rustup"]),
    (b"rustfmt", &[b"rustup"]),
    (b"cargo-fmt", &[b"rustup"]),
    (b"cargo-clippy", &[b"rustup"]),
    (b"clippy-driver", &[b"rustup"]),
    (b"rust-analyzer", &[b"rustup"]),
];

/// Whether `comm` (15 bytes at most) is the name of `exe`'s file: the same name, a
/// versioned or suffixed form of it (`python3.11`, `nc.openbsd`, `vim.basic`,
/// `node18`), or a well-known alternative's target — the last two only when argv[0]
/// (if any) names the command as comm does, as a shell starting it through its link
/// leaves it.
pub(crate) fn comm_matches_exe(comm: &[u8], exe: &[u8], argv0: Option<&[u8]>) -> bool {
    let exe = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
    let base = without_triplet(basename(exe));
    if truncated(base) == comm || truncated(basename(exe)) == comm {
        return true;
    }
    if argv0.is_some_and(|a| truncated(basename(a)) != comm) {
        return false;
    }
    // comm is cut at 15 bytes: a suffix beyond it cannot be judged, only the name before.
    comm.len() < 15 && (is_version_of(base, comm) || is_alternative(comm, base))
}

/// A kernel thread's name in the forms user space shows it: `kworker/1:2-events` as comm,
/// `[kworker/1:2-events]` as ps prints it (and a retitled process writes into argv[0]).
pub(crate) fn kernel_thread_like(name: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"kworker",
        b"kthreadd",
        b"ksoftirqd",
        b"kswapd",
        b"migration/",
        b"rcu_",
        b"rcuc/",
        b"rcuog/",
        b"rcuop/",
        b"watchdog",
        b"jbd2/",
        b"kcompactd",
        b"khugepaged",
        b"kdevtmpfs",
        b"kblockd",
        b"kauditd",
        b"khungtaskd",
        b"kintegrityd",
        b"kthrotld",
        b"cpuhp/",
        b"idle_inject/",
        b"irq/",
        b"ksmd",
        b"oom_reaper",
        b"writeback",
        b"scsi_eh_",
        b"xfsaild",
        b"card0-crtc",
        b"ecryptfs",
        b"kstrp",
        b"mm_percpu_wq",
        b"inet_frag_wq",
        b"edac-poller",
        b"devfreq_wq",
        b"zswap",
    ];
    // Only kernel threads are shown in brackets, and they have no argv of their own: any
    // bracketed name a process gives itself imitates one, whatever the thread's name
    // (`[ext4-rsv-conver]`, `[khelper]`). comm may be cut before the closing bracket.
    if name.len() > 1 && name[0] == b'[' {
        return true;
    }
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `gcc-12` of `x86_64-linux-gnu-gcc-12`: Debian names a cross-capable tool after its GNU
/// triplet (`<arch>[-<vendor>]-linux-<abi>-`); the tool's own name follows it.
fn without_triplet(base: &[u8]) -> &[u8] {
    const LINUX: &[u8] = b"-linux-";
    let Some(at) = base.windows(LINUX.len()).position(|w| w == LINUX) else {
        return base;
    };
    let abi = &base[at + LINUX.len()..];
    match abi.iter().position(|&c| c == b'-') {
        Some(dash) if dash > 0 && dash + 1 < abi.len() => &abi[dash + 1..],
        _ => base,
    }
}

fn basename(b: &[u8]) -> &[u8] {
    b.rsplit(|&c| c == b'/').next().unwrap_or(b)
}

fn truncated(b: &[u8]) -> &[u8] {
    b.get(..15).unwrap_or(b)
}

/// `python3.11` of `python3`, `nc.openbsd` of `nc`, `node18` of `node`, `pip-3.11` of
/// `pip`: the name, then `.`, `-` or a digit, then the rest.
fn is_version_of(base: &[u8], name: &[u8]) -> bool {
    !name.is_empty()
        && base.len() > name.len()
        && base.starts_with(name)
        && matches!(base[name.len()], b'.' | b'-' | b'0'..=b'9')
}

fn is_alternative(name: &[u8], base: &[u8]) -> bool {
    ALTERNATIVES.iter().any(|(run, targets)| {
        *run == name && targets.iter().any(|t| *t == base || is_version_of(base, t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_and_versioned_links_are_consistent() {
        for (comm, exe, argv0) in [
            ("awk", "/usr/bin/mawk", "awk"),
            ("nc", "/usr/bin/nc.openbsd", "nc"),
            ("python3", "/usr/bin/python3.11", "python3"),
            (
                "python3",
                "/usr/local/bin/python3.12",
                "/usr/local/bin/python3",
            ),
            ("vi", "/usr/bin/vim.basic", "vi"),
            ("sleep", "/usr/bin/sleep", "whatever"),
            ("bash", "/usr/bin/bash (deleted)", "-bash"),
            ("node", "/usr/bin/node18", "node"),
            // a build: Debian's toolchain under its GNU triplet and alternatives
            ("cc", "/usr/bin/x86_64-linux-gnu-gcc-12", "cc"),
            ("gcc", "/usr/bin/x86_64-linux-gnu-gcc-12", "gcc"),
            ("as", "/usr/bin/x86_64-linux-gnu-as", "as"),
            ("ld", "/usr/bin/x86_64-linux-gnu-ld.bfd", "/usr/bin/ld"),
            ("c++", "/usr/bin/aarch64-linux-gnu-g++-12", "c++"),
            ("cc", "/usr/bin/x86_64-alpine-linux-musl-gcc", "cc"),
            ("pkill", "/usr/bin/pgrep", "pkill"),
            // rustup's proxies
            ("cargo", "/root/.cargo/bin/rustup", "cargo"),
            (
                "rustc",
                "/home/dev/.cargo/bin/rustup",
                "/home/dev/.cargo/bin/rustc",
            ),
        ] {
            assert!(
                comm_matches_exe(comm.as_bytes(), exe.as_bytes(), Some(argv0.as_bytes())),
                "{comm} {exe}"
            );
        }
        assert!(comm_matches_exe(b"bash", b"/usr/bin/bash (deleted)", None));
    }

    #[test]
    fn renamed_processes_are_not() {
        for (comm, exe, argv0) in [
            // prctl(PR_SET_NAME) of a miner, argv untouched
            ("sshd", "/tmp/xmrig", "/tmp/xmrig"),
            // named after a command whose alternative it is not
            ("awk", "/tmp/payload", "awk"),
            ("nc", "/usr/bin/python3.11", "nc"),
            // an alternative's name, but argv[0] says another command was run
            ("awk", "/usr/bin/mawk", "/tmp/x"),
            // a prefix that is not a version
            ("ssh", "/usr/bin/sshd", "ssh"),
            ("", "/usr/bin/x", ""),
            // a triplet does not make any name consistent
            ("sshd", "/tmp/x86_64-linux-gnu-xmrig", "sshd"),
            ("cc", "/tmp/x86_64-linux-gnu-", "cc"),
            // rustup's proxies are consistent only under their own names
            ("sshd", "/root/.cargo/bin/rustup", "sshd"),
            ("cargo", "/root/.cargo/bin/rustup", "/tmp/x"),
        ] {
            assert!(
                !comm_matches_exe(comm.as_bytes(), exe.as_bytes(), Some(argv0.as_bytes())),
                "{comm} {exe} {argv0}"
            );
        }
    }

    #[test]
    fn kernel_thread_names_in_their_real_forms() {
        for n in [
            "kworker/1:2-events",
            "[kworker/1:2-events]",
            "[kworker/1:2-ev",
            "[ksoftirqd/0]",
            "kthreadd",
            "[migration/3]",
            "[rcu_sched]",
            "[jbd2/sda1-8]",
            // any bracketed name: only kernel threads are shown that way
            "[ext4-rsv-conver]",
            "[khelper]",
            "[netns]",
        ] {
            assert!(kernel_thread_like(n.as_bytes()), "{n}");
        }
        for n in ["kubelet", "[", "", "python3", "worker", "k"] {
            assert!(!kernel_thread_like(n.as_bytes()), "{n}");
        }
    }
}
