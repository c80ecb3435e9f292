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

/// Whether a shell or interpreter takes its program from its command line — a script
/// file (`bash script.sh`, `python3 parse.py`; a version shim such as pyenv's is one), or
/// for interpreters other than shells inline (`python3 -c …`, `perl -ne …`, `node -e …`,
/// `ruby -e …`, `php -r …`, awk's program) or a module (`python3 -m json.tool`) — so that
/// what its stdin carries is data (`curl … | python3 -c 'import json,sys; …'`,
/// `curl … | awk …`), not a program. False when it reads its program from stdin (no
/// program argument, `-s`, `-`, `/dev/stdin`), when an inline program runs what it is
/// given (`exec(sys.stdin.read())`, `eval`, `system`, a pipe to a command in awk), for a
/// shell's `-c` command (it may run what it reads: `while read l; do sh -c "$l"; done`),
/// and for anything else. The interpreter is told by comm, or by argv[0] when comm is a
/// script's name; `busybox` by its applet.
pub(crate) fn program_in_argv(comm: &[u8], argv: &[Vec<u8>]) -> bool {
    let argv0 = argv.first().map_or(&[][..], |a| basename(a));
    let (kind, args) = match (Interp::of(comm), Interp::of(argv0)) {
        (Some(Interp::Busybox), _) | (None, Some(Interp::Busybox)) => {
            let applet = argv.get(1).map_or(&[][..], |a| basename(a));
            match Interp::of(applet) {
                Some(k @ (Interp::Awk | Interp::Shell)) => (k, argv.get(2..).unwrap_or_default()),
                _ => return false,
            }
        }
        (Some(k), _) | (None, Some(k)) => (k, argv.get(1..).unwrap_or_default()),
        (None, None) => return false,
    };
    match kind.program(args) {
        // A shell's `-c` command may run what it reads: `while read l; do sh -c "$l"; done`.
        Program::Inline(code) => kind != Interp::Shell && !kind.runs_what_it_reads(code),
        Program::File(f) => !STDIN_FILES.contains(&f),
        Program::Module => true,
        Program::Stdin => false,
    }
}

/// awk's program file (`-f FILE`): stdin when it names stdin or is missing.
fn awk_file(f: Option<&[u8]>) -> Program<'_> {
    f.map_or(Program::Stdin, Program::File)
}

/// Paths that name a process's own stdin.
const STDIN_FILES: &[&[u8]] = &[b"-", b"/dev/stdin", b"/dev/fd/0", b"/proc/self/fd/0"];

#[derive(Clone, Copy, PartialEq)]
enum Interp {
    Shell,
    Python,
    Perl,
    Ruby,
    Node,
    Php,
    Lua,
    Tcl,
    Awk,
    Busybox,
}

