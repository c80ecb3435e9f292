//! Socket-level syscalls libc has no safe wrapper for (being written).
