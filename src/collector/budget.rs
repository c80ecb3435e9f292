//! The share of a core that dumps triggered by socket churn may take.
//!
//! Each triggered dump (with the reads of its sockets' owners) spends its CPU time from a
//! credit that grows with wall time at a share of a core (`--churn-cpu`) and is capped at [`BURST`]. Under steady
//! churn the dumps take about that share of a core and leave the rest to the process polls;
//! one expensive dump (a full attribution pass over a busy host) spends from the burst
//! instead of holding every later dump back four times its cost, as a budget taken from the
//! last dump alone did (how connections of a few ms went unseen after such a pass).

use std::time::{Duration, Instant};

/// The credit's cap: what a burst of dumps after a quiet spell may spend at once.
pub const BURST: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct DumpBudget {
    credit: Duration,
    /// What was spent beyond the credit: repaid before the credit grows again.
    debt: Duration,
    at: Instant,
    /// Percent of wall time credited.
    percent: u32,
}

impl DumpBudget {
    pub fn new(now: Instant, percent: u32) -> Self {
        DumpBudget {
            credit: BURST,
            debt: Duration::ZERO,
            at: now,
            percent: percent.clamp(1, 100),
        }
    }

    /// Whether a triggered dump may run at `now`.
    pub fn allows(&mut self, now: Instant) -> bool {
        self.earn(now);
        !self.credit.is_zero()
    }

    /// A dump (or a read before one) cost `cpu`.
    pub fn spend(&mut self, cpu: Duration, now: Instant) {
        self.earn(now);
        if cpu <= self.credit {
            self.credit -= cpu;
        } else {
            self.debt += cpu - self.credit;
            self.credit = Duration::ZERO;
        }
    }

    fn earn(&mut self, now: Instant) {
        let mut earned = now.saturating_duration_since(self.at) * self.percent / 100;
        self.at = now.max(self.at);
        let repaid = earned.min(self.debt);
        self.debt -= repaid;
        earned -= repaid;
        self.credit = (self.credit + earned).min(BURST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_steady_churn_gets_a_fifth_of_a_core() {
        let start = Instant::now();
        let mut budget = DumpBudget::new(start, 20);
        // Dumps of 2 ms asked for every ms for a second: the burst, then one per 10 ms.
        let mut dumps = 0u32;
        for ms in 0..1000u32 {
            let now = start + ms * MS;
            if budget.allows(now) {
                budget.spend(2 * MS, now);
                dumps += 1;
            }
        }
        let spent = dumps * 2 * MS;
        assert!(
            spent >= 200 * MS && spent <= 200 * MS + BURST + 2 * MS,
            "{dumps} dumps"
        );
    }

    #[test]
    fn the_share_is_what_was_configured() {
        let start = Instant::now();
        let mut budget = DumpBudget::new(start, 50);
        let mut spent = Duration::ZERO;
        for ms in 0..1000u32 {
            let now = start + ms * MS;
            if budget.allows(now) {
                budget.spend(MS, now);
                spent += MS;
            }
        }
        assert!(
            spent >= 500 * MS && spent <= 500 * MS + BURST + MS,
            "{spent:?}"
        );
    }

    #[test]
    fn one_expensive_dump_is_paid_from_the_burst() {
        let start = Instant::now();
        let mut budget = DumpBudget::new(start, 20);
        budget.spend(14 * MS, start);
        assert!(budget.allows(start + MS), "the burst absorbs it");
        // One far beyond the burst is repaid first: ~74 ms of debt at a fifth of wall time.
        budget.spend(80 * MS, start + MS);
        assert!(!budget.allows(start + 300 * MS));
        assert!(budget.allows(start + 400 * MS));
    }
}
