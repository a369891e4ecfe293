//! The sender's side of the live path, as docs/protocol.md, "The live path", states it: where
//! a payload's chunks go (stored, live to one taker, stored for good), what is kept until the
//! taker writes it, when the sender leaves the live path and what it then stores and purges,
//! and how far it may run ahead of listeners. Besides, the sender's other clocks and windows:
//! the stored window, the ticket check, the settle times.
//!
//! [`LivePath`] takes the words heard on `P.live.N.I.ack` and the chunks published, each with
//! the instant it happened, and says what to do; `transfer/send.rs` publishes, stores and
//! purges. Each rule of the section is a test below, named by its step.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::pipe::{LiveAck, PayloadId};
use crate::protocol::proof::{AckKey, Half, KEY_LEN};

/// At most this many chunks wait for their acks at once.
pub(crate) const WINDOW_CHUNKS: usize = 32;
/// At most this many bytes wait for their acks at once (bounds the sender's memory).
pub(crate) const WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// At most this many bytes of live chunks wait for the taker's acknowledgement (bounds the
/// sender's memory, as [`WINDOW_BYTES`] does for stored ones). 4, 8 and 16 MiB moved 1 GiB
/// equally fast on loopback; 16 MiB cost the sender 10 MiB more memory.
pub(crate) const LIVE_WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// A live taker that acknowledges nothing for this long while chunks wait for it is taken
/// for gone (killed, cut off, or stuck on its stdout): the chunks go stored.
pub(crate) const LIVE_QUIET: Duration = Duration::from_secs(2);

/// A live sender gets at most this many chunks ahead of a listener that acknowledges live
/// chunks, unless that listener wrote nothing for [`LISTENER_QUIET`] (then it stops waiting
/// for it): listeners keep up with a taker as they did when everything was stored.
pub(crate) const LISTENER_SLACK_CHUNKS: u64 = 16;
/// How long a sender waits for a listener that writes nothing (stdout stuck, a machine under
/// load) before it goes on without it.
pub(crate) const LISTENER_QUIET: Duration = Duration::from_secs(3);

/// How often a sender checks that its payload's ticket is still in the pipe.
pub(crate) const TICKET_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a sender whose payload was dropped waits for the chunks in flight to be stored
/// before it removes what is stored of the payload.
pub(crate) const DROPPED_SETTLE: Duration = Duration::from_secs(5);
/// How long an aborting sender waits for the chunks in flight and then the abort marker to be
/// stored, all told (a server that stopped answering keeps it no longer).
pub(crate) const ABORT_SETTLE: Duration = Duration::from_secs(2);

/// Whether the window of stored chunks takes one more of `len` bytes, with `chunks` chunks of
/// `bytes` bytes waiting for their acks. One chunk always fits in an empty window.
pub(crate) fn window_has_room(chunks: usize, bytes: usize, len: usize) -> bool {
    chunks < WINDOW_CHUNKS && (chunks == 0 || bytes + len <= WINDOW_BYTES)
}

/// When the payload's ticket is next checked for (docs/protocol.md, "Sending": a ticket gone
/// before the end means the payload was dropped).
#[derive(Debug)]
pub(crate) struct TicketCheck {
    last: Instant,
}

impl TicketCheck {
    pub(crate) fn new(now: Instant) -> Self {
        TicketCheck { last: now }
    }

    /// When a check is due.
    pub(crate) fn due(&self) -> Instant {
        self.last + TICKET_CHECK_EVERY
    }

    /// Whether to check now: at most every [`TICKET_CHECK_EVERY`], or at once with `at_once`
    /// (before the end is stored). A check counts from the moment it is decided.
    pub(crate) fn check(&mut self, now: Instant, at_once: bool) -> bool {
        if !at_once && now < self.due() {
            return false;
        }
        self.last = now;
        true
    }
}

/// Where the payload's chunks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Stored; a taker may still ask for them live.
    Stored,
    /// Live, to this taker.
    Live(String),
    /// Stored from here on, whoever asks.
    StoredOnly,
}

