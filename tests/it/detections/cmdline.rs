//! Without exe access (the collector as another uid), a runner that deletes its binary
//! and a binary started under another name show only what they chose: comm and argv. The
//! command lines that started them are world-readable and tell; an exec of a path and an
//! exec without a new name do not fire.

use std::process::{Command, Stdio};

use super::{alerts, family, fired_on, observe, scratch_dir, PY};
use crate::util::{Kids, UNPRIVILEGED};

#[test]
fn a_runner_executing_a_descriptor_and_a_forged_argv0_fire_without_exe_access() {
    let dir = scratch_dir();
    let d = dir.path().display();
    let xmrig = dir.path().join("xmrig");
    crate::util::copy_executable("/usr/bin/sleep", &xmrig);
    let runner = format!(
        "import os,shutil\nshutil.copy('/usr/bin/sleep','{d}/x')\nfd=os.open('{d}/x',os.O_RDONLY)\nos.unlink('{d}/x')\nos.execve(fd,['x','2'],{{}})"
    );
    let python = |code: &str| {
        Command::new(PY)
            .args(["-c", code])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3")
    };
    // `; true`: the shell waits for bash instead of exec'ing it, as a script would.
    let shell = |script: String| {
        Command::new("sh")
            .args(["-c", &format!("{script}; true")])
            .spawn()
            .expect("sh")
    };
    let (records, kids) = observe(&UNPRIVILEGED, || {
        Kids(vec![
            python(&runner),
            shell(format!("bash -c 'exec -a awk {} 2'", xmrig.display())),
            python("import os; os.execv('/usr/bin/sleep', ['sleep', '2'])"),
            shell(format!("bash -c 'exec {} 2'", xmrig.display())),
        ])
    });
    let denied = records.iter().any(|r| {
        matches!(r, procflow::model::Record::Process(p) if p.pid == kids.0[0].id()
            && p.exe_unavailable == procflow::model::Unavailable::PermissionDenied)
    });
    assert!(denied, "the collector could read the runner's exe");
    let all = alerts(&records);
    for (i, rule) in [(0, "PF-EXEC-FD-CMDLINE"), (1, "PF-ARGV0-FORGED")] {
        let attack = family(&[kids.0[i].id()], &records);
        assert!(fired_on(&all, rule, &attack), "{rule}: {all:?}");
    }
    for (i, what) in [(2, "an exec of a path"), (3, "an exec keeping its name")] {
        let benign = family(&[kids.0[i].id()], &records);
        assert!(
            !fired_on(&all, "PF-EXEC-FD-CMDLINE", &benign)
                && !fired_on(&all, "PF-ARGV0-FORGED", &benign),
            "{what}: {all:?}"
        );
    }
}
