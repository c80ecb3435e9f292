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
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    Ok(parse_code_mappings(
        &smaps,
        exe.to_str().unwrap_or_default(),
    ))
}

/// The read-only mappings of `exe` in `smaps` text. A mapping is written when it holds
/// private pages, resident (`Anonymous:`) or swapped out (`Swap:`: a relocated RELRO page
/// the kernel swapped out is counted there alone, and MADV_DONTNEED would drop it for the
/// file's unrelocated bytes), or when smaps does not say.
fn parse_code_mappings(smaps: &str, exe: &str) -> Vec<CodeMapping> {
    let kib = |v: &str| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok();
    let mut mappings = Vec::new();
    // The mapping being read, and its resident and swapped private kB once read.
    let mut current: Option<(CodeMapping, Option<u64>, Option<u64>)> = None;
    let finish = |(mut m, anonymous, swap): (CodeMapping, Option<u64>, Option<u64>)| {
        m.written = !(anonymous == Some(0) && swap == Some(0));
        m
    };
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Anonymous:") {
            if let Some(c) = current.as_mut() {
                c.1 = kib(v);
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("Swap:") {
            if let Some(c) = current.as_mut() {
                c.2 = kib(v);
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
        mappings.extend(current.take().map(finish));
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
            let mapping = CodeMapping {
                start,
                len: end.saturating_sub(start),
                written: true,
            };
            current = Some((mapping, None, None));
        }
    }
    mappings.extend(current.map(finish));
    mappings
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

    /// A RELRO mapping whose relocated pages are all swapped out shows `Anonymous: 0 kB`
    /// and its pages under `Swap:`: it is written, and never released. Before, only
    /// `Anonymous:` was read, and on a host with swap MADV_DONTNEED would have dropped the
    /// relocated pointers (vtables, the GOT) for the file's unrelocated bytes.
    #[test]
    fn a_mapping_with_swapped_out_private_pages_is_written() {
        let exe = "/usr/local/bin/procflow";
        let smaps = format!(
            "5600aa000000-5600aa200000 r--p 00000000 fd:01 1234 {exe}
Size:               2048 kB
Rss:                 300 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me dw sd
5600aa200000-5600aa900000 r-xp 00200000 fd:01 1234 {exe}
Size:               7168 kB
Anonymous:             0 kB
Swap:                  0 kB
5600aa900000-5600aaa00000 r--p 00900000 fd:01 1234 {exe}
Size:               1024 kB
Rss:                   0 kB
Anonymous:             0 kB
Swap:                 96 kB
VmFlags: rd mr mw me ac sd
5600aaa00000-5600aaa10000 rw-p 00a00000 fd:01 1234 {exe}
Anonymous:            64 kB
Swap:                  0 kB
7f00aa000000-7f00aa100000 r--p 00000000 fd:01 99 /usr/lib/libc.so.6
Anonymous:             0 kB
Swap:                  0 kB
5600ab000000-5600ab010000 r--p 00000000 fd:01 1234 {exe}
Anonymous:             0 kB
"
        );
        let found: Vec<(usize, bool)> = parse_code_mappings(&smaps, exe)
            .iter()
            .map(|m| (m.start, m.written))
            .collect();
        assert_eq!(
            found,
            [
                (0x5600aa000000, false),
                (0x5600aa200000, false),
                (0x5600aa900000, true), // swapped-out RELRO
                (0x5600ab000000, true), // smaps did not say
            ]
        );
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