/// Why the payload leaves the live path (step 4; a live publish that fails leaves it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leave {
    /// The taker said `stop`.
    Stopped,
    /// Another taker spoke: the ticket went to it.
    TookOver(String),
    /// The taker acknowledged more chunks than were published (step 3): forged or garbled.
    Forged { written: u64, published: u64 },
    /// The taker acknowledged nothing for [`LIVE_QUIET`] while chunks waited for it.
    Quiet,
    /// The subscription to the acknowledgements ended (the connection was replaced).
    Closed,
}

/// What a word on the acknowledgement subject calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing more (another payload's word, a listener's, one that changes nothing).
    Nothing,
    /// The word claims a taker's token without proving it: dropped unread.
    NotBelieved,
    /// The first taker that asked: chunks go live to it from the next one on.
    GoLive,
    /// Leave the live path ([`LivePath::leave`]).
    Leave(Leave),
}

/// What hearing a word did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heard {
    /// Payload bytes of the live chunks the word acknowledged (no longer kept: they count as
    /// sent).
    pub(crate) written: u64,
    pub(crate) step: Step,
}

impl Heard {
    fn step(step: Step) -> Self {
        Heard { written: 0, step }
    }
}

/// Whether the next live chunk may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    Go,
    /// Wait for a word until `until`. `taker`: the taker's window is full, so silence until
    /// then means the taker is quiet ([`LivePath::on_silence`]); otherwise it is a listener's
    /// time that runs out, and the next [`LivePath::room`] leaves it behind.
    Wait {
        until: Instant,
        taker: bool,
    },
}

/// A purge of the payload's subject in the data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purge {
    /// Below this stream sequence (that of the first stored chunk the taker did not write).
    Below(u64),
    /// The whole subject.
    Whole,
}

impl Purge {
    /// The `seq` of the purge request, `None` for the whole subject.
    pub(crate) fn bound(self) -> Option<u64> {
        match self {
            Purge::Below(seq) => Some(seq),
            Purge::Whole => None,
        }
    }
}

/// A live chunk kept until the taker writes it.
#[derive(Debug)]
struct Kept<T> {
    chunk: u64,
    /// Bytes of the body as published.
    body: usize,
    /// Payload bytes it carries.
    plain: u64,
    item: T,
}

/// A listener that acknowledges the live chunks it wrote.
#[derive(Debug)]
struct Listener {
    written: u64,
    /// When it last wrote more (or was first heard).
    moved: Instant,
}

/// The live path of one payload on the sender's side. `T` is what the sender keeps of a live
/// chunk to store it later (its headers and body).
pub(crate) struct LivePath<T> {
    id: PayloadId,
    route: Route,
    unacked: VecDeque<Kept<T>>,
    unacked_bytes: usize,
    /// When the taker last moved forward (or was first heard, or first owed a word).
    heard: Instant,
    /// Chunks `0..acked` are written by the live taker.
    acked: u64,
    /// Chunk and stream sequence of each chunk stored while the payload may go live.
    stored_at: Vec<(u64, u64)>,
    /// Listeners paced to, by token; and those no longer waited for.
    listeners: HashMap<String, Listener>,
    left_behind: HashSet<String>,
    /// This payload's half of the key a live taker proves its words with (its public key goes
    /// on the ticket); and the key itself, once a taker proved its first word.
    half: Option<Half>,
    proven: Option<AckKey>,
}

impl<T> LivePath<T> {
    /// A payload whose sender offers no live path: everything is stored.
    pub(crate) fn closed(id: PayloadId, now: Instant) -> Self {
        LivePath {
            id,
            route: Route::StoredOnly,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            heard: now,
            acked: 0,
            stored_at: Vec::new(),
            listeners: HashMap::new(),
            left_behind: HashSet::new(),
            half: None,
            proven: None,
        }
    }

    /// Step 1: the sender listens on the acknowledgement subject, with `half` for the ticket.
    pub(crate) fn offer(&mut self, half: Half) {
        self.route = Route::Stored;
        self.half = Some(half);
    }

    pub(crate) fn route(&self) -> &Route {
        &self.route
    }

    pub(crate) fn is_live(&self) -> bool {
        matches!(self.route, Route::Live(_))
    }

