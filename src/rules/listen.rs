//! The listener's book of payloads (docs/protocol.md, "Listening" and "Listening live"): which
//! were announced by a ticket, which it opened, which ended or were given up on; when silence
//! means it missed a payload; and how many live chunks it holds.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::protocol::pipe::PayloadId;
use crate::rules::follow::Idle;
use crate::rules::take::{self, Start};

/// A payload that sent nothing to a listener for this long, while its sender no longer
/// announces itself, has ended out of the listener's sight.
pub(crate) const LISTEN_STALL: Duration = Duration::from_secs(5);
/// Bytes of live chunks held for a listener whose stdout is slower than the pipe's taker;
/// more are dropped (and reported as missed), so a slow listener's memory stays bounded.
pub(crate) const LIVE_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Whether a live chunk of `len` bytes may join the `held` bytes not written yet.
pub(crate) fn live_chunk_fits(held: usize, len: usize) -> bool {
    held + len <= LIVE_BUFFER_BYTES
}

/// What a ticket carries besides its payload's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// Nothing usable: its chunks are stored.
    Nothing,
    /// Nothing usable, and the ticket offers the live path: its chunks are stored or come
    /// live, in no fixed order between them.
    LiveOffer,
    /// The payload's only chunk.
    Its,
    /// A chunk of another payload: the ticket is ignored.
    Another,
}

/// What to do with a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnTicket {
    /// Nothing: a payload seen already, or a ticket that does not add up.
    Ignore,
    /// Nothing now: the payload's chunks are to come, or to be reported as missed.
    Announced,
    /// Write the chunk the ticket carries, as chunk 0 of a payload seen first here.
    Write,
}

/// A payload the listener missed, said after [`LISTEN_STALL`] of silence with its sender gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Read in part: the rest was taken before the listener read it.
    End(PayloadId),
    /// Announced, none of it read: taken whole before the listener read any.
    Whole(PayloadId),
}

/// What the periodic check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tick {
    pub(crate) missed: Option<Missed>,
    /// The `--timeout` that ran out with nothing arriving.
    pub(crate) timed_out: Option<Duration>,
}

/// What a listener does after a payload ended, or a fault of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Go on with the others.
    GoOn,
    /// Exit, successfully.
    Exit,
    /// Say it on stderr and go on (`--follow`).
    Say,
    /// Exit with it as the error.
    Fail,
}

/// The book of one listener.
#[derive(Debug)]
pub(crate) struct Book {
    follow: bool,
    /// Presence's stale time: a sender not heard for this long is gone.
    stale: Duration,
    /// Payloads opened, with when the last chunk was written.
    opened: HashMap<PayloadId, Instant>,
    /// Payloads announced by a ticket and not seen yet, with when the ticket came.
    announced: HashMap<PayloadId, Instant>,
    /// Payloads ended, or given up on (missed), whose late chunks are ignored.
    done: HashSet<PayloadId>,
    /// Payloads announced by a ticket that offered the live path, not opened yet.
    live_offered: HashSet<PayloadId>,
    /// Whether the last chunk read was the last one stored: only then can silence be judged
    /// (a listener held up by a slow stdout has chunks waiting for it).
    caught_up: bool,
    caught_up_since: Instant,
    idle: Idle,
}

impl Book {
    /// `follow` keeps listening after the first end; `bytes` is what the output has written.
    pub(crate) fn new(
        now: Instant,
        follow: bool,
        timeout: Option<Duration>,
        stale: Duration,
        bytes: u64,
    ) -> Self {
        Book {
            follow,
            stale,
            opened: HashMap::new(),
            announced: HashMap::new(),
            done: HashSet::new(),
            live_offered: HashSet::new(),
            caught_up: true,
            caught_up_since: now,
            idle: Idle::new(now, timeout, bytes),
        }
    }

