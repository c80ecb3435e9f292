//! Reading /proc without a path walk per file: a process's fd table by `readlinkat`
//! relative to its open `/proc/<pid>/fd` (an attribution pass reads every fd of the pod, so
//! this is its whole cost), and a process's details relative to its open `/proc/<pid>`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where pid `n` sits in a listing of the proc root: `proc_pid_readdir` numbers its entries
/// `TGID_OFFSET + tgid` (`FIRST_PROCESS_ENTRY` + 2), the same since Linux 2.6.
const TGID_OFFSET: i64 = 258;

/// Opens a directory for listing or `*at` calls (close-on-exec).
fn open_dir(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid NUL-terminated string; a negative result is handled below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The process ids (thread-group leaders) listed in the proc root `proc_root` from `first`
/// on: the listing is started at `first`'s position, so its cost is the processes from
/// there, not every process. Only for a procfs root that [`pid_seek_works`] checked.
pub fn pids_from(proc_root: &Path, first: u32) -> io::Result<Vec<u32>> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let fd = open_dir(proc_root)?;
    // SAFETY: `fd` is open; a seek of a directory only sets where its listing resumes.
    if unsafe {
        libc::lseek(
            fd.as_raw_fd(),
            TGID_OFFSET + i64::from(first),
            libc::SEEK_SET,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let fd = fd.into_raw_fd();
    // SAFETY: `fd` is an open directory; on success the DIR* owns it.
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        let error = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close, once.
        unsafe { libc::close(fd) };
        return Err(error);
    }
    let mut pids = Vec::new();
    loop {
        // SAFETY: `dir` is open; the entry is only used before the next readdir.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: `d_name` of a live dirent is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(pid) = std::str::from_utf8(name.to_bytes())
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
        {
            pids.push(pid);
        }
    }
    // SAFETY: `dir` came from fdopendir and is closed exactly once.
    unsafe { libc::closedir(dir) };
    Ok(pids)
}

/// Whether [`pids_from`] lists `proc_root` from a pid on: it is a procfs whose listing
/// numbers pids as expected — a listing started at a live process's position begins with
/// that process, and has none before it. Checked against a whole listing, a few times (a
/// process may exit in between).
pub fn pid_seek_works(proc_root: &Path) -> bool {
    const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;
    let Ok(path) = CString::new(proc_root.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid value for statfs to overwrite.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `fs` writable.
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0
        || fs.f_type as libc::c_long != PROC_SUPER_MAGIC
    {
        return false;
    }
    (0..3).any(|_| {
        let Ok(mut all) = pids_from(proc_root, 0) else {
            return false;
        };
        all.sort_unstable();
        let Some(&middle) = all.get(all.len() / 2) else {
            return false;
        };
        pids_from(proc_root, middle)
            .is_ok_and(|from| from.first() == Some(&middle) && from.iter().all(|&p| p >= middle))
    })
}

/// Calls `each` with the link target of every fd in `fd_dir` (`/proc/<pid>/fd`) and returns
/// how many fds there were. Fds closed during the walk are skipped.
///
/// On Linux ≥ 6.2 the directory's `st_size` is the open-fd count, and the fds are probed by
/// number from 0 until that many answered: tables are dense (the kernel hands out the
/// lowest free fd), and listing the directory costs more than a third of the walk (the
/// kernel looks up every fd once for the listing and again for each readlink). A sparse
/// table, or one that shrank meanwhile, exhausts the probe budget and is listed from the
/// first fd not yet probed, so no fd is reported twice.
pub fn for_each_fd_link(fd_dir: &Path, each: impl FnMut(&[u8])) -> io::Result<u64> {
    FdDir::open(fd_dir)?.finish(0, 0, each)
}

/// An open `/proc/<pid>/fd`, walked as [`for_each_fd_link`] walks it, but in parts: several
/// threads can probe disjoint ranges of fd numbers of one large table at once
/// ([`FdDir::probe`]), and [`FdDir::finish`] then reads whatever the ranges left.
#[derive(Debug)]
pub struct FdDir {
    dir: std::os::fd::OwnedFd,
    open_fds: u64,
}

impl FdDir {
    pub fn open(fd_dir: &Path) -> io::Result<FdDir> {
        use std::os::fd::AsRawFd;
        let dir = open_dir(fd_dir)?;
        let open_fds = fd_dir_size(dir.as_raw_fd());
        Ok(FdDir { dir, open_fds })
    }

    /// The open-fd count when the directory was opened (0 before Linux 6.2, which does not
    /// say).
    pub fn open_fds(&self) -> u64 {
        self.open_fds
    }

    /// Probes the fd numbers of `range`, calling `each` with every open fd's link target;
    /// how many answered.
    pub fn probe(&self, range: std::ops::Range<u64>, mut each: impl FnMut(&[u8])) -> u64 {
        use std::os::fd::AsRawFd;
        let mut target = [0u8; 64];
        let mut name = [0u8; 24];
        let mut answered = 0;
        for fd in range {
            let fd_name = decimal_c_str(fd, &mut name);
            if let Ok(len @ 1..) = read_link_at(self.dir.as_raw_fd(), fd_name, &mut target) {
                answered += 1;
                each(&target[..len]);
            }
        }
        answered
    }

    /// Completes a walk whose fds below `probed_below` were probed already, `count` of them
    /// open: probes on while the table may still hold fds above (the budget bounds the
    /// waste on a sparse table), then lists the directory for fds not probed. Returns the
    /// table's fd count.
    pub fn finish(
        &self,
        mut probed_below: u64,
        mut count: u64,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<u64> {
        use std::os::fd::{AsRawFd, IntoRawFd};
        // "socket:[18446744073709551615]" is 29 bytes; longer targets are not sockets.
        let mut target = [0u8; 64];
        let open_fds = self.open_fds;
        let dir_fd = self.dir.as_raw_fd();
        if open_fds > 0 {
            // A failed probe costs about what a listed entry does: a small slack bounds the
            // waste on a sparse table, and a dense one needs none.
            let budget = open_fds + open_fds / 8 + 8;
            let mut name = [0u8; 24];
            while count < open_fds && probed_below < budget {
                let fd_name = decimal_c_str(probed_below, &mut name);
                probed_below += 1;
                if let Ok(len @ 1..) = read_link_at(dir_fd, fd_name, &mut target) {
                    count += 1;
                    each(&target[..len]);
                }
            }
            if count >= open_fds {
                return Ok(count);
            }
        }
        // The listing takes a descriptor of its own (closedir closes it); `self` keeps its.
        let listed = self.dir.try_clone()?.into_raw_fd();
        // SAFETY: `listed` is an open directory; on success the DIR* owns it (closedir
        // closes it).
        let dir = unsafe { libc::fdopendir(listed) };
        if dir.is_null() {
            let error = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `listed` is still ours to close, once.
            unsafe { libc::close(listed) };
            return Err(error);
        }
        loop {
            // SAFETY: `dir` is open; the entry pointer is only used before the next readdir.
            let entry = unsafe { libc::readdir(dir) };
            if entry.is_null() {
                break;
            }
            // SAFETY: `d_name` of a live dirent is a NUL-terminated string.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let Some(fd) = std::str::from_utf8(name.to_bytes())
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue; // "." and ".."
            };
            if fd < probed_below {
                continue; // probed above: reported already if it was open
            }
            count += 1;
            if let Ok(len @ 1..) = read_link_at(dir_fd, name, &mut target) {
                each(&target[..len]);
            }
        }
        // SAFETY: `dir` was returned by fdopendir and is closed exactly once.
        unsafe { libc::closedir(dir) };
        Ok(count)
    }
}

/// `n` in decimal as a C string, in `buf` (20 digits and the NUL fit in 24 bytes).
fn decimal_c_str(mut n: u64, buf: &mut [u8; 24]) -> &CStr {
    let mut at = buf.len() - 1;
    buf[at] = 0;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    CStr::from_bytes_with_nul(&buf[at..]).unwrap_or_default()
}

/// `st_size` of an open `/proc/<pid>/fd`: the open-fd count on Linux ≥ 6.2, 0 before.
fn fd_dir_size(dir_fd: libc::c_int) -> u64 {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir_fd` is open and `st` is writable.
    if unsafe { libc::fstat(dir_fd, &mut st) } != 0 {
        return 0;
    }
    u64::try_from(st.st_size).unwrap_or(0)
}

/// An open `/proc/<pid>` directory. Its files are opened relative to it: no walk through
/// `/proc/<pid>` per file (each walk revalidates the pid's dentry, most of a small read's
/// cost), and every read is of the same process: once it exits, a reused pid cannot answer
/// in its place.
pub struct PidDir(std::os::fd::OwnedFd);

impl PidDir {
    pub fn open(proc_root: &Path, pid: u32) -> io::Result<PidDir> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(proc_root.join(pid.to_string()))?;
        Ok(PidDir(dir.into()))
    }

    /// Reads the file `name` (at most `limit` bytes) into `buf`.
    pub fn read(&self, name: &CStr, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
        use std::io::Read;
        let file = self.open_file(name)?;
        buf.clear();
        file.take(limit as u64).read_to_end(buf)?;
        Ok(())
    }

    /// Opens the file `name` for reading (a caller that streams a large file, such as
    /// `net/tcp`, keeps no buffer of its size).
    pub fn open_file(&self, name: &CStr) -> io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: the directory fd is open for as long as `self`, and `name` is NUL-terminated.
        let fd = unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it; the File closes it.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// The protocol of the socket an fd link (`fd/0`) points to, as sockfs names it in the
    /// `system.sockprotoname` attribute (`TCP`, `UDPv6`, `UNIX-STREAM`, `NETLINK`…), into
    /// `buf`; the name's length. Needs the access `read_link` needs. Reached through this
    /// process's own fd of the directory, so a reused pid cannot answer.
    pub fn socket_protocol<'b>(&self, name: &CStr, buf: &'b mut [u8; 32]) -> io::Result<&'b [u8]> {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}/", self.0.as_raw_fd());
        let mut path = path.into_bytes();
        path.extend_from_slice(name.to_bytes_with_nul());
        let path = CStr::from_bytes_with_nul(&path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both names are NUL-terminated, and the buffer and its length describe
        // writable memory we own; a negative result is handled below.
        let len = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"system.sockprotoname".as_ptr(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
        let name = &buf[..len.min(buf.len())];
        // The kernel counts the name's NUL.
        Ok(name.strip_suffix(b"\0").unwrap_or(name))
    }

    /// The target of the link `name` (`exe`, `cwd`, `fd/0`), up to PATH_MAX bytes, read
    /// into a buffer on the stack: only the caller's copy allocates.
    pub fn read_link<T>(&self, name: &CStr, with: impl FnOnce(&[u8]) -> T) -> io::Result<T> {
        use std::os::fd::AsRawFd;
        let mut target = [0u8; libc::PATH_MAX as usize];
        let len = read_link_at(self.0.as_raw_fd(), name, &mut target)?;
        Ok(with(&target[..len]))
    }
}

/// `readlinkat(dir_fd, name)` into `target`; the length read (a longer target is cut).
fn read_link_at(dir_fd: libc::c_int, name: &CStr, target: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the caller holds `dir_fd` open, `name` is NUL-terminated, and the buffer and
    // its length describe writable memory we own.
    let len = unsafe {
        libc::readlinkat(
            dir_fd,
            name.as_ptr(),
            target.as_mut_ptr().cast::<libc::c_char>(),
            target.len(),
        )
    };
    usize::try_from(len).map_err(|_| io::Error::last_os_error())
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

    /// A listing from a pid on starts there: the process of that pid is in it, nothing
    /// before it is; a directory that is not /proc is never listed so.
    #[test]
    fn proc_is_listed_from_a_pid_on() {
        assert!(pid_seek_works(Path::new("/proc")));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let from = pids_from(Path::new("/proc"), pid).expect("list");
        let after = pids_from(Path::new("/proc"), pid + 1).expect("list");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(from.first(), Some(&pid), "{from:?}");
        assert!(from.iter().all(|&p| p >= pid), "{from:?}");
        assert!(!after.contains(&pid), "{after:?}");
        let not_proc = tempfile::tempdir().expect("tempdir");
        for n in [1, 2, 300] {
            std::fs::create_dir(not_proc.path().join(n.to_string())).expect("dir");
        }
        assert!(!pid_seek_works(not_proc.path()));
    }

    /// Files and links read relative to an open /proc/<pid>; once the process has exited
    /// and been reaped, the open directory answers nothing (a reused pid cannot answer).
    #[test]
    fn pid_dir_reads_one_process_and_nothing_after_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let dir = PidDir::open(Path::new("/proc"), pid).expect("open");
        let mut buf = Vec::new();
        dir.read(c"stat", &mut buf, 4096).expect("stat");
        assert!(buf.starts_with(format!("{pid} (sleep)").as_bytes()));
        // Right after the exec the arguments may not be set yet (the record is held then).
        for _ in 0..200 {
            dir.read(c"cmdline", &mut buf, 4096).expect("cmdline");
            if !buf.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(buf, b"sleep\x0030\x00");
        let exe = dir.read_link(c"exe", <[u8]>::to_vec).expect("exe");
        assert!(
            exe.ends_with(b"/sleep"),
            "{}",
            String::from_utf8_lossy(&exe)
        );
        assert!(dir.read_link(c"fd/0", |_| ()).is_ok());
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(
            dir.read(c"stat", &mut buf, 4096).is_err(),
            "read after exit"
        );
        assert!(dir.read_link(c"exe", |_| ()).is_err(), "link after exit");
    }

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

    /// Every fd once, whether the table is dense (probed by number) or sparse (a probe
    /// budget spent, the rest listed): compared with the directory's own listing.
    #[test]
    fn walks_dense_and_sparse_tables_reporting_each_fd_once() {
        for top_fd in [None, Some(5000)] {
            let (mut holder, _) = crate::socket_holder::SocketHolder::start(300);
            if let Some(fd) = top_fd {
                holder.dup_to(fd);
            }
            let dir = std::path::PathBuf::from(format!("/proc/{}/fd", holder.pid()));
            let mut listed: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .expect("list")
                .map(|e| {
                    std::fs::read_link(e.expect("entry").path())
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes()
                })
                .collect();
            let mut walked = Vec::new();
            let count = for_each_fd_link(&dir, |l| walked.push(l.to_vec())).expect("walk");
            // The same table in parts, as several threads walk one large table: ranges of
            // fd numbers up to the open count, then what they left.
            let parts = FdDir::open(&dir).expect("open");
            let mut in_parts = Vec::new();
            let mut answered = 0;
            let mut from = 0;
            while from < parts.open_fds() {
                let to = (from + 97).min(parts.open_fds());
                answered += parts.probe(from..to, |l| in_parts.push(l.to_vec()));
                from = to;
            }
            let parts_count = parts
                .finish(from, answered, |l| in_parts.push(l.to_vec()))
                .expect("finish");
            drop(holder);
            listed.sort();
            walked.sort();
            in_parts.sort();
            assert_eq!(count as usize, listed.len(), "{top_fd:?}");
            assert_eq!(walked, listed, "{top_fd:?}");
            assert_eq!(parts_count, count, "{top_fd:?}");
            assert_eq!(in_parts, listed, "{top_fd:?}");
            assert!(count > 300, "{count}");
        }
    }

    #[test]
    fn fd_numbers_are_spelled_in_decimal() {
        let mut buf = [0u8; 24];
        assert_eq!(decimal_c_str(0, &mut buf), c"0");
        assert_eq!(decimal_c_str(1907, &mut buf), c"1907");
        assert_eq!(decimal_c_str(10, &mut buf), c"10");
        assert_eq!(decimal_c_str(u64::MAX, &mut buf), c"18446744073709551615");
    }
}