    /// Live chunks wait for the taker's word.
    pub(crate) fn waiting(&self) -> bool {
        self.is_live() && !self.unacked.is_empty()
    }

    /// The public key for the ticket's `Skypipe-Live-Key`, while a taker may still ask.
    pub(crate) fn ticket_key(&self) -> Option<[u8; KEY_LEN]> {
        self.half
            .as_ref()
            .filter(|_| self.route == Route::Stored)
            .map(Half::public)
    }

    /// When a waiting taker's silence makes it quiet (step 4).
    pub(crate) fn quiet_at(&self) -> Instant {
        self.heard + LIVE_QUIET
    }

    /// The oldest live chunk not acknowledged.
    pub(crate) fn first_unacked(&self) -> Option<&T> {
        self.unacked.front().map(|k| &k.item)
    }

    /// A word heard on the acknowledgement subject, `published` chunks being out (live or
    /// stored). Steps 2 to 4, and a listener's pace.
    pub(crate) fn on_word(&mut self, ack: LiveAck, published: u64, now: Instant) -> Heard {
        if ack.id != self.id {
            return Heard::step(Step::Nothing);
        }
        if ack.listener {
            self.on_listener(ack, now);
            return Heard::step(Step::Nothing);
        }
        if !self.believes(&ack) {
            return Heard::step(Step::NotBelieved);
        }
        match &self.route {
            Route::Stored if !ack.stop => {
                self.route = Route::Live(ack.taker);
                self.heard = now;
                Heard::step(Step::GoLive)
            }
            Route::Live(taker) if *taker == ack.taker => {
                if ack.written > published {
                    let forged = Leave::Forged {
                        written: ack.written,
                        published,
                    };
                    return Heard::step(Step::Leave(forged));
                }
                let written = self.acknowledged(ack.written, now);
                let step = match ack.stop {
                    true => Step::Leave(Leave::Stopped),
                    false => Step::Nothing,
                };
                Heard { written, step }
            }
            Route::Live(_) => Heard::step(Step::Leave(Leave::TookOver(ack.taker))),
            Route::Stored | Route::StoredOnly => Heard::step(Step::Nothing),
        }
    }

    /// A word heard while the payload is being aborted: only the live taker's count of what
    /// it wrote matters (proven as any of its words), so that no marker goes before a chunk it
    /// wrote. Returns the payload bytes it acknowledged.
    pub(crate) fn on_word_aborting(&mut self, ack: &LiveAck, published: u64, now: Instant) -> u64 {
        let taker = matches!(&self.route, Route::Live(t) if *t == ack.taker);
        let counts = ack.id == self.id && !ack.listener && taker && ack.written <= published;
        // A word with the taker's token proves itself here as anywhere (a forged count would
        // put the marker after chunks nobody wrote).
        if counts && self.believes(ack) {
            return self.acknowledged(ack.written, now);
        }
        0
    }

    /// Nothing was heard until `now`: a taker that owes a word and said nothing for
    /// [`LIVE_QUIET`] is taken for gone (step 4).
    pub(crate) fn on_silence(&self, now: Instant) -> Step {
        if self.waiting() && now >= self.quiet_at() {
            Step::Leave(Leave::Quiet)
        } else {
            Step::Nothing
        }
    }

    /// Whether whoever takes a payload believes a word is its own (docs/protocol.md, "Proven
    /// acknowledgements"). A taker that got a key on the ticket proves its first word, and
    /// from then on every word with its token must prove itself under the key that word
    /// agreed; a taker without keys (a client of an older protocol) is believed as it is.
    /// Words from other tokens are believed: they mean the ticket went elsewhere, and what
    /// that costs is only storing the rest.
    fn believes(&mut self, ack: &LiveAck) -> bool {
        match (&self.route, &self.proven) {
            (Route::Live(taker), Some(key)) if *taker == ack.taker => key.proves(ack),
            (Route::Live(taker), None) if *taker == ack.taker => true,
            (Route::Stored, _) if !ack.stop => {
                let (Some(half), Some(proof)) = (&self.half, &ack.proof) else {
                    return true;
                };
                match half.with_taker(&proof.key) {
                    Some(key) if key.proves(ack) => {
                        self.proven = Some(key);
                        true
                    }
                    _ => false,
                }
            }
            _ => true,
        }
    }

