//! The follower's decisions (docs/protocol.md, "Following"): how many tickets it asks for,
//! when one payload lets the next one write, and when a receiver that goes on (a follower, a
//! listener) counts as idle for its `--timeout`.

use std::time::{Duration, Instant};

/// Payloads a follower takes at once.
pub(crate) const FOLLOW_MAX_ACTIVE: usize = 1000;
/// Tickets a follower asks for in one pull request.
pub(crate) const FOLLOW_TICKET_BATCH: usize = 64;

/// How many tickets to ask for in one pull request with `free` places for payloads.
pub(crate) fn tickets_to_ask(free: usize) -> usize {
    free.min(FOLLOW_TICKET_BATCH)
}

/// Where one of a follower's payloads stands in the order of their tickets. It writes once the
/// one before it lets it; it lets the next one in once it has written everything of it that is
/// stored (its consumer's pending count reached 0, or nothing was stored when it was opened):
/// from then on it is live. Until then it is behind: stored chunks wait for it.
#[derive(Debug)]
pub(crate) struct Place {
    behind: bool,
    passed: bool,
}

impl Default for Place {
    /// Counted from its ticket on: nothing of it is written yet.
    fn default() -> Self {
        Place {
            behind: true,
            passed: false,
        }
    }
}

impl Place {
    /// Whether stored chunks of this payload wait to be written.
    pub(crate) fn behind(&self) -> bool {
        self.behind
    }

    /// Nothing of the payload was stored when it was opened: a live payload, which must not
    /// hold back the next one. Returns whether to let the next one in now.
    pub(crate) fn on_nothing_stored(&mut self) -> bool {
        self.behind = false;
        self.pass()
    }

    /// A reader opened with `stored_ahead` chunks stored after its start (and after the first
    /// chunk, written already when there was one). Nothing ahead: everything stored is written,
    /// and a sender that is quiet for now must not hold back the payloads after it. Returns
    /// whether to let the next one in now.
    pub(crate) fn on_opened(&mut self, stored_ahead: u64) -> bool {
        self.behind = stored_ahead > 0;
        !self.behind && self.pass()
    }

    /// A stored chunk arrived, `last` when nothing more is stored after it.
    pub(crate) fn on_stored(&mut self, last: bool) {
        self.behind = !last;
    }

    /// That stored chunk was written. Returns whether to let the next one in now.
    pub(crate) fn on_stored_written(&mut self, last: bool) -> bool {
        last && self.pass()
    }

    /// A live chunk was written; `caught_up` when nothing before it is missing. Returns whether
    /// to let the next one in now.
    pub(crate) fn on_live_written(&mut self, caught_up: bool) -> bool {
        if !caught_up {
            return false;
        }
        self.behind = false;
        self.pass()
    }

    /// True the first time only.
    fn pass(&mut self) -> bool {
        !std::mem::replace(&mut self.passed, true)
    }
}

/// The `--timeout` clock of a receiver that goes on (a follower, a listener): it runs only
/// while nothing happens. A byte written, a write waiting on a slow stdout or stored data
/// waiting for the receiver is no idleness, however slowly it comes.
#[derive(Debug)]
pub(crate) struct Idle {
    timeout: Option<Duration>,
    since: Instant,
    bytes: u64,
}

impl Idle {
    /// `bytes` is what the output has written so far.
    pub(crate) fn new(now: Instant, timeout: Option<Duration>, bytes: u64) -> Self {
        Idle {
            timeout,
            since: now,
            bytes,
        }
    }

    /// Something arrived.
    pub(crate) fn on_activity(&mut self, now: Instant) {
        self.since = now;
    }

    /// The periodic check, with the output's byte count and whether something waits to be
    /// written. Returns the timeout when it ran out.
    pub(crate) fn on_tick(&mut self, now: Instant, bytes: u64, busy: bool) -> Option<Duration> {
        if bytes != self.bytes || busy {
            self.bytes = bytes;
            self.since = now;
        }
        self.timeout
            .filter(|t| now.saturating_duration_since(self.since) >= *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_follower_asks_for_at_most_its_batch_of_tickets() {
        assert_eq!(tickets_to_ask(1), 1);
        assert_eq!(tickets_to_ask(10), 10);
        assert_eq!(tickets_to_ask(FOLLOW_MAX_ACTIVE), FOLLOW_TICKET_BATCH);
    }

    #[test]
    fn a_stored_payload_lets_the_next_one_write_once_everything_stored_is_written() {
        let mut p = Place::default();
        assert!(p.behind(), "nothing written from the ticket on");
        assert!(!p.on_opened(3));
        assert!(p.behind());
        p.on_stored(false);
        assert!(
            !p.on_stored_written(false),
            "more is stored: the next one waits"
        );
        p.on_stored(true);
        assert!(!p.behind());
        assert!(
            p.on_stored_written(true),
            "the last stored chunk is written"
        );
        assert!(!p.on_stored_written(true), "the next one is let in once");
    }

    #[test]
    fn a_payload_opened_with_nothing_more_stored_lets_the_next_one_in_at_once() {
        // Its first chunk written, nothing stored after it: a sender quiet for now (a host
        // whose log has no new line) must not hold back the hosts after it.
        let mut p = Place::default();
        assert!(p.on_opened(0));
        assert!(!p.behind());
        assert!(!p.on_live_written(true), "already let in");
        let mut q = Place::default();
        assert!(!q.on_opened(2), "two stored chunks to write first");
    }

    #[test]
    fn a_payload_with_nothing_stored_is_live_and_lets_the_next_one_in_at_once() {
        let mut p = Place::default();
        assert!(p.on_nothing_stored());
        assert!(!p.behind());
        assert!(!p.on_live_written(true), "already let in");
    }

    #[test]
    fn a_live_payload_lets_the_next_one_in_once_it_has_caught_up_with_its_sender() {
        let mut p = Place::default();
        assert!(!p.on_opened(2));
        assert!(
            !p.on_live_written(false),
            "stored chunks before it are missing"
        );
        assert!(p.behind());
        assert!(p.on_live_written(true));
        assert!(!p.behind());
    }

    #[test]
    fn a_receiver_times_out_only_after_its_timeout_of_nothing() {
        let t0 = Instant::now();
        let mut idle = Idle::new(t0, Some(10 * S), 0);
        assert_eq!(idle.on_tick(t0 + 9 * S, 0, false), None);
        idle.on_activity(t0 + 9 * S);
        assert_eq!(idle.on_tick(t0 + 18 * S, 0, false), None);
        assert_eq!(idle.on_tick(t0 + 19 * S, 0, false), Some(10 * S));
    }

    #[test]
    fn bytes_written_or_waiting_are_no_idleness() {
        let t0 = Instant::now();
        let mut idle = Idle::new(t0, Some(10 * S), 0);
        assert_eq!(idle.on_tick(t0 + 9 * S, 100, false), None, "bytes moved");
        assert_eq!(idle.on_tick(t0 + 18 * S, 100, true), None, "a write waits");
        assert_eq!(idle.on_tick(t0 + 27 * S, 100, false), None);
        assert_eq!(idle.on_tick(t0 + 28 * S, 100, false), Some(10 * S));
        let mut forever = Idle::new(t0, None, 0);
        assert_eq!(
            forever.on_tick(t0 + 1000 * S, 0, false),
            None,
            "no --timeout"
        );
    }
}
