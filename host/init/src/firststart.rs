//! The VM's first start on this boot, decided from what the host service
//! reports: pure, so every path is unit tested.
//!
//! * The VM reaches its agent: done; on a guest-image trial the update is
//!   committed ([`crate::guests::Slots::settle`] with `true`).
//! * It fails on a trial: roll back to the previous guest image and start it
//!   (the rollback is not a retry: the fallback image gets its own).
//! * It fails otherwise: one more start ("starting it again, once"), for the
//!   nested environment's rare guest crashes; a second failure is final and
//!   said on the console.
//!
//! After asking for a start, a failure only counts once the VM has left the
//! failed state (the service's state lags the request).

/// What to do after one look at the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep watching.
    Wait,
    /// It reached its agent; `commit`: the guest-image update it ran is now current.
    Ready { commit: bool },
    /// The update failed: roll back and start the previous image.
    RollBack,
    /// Start it once more.
    Retry,
    /// It failed again: leave it failed.
    GiveUp,
}

/// The watcher's state.
#[derive(Debug, Clone, Default)]
pub struct FirstStart {
    trial: bool,
    rolled_back: bool,
    retried: bool,
    /// A start was asked for and the VM has not left the failed state yet.
    pending: bool,
}

impl FirstStart {
    /// `trial`: this boot tries a staged guest-image update.
    pub fn new(trial: bool) -> FirstStart {
        FirstStart { trial, ..Default::default() }
    }

    /// One look: `ready` when it runs with its agent, `failed` when it is
    /// failed or stopped.
    pub fn observe(&mut self, ready: bool, failed: bool) -> Step {
        if ready {
            return Step::Ready { commit: self.trial && !self.rolled_back };
        }
        if self.pending {
            if !failed {
                self.pending = false;
            }
            return Step::Wait;
        }
        if !failed {
            return Step::Wait;
        }
        self.pending = true;
        if self.trial && !self.rolled_back {
            self.rolled_back = true;
            Step::RollBack
        } else if !self.retried {
            self.retried = true;
            Step::Retry
        } else {
            self.pending = false;
            Step::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_that_comes_up_is_done_and_commits_only_its_trial() {
        assert_eq!(FirstStart::new(false).observe(true, false), Step::Ready { commit: false });
        let mut w = FirstStart::new(true);
        assert_eq!(w.observe(false, false), Step::Wait);
        assert_eq!(w.observe(true, false), Step::Ready { commit: true });
    }

    #[test]
    fn a_crash_gets_one_more_start_and_a_second_is_final() {
        let mut w = FirstStart::new(false);
        assert_eq!(w.observe(false, true), Step::Retry);
        // Still failed until the service takes the start: not a second failure.
        assert_eq!(w.observe(false, true), Step::Wait);
        assert_eq!(w.observe(false, false), Step::Wait);
        assert_eq!(w.observe(false, true), Step::GiveUp);
    }

    #[test]
    fn a_failed_update_rolls_back_and_the_fallback_still_gets_its_retry() {
        let mut w = FirstStart::new(true);
        assert_eq!(w.observe(false, true), Step::RollBack);
        assert_eq!(w.observe(false, false), Step::Wait);
        // The fallback image crashed while booting (seen: a triple fault).
        assert_eq!(w.observe(false, true), Step::Retry);
        assert_eq!(w.observe(false, false), Step::Wait);
        assert_eq!(w.observe(true, false), Step::Ready { commit: false }, "a rolled-back boot commits nothing");
        let mut w = FirstStart::new(true);
        w.observe(false, true);
        w.observe(false, false);
        w.observe(false, true);
        w.observe(false, false);
        assert_eq!(w.observe(false, true), Step::GiveUp);
    }
}