    /// A listener's word: how far it wrote, or that it stops ("Listening live").
    fn on_listener(&mut self, ack: LiveAck, now: Instant) {
        if ack.stop {
            self.listeners.remove(&ack.taker);
            self.left_behind.insert(ack.taker);
            return;
        }
        if self.left_behind.contains(&ack.taker) {
            return;
        }
        let l = self.listeners.entry(ack.taker).or_insert(Listener {
            written: ack.written,
            moved: now,
        });
        if ack.written > l.written {
            l.written = ack.written;
            l.moved = now;
        }
    }

    /// The live taker wrote chunks `0..written`: they need keeping no longer. Returns the
    /// payload bytes they carry.
    fn acknowledged(&mut self, written: u64, now: Instant) -> u64 {
        self.acked = self.acked.max(written);
        let mut bytes = 0;
        let mut moved = false;
        while self.unacked.front().is_some_and(|k| k.chunk < written) {
            if let Some(k) = self.unacked.pop_front() {
                self.unacked_bytes -= k.body;
                bytes += k.plain;
                moved = true;
            }
        }
        if moved || self.unacked.is_empty() {
            self.heard = now;
        }
        bytes
    }

    /// Whether live chunk `chunk` of `body` bytes may go now (step 2's window, and
    /// "Listening live"); and how many listeners it leaves behind, for good, because they
    /// wrote nothing for [`LISTENER_QUIET`] while this far behind.
    pub(crate) fn room(&mut self, chunk: u64, body: usize, now: Instant) -> (Room, usize) {
        let behind = |l: &Listener| chunk >= l.written + LISTENER_SLACK_CHUNKS;
        let left: Vec<String> = self
            .listeners
            .iter()
            .filter(|(_, l)| behind(l) && now.saturating_duration_since(l.moved) >= LISTENER_QUIET)
            .map(|(t, _)| t.clone())
            .collect();
        for token in &left {
            self.listeners.remove(token);
        }
        let count = left.len();
        self.left_behind.extend(left);
        let listeners = self
            .listeners
            .values()
            .filter(|l| behind(l))
            .map(|l| l.moved + LISTENER_QUIET)
            .min();
        let full = self.waiting() && self.unacked_bytes + body > LIVE_WINDOW_BYTES;
        let taker = self.quiet_at();
        let room = match (full, listeners) {
            (false, None) => Room::Go,
            (true, None) => Room::Wait {
                until: taker,
                taker: true,
            },
            (true, Some(l)) => Room::Wait {
                until: taker.min(l),
                taker: true,
            },
            (false, Some(l)) => Room::Wait {
                until: l,
                taker: false,
            },
        };
        (room, count)
    }

    /// Live chunk `chunk` (`body` bytes published, `plain` payload bytes) went to the taker:
    /// it is kept until acknowledged. The quiet clock runs only while the taker owes a word.
    pub(crate) fn sent_live(&mut self, chunk: u64, body: usize, plain: u64, item: T, now: Instant) {
        if self.unacked.is_empty() {
            self.heard = now;
        }
        self.unacked_bytes += body;
        self.unacked.push_back(Kept {
            chunk,
            body,
            plain,
            item,
        });
    }

    /// Chunk `chunk` was stored at stream sequence `seq`: while the payload may go live, kept
    /// for the purge on leaving.
    pub(crate) fn stored(&mut self, chunk: u64, seq: u64) {
        if self.route != Route::StoredOnly {
            self.stored_at.push((chunk, seq));
        }
    }

    /// Leaves the live path, for good (step 4): returns the live chunks not acknowledged,
    /// oldest first, to be stored in order before every chunk after them; `None` when it was
    /// left already. Before leaving, the sender purges what [`LivePath::purge`] says.
    pub(crate) fn leave(&mut self) -> Option<Vec<T>> {
        if self.route == Route::StoredOnly {
            return None;
        }
        self.route = Route::StoredOnly;
        self.stored_at.clear();
        self.unacked_bytes = 0;
        let unacked = std::mem::take(&mut self.unacked);
        Some(unacked.into_iter().map(|k| k.item).collect())
    }

