//! The taker's decisions (docs/protocol.md, "Receiving" and "The live path"): where a payload
//! starts, what is purged and when, how long the chunks stored before a payload went live stay
//! for listeners, and what becomes of the ticket when reading stops.

use std::time::{Duration, Instant};

/// How often written chunks are removed from the server.
pub(crate) const PURGE_EVERY: Duration = Duration::from_millis(500);
/// How long a taker leaves the chunks stored before its payload went live (see [`Hold`]).
pub(crate) const LIVE_PREFIX_HOLD: Duration = Duration::from_secs(2);
/// How long a taker that stops waits for the server to take back what it did not write (a
/// server that does not answer then gets the ticket back after its ack wait).
pub(crate) const GIVE_BACK_WITHIN: Duration = Duration::from_secs(2);
/// How long an interrupted taker waits for a write in progress on a stuck stdout.
pub(crate) const SETTLE_WITHIN: Duration = Duration::from_millis(500);

/// How a payload may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At chunk 0; later chunks arriving first wait for it.
    AtZero,
    /// At the first chunk seen: a resumed payload, or a listener joining late.
    AtFirstSeen,
}

impl Start {
    /// Where a taker starts the payload of a ticket delivered `delivered` times: a ticket
    /// given out before may have had its start written by the taker that lost it, so only the
    /// stored chunks say where to resume.
    pub(crate) fn of_ticket(delivered: i64) -> Start {
        if delivered > 1 {
            Start::AtFirstSeen
        } else {
            Start::AtZero
        }
    }
}

/// Whether a payload's sender is gone: it has not announced itself within `stale` (presence's
/// stale time), or never did.
pub(crate) fn sender_gone(seen: Option<Instant>, now: Instant, stale: Duration) -> bool {
    seen.is_none_or(|t| now.saturating_duration_since(t) >= stale)
}

/// The chunks stored before a payload went live stay a little longer, for listeners that read
/// them later than the taker: [`LIVE_PREFIX_HOLD`] from when the taker asked for the payload
/// live and again from its first live chunk, until the sender leaves the live path (a stored
/// chunk beyond the highest live one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Hold {
    until: Option<Instant>,
    /// The highest chunk number that came live.
    live_max: Option<u64>,
}

impl Hold {
    /// Whether purging waits at `now`.
    pub(crate) fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }

    /// The taker asked for the payload live.
    pub(crate) fn on_asked(&mut self, now: Instant) {
        self.extend(now);
    }

    /// A chunk came live: the first one holds purging back again, from now.
    pub(crate) fn on_live_chunk(&mut self, now: Instant, chunk: u64) {
        if self.live_max.is_none() {
            self.extend(now);
        }
        self.live_max = self.live_max.max(Some(chunk));
    }

    /// A chunk came from the store: beyond the live ones, the sender left the live path, and
    /// what it stores now is purged as it is written.
    pub(crate) fn on_stored_chunk(&mut self, now: Instant, chunk: u64) {
        if self.live_max.is_some_and(|m| chunk > m) {
            self.until = Some(now);
        }
    }

    /// Holds purging back for [`LIVE_PREFIX_HOLD`] from `now`, unless the hold ran out or was
    /// released: it never starts again.
    fn extend(&mut self, now: Instant) {
        if self.until.is_none_or(|t| t > now) {
            self.until = Some(now + LIVE_PREFIX_HOLD);
        }
    }
}

/// Purge what the taker wrote: at each [`PURGE_EVERY`], everything below the writer's mark,
/// when it moved and no [`Hold`] holds.
#[derive(Debug, Default)]
pub(crate) struct Purge {
    purged: u64,
}

impl Purge {
    /// The stream sequence to purge below now, if any.
    pub(crate) fn on_tick(&mut self, mark: u64, hold: &Hold, now: Instant) -> Option<u64> {
        if mark > self.purged && !hold.holds(now) {
            self.purged = mark;
            return Some(mark);
        }
        None
    }

    /// A taker giving its payload back removes only what it wrote (nothing when it wrote
    /// nothing), whatever holds: the next taker resumes right after it.
    pub(crate) fn on_give_back(mark: u64) -> Option<u64> {
        (mark > 0).then_some(mark)
    }
}

/// What a taker does with a payload when its stdout closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnClose {
    /// The reader went away on purpose (`skypipe x | head`): the payload is taken.
    Take,
    /// Keep the unwritten rest for the next taker.
    GiveBack,
}

/// How reading a payload stopped, as far as its ticket is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Read to its end (or its abort) and flushed.
    Done,
    /// Interrupted (Ctrl-C), also while a write waited on stdout.
    Interrupted,
    /// stdout closed.
    Closed,
    /// A write to stdout failed.
    WriteFailed,
    /// The payload does not add up (corrupt, or its sender gone).
    Fault,
    /// Not for this taker: sealed for another secret, or for a newer skypipe.
    NotOurs,
    /// The connection failed.
    Lost,
}

/// What becomes of a payload's ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Acked: the payload is taken, what is left of it removed.
    Ack,
    /// Terminated and removed, so it cannot block the payloads behind it.
    Term,
    /// Given back at once after removing what was written; `cancelled` when interrupted
    /// (then a stuck stdout is not waited for).
    GiveBack { cancelled: bool },
    /// Left alone: it comes back to some taker after the server's ack wait.
    Leave,
}

