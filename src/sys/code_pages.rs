//! The resident pages of the collector's own executable.
//!
//! A sidecar's memory is what its pod pays for. Of an idle collector's resident set most
//! is file-backed code of the one `procflow` binary (which carries the aggregator too):
//! what start-up and busy spells ran (argument parsing, the runtime, the first full pass)
//! stays mapped until the process lets it go. (Turning the kernel's fault-around off with
//! MADV_RANDOM was tried: the peak did not move.)

use std::io;

/// One mapping of this process's executable, read-only (code or constants).
struct CodeMapping {
    start: usize,
    len: usize,
    /// Pages of the mapping this process wrote (relocations in RELRO): private copies
    /// that exist nowhere else.
    written: bool,
}

/// The read-only mappings of this process's executable, from `/proc/self/smaps`.
fn code_mappings() -> io::Result<Vec<CodeMapping>> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_str().unwrap_or_default();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut mappings = Vec::new();
    let mut current: Option<CodeMapping> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            if let Some(m) = current.as_mut() {
                m.written = anonymous.trim().trim_end_matches("kB").trim() != "0";
            }
            continue;
        }
        // A mapping's header: "start-end perms offset dev inode path"; field lines have
        // a name ending in ':' first.
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if range.ends_with(':') {
            continue;
        }
        mappings.extend(current.take());
        if !perms.starts_with("r-") || fields.nth(3) != Some(exe) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) {
            current = Some(CodeMapping {
                start,
                len: end.saturating_sub(start),
                written: true, // until smaps says otherwise
            });
        }
    }
    mappings.extend(current);
    Ok(mappings)
}

/// Unmaps the pages of this executable's code and constants that this process never
/// wrote (they stay in the page cache; the next touch maps them again without I/O), and
/// returns how many bytes of mappings it let go. For an idle spell after a busy one: the
/// code the busy spell ran stays resident otherwise, though the idle loop runs little of it.
pub fn release_code_pages() -> io::Result<usize> {
    let mut released = 0;
    for m in code_mappings()?.into_iter().filter(|m| !m.written) {
        // SAFETY: a whole private, read-only file mapping of this process's executable
        // with no private (written) page: MADV_DONTNEED drops its page-table entries and
        // the next access faults in the same file contents. No Rust reference is
        // invalidated, since what is read afterwards is identical.
        if unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) } != 0 {
            return Err(io::Error::last_os_error());
        }
        released += m.len;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssFile")
    }

    #[test]
    fn the_executables_code_is_found_and_written_pages_are_told_apart() {
        let mappings = code_mappings().expect("smaps");
        assert!(
            mappings.iter().any(|m| m.len > 0 && !m.written),
            "no code mapping"
        );
        // RELRO (relocated at load, then made read-only) is read-only and written: its
        // private pages must never be released.
        assert!(mappings.iter().any(|m| m.written), "RELRO not told apart");
    }

    #[test]
    fn released_code_leaves_residence_and_still_runs() {
        let before = resident_file_kib();
        let released = release_code_pages().expect("release");
        let after = resident_file_kib();
        assert!(released > 0);
        assert!(after < before, "RssFile {before} KiB -> {after} KiB");
        // The code comes back on use: this runs code that was just unmapped.
        assert!(!code_mappings().expect("smaps again").is_empty());
    }
}
