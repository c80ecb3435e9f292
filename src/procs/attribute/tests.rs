use super::*;
use crate::procs::monitor::ProcessConfig;
use crate::socket_holder::{socket_inode_at, SocketHolder};
use std::os::fd::AsRawFd;

fn inode_of(fd: &impl AsRawFd) -> u64 {
    socket_inode_at("self", fd.as_raw_fd())
}

#[test]
fn the_index_holds_only_open_sockets() {
    let mut monitor = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    let mut out = Vec::new();
    monitor.sweep(crate::model::now_ns(), &mut out);
    let me = std::process::id();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let inode = inode_of(&socket);
        monitor.refresh(&[inode], crate::model::now_ns(), &mut out);
        let owner = monitor.owner(inode, None, None);
        assert_eq!((owner.pid, owner.attribution), (Some(me), Attribution::Fd));
        seen.push(inode);
        drop(socket);
    }
    // Closed sockets stay attributable for the grace period, then leave the index. A
    // table is read again when a new socket needs its owner.
    let next = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    monitor.refresh(&[inode_of(&next)], crate::model::now_ns(), &mut out);
    let owner = monitor.owner(seen[0], None, None);
    assert_eq!(
        owner.pid,
        Some(me),
        "a just-closed socket is still attributed"
    );
    for entry in monitor.index.released.iter_mut() {
        entry.0 -= RELEASE_GRACE; // as if the grace period had passed
    }
    monitor.refresh(&[], crate::model::now_ns(), &mut out);
    let still = seen
        .iter()
        .filter(|i| monitor.index.owners.contains_key(i))
        .count();
    assert_eq!(still, 0, "closed sockets stay indexed");
}

/// A table denied once (the process still ran as another user) is read again after the
/// process execs: a privilege drop before exec is how apps are usually started.
#[test]
fn a_denied_fd_table_is_read_again_after_an_exec() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import os, socket, sys\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             os.set_inheritable(s.fileno(), True)\n\
             print(s.fileno(), flush=True)\n\
             sys.stdin.readline()\n\
             os.execv('/bin/sleep', ['sleep', '30'])\n",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    let inode = socket_inode_at(pid, line.trim());

    let mut monitor = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    let mut out = Vec::new();
    monitor.sweep(crate::model::now_ns(), &mut out);
    // As if the read had just been denied.
    monitor.live.get_mut(&pid).expect("child").fd.denied = Some(std::time::Instant::now());
    monitor.refresh(&[inode], crate::model::now_ns(), &mut out);
    let denied = monitor.owner(inode, None, None);

    writeln!(child.stdin.take().expect("stdin")).expect("write");
    let exec_seen = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    monitor.sweep(crate::model::now_ns(), &mut out);
    monitor.refresh(&[inode], crate::model::now_ns(), &mut out);
    let after_exec = monitor.owner(inode, None, None);
    let _ = child.kill();
    let _ = child.wait();
    assert!(exec_seen, "the child did not exec");
    assert_ne!(
        denied.attribution,
        Attribution::Fd,
        "a denied table is skipped"
    );
    assert_eq!(
        (after_exec.pid, after_exec.attribution),
        (Some(pid), Attribution::Fd),
        "read again after the exec"
    );
}

#[test]
fn a_new_socket_is_found_without_reading_every_table() {
    let (mut holder, _) = SocketHolder::start(0);
    let pid = holder.pid();
    let mut monitor = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    let mut out = Vec::new();
    monitor.sweep(crate::model::now_ns(), &mut out);
    let first = holder.open();
    monitor.refresh(&[first], crate::model::now_ns(), &mut out);
    let (full_before, read_before) = (monitor.index.full_passes, monitor.index.tables_read);
    // The child holds a socket and changed its fd table last: it is read first.
    let second = holder.open();
    monitor.refresh(&[second], crate::model::now_ns(), &mut out);
    let owner = monitor.owner(second, None, None);
    drop(holder);
    assert_eq!((owner.pid, owner.attribution), (Some(pid), Attribution::Fd));
    assert_eq!(monitor.index.full_passes, full_before, "no full pass");
    let read = monitor.index.tables_read - read_before;
    assert!(
        (1..monitor.len() as u64).contains(&read),
        "{read} of {} tables read",
        monitor.len()
    );
}

/// A client making connections one after another closes one socket and opens the next
/// between two passes: its count stays level, and it is still read before any full pass.
#[test]
fn a_socket_opened_in_place_of_a_closed_one_is_found_without_a_full_pass() {
    let (mut holder, _) = SocketHolder::start(1);
    let pid = holder.pid();
    let mut monitor = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    let mut out = Vec::new();
    monitor.sweep(crate::model::now_ns(), &mut out);
    let first = holder.open();
    monitor.refresh(&[first], crate::model::now_ns(), &mut out);
    let full_before = monitor.index.full_passes;
    let replaced = holder.reopen();
    monitor.refresh(&[replaced], crate::model::now_ns(), &mut out);
    let owner = monitor.owner(replaced, None, None);
    drop(holder);
    assert_eq!((owner.pid, owner.attribution), (Some(pid), Attribution::Fd));
    assert_eq!(monitor.index.full_passes, full_before, "no full pass");
}