    /// Chunks `0..acked` are written by the live taker.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The payload was dropped: nothing kept is stored, and the live path is over.
    pub(crate) fn drop_all(&mut self) {
        self.unacked.clear();
        self.unacked_bytes = 0;
        self.route = Route::StoredOnly;
    }

    /// On leaving a live taker (step 4), the purge of the stored chunks below the highest `K`
    /// it acknowledged: up to the first stored chunk numbered `K` or more, or the whole
    /// subject when there is none; nothing when no stored chunk is below `K`, or the payload
    /// never went live. Asked once every stored chunk's ack is in, so that it knows where
    /// each is.
    pub(crate) fn purge(&self) -> Option<Purge> {
        let acked = self.acked;
        if !self.is_live() || !self.stored_at.iter().any(|(chunk, _)| *chunk < acked) {
            return None;
        }
        let purge = self
            .stored_at
            .iter()
            .find(|(chunk, _)| *chunk >= acked)
            .map_or(Purge::Whole, |(_, seq)| Purge::Below(*seq));
        Some(purge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pipe::LiveProof;

    const TAKER: &str = "00112233aabbccdd";
    const MIB: usize = 1024 * 1024;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn word(id: &PayloadId, taker: &str, written: u64) -> LiveAck {
        LiveAck {
            id: id.clone(),
            taker: taker.into(),
            written,
            stop: false,
            listener: false,
            proof: None,
        }
    }

    fn stop(id: &PayloadId, taker: &str, written: u64) -> LiveAck {
        LiveAck {
            stop: true,
            ..word(id, taker, written)
        }
    }

    fn listen(id: &PayloadId, token: &str, written: u64) -> LiveAck {
        LiveAck {
            listener: true,
            ..word(id, token, written)
        }
    }

    /// A payload offered live; its chunk 0 stored at stream sequence 10.
    fn offered(t0: Instant) -> (PayloadId, LivePath<u64>, [u8; KEY_LEN]) {
        let id = PayloadId::random();
        let mut path = LivePath::closed(id.clone(), t0);
        let half = Half::new();
        let public = half.public();
        path.offer(half);
        path.stored(0, 10);
        (id, path, public)
    }

    /// A taker's proof of its words under the key it shares with `sender`.
    fn prover(sender: &[u8; KEY_LEN]) -> impl Fn(LiveAck) -> LiveAck {
        let mine = Half::new();
        let key = mine.with_sender(sender).expect("a key");
        move |mut ack: LiveAck| {
            ack.proof = None;
            let mac = key.mac(&ack);
            ack.proof = Some(LiveProof {
                key: mine.public(),
                mac,
            });
            ack
        }
    }

    /// Gone live to [`TAKER`] at `t0`, with live chunks `1..=n` of 1 MiB (100 payload bytes
    /// each) sent.
    fn live(t0: Instant, n: u64) -> (PayloadId, LivePath<u64>) {
        let (id, mut path, _) = offered(t0);
        assert_eq!(path.on_word(word(&id, TAKER, 0), 1, t0).step, Step::GoLive);
        for c in 1..=n {
            path.sent_live(c, MIB, 100, c, t0);
        }
        (id, path)
    }

    fn kept(path: &mut LivePath<u64>) -> Vec<u64> {
        path.unacked.iter().map(|k| k.item).collect()
    }

    #[test]
    fn step1_the_ticket_carries_the_key_while_a_taker_may_ask() {
        let t0 = Instant::now();
        let (id, mut path, public) = offered(t0);
        assert_eq!(path.ticket_key(), Some(public));
        path.on_word(word(&id, TAKER, 0), 1, t0);
        assert_eq!(path.ticket_key(), None);
        let closed = LivePath::<()>::closed(id, t0);
        assert_eq!(closed.ticket_key(), None);
        assert_eq!(closed.route(), &Route::StoredOnly);
    }

    #[test]
    fn step2_the_first_go_takes_the_payload_live() {
        let t0 = Instant::now();
        let (id, mut path, _) = offered(t0);
        assert!(!path.is_live());
        let heard = path.on_word(word(&id, TAKER, 0), 1, t0);
        assert_eq!(heard.step, Step::GoLive);
        assert_eq!(path.route(), &Route::Live(TAKER.into()));
        // Another payload's word, or a stop before any go, changes nothing.
        let (id, mut path, _) = offered(t0);
        let other = PayloadId::random();
        assert_eq!(
            path.on_word(word(&other, TAKER, 0), 1, t0).step,
            Step::Nothing
        );
        assert_eq!(path.on_word(stop(&id, TAKER, 0), 1, t0).step, Step::Nothing);
        assert_eq!(path.route(), &Route::Stored);
    }

    #[test]
    fn step2_at_most_8_mib_wait_for_the_taker() {
        let t0 = Instant::now();
        let (_, mut path) = live(t0, 7);
        assert_eq!(path.room(8, MIB, t0), (Room::Go, 0));
        path.sent_live(8, MIB, 100, 8, t0);
        let wait = Room::Wait {
            until: t0 + LIVE_QUIET,
            taker: true,
        };
        assert_eq!(path.room(9, 1, t0), (wait, 0));
        assert_eq!(LIVE_WINDOW_BYTES, 8 * MIB);
    }

    #[test]
    fn step3_written_chunks_need_keeping_no_longer() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 4);
        let heard = path.on_word(word(&id, TAKER, 3), 5, t0 + secs(0.5));
        assert_eq!(heard.written, 200, "chunks 1 and 2: chunk 0 was stored");
        assert_eq!(heard.step, Step::Nothing);
        assert_eq!(kept(&mut path), vec![3, 4]);
        // The window has room again for what was written.
        path.sent_live(5, 5 * MIB, 100, 5, t0);
        assert_eq!(path.room(6, MIB, t0).0, Room::Go);
    }

