//! Files that must survive a crash or a power cut: the collector's spool and the
//! aggregator's rule state. A file is written under a temporary name, synced, renamed over
//! its real name, and its directory synced so that the rename itself is on disk: after a
//! crash the real name holds the old copy or the new one, whole. What a crash can still
//! leave behind (a temporary file, a file a broken disk tore) is found at start: temporary
//! files are swept, a file that does not parse is renamed aside for a human to look at.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The extension of a file being written; a file so named at start is a crash's leftover.
pub const TEMP_EXTENSION: &str = "tmp";

/// Writes `bytes` to `path` atomically and durably (see the module doc).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(TEMP_EXTENSION);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// Makes the entries of `dir` (a rename, a removal) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes the temporary files a crash left in `dir`; returns how many.
pub fn sweep_temp_files(dir: &Path) -> io::Result<usize> {
    let mut swept = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == TEMP_EXTENSION) && path.is_file() {
            fs::remove_file(&path)?;
            swept += 1;
        }
    }
    if swept > 0 {
        sync_dir(dir)?;
    }
    Ok(swept)
}

/// Renames a damaged file aside (`<name>.corrupt-<unix seconds>`) so a fresh one can take
/// its place while the damaged bytes stay for inspection; returns the new path.
pub fn quarantine(path: &Path) -> io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    let aside = path.with_file_name(name);
    fs::rename(path, &aside)?;
    sync_dir(parent_of(path))?;
    Ok(aside)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_and_leftovers_are_swept_or_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(!path.with_extension(TEMP_EXTENSION).exists());

        fs::write(dir.path().join("a.tmp"), b"torn").expect("leftover");
        fs::write(dir.path().join("b.tmp"), b"").expect("leftover");
        assert_eq!(sweep_temp_files(dir.path()).expect("sweep"), 2);
        assert_eq!(sweep_temp_files(dir.path()).expect("sweep"), 0);

        let aside = quarantine(&path).expect("quarantine");
        assert!(!path.exists());
        assert_eq!(fs::read(&aside).expect("kept"), b"two");
        assert!(aside
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("state.json.corrupt-")));
    }
}
