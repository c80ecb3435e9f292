//! Wake-ups on exec. Without privileges the kernel sends no exec event into a pod, so the
//! process poll runs on a timer; but every exec opens its binary and, when dynamic, the
//! loader, and an inotify `IN_OPEN` watch on those fires at once (no pid, no privilege).
//! The engine sleeps on these watches instead of a plain timer, so a process that lives a
//! few milliseconds is read while it still runs. Watched: the loaders and the executable
//! directories of the collector's own root and, where `/proc/<pid>/root` is readable (same
//! uid or SYS_PTRACE), of each other container in the pod.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::inotify::OpenWatch;

/// Where dynamic loaders live across distributions.
const LOADER_DIRS: [&str; 8] = [
    "lib64",
    "lib",
    "usr/lib64",
    "usr/lib",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
];

/// The dynamic loaders' file names (glibc and musl, x86_64, arm64, i386).
const LOADER_NAMES: [&str; 5] = [
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux.so.2",
    "ld-musl-x86_64.so.1",
    "ld-musl-aarch64.so.1",
];

/// Directories whose files are opened almost only to be executed (static binaries too).
const EXEC_DIRS: [&str; 6] = [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
];

pub struct ExecWatch {
    watch: OpenWatch,
    /// (device, inode) of the root directories already watched.
    roots: HashSet<(u64, u64)>,
}

impl ExecWatch {
    /// Watches the collector's own root. Fails only when inotify itself is unavailable.
    pub fn new() -> io::Result<Self> {
        let mut watch = ExecWatch {
            watch: OpenWatch::new()?,
            roots: HashSet::new(),
        };
        watch.add_root(Path::new("/"));
        Ok(watch)
    }

    /// Adds the loaders and executable directories under `root` (e.g. `/proc/<pid>/root`
    /// of another container). Returns how many watches were added; an unreadable root adds
    /// none.
    pub fn add_root(&mut self, root: &Path) -> usize {
        let Ok(meta) = std::fs::metadata(root) else {
            return 0;
        };
        if !self.roots.insert((meta.dev(), meta.ino())) {
            return 0;
        }
        let mut added = 0;
        for path in candidates(root) {
            match self.watch.add(&path) {
                Ok(true) => added += 1,
                Ok(false) => {}
                // Missing in this image, or unreadable: nothing to watch there.
                Err(error) => tracing::debug!(path = %path.display(), %error, "no exec watch"),
            }
        }
        tracing::debug!(root = %root.display(), added, "exec watches");
        added
    }

    pub fn len(&self) -> usize {
        self.watch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watch.is_empty()
    }

    /// Sleeps up to `timeout`; true when woken early by an exec.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.watch.wait(timeout) {
            Ok(woken) => woken,
            Err(error) => {
                tracing::warn!(%error, "exec watch wait failed; sleeping instead");
                std::thread::sleep(timeout);
                false
            }
        }
    }
}

/// The loaders and executable directories that exist under `root`. Loaders are probed by
/// their known names: listing the library directories (thousands of entries) would put that
/// on the start-up path and on every new container root.
fn candidates(root: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = LOADER_DIRS
        .iter()
        .flat_map(|dir| {
            LOADER_NAMES
                .iter()
                .map(move |name| root.join(dir).join(name))
        })
        .filter(|path| path.exists())
        .collect();
    paths.extend(EXEC_DIRS.iter().map(|d| root.join(d)));
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_wakes_the_engine() {
        let watch = ExecWatch::new().expect("inotify");
        assert!(!watch.is_empty(), "this host has a loader or /usr/bin");
        // Drain wake-ups from whatever else runs on the machine, then exec something.
        while watch.wait(Duration::from_millis(1)) {}
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("true");
        assert!(watch.wait(Duration::from_secs(5)));
        child.wait().expect("wait");
    }

    #[test]
    fn this_hosts_loader_is_found_by_name() {
        let found = candidates(Path::new("/"));
        assert!(
            found.iter().any(|p| p
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"ld-"))),
            "{found:?}"
        );
    }

    #[test]
    fn a_root_is_watched_once() {
        let mut watch = ExecWatch::new().expect("inotify");
        let before = watch.len();
        assert_eq!(watch.add_root(Path::new("/proc/self/root")), 0);
        assert_eq!(watch.len(), before);
    }
}