/// The ticket's fate after reading stopped so.
pub(crate) fn ticket_after(stopped: Stopped, on_close: OnClose) -> Ticket {
    match stopped {
        Stopped::Done => Ticket::Ack,
        Stopped::Closed if on_close == OnClose::Take => Ticket::Ack,
        Stopped::Interrupted => Ticket::GiveBack { cancelled: true },
        Stopped::Closed | Stopped::WriteFailed | Stopped::NotOurs => {
            Ticket::GiveBack { cancelled: false }
        }
        Stopped::Fault => Ticket::Term,
        Stopped::Lost => Ticket::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_redelivered_ticket_resumes_where_the_stored_chunks_start() {
        assert_eq!(Start::of_ticket(1), Start::AtZero);
        assert_eq!(Start::of_ticket(2), Start::AtFirstSeen);
    }

    #[test]
    fn a_sender_is_gone_once_not_heard_for_the_stale_time() {
        let t0 = Instant::now();
        assert!(sender_gone(None, t0, 3 * S), "never heard: gone");
        assert!(!sender_gone(Some(t0), t0 + 2 * S, 3 * S));
        assert!(sender_gone(Some(t0), t0 + 3 * S, 3 * S));
    }

    #[test]
    fn purge_what_the_taker_wrote_once_per_mark() {
        let t0 = Instant::now();
        let (mut p, hold) = (Purge::default(), Hold::default());
        assert_eq!(p.on_tick(0, &hold, t0), None, "nothing written");
        assert_eq!(p.on_tick(5, &hold, t0), Some(5));
        assert_eq!(p.on_tick(5, &hold, t0 + 500 * MS), None, "purged already");
        assert_eq!(p.on_tick(9, &hold, t0 + S), Some(9));
        assert_eq!(Purge::on_give_back(0), None);
        assert_eq!(Purge::on_give_back(9), Some(9));
    }

    #[test]
    fn chunks_stored_before_the_live_path_stay_two_seconds_from_the_ask() {
        let t0 = Instant::now();
        let mut hold = Hold::default();
        let mut p = Purge::default();
        hold.on_asked(t0);
        assert_eq!(p.on_tick(4, &hold, t0 + 1999 * MS), None, "held");
        assert_eq!(p.on_tick(4, &hold, t0 + 2 * S), Some(4), "the hold ran out");
    }

    #[test]
    fn the_first_live_chunk_holds_again_but_a_hold_that_ran_out_does_not_start_again() {
        let t0 = Instant::now();
        let mut hold = Hold::default();
        hold.on_asked(t0);
        hold.on_live_chunk(t0 + S, 3);
        assert!(
            hold.holds(t0 + 2900 * MS),
            "two seconds from the first live chunk"
        );
        assert!(!hold.holds(t0 + 3 * S));
        let mut late = Hold::default();
        late.on_asked(t0);
        late.on_live_chunk(t0 + 5 * S, 3);
        assert!(
            !late.holds(t0 + 5 * S),
            "ran out before the first live chunk"
        );
    }

    #[test]
    fn a_stored_chunk_beyond_the_live_ones_releases_the_hold() {
        let t0 = Instant::now();
        let mut hold = Hold::default();
        hold.on_asked(t0);
        hold.on_live_chunk(t0, 0);
        hold.on_live_chunk(t0, 4);
        hold.on_stored_chunk(t0 + 100 * MS, 2);
        assert!(
            hold.holds(t0 + 200 * MS),
            "a stored chunk the live ones passed"
        );
        hold.on_stored_chunk(t0 + 300 * MS, 5);
        assert!(!hold.holds(t0 + 300 * MS), "the sender left the live path");
        hold.on_live_chunk(t0 + 400 * MS, 6);
        assert!(!hold.holds(t0 + 400 * MS), "released for good");
    }

    #[test]
    fn stored_chunks_without_a_live_path_are_never_held() {
        let t0 = Instant::now();
        let mut hold = Hold::default();
        hold.on_stored_chunk(t0, 7);
        assert!(!hold.holds(t0));
    }

    #[test]
    fn a_taker_that_stops_mid_payload_gives_the_ticket_back() {
        use OnClose::*;
        use Stopped::*;
        let back = |cancelled| Ticket::GiveBack { cancelled };
        assert_eq!(ticket_after(Done, GiveBack), Ticket::Ack);
        assert_eq!(ticket_after(Interrupted, Take), back(true));
        assert_eq!(ticket_after(WriteFailed, Take), back(false));
        // A closed stdout: a plain taker's reader went away on purpose, a follower keeps the
        // rest for the next taker.
        assert_eq!(ticket_after(Closed, Take), Ticket::Ack);
        assert_eq!(ticket_after(Closed, GiveBack), back(false));
    }

    #[test]
    fn a_corrupt_payload_is_removed_one_for_another_receiver_is_left_in_the_pipe() {
        assert_eq!(ticket_after(Stopped::Fault, OnClose::Take), Ticket::Term);
        assert_eq!(
            ticket_after(Stopped::NotOurs, OnClose::Take),
            Ticket::GiveBack { cancelled: false }
        );
        assert_eq!(ticket_after(Stopped::Lost, OnClose::Take), Ticket::Leave);
    }
}