#[test]
fn a_first_pass_reads_the_biggest_tables_first_and_stops_when_all_are_found() {
    // A server holding 200 sockets beside ten small processes, as after a collector start.
    // The small ones start first: lower pids, read first by any order but size.
    let mut sleepers: Vec<_> = (0..10)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep")
        })
        .collect();
    let (mut server, inodes) = SocketHolder::start(200);
    let pid = server.pid();
    let mut monitor = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    let mut out = Vec::new();
    monitor.sweep(crate::model::now_ns(), &mut out);
    monitor.refresh(&inodes, crate::model::now_ns(), &mut out);
    let mut owners: Vec<_> = inodes
        .iter()
        .map(|&i| monitor.owner(i, None, None))
        .collect();
    // One more socket in the known holder: found there, not after the tables the first
    // pass left unread.
    let another = server.open();
    monitor.refresh(&[another], crate::model::now_ns(), &mut out);
    owners.push(monitor.owner(another, None, None));
    let sleepers_read = sleepers
        .iter()
        .filter(|s| {
            monitor
                .live
                .get(&s.id())
                .is_some_and(|p| p.fd.count.is_some())
        })
        .count();
    let fd_count_works = monitor.index.fd_count_works == Some(true);
    drop(server);
    for sleeper in &mut sleepers {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    assert!(
        owners
            .iter()
            .all(|o| (o.pid, o.attribution) == (Some(pid), Attribution::Fd)),
        "every socket attributed to the server by fd"
    );
    assert_eq!(monitor.index.full_passes, 0, "the passes stopped early");
    if fd_count_works {
        assert_eq!(sleepers_read, 0, "small tables left unread");
    }
}

/// A whole walk shares large tables out in parts: each table as a single walk reads it,
/// every socket once, whether dense, sparse (an fd far above the rest) or small, with more
/// walkers than tables and with one.
#[test]
fn a_whole_walk_in_parts_reads_each_table_as_a_single_walk_does() {
    let (dense, dense_inodes) = SocketHolder::start(3 * walk::PART_FDS as usize + 17);
    let (mut sparse, sparse_inodes) = SocketHolder::start(walk::PART_FDS as usize + 5);
    sparse.dup_to(9_000);
    let (small, small_inodes) = SocketHolder::start(3);
    let root = std::path::Path::new("/proc");
    let pids = vec![small.pid(), dense.pid(), 4_000_000_000, sparse.pid()];
    for threads in [4, 1] {
        let walk = WholeWalk::start(root.to_path_buf(), pids.clone(), threads);
        let mut tables: HashMap<u32, std::io::Result<FdsRead>> = walk.join().into_iter().collect();
        assert_eq!(tables.len(), pids.len());
        assert!(tables.remove(&4_000_000_000).expect("gone").is_err());
        for (holder, inodes) in [
            (&dense, &dense_inodes),
            (&sparse, &sparse_inodes),
            (&small, &small_inodes),
        ] {
            let mut walked = tables
                .remove(&holder.pid())
                .expect("walked")
                .expect("readable");
            let single = read_fd_table(root, holder.pid()).expect("single walk");
            assert_eq!(walked.count, single.count, "{threads} walkers");
            walked.socket_inodes.sort_unstable();
            let mut expected = single.socket_inodes;
            expected.sort_unstable();
            assert_eq!(walked.socket_inodes, expected, "{threads} walkers");
            assert!(inodes.iter().all(|i| expected.binary_search(i).is_ok()));
        }
    }
}

/// A socket that closed before any table showing it was read is no longer looked for once
/// the kernel says no fd holds it: without that, every such socket of a churn sent the pass
/// through every table of the host (92 tables, 17 ms in the lifetime scenario's trace).
#[test]
fn a_socket_closed_before_its_owner_was_read_is_not_searched_for() {
    let now = crate::model::now_ns;
    let mut out = Vec::new();
    // An inode no process holds: a socket opened and closed here before any pass.
    let gone = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        inode_of(&socket)
    };
    let mut probed = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    probed.sweep(now(), &mut out);
    let mut asked = Vec::new();
    probed.refresh_inodes_probed(
        &[gone],
        &mut |inode| {
            asked.push(inode);
            false
        },
        now(),
        &mut out,
    );
    assert_eq!(
        asked,
        [gone],
        "the kernel is asked about the unknown socket"
    );
    assert_eq!(probed.index.closed_unread, 1);
    assert_eq!(
        probed.index.full_passes, 0,
        "no full pass for a closed socket"
    );

    // Told it may still be held, the pass reads on, to the full pass.
    let mut unprobed = ProcessMonitor::new(ProcessConfig::default()).expect("monitor");
    unprobed.sweep(now(), &mut out);
    unprobed.refresh_inodes_probed(&[gone], &mut |_| true, now(), &mut out);
    assert_eq!(unprobed.index.closed_unread, 0);
    assert_eq!(unprobed.index.full_passes, 1);
}
