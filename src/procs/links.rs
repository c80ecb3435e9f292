//! Whether the name a command was started under is a link to the file it runs, in that
//! file's own directory: `gmake → make`, `pkill → pgrep`, `lastb → last`, Debian's
//! alternatives (`awk → /etc/alternatives/awk → mawk`). Such a process's comm differs from
//! its executable's name truthfully, and PF-MASQUERADE must not call it a masquerade.
//!
//! What keeps a masquerade from passing as a link (a user's `~/bin/sshd → /usr/bin/nc`,
//! or a link beside a payload): the first link sits in the executable's own directory, and
//! every link on the way, and the directory holding it, belongs to root and is writable by
//! root alone — a process without root cannot make one. Seen from the process's own root
//! (`/proc/PID/root`, which needs the access reading its exe needs). A link whose target
//! crosses a symlinked directory is not followed (it answers false: the alert stands).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Links followed from the name to the executable (alternatives take two).
const HOPS: usize = 4;

/// Whether `name` (a bare command name) is, in the directory of `exe` (an absolute path as
/// the kernel shows it, not deleted), a root-owned link that leads to `exe` through
/// root-owned links only. `root` is the process's root directory (`/proc/PID/root`).
pub(crate) fn names_link_to(root: &Path, exe: &[u8], name: &[u8]) -> bool {
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return false;
    }
    let Some(dir) = exe.iter().rposition(|&b| b == b'/').map(|at| &exe[..at]) else {
        return false;
    };
    let mut path = [dir, b"/", name].concat();
    for hop in 0..=HOPS {
        let Some(rel) = path.strip_prefix(b"/") else {
            return false;
        };
        let full = root.join(OsStr::from_bytes(rel));
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            return false;
        };
        if !meta.file_type().is_symlink() {
            return hop > 0 && path == exe;
        }
        if hop == HOPS || meta.uid() != 0 || !root_only(full.parent()) {
            return false;
        }
        let Ok(target) = std::fs::read_link(&full) else {
            return false;
        };
        let target = target.as_os_str().as_bytes();
        path = if target.starts_with(b"/") {
            target.to_vec()
        } else {
            let here = path
                .iter()
                .rposition(|&b| b == b'/')
                .map_or(&path[..0], |at| &path[..at]);
            [here, b"/", target].concat()
        };
        match normalize(&path) {
            Some(clean) => path = clean,
            None => return false,
        }
    }
    false
}

/// A directory owned by root that only root may write to (not a sticky scratch directory).
fn root_only(dir: Option<&Path>) -> bool {
    dir.and_then(|d| std::fs::symlink_metadata(d).ok())
        .is_some_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// `path` with `.` and `..` resolved by name (`None` when `..` climbs above `/`).
fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    #[test]
    fn names_resolve_by_name() {
        assert_eq!(
            normalize(b"/usr/bin/./../bin/make").as_deref(),
            Some(&b"/usr/bin/make"[..])
        );
        assert_eq!(normalize(b"/../x"), None);
    }

    /// A root-owned tree standing for a process's root: `usr/bin/make`, its link `gmake`,
    /// an alternatives chain, a link into a writable directory, and a payload's link.
    #[test]
    fn root_owned_links_in_the_executables_directory_are_its_names() {
        let root = tempfile::tempdir().expect("root");
        let r = root.path();
        std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for d in ["usr/bin", "etc/alternatives", "home/app/bin"] {
            std::fs::create_dir_all(r.join(d)).expect("dir");
        }
        std::fs::write(r.join("usr/bin/make"), b"").expect("make");
        std::fs::write(r.join("usr/bin/mawk"), b"").expect("mawk");
        std::fs::write(r.join("home/app/bin/miner"), b"").expect("miner");
        symlink("make", r.join("usr/bin/gmake")).expect("link");
        symlink("/etc/alternatives/awk", r.join("usr/bin/awk")).expect("link");
        symlink("/usr/bin/mawk", r.join("etc/alternatives/awk")).expect("link");
        symlink("miner", r.join("home/app/bin/nginx")).expect("link");
        // Everything here is the test's (root's, where the tests run as root); a writable
        // directory is what a user controls.
        std::fs::set_permissions(
            r.join("home/app/bin"),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod");
        let as_root = nix_uid_is_root();
        assert_eq!(names_link_to(r, b"/usr/bin/make", b"gmake"), as_root);
        assert_eq!(names_link_to(r, b"/usr/bin/mawk", b"awk"), as_root);
        assert!(!names_link_to(r, b"/usr/bin/make", b"make"), "not a link");
        assert!(
            !names_link_to(r, b"/usr/bin/mawk", b"gmake"),
            "a link elsewhere"
        );
        assert!(
            !names_link_to(r, b"/home/app/bin/miner", b"nginx"),
            "a writable directory"
        );
        assert!(!names_link_to(r, b"/usr/bin/make", b"../bin/gmake"));
    }

    fn nix_uid_is_root() -> bool {
        std::fs::symlink_metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