enum Program<'a> {
    Inline(&'a [u8]),
    File(&'a [u8]),
    Module,
    Stdin,
}

impl Interp {
    fn of(name: &[u8]) -> Option<Interp> {
        let family = |n: &[u8]| {
            name == n
                || (name.starts_with(n)
                    && name[n.len()..]
                        .iter()
                        .all(|c| c.is_ascii_digit() || *c == b'.'))
        };
        Some(match name {
            b"sh" | b"bash" | b"dash" | b"zsh" | b"ksh" | b"mksh" | b"ash" => Interp::Shell,
            _ if family(b"python") || family(b"pypy") => Interp::Python,
            _ if family(b"perl") => Interp::Perl,
            _ if family(b"ruby") => Interp::Ruby,
            _ if family(b"node") || name == b"nodejs" => Interp::Node,
            _ if family(b"php") => Interp::Php,
            _ if family(b"lua") || name == b"luajit" => Interp::Lua,
            _ if family(b"tclsh") => Interp::Tcl,
            b"awk" | b"mawk" | b"gawk" | b"nawk" | b"original-awk" => Interp::Awk,
            b"busybox" => Interp::Busybox,
            _ => return None,
        })
    }

    /// Where the program comes from, by the interpreter's options: the first of an inline
    /// program, a module, a script file (the first operand) or stdin.
    fn program<'a>(self, args: &'a [Vec<u8>]) -> Program<'a> {
        // Options that hold the program, and options whose value is the next argument.
        let (inline, takes_value): (&[u8], &[u8]) = match self {
            Interp::Shell => (b"c", b"oO"),
            Interp::Python => (b"c", b"WX"),
            Interp::Perl => (b"eE", b"I"),
            Interp::Ruby => (b"e", b"rICEF"),
            Interp::Node => (b"ep", b"r"),
            Interp::Php => (b"rBRFE", b"dcz"),
            Interp::Lua => (b"e", b"l"),
            Interp::Tcl | Interp::Busybox => (b"", b""),
            Interp::Awk => (b"", b"Fv"),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let a = arg.as_slice();
            if a == b"--" {
                break;
            }
            if let Some(long) = a.strip_prefix(b"--") {
                match (self, long) {
                    (Interp::Node, b"eval" | b"print") => {
                        return it.next().map_or(Program::Stdin, |c| Program::Inline(c))
                    }
                    (Interp::Node, b"require" | b"import" | b"loader" | b"input-type") => {
                        it.next();
                    }
                    (Interp::Awk, b"file") => return awk_file(it.next().map(Vec::as_slice)),
                    (Interp::Shell, b"rcfile" | b"init-file") => {
                        it.next();
                    }
                    (Interp::Awk, b"source") => {
                        return it.next().map_or(Program::Stdin, |c| Program::Inline(c))
                    }
                    _ => {}
                }
                continue;
            }
            if a.len() < 2 || a[0] != b'-' {
                return match self {
                    Interp::Awk => Program::Inline(a),
                    _ => Program::File(a),
                };
            }
            // An option cluster (`-ne`, `-uc`, `-Bm`): the first letter that holds the
            // program or takes a value ends it; its value is the rest, or the next argument.
            for (i, &c) in a.iter().enumerate().skip(1) {
                let rest = &a[i + 1..];
                let value = |it: &mut std::slice::Iter<'a, Vec<u8>>| {
                    if rest.is_empty() {
                        it.next().map(Vec::as_slice)
                    } else {
                        Some(rest)
                    }
                };
                if self == Interp::Python && c == b'm' {
                    return Program::Module;
                }
                if self == Interp::Shell && c == b's' {
                    return Program::Stdin;
                }
                if self == Interp::Awk && c == b'f' {
                    return awk_file(value(&mut it));
                }
                if inline.contains(&c) {
                    return value(&mut it).map_or(Program::Stdin, Program::Inline);
                }
                if takes_value.contains(&c) {
                    value(&mut it);
                    break;
                }
            }
        }
        match self {
            // awk with no program argument is a usage error, not a program from stdin.
            Interp::Awk => Program::Inline(b""),
            _ => Program::Stdin,
        }
    }

    /// Whether an inline program runs what it is given rather than only reading it.
    fn runs_what_it_reads(self, code: &[u8]) -> bool {
        const RUNS: &[&[u8]] = &[
            b"exec",
            b"eval",
            b"system",
            b"popen",
            b"spawn",
            b"subprocess",
            b"child_process",
            b"Function",
            b"passthru",
            b"proc_open",
            b"loadstring",
            b"dofile",
            b"`",
            b"%x",
            b"vm.",
            b"/dev/stdin",
        ];
        let contains = |n: &[u8]| code.windows(n.len()).any(|w| w == n);
        RUNS.iter().any(|n| contains(n)) || (self == Interp::Awk && contains(b"|"))
    }
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

    #[test]
    fn interpreters_with_their_program_on_the_command_line() {
        let argv = |a: &[&str]| a.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        for (comm, a) in [
            (
                "python3",
                &[
                    "python3",
                    "-c",
                    "import json,sys; print(json.load(sys.stdin))",
                ][..],
            ),
            ("python3", &["/usr/bin/python3", "-uc", "print(1)"]),
            ("python3", &["python3", "-W", "ignore", "-m", "json.tool"]),
            ("python3", &["python3", "-Bm", "json.tool"]),
            ("python3.11", &["python3.11", "parse.py", "-"]),
            // a script run through its shebang: comm is the script's name
            ("parse", &["/usr/bin/python3", "/usr/local/bin/parse"]),
            ("perl", &["perl", "-lane", "print $F[0]"]),
            ("perl", &["perl", "-I", "lib", "-e", "print"]),
            (
                "ruby",
                &["ruby", "-rjson", "-e", "puts JSON.parse(STDIN.read)"],
            ),
            (
                "node",
                &[
                    "node",
                    "--eval",
                    "JSON.parse(require('fs').readFileSync(0))",
                ],
            ),
            ("node", &["node", "-r", "dotenv/config", "app.js"]),
            ("php", &["php", "-r", "echo 1;"]),
            ("awk", &["awk", "-F", ":", "-v", "x=1", "{print $1}"]),
            ("mawk", &["mawk", "-f", "/usr/share/x.awk"]),
            ("gawk", &["gawk", "--file", "prog.awk"]),
            ("busybox", &["busybox", "awk", "{print}"]),
            // shells running a script file: pyenv's shim, an installer's own script
            (
                "bash",
                &["bash", "/root/.pyenv/shims/python3", "-c", "print(1)"],
            ),
            ("sh", &["/bin/sh", "-e", "./configure"]),
            (
                "bash",
                &["bash", "-o", "pipefail", "--rcfile", "x", "run.sh"],
            ),
        ] {
            assert!(program_in_argv(comm.as_bytes(), &argv(a)), "{a:?}");
        }
        for (comm, a) in [
            // the program comes from stdin
            ("python3", &["python3"][..]),
            ("python3", &["python3", "-"]),
            ("python3", &["python3", "-u", "/dev/stdin"]),
            ("perl", &["perl"]),
            ("perl", &["perl", "-w", "-"]),
            ("node", &["node", "-"]),
            ("ruby", &["ruby"]),
            ("php", &["php"]),
            ("awk", &["awk", "-f", "/dev/stdin"]),
            ("awk", &["awk", "-f"]),
            // inline programs that run what they read
            (
                "python3",
                &["python3", "-c", "import sys; exec(sys.stdin.read())"],
            ),
            ("perl", &["perl", "-e", "eval join '', <STDIN>"]),
            (
                "node",
                &["node", "-e", "require('child_process').execSync(d)"],
            ),
            ("awk", &["awk", "{ system($0) }"]),
            ("awk", &["awk", "{ print | \"sh\" }"]),
            // a shell's -c command, or its program from stdin; other commands
            ("sh", &["sh", "-c", "tar xz"]),
            ("bash", &["bash", "-s"]),
            ("bash", &["bash", "-s", "--", "--yes"]),
            ("bash", &["bash", "/dev/stdin"]),
            ("sh", &["sh", "-"]),
            ("sh", &["sh"]),
            ("busybox", &["busybox", "sh"]),
            ("jq", &["jq", ".a"]),
            ("", &[]),
        ] {
            assert!(!program_in_argv(comm.as_bytes(), &argv(a)), "{a:?}");
        }
    }
}
