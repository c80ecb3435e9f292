//! Clocks the standard library does not offer.

use std::time::Duration;

/// CPU time the calling thread has used: what a piece of work costs, preemption excluded.
pub fn thread_cpu_time() -> Duration {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Time since boot, suspend included: the clock `/proc/<pid>/stat` start times count in.
pub fn since_boot() -> Duration {
    read(libc::CLOCK_BOOTTIME)
}

/// Zero when the clock cannot be read (both clocks exist on every kernel we run on).
fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids above need no other state.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let before = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time() - before;
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let worked = thread_cpu_time() - before - slept;
        assert!(
            slept < Duration::from_millis(20),
            "sleep counted: {slept:?}"
        );
        assert!(worked > Duration::ZERO, "work not counted");
    }
}
