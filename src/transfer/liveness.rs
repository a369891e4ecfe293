//! The timing decisions of taking a payload, kept apart from the IO so each is unit-tested:
//! when the sender counts as gone, when the server counts as lost, and when a gap below a
//! stored end is judged. Nothing here reads a clock: the caller passes `now`.

use std::time::{Duration, Instant};

use crate::transfer::presence;

/// What a check of the taker's surroundings calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing: keep reading.
    Wait,
    /// Neither a chunk nor a sign of the sender for the sender timeout, on a connection that
    /// looks fine: ask the server whether it still answers before blaming the sender
    /// ([`Liveness::on_server_answer`]).
    AskServer,
    /// The server was away, or did not answer, for the retry time.
    ServerLost,
}

/// The clocks of one payload being taken.
#[derive(Debug)]
pub(crate) struct Liveness {
    sender_timeout: Duration,
    give_up_after: Duration,
    /// The last chunk, counted when its write ended (a slow stdout is no silence of the sender).
    last_chunk: Instant,
    /// The last time the server was known to be there.
    server_seen: Instant,
    /// The server did not answer when asked: a connection that looks fine to a server that
    /// stopped (SIGSTOP, a hung host) is no sign of life.
    server_silent: bool,
    /// Since when a chunk below a stored end is missing with nothing more stored.
    gap_since: Option<Instant>,
}

impl Liveness {
    pub(crate) fn new(now: Instant, sender_timeout: Duration, give_up_after: Duration) -> Self {
        Liveness {
            sender_timeout,
            give_up_after,
            last_chunk: now,
            server_seen: now,
            server_silent: false,
            gap_since: None,
        }
    }

    /// A chunk arrived (and was written): the sender and the server are there.
    pub(crate) fn on_chunk(&mut self, now: Instant) {
        self.last_chunk = now;
        self.server_seen = now;
        self.server_silent = false;
    }

    /// The periodic check: `connected` as the client sees its connection, `sender_seen` the
    /// sender's last announcement.
    pub(crate) fn on_tick(
        &mut self,
        now: Instant,
        connected: bool,
        sender_seen: Option<Instant>,
    ) -> Verdict {
        if connected && !self.server_silent {
            self.server_seen = now;
        } else if now.saturating_duration_since(self.server_seen) >= self.give_up_after {
            return Verdict::ServerLost;
        }
        let heard = sender_seen.map_or(self.last_chunk, |t| t.max(self.last_chunk));
        if connected && now.saturating_duration_since(heard) >= self.sender_timeout {
            return Verdict::AskServer;
        }
        Verdict::Wait
    }

    /// The server's answer after [`Verdict::AskServer`]. Returns whether the sender is gone:
    /// only when the server answered (its silence is not the sender's).
    pub(crate) fn on_server_answer(&mut self, answered: bool) -> bool {
        self.server_silent = !answered;
        answered
    }

    /// The end is stored, a chunk before it is missing and nothing more is stored: judged
    /// once a living sender would surely have announced itself ([`presence::STALE`]).
    pub(crate) fn on_gap(&mut self, now: Instant) {
        self.gap_since.get_or_insert(now);
    }

    /// When the gap is to be judged, if there is one.
    pub(crate) fn gap_due(&self) -> Option<Instant> {
        self.gap_since.map(|t| t + presence::STALE)
    }

    /// The gap was judged.
    pub(crate) fn gap_judged(&mut self) {
        self.gap_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn fresh() -> (Liveness, Instant) {
        let t0 = Instant::now();
        (Liveness::new(t0, 10 * S, 60 * S), t0)
    }

    #[test]
    fn a_silent_sender_is_questioned_only_after_its_timeout() {
        let (mut l, t0) = fresh();
        assert_eq!(l.on_tick(t0 + 9 * S, true, None), Verdict::Wait);
        assert_eq!(l.on_tick(t0 + 10 * S, true, None), Verdict::AskServer);
        assert!(
            l.on_server_answer(true),
            "the server answers: the sender is gone"
        );
    }

    #[test]
    fn a_chunk_or_an_announcement_keeps_the_sender_alive() {
        let (mut l, t0) = fresh();
        l.on_chunk(t0 + 8 * S);
        assert_eq!(l.on_tick(t0 + 17 * S, true, None), Verdict::Wait);
        assert_eq!(
            l.on_tick(t0 + 20 * S, true, Some(t0 + 15 * S)),
            Verdict::Wait
        );
        assert_eq!(
            l.on_tick(t0 + 25 * S, true, Some(t0 + 15 * S)),
            Verdict::AskServer
        );
    }

    #[test]
    fn a_lost_connection_blames_the_server_not_the_sender() {
        let (mut l, t0) = fresh();
        assert_eq!(l.on_tick(t0 + 30 * S, false, None), Verdict::Wait);
        assert_eq!(l.on_tick(t0 + 59 * S, false, None), Verdict::Wait);
        assert_eq!(l.on_tick(t0 + 60 * S, false, None), Verdict::ServerLost);
    }

    #[test]
    fn a_connection_back_in_time_resets_the_server_clock() {
        let (mut l, t0) = fresh();
        assert_eq!(l.on_tick(t0 + 50 * S, false, None), Verdict::Wait);
        l.on_chunk(t0 + 55 * S);
        assert_eq!(l.on_tick(t0 + 56 * S, true, None), Verdict::Wait);
        assert_eq!(
            l.on_tick(t0 + 100 * S, false, Some(t0 + 99 * S)),
            Verdict::Wait
        );
    }

    #[test]
    fn a_server_that_stops_answering_is_lost_after_the_retry_time() {
        let (mut l, t0) = fresh();
        assert_eq!(l.on_tick(t0 + 10 * S, true, None), Verdict::AskServer);
        assert!(
            !l.on_server_answer(false),
            "silence from the server is not the sender's"
        );
        // The connection still looks fine, but the server clock no longer advances.
        assert_eq!(l.on_tick(t0 + 69 * S, true, None), Verdict::AskServer);
        assert_eq!(l.on_tick(t0 + 70 * S, true, None), Verdict::ServerLost);
    }

    #[test]
    fn a_chunk_ends_the_servers_silence() {
        let (mut l, t0) = fresh();
        assert_eq!(l.on_tick(t0 + 10 * S, true, None), Verdict::AskServer);
        l.on_server_answer(false);
        l.on_chunk(t0 + 12 * S);
        assert_eq!(
            l.on_tick(t0 + 80 * S, true, Some(t0 + 79 * S)),
            Verdict::Wait
        );
    }

    #[test]
    fn a_gap_is_judged_once_a_living_sender_would_have_spoken() {
        let (mut l, t0) = fresh();
        assert_eq!(l.gap_due(), None);
        l.on_gap(t0 + S);
        l.on_gap(t0 + 2 * S);
        assert_eq!(l.gap_due(), Some(t0 + S + presence::STALE));
        l.gap_judged();
        assert_eq!(l.gap_due(), None);
    }
}
