//! One package manager run is one incident: apt-get and the dpkg runs it starts (and
//! theirs) give one PF-PACKAGE-MANAGER alert with their count; another apt-get run, and a
//! dpkg run on its own, are incidents of their own.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use super::{alerts, family, observe, scratch_dir};
use crate::util::Kids;

#[test]
fn one_apt_get_and_its_dpkg_children_are_one_alert_and_another_run_another() {
    let dir = scratch_dir();
    // Written under another name and copied through cp: no thread of this test process
    // holds the executed file's writable fd (ETXTBSY; see util::copy_executable).
    let tool = |name: &str, body: String| {
        let src = dir.path().join(format!("{name}.src"));
        std::fs::write(&src, format!("#!/bin/sh\n{body}")).expect("script");
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join(name);
        crate::util::copy_executable(src.to_str().expect("utf-8"), &path);
        path
    };
    // Shaped as apt-get runs them: dpkg queries, then an unpack and a configure per
    // package, each a child of apt-get; an unpack runs a maintainer script that calls
    // dpkg again (a grandchild under another name).
    let postinst = tool(
        "pkg.postinst",
        format!(
            "{}/dpkg --compare-versions 1 lt 2\nsleep 0.1\n",
            dir.path().display()
        ),
    );
    let dpkg = tool(
        "dpkg",
        format!(
            "case \"$1\" in --unpack) {} configure;; esac\nsleep 0.15\n",
            postinst.display()
        ),
    );
    let apt_get = tool(
        "apt-get",
        format!(
            "d={}\n$d --print-foreign-architectures\n$d --print-foreign-architectures\nfor p in a b c; do $d --unpack $p.deb; $d --configure $p; done\n$d --configure --pending\n",
            dpkg.display()
        ),
    );
    let run = |exe: &std::path::Path, args: &[&str]| {
        Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tool")
    };
    let (records, kids) = observe(&[], || {
        Kids(vec![
            run(&apt_get, &["install", "--reinstall", "-y", "less", "bash"]),
            run(&apt_get, &["install", "-y", "curl"]),
            run(&dpkg, &["-l"]),
        ])
    });
    let all = alerts(&records);
    let count_in = |pids: &std::collections::HashSet<u32>| {
        all.iter()
            .filter(|(r, p, _)| r == "PF-PACKAGE-MANAGER" && p.is_some_and(|p| pids.contains(&p)))
            .count()
    };
    for (i, what) in [
        (0, "the first apt-get"),
        (1, "the second apt-get"),
        (2, "a dpkg run alone"),
    ] {
        let tree = family(&[kids.0[i].id()], &records);
        let dpkgs = records
            .iter()
            .filter(|r| matches!(r, procflow::model::Record::Process(p) if tree.contains(&p.pid) && p.comm == b"dpkg"))
            .count();
        assert!(i == 2 || dpkgs >= 8, "{what}: only {dpkgs} dpkg records");
        assert_eq!(count_in(&tree), 1, "{what}: one run, one alert: {all:?}");
    }
}