    #[test]
    fn step3_a_count_beyond_what_was_published_is_not_believed_and_leaves() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 4);
        path.on_word(word(&id, TAKER, 2), 5, t0);
        let heard = path.on_word(word(&id, TAKER, 6), 5, t0);
        let forged = Leave::Forged {
            written: 6,
            published: 5,
        };
        assert_eq!(heard, Heard::step(Step::Leave(forged)));
        // With the K acknowledged before: no chunk that nobody wrote is dropped.
        assert_eq!(path.acked(), 2);
        assert_eq!(path.leave(), Some(vec![2, 3, 4]));
    }

    #[test]
    fn step4_a_stop_leaves_after_counting_what_it_wrote() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 3);
        let heard = path.on_word(stop(&id, TAKER, 2), 4, t0);
        assert_eq!(heard.written, 100);
        assert_eq!(heard.step, Step::Leave(Leave::Stopped));
        assert_eq!(path.leave(), Some(vec![2, 3]));
    }

    #[test]
    fn step4_a_word_from_another_taker_leaves() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 2);
        let heard = path.on_word(word(&id, "ffffffffffffffff", 0), 3, t0);
        let took = Leave::TookOver("ffffffffffffffff".into());
        assert_eq!(heard.step, Step::Leave(took));
        assert_eq!(path.leave(), Some(vec![1, 2]));
    }

    #[test]
    fn step4_two_seconds_without_acks_while_chunks_wait_leaves() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 0);
        // Nothing owed: silence is no sign.
        assert_eq!(path.on_silence(t0 + secs(10.0)), Step::Nothing);
        // The quiet clock starts when a chunk is owed.
        path.sent_live(1, MIB, 100, 1, t0 + secs(10.0));
        assert_eq!(path.quiet_at(), t0 + secs(12.0));
        assert_eq!(path.on_silence(t0 + secs(11.9)), Step::Nothing);
        assert_eq!(path.on_silence(t0 + secs(12.0)), Step::Leave(Leave::Quiet));
        // A word that moves the taker forward restarts it.
        path.sent_live(2, MIB, 100, 2, t0 + secs(10.5));
        path.on_word(word(&id, TAKER, 2), 3, t0 + secs(11.5));
        assert_eq!(path.on_silence(t0 + secs(13.0)), Step::Nothing);
        assert_eq!(path.on_silence(t0 + secs(13.5)), Step::Leave(Leave::Quiet));
    }

    #[test]
    fn step4_the_stored_chunks_the_taker_wrote_are_purged() {
        let t0 = Instant::now();
        // Chunk 0 stored (seq 10), chunks 1 and 2 live, all written: the whole subject.
        let (id, mut path) = live(t0, 2);
        path.on_word(word(&id, TAKER, 3), 3, t0);
        assert_eq!(path.purge(), Some(Purge::Whole));
        // Chunks 0 and 1 stored (10, 11), taker wrote chunk 0 only: up to chunk 1's sequence.
        let (id, mut path, _) = offered(t0);
        path.stored(1, 11);
        path.on_word(word(&id, TAKER, 0), 2, t0);
        path.sent_live(2, MIB, 100, 2, t0);
        path.on_word(word(&id, TAKER, 1), 3, t0);
        assert_eq!(path.purge(), Some(Purge::Below(11)));
        assert_eq!(Purge::Below(11).bound(), Some(11));
        assert_eq!(path.leave(), Some(vec![2]));
        // Nothing written: nothing purged.
        let (_, path) = live(t0, 1);
        assert_eq!(path.purge(), None);
    }

    #[test]
    fn step4_leaving_is_for_good() {
        let t0 = Instant::now();
        let (id, mut path, _) = offered(t0);
        path.stored(1, 11);
        assert_eq!(path.purge(), None, "never live: the stored chunks stay");
        assert_eq!(path.leave(), Some(vec![]));
        assert!(path.leave().is_none());
        assert_eq!(path.on_word(word(&id, TAKER, 0), 1, t0).step, Step::Nothing);
        assert_eq!(path.route(), &Route::StoredOnly);
        path.stored(2, 12);
        assert!(path.stored_at.is_empty());
    }

    /// Step 5: the last chunk waits until every live chunk is acknowledged (or the payload
    /// leaves the live path); the sender's `settle_live` loops on this.
    #[test]
    fn step5_the_last_chunk_waits_for_every_live_chunk() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 2);
        assert!(path.waiting());
        path.on_word(word(&id, TAKER, 2), 3, t0);
        assert!(path.waiting(), "chunk 2 is not written yet");
        path.on_word(word(&id, TAKER, 3), 3, t0);
        assert!(!path.waiting());
        // Nor does a payload off the live path wait.
        let (_, mut path) = live(t0, 2);
        path.leave();
        assert!(!path.waiting());
    }

    #[test]
    fn proven_the_first_go_binds_the_taker_to_its_key() {
        let t0 = Instant::now();
        let (id, mut path, sender) = offered(t0);
        let proven = prover(&sender);
        // A go whose proof fails is not believed; one that proves itself is.
        let mut bad = proven(word(&id, TAKER, 0));
        bad.written = 1;
        assert_eq!(path.on_word(bad, 1, t0).step, Step::NotBelieved);
        assert_eq!(
            path.on_word(proven(word(&id, TAKER, 0)), 1, t0).step,
            Step::GoLive
        );
        path.sent_live(1, MIB, 100, 1, t0);
        // From then on a word with its token must prove itself under that key.
        let forged = word(&id, TAKER, 2);
        assert_eq!(path.on_word(forged, 2, t0).step, Step::NotBelieved);
        assert_eq!(
            path.on_word(proven(stop(&id, TAKER, 2)), 2, t0).written,
            100
        );
    }

    #[test]
    fn proven_a_word_heard_while_aborting_proves_itself_too() {
        let t0 = Instant::now();
        let (id, mut path, sender) = offered(t0);
        let proven = prover(&sender);
        path.on_word(proven(word(&id, TAKER, 0)), 1, t0);
        for chunk in 1..4 {
            path.sent_live(chunk, MIB, 100, chunk, t0);
        }
        // A forged count with the taker's token moves no abort marker past unwritten chunks.
        assert_eq!(path.on_word_aborting(&word(&id, TAKER, 3), 4, t0), 0);
        assert_eq!(path.first_unacked(), Some(&1));
        assert_eq!(
            path.on_word_aborting(&proven(word(&id, TAKER, 3)), 4, t0),
            200
        );
        assert_eq!(path.first_unacked(), Some(&3));
    }

    #[test]
    fn proven_a_taker_without_keys_is_believed_as_before() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 2);
        let heard = path.on_word(word(&id, TAKER, 2), 3, t0);
        assert_eq!(heard.written, 100);
    }

    #[test]
    fn listening_16_chunks_ahead_of_a_listener_waits_for_it() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 0);
        path.on_word(listen(&id, "l1", 4), 1, t0);
        assert_eq!(path.room(19, 1, t0), (Room::Go, 0));
        let wait = Room::Wait {
            until: t0 + LISTENER_QUIET,
            taker: false,
        };
        assert_eq!(path.room(20, 1, t0), (wait, 0));
        // It moves on: its clock starts again, and the chunk may go.
        path.on_word(listen(&id, "l1", 5), 1, t0 + secs(2.0));
        assert_eq!(path.room(20, 1, t0 + secs(2.0)), (Room::Go, 0));
    }

    #[test]
    fn listening_a_listener_that_writes_nothing_for_3s_is_left_behind() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 0);
        path.on_word(listen(&id, "l1", 0), 1, t0);
        assert!(matches!(
            path.room(16, 1, t0 + secs(2.9)).0,
            Room::Wait { .. }
        ));
        assert_eq!(path.room(16, 1, t0 + secs(3.0)), (Room::Go, 1));
        // For the rest of the payload.
        path.on_word(listen(&id, "l1", 0), 17, t0 + secs(3.5));
        assert_eq!(path.room(17, 1, t0 + secs(3.5)), (Room::Go, 0));
    }

    #[test]
    fn listening_a_listener_that_stops_is_not_waited_for() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 0);
        path.on_word(listen(&id, "l1", 0), 1, t0);
        path.on_word(
            LiveAck {
                stop: true,
                ..listen(&id, "l1", 0)
            },
            1,
            t0,
        );
        assert_eq!(path.room(30, 1, t0), (Room::Go, 0));
    }

    #[test]
    fn aborting_counts_only_the_live_takers_words_up_to_what_was_published() {
        let t0 = Instant::now();
        let (id, mut path) = live(t0, 3);
        path.on_word_aborting(&word(&id, "ffffffffffffffff", 3), 4, t0);
        path.on_word_aborting(&listen(&id, TAKER, 3), 4, t0);
        path.on_word_aborting(&word(&id, TAKER, 9), 4, t0);
        assert_eq!(path.first_unacked(), Some(&1));
        path.on_word_aborting(&word(&id, TAKER, 3), 4, t0);
        assert_eq!(path.first_unacked(), Some(&3));
    }

    #[test]
    fn dropped_keeps_nothing() {
        let t0 = Instant::now();
        let (_, mut path) = live(t0, 3);
        path.drop_all();
        assert!(path.first_unacked().is_none());
        assert!(path.leave().is_none());
    }

    #[test]
    fn sending_the_stored_window_holds_32_chunks_or_8_mib() {
        assert!(window_has_room(0, 0, 64 * MIB), "one chunk always goes");
        assert!(window_has_room(31, MIB, MIB));
        assert!(!window_has_room(32, MIB, 1));
        assert!(window_has_room(4, 7 * MIB, MIB));
        assert!(!window_has_room(4, 7 * MIB, MIB + 1));
    }

    #[test]
    fn sending_the_ticket_is_checked_every_second_or_at_once_before_the_end() {
        let t0 = Instant::now();
        let mut check = TicketCheck::new(t0);
        assert_eq!(check.due(), t0 + TICKET_CHECK_EVERY);
        assert!(!check.check(t0 + secs(0.9), false));
        assert!(check.check(t0 + secs(0.9), true));
        assert!(!check.check(t0 + secs(1.5), false));
        assert!(check.check(t0 + secs(1.9), false));
        assert_eq!(check.due(), t0 + secs(2.9));
    }
}
