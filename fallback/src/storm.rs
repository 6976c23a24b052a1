//! A bound on what a storm of event notifications can cost the side that receives it (the
//! XSA-391 class): a peer that notifies without giving work makes every wait return at once,
//! so a queue that waits only to be woken again would spin at the peer's will. After
//! [`SPURIOUS_LIMIT`] wake-ups in a row that were followed by no work, each further wait
//! first sleeps [`STORM_BACKOFF`], as Linux delays the end-of-interrupt of an event channel
//! that keeps firing for nothing (lateeoi). A peer that gives work resets the count.

use std::time::Duration;

/// Wake-ups in a row followed by no work before waits back off.
pub const SPURIOUS_LIMIT: u32 = 8;

/// How long each wait sleeps first while the storm lasts.
pub const STORM_BACKOFF: Duration = Duration::from_millis(1);

/// One queue's view of its wake-ups.
#[derive(Debug, Default, Clone)]
pub struct StormGuard {
    in_a_row: u32,
    woken: bool,
    moved: bool,
}

impl StormGuard {
    /// The queue moved packets (sent, received, answered) since it last waited.
    #[inline]
    pub fn moved(&mut self) {
        self.moved = true;
    }

    /// Called before a wait: whether the last wake-up was spurious, and the wait should
    /// first sleep [`STORM_BACKOFF`] because too many were.
    pub fn before_wait(&mut self) -> bool {
        if self.woken && !self.moved {
            self.in_a_row = self.in_a_row.saturating_add(1);
        } else {
            self.in_a_row = 0;
        }
        self.moved = false;
        self.in_a_row >= SPURIOUS_LIMIT
    }

    /// Called after a wait with whether an event woke it.
    pub fn after_wait(&mut self, woken: bool) {
        self.woken = woken;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wake_ups_in_a_row_without_work_back_off() {
        let mut g = StormGuard::default();
        for _ in 0..SPURIOUS_LIMIT {
            assert!(!g.before_wait());
            g.after_wait(true);
        }
        assert!(g.before_wait(), "the limit of spurious wake-ups in a row");
        g.after_wait(true);
        g.moved();
        assert!(!g.before_wait(), "work resets the count");
        g.after_wait(false);
        for _ in 0..3 * SPURIOUS_LIMIT {
            assert!(!g.before_wait(), "timeouts are not spurious wake-ups");
            g.after_wait(false);
        }
    }
}
