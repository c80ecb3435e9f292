//! A command started through a link beside its executable keeps the link's name as comm:
//! the system's own links (`hd` → `hexdump`, `zstdcat` → `zstd` in /usr/bin, root's, in a
//! directory only root writes) are consistent; a user's link to a system tool under a
//! false name, and a link beside a payload in a writable directory, are masquerades.

use std::collections::HashSet;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::process::Command;

use super::{alerts, family, fired_on, observe, scratch_dir, sh};
use crate::util::Kids;

#[test]
fn the_systems_links_are_consistent_and_a_users_link_is_a_masquerade() {
    let dir = scratch_dir();
    // Writable by anyone, as a user's directory or /tmp is to its owner.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    symlink("/usr/bin/sleep", dir.path().join("nginx")).expect("link");
    crate::util::copy_executable("/usr/bin/sleep", &dir.path().join("miner"));
    symlink("miner", dir.path().join("sshd")).expect("link");
    let (records, kids) = observe(&[], || {
        Kids(vec![
            sh("sleep 2 | hd >/dev/null"),
            sh("sleep 2 | zstdcat >/dev/null 2>&1"),
            Command::new(dir.path().join("nginx"))
                .arg("2")
                .spawn()
                .expect("nginx"),
            Command::new(dir.path().join("sshd"))
                .arg("2")
                .spawn()
                .expect("sshd"),
        ])
    });
    let all = alerts(&records);
    for (i, comm, exe) in [
        (0, "hd", "/usr/bin/hexdump"),
        (1, "zstdcat", "/usr/bin/zstd"),
    ] {
        let benign = family(&[kids.0[i].id()], &records);
        let seen = records.iter().any(|r| {
            matches!(r, procflow::model::Record::Process(p) if benign.contains(&p.pid)
                && p.comm == comm.as_bytes() && p.exe.as_deref() == Some(exe.as_bytes()))
        });
        assert!(seen, "{comm} running {exe} was not seen");
        assert!(!fired_on(&all, "PF-MASQUERADE", &benign), "{comm}: {all:?}");
    }
    for (i, what) in [
        (2, "a user's link to sleep"),
        (3, "a link beside a payload"),
    ] {
        let attack = HashSet::from([kids.0[i].id()]);
        assert!(fired_on(&all, "PF-MASQUERADE", &attack), "{what}: {all:?}");
    }
}
