//! Reading a process's fd table without a path walk per fd: `readlinkat` relative to the
//! open `/proc/<pid>/fd` directory. An attribution pass reads every fd of the pod, so this
//! is its whole cost.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Calls `each` with the link target of every fd in `fd_dir` (`/proc/<pid>/fd`) and returns
/// how many fds there were. Fds closed during the walk are skipped.
pub fn for_each_fd_link(fd_dir: &Path, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let path = CString::new(fd_dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid NUL-terminated string; a null result is handled below.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dir` is a valid, open DIR* until `closedir` at the end of this function.
    let dir_fd = unsafe { libc::dirfd(dir) };
    // "socket:[18446744073709551615]" is 29 bytes; longer targets are not sockets.
    let mut target = [0u8; 64];
    let mut count = 0u64;
    loop {
        // SAFETY: `dir` is open; the entry pointer is only used before the next readdir.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: `d_name` of a live dirent is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        count += 1;
        // SAFETY: `dir_fd` is open, `name` is NUL-terminated, and the buffer and its length
        // describe writable memory we own.
        let len = unsafe {
            libc::readlinkat(
                dir_fd,
                name.as_ptr(),
                target.as_mut_ptr().cast::<libc::c_char>(),
                target.len(),
            )
        };
        if len > 0 {
            each(&target[..len as usize]);
        }
    }
    // SAFETY: `dir` was returned by opendir and is closed exactly once.
    unsafe { libc::closedir(dir) };
    Ok(count)
}

/// Reads a small /proc file again from its start with `pread` into `buf`, returning the
/// length read: one syscall when it fits, where seek + `read_to_end` cost four (seek, size
/// probe, read, read of EOF). `buf` keeps its zeroed length between calls (no memset per
/// read) and doubles when a file outgrows it. A short read ends the file: a seq_file fills
/// the buffer while it has records.
pub fn reread(file: &std::fs::File, buf: &mut Vec<u8>) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut filled = 0;
    loop {
        let n = file.read_at(&mut buf[filled..], filled as u64)?;
        filled += n;
        if filled < buf.len() {
            return Ok(filled);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reread_returns_whole_files_again_and_again() {
        let big = std::env::temp_dir().join(format!("pf-reread-{}", std::process::id()));
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &content).expect("write");
        let mut buf = Vec::new();
        for path in [
            big.as_path(),
            Path::new("/proc/net/snmp"),
            Path::new("/proc/self/maps"),
        ] {
            let file = std::fs::File::open(path).expect("open");
            for _ in 0..2 {
                let n = reread(&file, &mut buf).expect("reread");
                if path == big.as_path() {
                    assert_eq!(&buf[..n], &content[..]);
                } else {
                    assert!(buf[..n].ends_with(b"\n") && n > 100, "{}", path.display());
                }
            }
        }
        std::fs::remove_file(&big).expect("cleanup");
    }

    #[test]
    fn reads_this_process_sockets_among_its_fds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&listener)
        ))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("fd metadata");
        let mut links = Vec::new();
        let count =
            for_each_fd_link(Path::new("/proc/self/fd"), |l| links.push(l.to_vec())).expect("walk");
        assert!(count >= 4, "stdio and the listener at least");
        let wanted = format!("socket:[{inode}]");
        assert!(links.iter().any(|l| l == wanted.as_bytes()), "{links:?}");
        let missing = for_each_fd_link(Path::new("/proc/4000000000/fd"), |_| {})
            .expect_err("no such process");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
