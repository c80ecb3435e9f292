//! The collector's own protection from the processes it watches.

use std::io;

/// Makes this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): processes of the same
/// uid without CAP_SYS_PTRACE can then no longer read its `/proc/<pid>/environ`, `root`,
/// `fd`, `mem`, nor ptrace it; this process still reads theirs. The kernel resets the flag
/// on exec and on a change of credentials, so call it after both.
pub fn set_undumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours;
    // the trailing zeros fill prctl's unused variadic slots.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process is dumpable (`prctl(PR_GET_DUMPABLE)`).
pub fn is_dumpable() -> io::Result<bool> {
    // SAFETY: PR_GET_DUMPABLE takes no argument and returns the flag.
    let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc != 0)
}