    /// A ticket of payload `id` was published.
    pub(crate) fn on_ticket(&mut self, id: PayloadId, carried: Carried, now: Instant) -> OnTicket {
        if self.done.contains(&id) || self.opened.contains_key(&id) {
            return OnTicket::Ignore;
        }
        match carried {
            // A small payload rides whole in its ticket: written from there, it cannot be
            // taken and removed before this listener reads its stored copy.
            Carried::Its => {
                self.idle.on_activity(now);
                self.announced.remove(&id);
                OnTicket::Write
            }
            Carried::Another => OnTicket::Ignore,
            Carried::Nothing | Carried::LiveOffer => {
                if carried == Carried::LiveOffer {
                    self.live_offered.insert(id.clone());
                }
                self.announced.entry(id).or_insert(now);
                OnTicket::Announced
            }
        }
    }

    /// A chunk came from the store, with `pending` more stored after it.
    pub(crate) fn on_stored(&mut self, pending: u64, now: Instant) {
        self.idle.on_activity(now);
        let was_caught_up = std::mem::replace(&mut self.caught_up, pending == 0);
        if self.caught_up && !was_caught_up {
            self.caught_up_since = now;
        }
    }

    /// A chunk came live.
    pub(crate) fn on_live(&mut self, now: Instant) {
        self.idle.on_activity(now);
    }

    /// A chunk of payload `id` is to be written: where its payload starts if it is new, or
    /// `None` when the payload is done with (the chunk is ignored). A payload whose ticket this
    /// listener saw starts at chunk 0: its first chunks may be stored ones that reach the
    /// consumer after live ones that follow them.
    pub(crate) fn on_chunk(&mut self, id: &PayloadId, now: Instant) -> Option<Start> {
        if self.done.contains(id) {
            return None;
        }
        let start = if self.announced.remove(id).is_some() {
            Start::AtZero
        } else {
            Start::AtFirstSeen
        };
        self.opened.entry(id.clone()).or_insert(now);
        Some(start)
    }

    /// Whether the chunks of payload `id`, being opened, may come live: its ticket offered
    /// the live path. Then a chunk ahead of the next one expected waits for it from the
    /// start, as it does once a live chunk came: the last chunk, stored, may reach this
    /// listener before the live chunks published ahead of it.
    pub(crate) fn may_come_live(&mut self, id: &PayloadId) -> bool {
        self.live_offered.remove(id)
    }

    /// A chunk of payload `id` was written (time spent waiting on stdout is not the sender's
    /// silence).
    pub(crate) fn on_written(&mut self, id: &PayloadId, now: Instant) {
        if let Some(last) = self.opened.get_mut(id) {
            *last = now;
        }
    }

    /// Payload `id` ended, `aborted` or not.
    pub(crate) fn on_end(&mut self, id: &PayloadId, aborted: bool) -> After {
        self.close(id);
        match (aborted, self.follow) {
            (false, true) => After::GoOn,
            (false, false) => After::Exit,
            (true, _) => self.report(),
        }
    }

    /// A fault of payload `id` (the listener fell behind on it): with `--follow` it is said
    /// and the others go on.
    pub(crate) fn on_fault(&mut self, id: &PayloadId) -> After {
        if self.follow {
            self.close(id);
        }
        self.report()
    }

    /// How a missed or aborted payload is reported: said and gone on from with `--follow`,
    /// the listener's error without.
    pub(crate) fn report(&self) -> After {
        if self.follow {
            After::Say
        } else {
            After::Fail
        }
    }

    /// The periodic check: the output's byte count, whether a write waits on it, and when
    /// each payload's sender last announced itself.
    pub(crate) fn on_tick(
        &mut self,
        now: Instant,
        bytes: u64,
        busy: bool,
        sender_seen: impl Fn(&PayloadId) -> Option<Instant>,
    ) -> Tick {
        let timed_out = self.idle.on_tick(now, bytes, busy);
        Tick {
            missed: self.missed(now, sender_seen),
            timed_out,
        }
    }

    /// A payload silent for [`LISTEN_STALL`] whose sender is gone, judged only once the
    /// listener has read everything stored for as long: opened ones first, then announced.
    fn missed(
        &mut self,
        now: Instant,
        sender_seen: impl Fn(&PayloadId) -> Option<Instant>,
    ) -> Option<Missed> {
        let settled =
            self.caught_up && now.saturating_duration_since(self.caught_up_since) >= LISTEN_STALL;
        if !settled {
            return None;
        }
        let silent = |(id, at): (&PayloadId, &Instant)| {
            now.saturating_duration_since(*at) >= LISTEN_STALL
                && take::sender_gone(sender_seen(id), now, self.stale)
        };
        let missed = if let Some((id, _)) = self.opened.iter().find(|e| silent(*e)) {
            Missed::End(id.clone())
        } else {
            let (id, _) = self.announced.iter().find(|e| silent(*e))?;
            Missed::Whole(id.clone())
        };
        let id = match &missed {
            Missed::End(id) | Missed::Whole(id) => id.clone(),
        };
        self.announced.remove(&id);
        self.close(&id);
        Some(missed)
    }

