use super::*;
use crate::procs::image::ARGV_WAIT;

#[test]
fn pids_allocated_across_a_wrap_of_the_counter() {
    assert_eq!(pids_allocated(100, 150, 32_768), 50);
    assert_eq!(pids_allocated(150, 150, 32_768), 0);
    // 32761..=32767, then 300..=305 after the wrap.
    assert_eq!(pids_allocated(32_760, 305, 32_768), 13);
    // 767 before the wrap and 101 after it (this was 2^22 for every wrap).
    assert_eq!(pids_allocated(32_000, 400, 32_768), 868);
}

/// A /proc with one process, written as the test goes: a read between an exec's new
/// comm and its new arguments sees an empty command line.
struct FakeProc {
    root: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> FakeProc {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("loadavg"), "0.00 0.00 0.00 1/1 4242\n").expect("loadavg");
        FakeProc { root }
    }

    fn process(&self, pid: u32, comm: &str, cmdline: &[u8]) {
        self.process_with_flags(pid, comm, cmdline, 0);
    }

    /// A process still running the image it was forked with.
    fn fork(&self, pid: u32, comm: &str, cmdline: &[u8]) {
        self.process_with_flags(pid, comm, cmdline, parse::PF_FORKNOEXEC);
    }

    fn process_with_flags(&self, pid: u32, comm: &str, cmdline: &[u8], flags: u64) {
        let dir = self.root.path().join(pid.to_string());
        fs::create_dir_all(&dir).expect("pid dir");
        let stat = format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0"
        );
        fs::write(dir.join("stat"), stat).expect("stat");
        fs::write(
            dir.join("status"),
            "Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n",
        )
        .expect("status");
        fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
    }

    /// A monitor over this /proc after its first sweep, and what that sweep emitted.
    fn swept(&self) -> (ProcessMonitor, Vec<Record>) {
        let mut monitor = ProcessMonitor::new(ProcessConfig {
            proc_root: self.root.path().to_path_buf(),
            ..ProcessConfig::default()
        })
        .expect("monitor");
        let mut out = Vec::new();
        monitor.sweep(1, &mut out);
        (monitor, out)
    }
}

#[test]
fn new_processes_are_listed_from_the_floor_only_while_the_counter_moved_forward_a_little() {
    const MAX: u32 = 4_194_304;
    // The usual tick: listed from the pid after the floor.
    assert_eq!(
        listing_start(Some(100), Some(150), Some(180), MAX),
        Some(101)
    );
    // No floor yet, or no last pid read: every process.
    assert_eq!(listing_start(None, Some(150), Some(180), MAX), None);
    assert_eq!(listing_start(Some(100), Some(150), None, MAX), None);
    // The counter wrapped since the floor (a pid below it may be new): every process.
    assert_eq!(
        listing_start(Some(MAX - 10), Some(MAX - 5), Some(400), MAX),
        None
    );
    assert_eq!(
        listing_start(Some(4_000_000), Some(100), Some(200), MAX),
        None
    );
    // It went back between the two looks, or did not move, or the floor is not below the
    // last look's pid: every process.
    assert_eq!(listing_start(Some(100), Some(150), Some(120), MAX), None);
    assert_eq!(listing_start(Some(100), Some(150), Some(150), MAX), None);
    assert_eq!(listing_start(Some(150), Some(150), Some(180), MAX), None);
    // No overflow at the top of the range.
    assert_eq!(listing_start(Some(u32::MAX), Some(1), Some(2), MAX), None);
    // A quarter of the pid space allocated since the floor: it may have wrapped unseen.
    assert_eq!(
        listing_start(Some(100), Some(150), Some(100 + MAX / 4), MAX),
        None
    );
    assert_eq!(
        listing_start(Some(100), Some(150), Some(99 + MAX / 4), MAX),
        Some(101)
    );
}

/// A new pid gone before its stat was read is a loss (`raced_exit`); a known process
/// whose stat is gone has exited, and is reported so, not counted as a race.
#[test]
fn only_new_pids_that_vanish_count_as_raced() {
    let fake = FakeProc::new();
    fake.process(4242, "app", b"app\0");
    let (mut monitor, _) = fake.swept();
    // Listed, but exited before its stat could be read.
    fs::create_dir_all(fake.root.path().join("4243")).expect("pid dir");
    let mut out = Vec::new();
    monitor.sweep(2, &mut out);
    assert_eq!(monitor.stats().raced_exit, 1);
    fs::remove_file(fake.root.path().join("4242/stat")).expect("stat");
    monitor.sweep(3, &mut out);
    assert_eq!(
        monitor.stats().raced_exit,
        2,
        "4243 is still new and unreadable"
    );
    assert_eq!(monitor.stats().exits, 1, "4242 exited");
    assert!(out.iter().any(
        |r| matches!(r, Record::Process(p) if p.pid == 4242 && p.phase == ProcessPhase::Exit)
    ));
}

