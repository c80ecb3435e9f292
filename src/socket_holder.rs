//! For tests: a child process that holds sockets, so that a test reads an fd table of its
//! own (the test process's table moves with the tests running beside it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A python child holding UDP sockets: `initial` at start, one more per
/// [`SocketHolder::open`]. Killed when dropped.
pub struct SocketHolder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The child's loop: "open" opens one more socket, "reopen" closes the last one and opens
/// another (the same fd, the same count), "dup N" duplicates the first one to fd N; each
/// answers with the fd it made.
const HOLDER: &str = "import os, socket, sys
held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(int(sys.argv[1]))]
print(' '.join(str(s.fileno()) for s in held), flush=True)
for line in sys.stdin:
    if line.startswith('dup '):
        fd = int(line.split()[1])
        os.dup2(held[0].fileno(), fd)
        print(fd, flush=True)
    elif line.startswith('reopen'):
        held.pop().close()
        held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        print(held[-1].fileno(), flush=True)
    else:
        held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        print(held[-1].fileno(), flush=True)
";

impl SocketHolder {
    /// Starts the holder; returns it with the inodes of its initial sockets.
    pub fn start(initial: usize) -> (SocketHolder, Vec<u64>) {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", HOLDER, &initial.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut holder = SocketHolder {
            child,
            stdin,
            stdout,
        };
        let line = holder.answer();
        let pid = holder.pid();
        let inodes = line
            .split_whitespace()
            .map(|fd| socket_inode_at(pid, fd))
            .collect();
        (holder, inodes)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One more socket in the holder; returns its inode.
    pub fn open(&mut self) -> u64 {
        writeln!(self.stdin, "open").expect("write");
        let fd = self.answer();
        socket_inode_at(self.pid(), fd.trim())
    }

    /// Closes the last socket opened and opens another in its place (the fd count stays
    /// level); returns the new one's inode.
    pub fn reopen(&mut self) -> u64 {
        writeln!(self.stdin, "reopen").expect("write");
        let fd = self.answer();
        socket_inode_at(self.pid(), fd.trim())
    }

    /// Duplicates the first socket to fd `fd` (a sparse table); needs one initial socket.
    pub fn dup_to(&mut self, fd: u32) {
        writeln!(self.stdin, "dup {fd}").expect("write");
        assert_eq!(self.answer().trim(), fd.to_string());
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        line
    }
}

impl Drop for SocketHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The inode of the socket `/proc/<pid>/fd/<fd>` points at.
pub fn socket_inode_at(pid: impl std::fmt::Display, fd: impl std::fmt::Display) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd link");
    crate::procs::parse::socket_inode(link.as_os_str().as_bytes()).expect("a socket")
}