    fn close(&mut self, id: &PayloadId) {
        self.live_offered.remove(id);
        self.opened.remove(id);
        self.done.insert(id.clone());
    }
}

/// The live chunks reaching a listener: its first one of each payload tells the sender of the
/// listener, before the listener gets to it (opening a sealed payload takes a while).
#[derive(Debug, Default)]
pub(crate) struct LiveFeed {
    told: HashSet<PayloadId>,
}

impl LiveFeed {
    /// A live chunk of payload `id` arrived: whether to tell its sender now.
    pub(crate) fn on_chunk(&mut self, id: &PayloadId) -> bool {
        self.told.insert(id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const STALE: Duration = Duration::from_secs(3);

    fn id(s: &str) -> PayloadId {
        PayloadId::parse(s).expect("id")
    }

    fn book(t0: Instant, follow: bool) -> Book {
        Book::new(t0, follow, None, STALE, 0)
    }

    const GONE: fn(&PayloadId) -> Option<Instant> = |_| None;

    #[test]
    fn a_payload_whose_ticket_offered_the_live_path_may_come_live_from_its_first_chunk() {
        let t0 = Instant::now();
        let mut b = book(t0, true);
        b.on_ticket(id("a1"), Carried::LiveOffer, t0);
        b.on_ticket(id("b2"), Carried::Nothing, t0);
        assert_eq!(b.on_chunk(&id("a1"), t0), Some(Start::AtZero));
        assert!(b.may_come_live(&id("a1")));
        assert_eq!(b.on_chunk(&id("b2"), t0), Some(Start::AtZero));
        assert!(!b.may_come_live(&id("b2")));
        // A payload whose ticket this listener did not see: only its live chunks tell.
        assert!(!b.may_come_live(&id("c3")));
    }

    #[test]
    fn a_payload_whose_ticket_was_seen_starts_at_zero_a_late_one_at_its_first_chunk() {
        let t0 = Instant::now();
        let mut b = book(t0, true);
        assert_eq!(
            b.on_ticket(id("a1"), Carried::Nothing, t0),
            OnTicket::Announced
        );
        assert_eq!(b.on_chunk(&id("a1"), t0), Some(Start::AtZero));
        assert_eq!(b.on_chunk(&id("b2"), t0), Some(Start::AtFirstSeen));
        assert_eq!(
            b.on_ticket(id("a1"), Carried::Nothing, t0),
            OnTicket::Ignore,
            "opened"
        );
    }

    #[test]
    fn an_inline_ticket_is_written_once_and_its_stored_copy_ignored_after_the_end() {
        let t0 = Instant::now();
        let mut b = book(t0, true);
        assert_eq!(b.on_ticket(id("a1"), Carried::Its, t0), OnTicket::Write);
        assert_eq!(b.on_chunk(&id("a1"), t0), Some(Start::AtFirstSeen));
        assert_eq!(b.on_end(&id("a1"), false), After::GoOn);
        assert_eq!(b.on_chunk(&id("a1"), t0 + S), None, "the stored copy");
        assert_eq!(
            b.on_ticket(id("c3"), Carried::Another, t0),
            OnTicket::Ignore
        );
    }

    #[test]
    fn a_listener_reports_a_payload_missed_whole_after_5_s_of_silence_with_its_sender_gone() {
        let t0 = Instant::now();
        let mut b = book(t0, false);
        b.on_ticket(id("a1"), Carried::Nothing, t0);
        assert_eq!(b.on_tick(t0 + 4 * S, 0, false, GONE), Tick::default());
        let tick = b.on_tick(t0 + 5 * S, 0, false, GONE);
        assert_eq!(tick.missed, Some(Missed::Whole(id("a1"))));
        assert_eq!(b.on_chunk(&id("a1"), t0 + 6 * S), None, "given up on");
        assert_eq!(b.report(), After::Fail);
    }

    #[test]
    fn a_payload_read_in_part_is_missed_at_its_end_after_5_s_of_its_silence() {
        let t0 = Instant::now();
        let mut b = book(t0, true);
        b.on_chunk(&id("a1"), t0);
        b.on_written(&id("a1"), t0 + 2 * S);
        assert_eq!(b.on_tick(t0 + 6 * S, 0, false, GONE).missed, None);
        let tick = b.on_tick(t0 + 7 * S, 0, false, GONE);
        assert_eq!(tick.missed, Some(Missed::End(id("a1"))));
        assert_eq!(b.report(), After::Say, "with --follow: said, and on");
    }

    #[test]
    fn no_payload_is_missed_while_its_sender_still_announces_itself() {
        let t0 = Instant::now();
        let mut b = book(t0, false);
        b.on_ticket(id("a1"), Carried::Nothing, t0);
        let seen = |_: &PayloadId| Some(t0 + 8 * S);
        assert_eq!(b.on_tick(t0 + 10 * S, 0, false, seen).missed, None);
        assert!(b.on_tick(t0 + 11 * S, 0, false, seen).missed.is_some());
    }

    #[test]
    fn silence_is_judged_only_5_s_after_the_listener_read_everything_stored() {
        let t0 = Instant::now();
        let mut b = book(t0, false);
        b.on_ticket(id("a1"), Carried::Nothing, t0);
        b.on_stored(3, t0 + S);
        assert_eq!(
            b.on_tick(t0 + 20 * S, 0, false, GONE).missed,
            None,
            "more stored"
        );
        b.on_stored(0, t0 + 20 * S);
        assert_eq!(b.on_tick(t0 + 24 * S, 0, false, GONE).missed, None);
        assert!(b.on_tick(t0 + 25 * S, 0, false, GONE).missed.is_some());
    }

    #[test]
    fn the_first_end_ends_a_listener_without_follow_an_abort_fails_it() {
        let t0 = Instant::now();
        let mut b = book(t0, false);
        b.on_chunk(&id("a1"), t0);
        assert_eq!(b.on_end(&id("a1"), false), After::Exit);
        assert_eq!(b.on_end(&id("b2"), true), After::Fail);
        let mut f = book(t0, true);
        assert_eq!(f.on_end(&id("b2"), true), After::Say);
    }

    #[test]
    fn a_listener_left_behind_with_follow_gives_up_on_that_payload_only() {
        let t0 = Instant::now();
        let mut f = book(t0, true);
        f.on_chunk(&id("a1"), t0);
        assert_eq!(f.on_fault(&id("a1")), After::Say);
        assert_eq!(
            f.on_chunk(&id("a1"), t0 + S),
            None,
            "its late chunks are ignored"
        );
        assert_eq!(f.on_chunk(&id("b2"), t0 + S), Some(Start::AtFirstSeen));
        let mut b = book(t0, false);
        b.on_chunk(&id("a1"), t0);
        assert_eq!(b.on_fault(&id("a1")), After::Fail);
    }

    #[test]
    fn a_listener_times_out_with_nothing_arriving() {
        let t0 = Instant::now();
        let mut b = Book::new(t0, true, Some(10 * S), STALE, 0);
        b.on_live(t0 + 5 * S);
        assert_eq!(b.on_tick(t0 + 14 * S, 0, false, GONE).timed_out, None);
        assert_eq!(
            b.on_tick(t0 + 15 * S, 0, false, GONE).timed_out,
            Some(10 * S)
        );
    }

    #[test]
    fn a_listener_holds_at_most_32_mib_of_live_chunks_and_tells_each_sender_once() {
        assert!(live_chunk_fits(0, LIVE_BUFFER_BYTES));
        assert!(!live_chunk_fits(1, LIVE_BUFFER_BYTES));
        let mut feed = LiveFeed::default();
        assert!(feed.on_chunk(&id("a1")));
        assert!(!feed.on_chunk(&id("a1")));
        assert!(feed.on_chunk(&id("b2")));
    }
}