fn argv_of(records: &[Record]) -> Vec<(ProcessPhase, Vec<Vec<u8>>)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) => Some((p.phase, p.argv.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_exec_keeps_a_known_container_and_reads_an_unknown_one() {
    let id = |c: char| c.to_string().repeat(64);
    let scope = |c: char| format!("0::/kubepods.slice/cri-containerd-{}.scope\n", id(c));
    let proc = FakeProc::new();
    proc.process(4242, "sh", b"sh\0");
    proc.process(4243, "runc:[2:INIT]", b"runc\0init\0");
    let dir = |pid: u32| proc.root.path().join(pid.to_string());
    fs::write(dir(4242).join("cgroup"), scope('a')).expect("cgroup");
    fs::write(dir(4243).join("cgroup"), "0::/\n").expect("cgroup"); // not moved yet
    let (mut monitor, _) = proc.swept();
    // Both exec. Only the process without a container has its cgroup read again (the
    // other file changes only to show that it is not read).
    proc.process(4242, "curl", b"curl\0");
    proc.process(4243, "app", b"app\0");
    fs::write(dir(4242).join("cgroup"), scope('b')).expect("cgroup");
    fs::write(dir(4243).join("cgroup"), scope('c')).expect("cgroup");
    let mut out = Vec::new();
    monitor.sweep(2, &mut out);
    let containers: HashMap<u32, Option<String>> = out
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) if p.phase == ProcessPhase::Exec => {
                Some((p.pid, p.container_id.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(containers.get(&4242), Some(&Some(id('a'))), "{out:?}");
    assert_eq!(containers.get(&4243), Some(&Some(id('c'))), "{out:?}");
}

#[test]
fn a_process_read_mid_exec_goes_out_once_its_arguments_are_set() {
    let proc = FakeProc::new();
    proc.process(4242, "setpriv", b"setpriv\0bash\0");
    let (mut monitor, mut out) = proc.swept();
    assert_eq!(
        argv_of(&out),
        vec![(
            ProcessPhase::Start,
            vec![b"setpriv".to_vec(), b"bash".to_vec()]
        )]
    );
    // The exec has set the new comm, not yet the new arguments: nothing goes out...
    out.clear();
    proc.process(4242, "bash", b"");
    monitor.sweep(2, &mut out);
    monitor.release_held(&mut out);
    assert!(argv_of(&out).is_empty(), "{out:?}");
    // ...until they are readable, then one EXEC with them.
    proc.process(4242, "bash", b"bash\0-c\0true\0");
    monitor.release_held(&mut out);
    assert_eq!(
        argv_of(&out),
        vec![(
            ProcessPhase::Exec,
            vec![b"bash".to_vec(), b"-c".to_vec(), b"true".to_vec()]
        )]
    );
    monitor.release_held(&mut out);
    assert_eq!(argv_of(&out).len(), 1, "released once");
}

/// A fork read before it exec'd the same binary (same name, same executable): the
/// cleared fork flag is the exec, reported with the new arguments.
#[test]
fn an_exec_that_keeps_the_name_is_found_by_the_fork_flag() {
    let proc = FakeProc::new();
    proc.fork(4242, "sh", b"sh\0-c\0echo a; sh -c 'sleep 1'; true\0");
    let (mut monitor, mut out) = proc.swept();
    out.clear();
    monitor.sweep(2, &mut out);
    assert!(argv_of(&out).is_empty(), "no change, no record: {out:?}");
    proc.process(4242, "sh", b"sh\0-c\0sleep 1\0");
    monitor.sweep(3, &mut out);
    assert_eq!(
        argv_of(&out),
        vec![(
            ProcessPhase::Exec,
            vec![b"sh".to_vec(), b"-c".to_vec(), b"sleep 1".to_vec()]
        )]
    );
    assert_eq!(monitor.stats().execs, 1);
}

/// After an exec wake-up, a known process that exec'd is found on the next tick,
/// though it is neither young nor due for a sweep.
#[test]
fn an_exec_wake_up_finds_which_known_process_exec_d() {
    let proc = FakeProc::new();
    proc.process(4242, "bash", b"bash\0shim\0");
    let (mut monitor, mut out) = proc.swept();
    monitor.young.clear(); // as if it had started long ago
    monitor.config.sweep_interval = Duration::from_secs(3600);
    out.clear();
    proc.process(4242, "python3", b"python3\0app.py\0");
    monitor.poll(2, &mut out);
    assert!(argv_of(&out).is_empty(), "not looked for without a wake-up");
    monitor.exec_woken();
    monitor.poll(3, &mut out);
    assert_eq!(
        argv_of(&out),
        vec![(
            ProcessPhase::Exec,
            vec![b"python3".to_vec(), b"app.py".to_vec()]
        )]
    );
    assert_eq!(monitor.stats().execs_found_by_check, 1);
}

#[test]
fn a_held_record_goes_out_before_the_exit_and_an_empty_command_line_after_the_wait() {
    let proc = FakeProc::new();
    proc.process(4242, "bash", b"");
    let (mut monitor, mut out) = proc.swept();
    assert!(argv_of(&out).is_empty());
    // Gone before its arguments were readable: its START, then its EXIT.
    fs::remove_dir_all(proc.root.path().join("4242")).expect("remove");
    monitor.sweep(2, &mut out);
    let phases: Vec<ProcessPhase> = argv_of(&out).into_iter().map(|(p, _)| p).collect();
    assert_eq!(phases, vec![ProcessPhase::Start, ProcessPhase::Exit]);
    // A process whose command line stays empty goes out after the wait, as read.
    out.clear();
    proc.process(4343, "daemon", b"");
    monitor.sweep(3, &mut out);
    assert!(argv_of(&out).is_empty());
    std::thread::sleep(ARGV_WAIT);
    monitor.release_held(&mut out);
    assert_eq!(argv_of(&out), vec![(ProcessPhase::Start, Vec::new())]);
    assert_eq!(monitor.stats().argv_unsettled, 1);
}
