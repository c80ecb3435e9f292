//! Socket options that neither std nor netlink-sys wrap: the receive-buffer override, the
//! kernel's exact drop count, and a receive timeout.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// `SK_MEMINFO_DROPS`: index of the drop counter in the `SO_MEMINFO` array.
const SK_MEMINFO_DROPS: usize = 8;
const SK_MEMINFO_VARS: usize = 9;

/// Packets the kernel dropped on this socket because its receive buffer was full.
pub fn socket_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut meminfo = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: `meminfo` is a writable buffer of `len` bytes that outlives the call, and the
    // kernel writes at most `len` bytes into it and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            meminfo.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(meminfo[SK_MEMINFO_DROPS])
}

/// Sets the receive buffer past `net.core.rmem_max` (needs CAP_NET_ADMIN), falling back to
/// the unprivileged `SO_RCVBUF` (capped by the kernel at 2 × rmem_max). Returns the size
/// the kernel granted.
pub fn set_receive_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want).is_err() {
        set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want)?;
    }
    get_int(fd, libc::SO_RCVBUF).map(|v| usize::try_from(v).unwrap_or(0))
}

/// Makes a listener hold a connection whose handshake completed without data as a request
/// socket (`TCP_DEFER_ACCEPT`), for up to about `seconds`: tests use it to keep one alive.
#[cfg(test)]
pub fn set_tcp_defer_accept(fd: BorrowedFd<'_>, seconds: i32) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, seconds)
}

/// Binds a socket to a device by name (`SO_BINDTODEVICE`: any process may, on Linux ≥ 5.7),
/// as a workload that pins a connection to an interface does; tests use it.
#[cfg(test)]
pub fn bind_to_device(fd: BorrowedFd<'_>, device: &std::ffi::CStr) -> io::Result<()> {
    set_option(
        fd,
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        device.to_bytes_with_nul(),
    )
}

/// Makes blocking receives return `EAGAIN` after `timeout`, so a reader thread can notice a
/// shutdown request.
pub fn set_receive_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Makes the socket's close an abortive one (`SO_LINGER` on with a zero timeout): an RST,
/// as a workload that resets its connections does; procflow-bench makes such connections.
pub fn reset_on_close(fd: BorrowedFd<'_>) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_option(fd, level, option, &value)
}

/// `setsockopt` with `value`'s bytes (a plain C value or a byte string): the one unsafe call.
fn set_option<T: ?Sized>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    option: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is readable for `size_of_val(value)` bytes for the whole call, and
    // that length is what is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (value as *const T).cast(),
            std::mem::size_of_val(value) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable c_int and `len` its size; both outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
