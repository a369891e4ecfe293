//! Taking payloads out of a pipe: the oldest one (plain receive), or every one as it comes
//! (`--follow`, concurrent payloads interleaved chunk by chunk).
//!
//! Order of operations (see docs/protocol.md): take a ticket from the pipe's work-queue
//! consumer; read the payload's subject with an ordered consumer, writing chunks in order;
//! remove written chunks from the server as it goes, so a live transfer never piles up; at
//! the end ack the ticket and remove what is left. A taker that is interrupted removes only
//! what it wrote and gives the ticket back, so the next taker resumes right after it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::consumer::{pull, Consumer, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::client::errors::{self, Refusal};
use crate::client::session::{Session, TICKET_PROGRESS};
use crate::config::PipeSettings;
use crate::error::Failure;
use crate::protocol::crypto;
use crate::protocol::pipe::{self, End, PayloadId, PipeName};
use crate::protocol::proof::KEY_LEN;
use crate::rules::follow::{self, Idle, Place, FOLLOW_MAX_ACTIVE, FOLLOW_TICKET_BATCH};
use crate::rules::take::{self, Hold, OnClose, Purge, Start, Stopped, Ticket};
use crate::rules::take::{GIVE_BACK_WITHIN, PURGE_EVERY, SETTLE_WITHIN};
use crate::transfer::live::{Acker, Prover};
use crate::transfer::liveness::{Liveness, Verdict};
use crate::transfer::output::{Mark, WriteEnd, Writer};
use crate::transfer::payload::{self, Reader, Step, NOT_STORED};
use crate::transfer::presence::{self, Payloads, Role, Watch};
use crate::transfer::reception::Reception;

/// Longest single pull request for a ticket; longer waits repeat it.
const TICKET_POLL: Duration = Duration::from_secs(30);
/// Chunks asked for per pull request while reading a payload (bounds memory).
const READ_BATCH: i64 = 16;
/// The same for each payload a follower reads. Payloads write in turn, so only those whose
/// turn came read at once. Fewer stalled: the client's ordered pull of 2 chunks at a time lost
/// track of its requests when more were stored, and waited 10 s for the next (a host's lines
/// held back every host after it in the follower's order).
const FOLLOW_READ_BATCH: i64 = 16;
/// How many of a follower's payloads waiting for their turn may hold their first stored chunk
/// (up to 1 MiB each), fetched ahead so that the turn does not wait for it.
const FOLLOW_PREFETCH: usize = 8;
/// How often a taker checks on its sender and its server while reading.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a server may take to answer the question "are you there?".
const SERVER_ANSWER: Duration = Duration::from_secs(2);

/// How one taken payload ended.
#[derive(Debug)]
pub(crate) enum Taken {
    Complete,
    Aborted {
        id: PayloadId,
        reason: String,
        bytes: u64,
    },
    /// stdout closed: the payload counts as taken (plain receive) or was given back (follow).
    StdoutClosed,
    /// A ticket that names no payload; terminated and skipped.
    Skipped(String),
    /// Complete, but written from byte `at` on: the bytes before went to a taker that
    /// stopped.
    Resumed {
        id: PayloadId,
        at: u64,
        bytes: u64,
    },
}

/// Waits for the next ticket of a pipe. `Ok(None)` when `timeout` ran out. A pull that
/// fails (the consumer was removed as idle to make room under the consumer limit, the server
/// went away for a moment) makes the consumer again before asking again.
pub(crate) async fn take_ticket(
    session: &Session,
    pipe: &PipeName,
    consumer: &mut Consumer<pull::Config>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<jetstream::Message>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(TICKET_POLL),
            None => TICKET_POLL,
        };
        if wait < Duration::from_millis(1) {
            return Ok(None);
        }
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .context("cannot ask the server for a payload")?;
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Failure::Interrupted.into()),
            // A server that stopped answering does not end the pull request.
            _ = tokio::time::sleep(wait + SERVER_ANSWER) => None,
            next = batch.next() => next,
        };
        match next {
            Some(Ok(msg)) => return Ok(Some(msg)),
            Some(Err(e)) => {
                // A pull request that ran out, or a server that went away for a moment: ask
                // again; the deadline decides when to stop.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                tracing::debug!("{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                renew(session, pipe, consumer, cancel).await?;
            }
            None => {}
        }
    }
}

/// Makes a pipe's queue consumer again after a pull failed (it is the same consumer when it
/// still exists); a server that does not answer leaves it as it was, to be asked again.
async fn renew(
    session: &Session,
    pipe: &PipeName,
    consumer: &mut Consumer<pull::Config>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Failure::Interrupted.into()),
        made = tokio::time::timeout(SERVER_ANSWER, session.queue_consumer(pipe)) => {
            let made = made
                .with_context(|| format!("no answer within {SERVER_ANSWER:?}"))
                .and_then(|made| made);
            match made {
                Ok(c) => *consumer = c,
                Err(e) => tracing::debug!("cannot make the queue consumer of pipe {pipe} again: {e:#}"),
            }
            Ok(())
        }
    }
}

/// Removes a payload's chunks below `bound` (all of them when `None`).
pub(crate) async fn purge(
    data: &stream::Stream<()>,
    subject: &str,
    bound: Option<u64>,
) -> anyhow::Result<()> {
    let req = data.purge().filter(subject);
    match bound {
        Some(seq) => req.sequence(seq).await.map(|_| ()),
        None => req.await.map(|_| ()),
    }
    .with_context(|| format!("cannot remove taken chunks of {subject}"))
}

/// While a payload is read, keeps its ticket (a progress ack every [`TICKET_PROGRESS`]) and
/// removes written chunks from the server as [`Purge`] says (every [`PURGE_EVERY`], except
/// while the [`Hold`] holds). It runs on its own task so that a write waiting on a slow stdout
/// stops neither: a living taker never loses its ticket, and one killed while it waits has
/// removed what it wrote.
fn keep(
    ticket: jetstream::Message,
    data: stream::Stream<()>,
    subject: String,
    mark: Mark,
    hold: SharedHold,
) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut progress = tokio::time::interval(TICKET_PROGRESS);
        progress.tick().await;
        let mut purge_tick = tokio::time::interval(PURGE_EVERY);
        let mut purged = Purge::default();
        loop {
            tokio::select! {
                _ = progress.tick() => {
                    tracing::debug!("progress ack: keeping the ticket of {subject}");
                    let _ = ticket.ack_with(AckKind::Progress).await;
                }
                _ = purge_tick.tick() => {
                    if let Some(bound) = purged.on_tick(mark.get(), &hold.get(), Instant::now()) {
                        tracing::trace!("purging {subject} below stream sequence {bound}");
                        if let Err(e) = purge(&data, &subject, Some(bound)).await {
                            tracing::debug!("{e:#}");
                        }
                    }
                }
            }
        }
    }))
}

/// A taker's [`Hold`], shared with the task that purges (see [`keep`]).
#[derive(Clone, Default)]
struct SharedHold(Arc<std::sync::Mutex<Hold>>);

impl SharedHold {
    fn get(&self) -> Hold {
        self.0.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Tells the hold of an event, now.
    fn on(&self, event: impl FnOnce(&mut Hold, Instant)) {
        if let Ok(mut h) = self.0.lock() {
            event(&mut h, Instant::now());
        }
    }
}

/// The live path of a payload being taken (docs/protocol.md, "The live path"): its chunks
/// as the sender publishes them, and acknowledgements of what is written, as it is written.
struct LiveIn {
    chunks: async_nats::Subscriber,
    acker: Acker,
}

impl LiveIn {
    /// Subscribes to the payload's live chunks, then asks its sender for them; `None` when
    /// the server does not let this login use the live path.
    /// `sender_key` is the sender's public key from the ticket, when it gave one: this
    /// taker's words then prove they are its own.
    async fn ask(
        session: &Session,
        pipe: &PipeName,
        id: &PayloadId,
        mark: Mark,
        sender_key: Option<[u8; KEY_LEN]>,
    ) -> Option<Self> {
        if session.denied.live_refused() || !session.conn.live {
            return None;
        }
        let chunks = match session
            .client
            .subscribe(session.layout.live_subject(pipe, id))
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!("no live path: {e}");
                return None;
            }
        };
        // A server that refuses the subject says so before it answers a flush.
        let _ = session.client.flush().await;
        if session.denied.live_refused() {
            tracing::debug!("no live path: the server refuses this login its subjects");
            return None;
        }
        let taker = format!("{:016x}", rand::random::<u64>());
        tracing::debug!("asking for payload {id} live as taker {taker}");
        let acker = Acker::start(
            session.client.clone(),
            session.layout.live_ack_subject(pipe, id),
            id.clone(),
            taker,
            false,
            mark,
            sender_key.as_ref().and_then(Prover::with_sender),
        );
        Some(LiveIn { chunks, acker })
    }
}

/// The next live chunk, or never when the payload is not taken live.
async fn next_live(live: &mut Option<LiveIn>) -> Option<async_nats::Message> {
    match live {
        Some(l) => loop {
            match l.chunks.next().await {
                Some(m) if !crate::client::published_by_a_client(&m) => continue,
                next => break next,
            }
        },
        None => std::future::pending().await,
    }
}

/// How many of a follower's payloads have stored chunks it has not written yet. While any
/// has, data waits for the follower, and its `--timeout` idle clock does not run: a process
/// starved of CPU, a slow stdout or a slow server delays what waits, it is not silence.
#[derive(Clone, Default)]
pub(crate) struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    pub(crate) fn waiting(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    /// One payload's share, counted from its ticket on: nothing of it is written yet.
    fn enter(&self) -> Behind {
        let mut behind = Behind {
            backlog: Some(self.clone()),
            on: false,
        };
        behind.set(true);
        behind
    }
}

/// Whether one payload has stored chunks not written yet (see [`Backlog`]); counted out when
/// dropped.
#[derive(Default)]
struct Behind {
    backlog: Option<Backlog>,
    on: bool,
}

impl Behind {
    fn set(&mut self, on: bool) {
        if let (Some(b), true) = (&self.backlog, on != self.on) {
            if on {
                b.0.fetch_add(1, Ordering::Relaxed);
            } else {
                b.0.fetch_sub(1, Ordering::Relaxed);
            }
            self.on = on;
        }
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// One payload being taken.
struct Take<'a> {
    session: &'a Session,
    senders: Watch,
    sender_timeout: Duration,
    ticket: jetstream::Message,
    data: stream::Stream<()>,
    subject: String,
    reader: Reader,
    /// The ordered consumer that read the payload, removed when the payload is finished.
    consumer: Option<String>,
    /// Chunks per pull request.
    batch: i64,
    /// The payload's only chunk, when its ticket carried it.
    inline: Option<(pipe::ChunkMeta, bytes::Bytes)>,
    /// Its first stored chunk, fetched while it waited for its turn.
    first: Option<async_nats::jetstream::message::StreamMessage>,
    /// Lets the next payload of a follower start writing: passed once everything stored of
    /// this one is written (or when this one ends, dropped).
    turn: Option<oneshot::Sender<()>>,
    pipe: PipeName,
    /// Whether the ticket's sender offers the live path.
    offers_live: bool,
    live: Option<LiveIn>,
    /// Holds purging back when the payload goes live (see [`keep`]).
    purge_hold: SharedHold,
    /// Where this payload stands in a follower's order.
    place: Place,
    /// Whether stored chunks wait to be written (a follower's idle clock).
    behind: Behind,
}

enum ReadEnd {
    Done(End),
    Stopped(WriteEnd),
    Cancelled,
}

impl ReadEnd {
    /// How accepting a chunk ends the read, if it does.
    fn of(step: Step) -> Option<ReadEnd> {
        match step {
            Step::More => None,
            Step::End(end) => Some(ReadEnd::Done(end)),
            Step::Stopped(WriteEnd::Interrupted) => Some(ReadEnd::Cancelled),
            Step::Stopped(end) => Some(ReadEnd::Stopped(end)),
        }
    }
}

/// The ordered consumer reading a payload's stored chunks.
struct Stored {
    name: String,
    messages: pull::Ordered,
    /// Since when reading it fails.
    lost_since: Option<Instant>,
}

/// What one step of reading led to: `Some` when the read ended.
type Flow = anyhow::Result<Option<ReadEnd>>;

impl Take<'_> {
    /// Lets the next payload of a follower write (see [`Turn`]), once [`Place`] says so; keeps
    /// the follower's backlog in step with it.
    fn follow_place(&mut self, pass: bool) {
        self.behind.set(self.place.behind());
        if !pass {
            return;
        }
        if let Some(next) = self.turn.take() {
            tracing::debug!("payload {} is live: the next one may write", self.reader.id);
            let _ = next.send(());
        }
    }

    /// Whether the server answers a request, within [`SERVER_ANSWER`].
    async fn server_answers(&self) -> bool {
        tokio::time::timeout(SERVER_ANSWER, self.session.js.query_account())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether the payload's sender announced itself lately.
    fn sender_gone(&self) -> bool {
        let seen = self.senders.sender_seen(self.reader.id.as_str());
        take::sender_gone(seen, Instant::now(), presence::STALE)
    }

    /// An ordered consumer on the payload's subject from the stream sequence after `after`
    /// (from the start when 0), and the number of chunks stored after its start.
    async fn open_reader(&mut self, after: u64) -> anyhow::Result<(Stored, u64)> {
        let deliver_policy = match after {
            0 => DeliverPolicy::All,
            seq => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        let config = pull::OrderedConfig {
            filter_subject: self.subject.clone(),
            deliver_policy,
            max_batch: self.batch,
            // Short pull requests: a restarted server is noticed within seconds.
            max_expires: Duration::from_secs(5),
            ..Default::default()
        };
        let consumer = match self.data.create_consumer(config.clone()).await {
            // The account's consumer limit: skypipe's idle queue consumers make room.
            Err(e) if errors::is(&e, Refusal::ConsumerLimit) => {
                if self.session.make_room().await == 0 {
                    return Err(anyhow::Error::new(e).context(self.session.no_room()));
                }
                self.data.create_consumer(config).await?
            }
            made => made?,
        };
        let name = consumer.cached_info().name.clone();
        let ahead = consumer.cached_info().num_pending;
        let messages = consumer.messages().await?;
        let stored = Stored {
            name,
            messages,
            lost_since: None,
        };
        Ok((stored, ahead))
    }

    /// The first stored chunk, fetched with one request: a small payload (a trigger, a
    /// line) is then read without a consumer at all. Returns how the read ended, or the stream
    /// sequence to go on after (0 when nothing is stored yet).
    async fn read_first(&mut self, out: &Writer) -> anyhow::Result<Result<ReadEnd, u64>> {
        let msg = match self.first.take() {
            Some(m) => m,
            None => match self.fetch_first().await {
                Some(m) => m,
                // Not stored yet (or not allowed to ask): the consumer waits for it.
                None => return Ok(Err(0)),
            },
        };
        let meta = pipe::parse_chunk(Some(&msg.headers))
            .map_err(|e| payload::bad_headers(&self.reader.id, msg.sequence, e))?;
        let step = self
            .reader
            .accept(meta, msg.payload, msg.sequence, out)
            .await?;
        Ok(ReadEnd::of(step).ok_or(msg.sequence))
    }

    /// The first stored chunk of the payload, if one is stored.
    async fn fetch_first(&self) -> Option<async_nats::jetstream::message::StreamMessage> {
        self.data
            .get_first_raw_message_by_subject(&self.subject, 1)
            .await
            .ok()
    }

    /// Writes the chunk the ticket carried. Should it not be the whole payload after all, the
    /// stored chunks follow (the stored copy of this one is then skipped as a duplicate).
    async fn read_inline(&mut self, out: &Writer) -> Flow {
        match self.inline.take() {
            Some((meta, body)) => Ok(ReadEnd::of(self.reader.accept(meta, body, 0, out).await?)),
            None => Ok(None),
        }
    }

    /// Asks the sender for the payload live, when its ticket offers it.
    async fn ask_live(&mut self) {
        if !self.offers_live || self.live.is_some() {
            return;
        }
        self.live = LiveIn::ask(
            self.session,
            &self.pipe,
            &self.reader.id,
            self.reader.mark.clone(),
            pipe::ticket_live_key(self.ticket.headers.as_ref()),
        )
        .await;
        if self.live.is_some() {
            self.purge_hold.on(Hold::on_asked);
        }
    }

    /// Reads the payload to `out` until its end, a stop of stdout, or cancellation.
    async fn read(&mut self, out: &Writer, cancel: &CancellationToken) -> anyhow::Result<ReadEnd> {
        if let Some(end) = self.read_inline(out).await? {
            return Ok(end);
        }
        self.ask_live().await;
        let after = match self.read_first(out).await? {
            Ok(end) => return Ok(end),
            Err(after) => after,
        };
        if after == 0 {
            let pass = self.place.on_nothing_stored();
            self.follow_place(pass);
        }
        let id = self.reader.id.clone();
        let (mut stored, ahead) = self
            .open_reader(after)
            .await
            .with_context(|| format!("cannot read payload {id} from {}", self.session.url))?;
        tracing::debug!(
            "reading payload {id} after stream sequence {after} ({})",
            stored.name
        );
        let pass = self.place.on_opened(ahead);
        self.follow_place(pass);
        let end = self.read_on(&mut stored, out, cancel).await?;
        self.consumer = Some(stored.name);
        Ok(end)
    }

    /// The loop of [`Take::read`] once the stored chunks are being read: live and stored
    /// chunks as they come, the sender's and the server's liveness, a gap's judgement.
    async fn read_on(
        &mut self,
        stored: &mut Stored,
        out: &Writer,
        cancel: &CancellationToken,
    ) -> anyhow::Result<ReadEnd> {
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watch.tick().await;
        let mut clocks = Liveness::new(
            Instant::now(),
            self.sender_timeout,
            self.session.conn.retry.give_up_after,
        );
        loop {
            let gap_due = clocks.gap_due();
            let flow = tokio::select! {
                biased;
                _ = cancel.cancelled() => Ok(Some(ReadEnd::Cancelled)),
                _ = tokio::time::sleep_until(
                    tokio::time::Instant::from_std(gap_due.unwrap_or_else(Instant::now))
                ), if gap_due.is_some() => self.on_gap_due(&mut clocks).map(|()| None),
                _ = watch.tick() => self.on_watch(&mut clocks, cancel).await,
                Some(msg) = next_live(&mut self.live) => self.on_live(msg, &mut clocks, out).await,
                msg = stored.messages.next() => self.on_stored(msg, stored, &mut clocks, out).await,
            };
            if let Some(end) = flow? {
                return Ok(end);
            }
        }
    }

    /// A gap below a stored end waited a stale time: the sender, if it lives, may still
    /// publish the missing chunk again.
    fn on_gap_due(&mut self, clocks: &mut Liveness) -> anyhow::Result<()> {
        clocks.gap_judged();
        if self.sender_gone() {
            self.reader.nothing_more_stored()?;
        }
        Ok(())
    }

    /// The periodic look at the sender and the server.
    async fn on_watch(&mut self, clocks: &mut Liveness, cancel: &CancellationToken) -> Flow {
        let id = &self.reader.id;
        let connected =
            self.session.client.connection_state() == async_nats::connection::State::Connected;
        let seen = self.senders.sender_seen(id.as_str());
        match clocks.on_tick(Instant::now(), connected, seen) {
            Verdict::Wait => Ok(None),
            Verdict::ServerLost => Err(anyhow!(
                "lost the server at {} for {} while reading payload {id}; the payload is \
                 incomplete",
                self.session.url,
                self.session.conn.retry.shown()
            )),
            Verdict::AskServer => {
                let answers = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(Some(ReadEnd::Cancelled)),
                    a = self.server_answers() => a,
                };
                if !clocks.on_server_answer(answers) {
                    return Ok(None);
                }
                Err(self.vanished())
            }
        }
    }

    /// What a taker says of a payload whose sender went silent and is gone: a gap below a
    /// stored end is said as such.
    fn vanished(&self) -> anyhow::Error {
        if let Err(e) = self.reader.nothing_more_stored() {
            return e;
        }
        if let Some(missing) = self.reader.missing() {
            return self
                .reader
                .corrupt(format!("chunk {missing} never arrived (later chunks did)"));
        }
        payload::Vanished {
            id: self.reader.id.clone(),
            waited: humantime::format_duration(self.sender_timeout).to_string(),
            bytes: self.reader.offset,
        }
        .into()
    }

    /// A chunk that came live.
    async fn on_live(
        &mut self,
        msg: async_nats::Message,
        clocks: &mut Liveness,
        out: &Writer,
    ) -> Flow {
        let meta = pipe::parse_chunk(msg.headers.as_ref())
            .map_err(|e| payload::bad_headers(&self.reader.id, NOT_STORED, e))?;
        let chunk = meta.chunk;
        self.purge_hold.on(|h, now| h.on_live_chunk(now, chunk));
        let step = self
            .reader
            .accept(meta, msg.payload, NOT_STORED, out)
            .await?;
        clocks.on_chunk(Instant::now());
        // Everything before this live chunk written: the payload is live.
        let pass = self.place.on_live_written(self.reader.missing().is_none());
        self.follow_place(pass);
        Ok(ReadEnd::of(step))
    }

    /// What the ordered consumer delivered: a stored chunk, or a failure to read on from.
    async fn on_stored(
        &mut self,
        msg: Option<Result<jetstream::Message, pull::OrderedError>>,
        stored: &mut Stored,
        clocks: &mut Liveness,
        out: &Writer,
    ) -> Flow {
        let msg = match msg {
            Some(Ok(m)) => m,
            failed => return self.read_again(failed, stored).await.map(|()| None),
        };
        stored.lost_since = None;
        let (seq, last) = msg
            .info()
            .map(|i| (i.stream_sequence, i.pending == 0))
            .map_err(payload::no_info)?;
        let meta = pipe::parse_chunk(msg.headers.as_ref())
            .map_err(|e| payload::bad_headers(&self.reader.id, seq, e))?;
        let chunk = meta.chunk;
        self.purge_hold.on(|h, now| h.on_stored_chunk(now, chunk));
        // More stored after this one: it waits for this taker.
        self.place.on_stored(last);
        self.follow_place(false);
        let bytes = msg.message.payload.clone();
        let step = self.reader.accept(meta, bytes, seq, out).await?;
        clocks.on_chunk(Instant::now());
        // Everything stored is written: the payload is live from here on.
        let pass = self.place.on_stored_written(last);
        self.follow_place(pass);
        // The end is stored, nothing more is, and a chunk before it is missing: corrupt,
        // unless a living sender may still publish it again.
        if matches!(step, Step::More) && last && self.reader.missing().is_some() {
            clocks.on_gap(Instant::now());
        }
        Ok(ReadEnd::of(step))
    }

    /// A cluster node that died can take the ordered consumer (one replica) with it, and the
    /// client does not always make a new one: read on after the last chunk seen, for a while.
    async fn read_again(
        &mut self,
        failed: Option<Result<jetstream::Message, pull::OrderedError>>,
        stored: &mut Stored,
    ) -> anyhow::Result<()> {
        let since = *stored.lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() > self.session.conn.retry.give_up_after {
            let id = &self.reader.id;
            return match failed {
                Some(Err(e)) => Err(e).with_context(|| {
                    format!(
                        "lost the connection while reading payload {id} from {}",
                        self.session.url
                    )
                }),
                _ => Err(anyhow!("the server ended the read of payload {id}")),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok((again, _)) = self.open_reader(self.reader.max_seen).await {
            let old = std::mem::replace(&mut stored.name, again.name);
            let data = self.data.clone();
            tokio::spawn(async move { data.delete_consumer(&old).await });
            stored.messages = again.messages;
        }
        Ok(())
    }

    /// Removes the payload's consumer, if it had one.
    async fn drop_consumer(&self) {
        if let Some(name) = &self.consumer {
            let _ = self.data.delete_consumer(name).await;
        }
    }

    /// Tells a live sender this taker stops.
    async fn stop_live(&self) {
        if let Some(live) = &self.live {
            live.acker.stop().await;
        }
    }

    /// The payload is taken: ack the ticket, remove what is left and the consumer, together.
    async fn finish(&self, kind: AckKind) -> anyhow::Result<()> {
        self.stop_live().await;
        let (acked, purged, ()) = tokio::join!(
            self.ticket.double_ack_with(kind),
            purge(&self.data, &self.subject, None),
            self.drop_consumer()
        );
        acked
            .map_err(anyhow::Error::from_boxed)
            .with_context(|| format!("cannot confirm payload {} as taken", self.reader.id))?;
        purged
    }

    /// Keeps what was taken but not written: removes only written chunks, and gives the
    /// ticket back at once so the next taker resumes right after them. After cancellation
    /// it does not wait on a stuck stdout, and waits on the server for a bounded time.
    async fn give_back(&self, out: &Writer, cancelled: bool) {
        tracing::info!(
            "giving payload {} back after {} bytes written",
            self.reader.id,
            self.reader.offset
        );
        if cancelled {
            out.settle(SETTLE_WITHIN).await;
        } else {
            let _ = out.flush().await;
        }
        let written = Purge::on_give_back(self.reader.mark.get());
        let _ = tokio::time::timeout(GIVE_BACK_WITHIN, async {
            // Before the ticket goes back: the sender stores what was not written first.
            self.stop_live().await;
            if let Some(bound) = written {
                let _ = purge(&self.data, &self.subject, Some(bound)).await;
            }
            let _ = self.ticket.ack_with(AckKind::Nak(None)).await;
            self.drop_consumer().await;
            let _ = self.session.client.flush().await;
        })
        .await;
    }

    /// Carries out what becomes of the ticket.
    async fn leave(&self, ticket: Ticket, out: &Writer) -> anyhow::Result<()> {
        match ticket {
            Ticket::Ack => self.finish(AckKind::Ack).await?,
            Ticket::Term => {
                let _ = out.flush().await;
                let _ = tokio::time::timeout(GIVE_BACK_WITHIN, self.finish(AckKind::Term)).await;
            }
            Ticket::GiveBack { cancelled } => self.give_back(out, cancelled).await,
            Ticket::Leave => {}
        }
        Ok(())
    }
}

/// Everything taking a payload needs besides its ticket.
pub(crate) struct Taker<'a> {
    pub(crate) session: &'a Session,
    pub(crate) pipe: &'a PipeName,
    pub(crate) out: &'a Writer,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) on_close: OnClose,
    pub(crate) quiet: bool,
    /// Payloads being taken, for presence.
    pub(crate) active: &'a Payloads,
    /// Senders' announcements, to tell a quiet sender from a vanished one.
    pub(crate) senders: &'a Watch,
    pub(crate) sender_timeout: Duration,
    /// Chunks per pull request while reading.
    pub(crate) batch: i64,
    /// Hold back the start of a line until its end arrives (an output several payloads
    /// share).
    pub(crate) whole_lines: bool,
    /// Where a plain taker tells its progress the size a ticket announces.
    pub(crate) progress: Option<&'a Reception>,
    /// A follower's count of payloads with stored chunks still to write.
    pub(crate) backlog: Option<&'a Backlog>,
    /// A follower's permits to fetch a payload's first chunk before its turn.
    pub(crate) prefetch: Option<&'a Semaphore>,
}

/// A follower's payloads write in the order of their tickets: each waits for the one before
/// it to have written everything it has stored (so a backlog comes out oldest first, whole),
/// and a payload still being sent lets the next one in once it has caught up with its sender.
#[derive(Default)]
pub(crate) struct Turn {
    /// Fires (or closes) when this payload may write.
    wait: Option<oneshot::Receiver<()>>,
    /// Lets the next payload write.
    pass: Option<oneshot::Sender<()>>,
}

impl Taker<'_> {
    /// Takes the payload a ticket announces and writes it to `out`, in its `turn`.
    pub(crate) async fn take(
        &self,
        ticket: jetstream::Message,
        turn: Turn,
    ) -> anyhow::Result<Taken> {
        let id = match pipe::parse_ticket(ticket.headers.as_ref()) {
            Ok(id) => id,
            Err(e @ pipe::HeaderError::Version(_)) => {
                let _ = ticket.ack_with(AckKind::Nak(None)).await;
                return Err(payload::Newer(format!("a payload on pipe {}: {e}", self.pipe)).into());
            }
            Err(e) => {
                let _ = ticket.double_ack_with(AckKind::Term).await;
                return Ok(Taken::Skipped(format!(
                    "skipped a malformed ticket on pipe {}: {e}",
                    self.pipe
                )));
            }
        };
        presence::track(self.active, id.as_str(), true);
        let taken = self.take_ticketed(ticket, id.clone(), turn).await;
        presence::track(self.active, id.as_str(), false);
        taken
    }

    async fn take_ticketed(
        &self,
        ticket: jetstream::Message,
        id: PayloadId,
        mut turn: Turn,
    ) -> anyhow::Result<Taken> {
        let mut take = self.open(ticket, &id, turn.pass.take()).await?;
        // The ticket is kept from now until the payload is finished or given back, however
        // long stdout makes the writes (and the final flush) wait.
        let _keeper = keep(
            take.ticket.clone(),
            take.data.clone(),
            take.subject.clone(),
            take.reader.mark.clone(),
            take.purge_hold.clone(),
        );
        let read = self.read_in_turn(&mut take, turn.wait.take()).await;
        let resumed = take.reader.started_at;
        let complete = matches!(read, Ok(ReadEnd::Done(End::Eof(_))));
        if let (Some(at), false, false, true) = (resumed, self.quiet, complete, read.is_ok()) {
            eprintln!("skypipe: {}", resumed_note(&id, at));
        }
        let read = match read {
            Ok(ReadEnd::Done(end)) => flushed(self.out, end, &take.reader).await,
            read => read,
        };
        let stopped = stopped(&read);
        take.leave(take::ticket_after(stopped, self.on_close), self.out)
            .await?;
        let bytes = take.reader.offset;
        match read {
            Err(e) if stopped == Stopped::Fault => Err(payload::Removed(e).into()),
            Err(e) => Err(e),
            Ok(ReadEnd::Cancelled) => Err(Failure::Interrupted.into()),
            Ok(ReadEnd::Stopped(end)) => end.ending().map(|()| Taken::StdoutClosed),
            Ok(ReadEnd::Done(end)) => {
                let chunks = take.reader.chunks();
                tracing::info!("payload {id} taken: {chunks} chunks, {bytes} bytes");
                Ok(match (end, resumed) {
                    (End::Eof(_), None) => Taken::Complete,
                    (End::Eof(_), Some(at)) => Taken::Resumed { id, at, bytes },
                    (End::Abort { reason, .. }, _) => Taken::Aborted { id, reason, bytes },
                })
            }
        }
    }

    /// The payload a ticket announces, ready to be read.
    async fn open(
        &self,
        ticket: jetstream::Message,
        id: &PayloadId,
        turn: Option<oneshot::Sender<()>>,
    ) -> anyhow::Result<Take<'_>> {
        let session = self.session;
        let delivered = ticket.info().map(|i| i.delivered).unwrap_or(1);
        tracing::info!(
            "took payload {id} of pipe {} (delivery {delivered})",
            self.pipe
        );
        let start = Start::of_ticket(delivered);
        // A resumed payload writes only its rest: a share of the whole would mislead.
        if let (Some(progress), Start::AtZero) = (self.progress, start) {
            progress.announce(pipe::ticket_size(ticket.headers.as_ref()));
        }
        let data = session
            .js
            .get_stream_no_info(session.layout.data_stream())
            .await?;
        // A ticket given out before may have had its payload written by the taker that lost
        // it: only the stored chunks say where to resume, so its inline copy is not used.
        let inline = if start != Start::AtZero || !pipe::ticket_is_inline(ticket.headers.as_ref()) {
            None
        } else {
            pipe::parse_chunk(ticket.headers.as_ref())
                .ok()
                .map(|meta| (meta, ticket.payload.clone()))
        };
        Ok(Take {
            senders: self.senders.clone(),
            sender_timeout: self.sender_timeout,
            session,
            subject: session.layout.payload_subject(self.pipe, id),
            reader: Reader::new(id.clone(), start, false)
                .opening(session.opener(self.pipe))
                .whole_lines(self.whole_lines),
            offers_live: pipe::ticket_offers_live(ticket.headers.as_ref()),
            ticket,
            data,
            consumer: None,
            batch: self.batch,
            inline,
            first: None,
            turn,
            pipe: self.pipe.clone(),
            live: None,
            purge_hold: SharedHold::default(),
            place: Place::default(),
            behind: self.backlog.map(Backlog::enter).unwrap_or_default(),
        })
    }

    /// Waits for the payload's turn (a payload before this one that ended, however, closes
    /// its side), fetching its first stored chunk meanwhile when the follower has room for it
    /// (see [`FOLLOW_PREFETCH`]); then reads it.
    async fn read_in_turn(
        &self,
        take: &mut Take<'_>,
        wait: Option<oneshot::Receiver<()>>,
    ) -> anyhow::Result<ReadEnd> {
        if let Some(mut wait) = wait {
            // Only a payload's first taking: one given back part-way resumes at its first
            // stored chunk, which the taker before may still purge while this one waits.
            let first_taking = take.ticket.info().is_ok_and(|i| i.delivered == 1);
            let prefetch = self
                .prefetch
                .filter(|_| take.inline.is_none() && first_taking);
            let mut fetched = None;
            loop {
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return Ok(ReadEnd::Cancelled),
                    _ = &mut wait => break,
                    permit = async { prefetch?.acquire().await.ok() }, if fetched.is_none() => {
                        if permit.is_some() {
                            take.first = take.fetch_first().await;
                        }
                        fetched = Some(permit);
                    }
                }
            }
        }
        take.read(self.out, self.cancel).await
    }
}

/// A read that came to the payload's end, once what it wrote is flushed: stopped after all
/// when the flush failed, or was interrupted before every chunk was written (a Ctrl-C that
/// comes as the last write ends leaves a payload that was written whole, not one to give back
/// with nothing left of it stored).
async fn flushed(out: &Writer, end: End, reader: &Reader) -> anyhow::Result<ReadEnd> {
    Ok(match out.flush().await {
        WriteEnd::Interrupted => {
            out.settle(SETTLE_WITHIN).await;
            if reader.mark.chunks() >= reader.chunks() {
                ReadEnd::Done(end)
            } else {
                ReadEnd::Cancelled
            }
        }
        failed @ WriteEnd::Failed(_) => ReadEnd::Stopped(failed),
        WriteEnd::Ok | WriteEnd::Closed => ReadEnd::Done(end),
    })
}

/// How a read stopped, for what becomes of its ticket (see [`take::ticket_after`]).
fn stopped(read: &anyhow::Result<ReadEnd>) -> Stopped {
    match read {
        Ok(ReadEnd::Done(_)) => Stopped::Done,
        Ok(ReadEnd::Cancelled | ReadEnd::Stopped(WriteEnd::Interrupted)) => Stopped::Interrupted,
        Ok(ReadEnd::Stopped(WriteEnd::Closed)) => Stopped::Closed,
        Ok(ReadEnd::Stopped(WriteEnd::Failed(_))) => Stopped::WriteFailed,
        // Not a way a writer stops: nothing is decided on the ticket.
        Ok(ReadEnd::Stopped(WriteEnd::Ok)) => Stopped::Lost,
        Err(e) if payload::is_payload_fault(e) => Stopped::Fault,
        // Not for this receiver (no secret, another secret, or plain; or a newer skypipe's
        // payload): left in the pipe for another one.
        Err(e) if crypto::is_refused(e) || e.downcast_ref::<payload::Newer>().is_some() => {
            Stopped::NotOurs
        }
        // Connection trouble: the ticket comes back to some taker after its ack wait.
        Err(_) => Stopped::Lost,
    }
}
/// Takes the oldest payload of the pipe and writes it to stdout.
pub(crate) async fn recv(
    session: &Session,
    settings: &PipeSettings,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let pipe = &settings.pipe;
    let mut consumer = session.queue_consumer(pipe).await?;
    // The readiness line: from here on a payload sent to the pipe is this taker's.
    tracing::info!("waiting on pipe {pipe}");
    // The pipe's queue consumer stays when the taker leaves (docs/protocol.md, "Consumers").
    take_one(session, settings, &mut consumer, cancel).await
}

/// The body of [`recv`], on the pipe's queue consumer.
async fn take_one(
    session: &Session,
    settings: &PipeSettings,
    consumer: &mut Consumer<pull::Config>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let pipe = &settings.pipe;
    let reception = Reception::start(session, settings, Role::Take, cancel.clone()).await?;
    let Reception {
        out,
        active,
        senders,
        ..
    } = &reception;
    loop {
        let Some(ticket) = take_ticket(session, pipe, consumer, settings.timeout, &cancel).await?
        else {
            reception.finish();
            return Err(timed_out(pipe, settings.timeout));
        };
        let taker = Taker {
            session,
            pipe,
            out,
            cancel: &cancel,
            on_close: OnClose::Take,
            quiet: settings.quiet,
            active,
            senders,
            sender_timeout: settings.sender_timeout,
            batch: READ_BATCH,
            whole_lines: false,
            progress: Some(&reception),
            backlog: None,
            prefetch: None,
        };
        let taken = taker.take(ticket, Turn::default()).await;
        reception.finish();
        match taken? {
            Taken::Skipped(m) => {
                eprintln!("skypipe: {m}");
                continue;
            }
            Taken::Complete | Taken::StdoutClosed => return Ok(()),
            Taken::Resumed { id, at, bytes } => {
                return Err(Failure::Resumed(format!(
                    "{}; only bytes {at} to {bytes} of it were written here",
                    resumed_note(&id, at)
                ))
                .into())
            }
            Taken::Aborted { id, reason, bytes } => {
                return Err(Failure::Aborted(payload::aborted_message(
                    &id,
                    pipe.as_str(),
                    &reason,
                    Some(bytes),
                ))
                .into())
            }
        }
    }
}

/// What a taker says of a payload it resumed.
fn resumed_note(id: &PayloadId, at: u64) -> String {
    format!(
        "payload {id} was resumed at byte {at}: the bytes before it went to a taker that \
         stopped"
    )
}

fn timed_out(pipe: &PipeName, timeout: Option<Duration>) -> anyhow::Error {
    let waited = timeout
        .map(|t| humantime::format_duration(t).to_string())
        .unwrap_or_default();
    Failure::TimedOut(format!("no payload arrived on pipe {pipe} within {waited}")).into()
}

/// Asks for tickets whenever the follower has room, and hands each one over with the
/// permit that holds its room.
async fn fetch_tickets(
    session: Session,
    pipe: PipeName,
    mut consumer: Consumer<pull::Config>,
    room: Arc<Semaphore>,
    tx: mpsc::Sender<(jetstream::Message, OwnedSemaphorePermit)>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            p = room.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut permits = vec![first];
        let want = follow::tickets_to_ask(1 + room.available_permits());
        while permits.len() < want {
            match room.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if renew(&session, &pipe, &mut consumer, &stop).await.is_err() {
                    return;
                }
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                msg = batch.next() => match msg {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Ok(ticket) => {
                    let Some(permit) = permits.pop() else { break };
                    if tx.send((ticket, permit)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    if renew(&session, &pipe, &mut consumer, &stop).await.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Takes every payload of the pipe as it comes, oldest first, until interrupted or idle for
/// `--timeout`. Payloads in progress at the same time are interleaved chunk by chunk.
pub(crate) async fn follow(
    session: &Session,
    settings: &PipeSettings,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let pipe = settings.pipe.clone();
    let consumer = session.queue_consumer(&pipe).await?;
    tracing::info!("waiting on pipe {pipe} (following)");
    // Payload tasks stop on this: Ctrl-C, or the follower ending for another reason.
    let stop = cancel.child_token();
    let reception = Reception::start(session, settings, Role::Follow, stop.clone()).await?;
    let room = Arc::new(Semaphore::new(FOLLOW_MAX_ACTIVE));
    let (tx, mut tickets) = mpsc::channel(FOLLOW_TICKET_BATCH);
    let stop_fetch = CancellationToken::new();
    let fetcher = AbortOnDropHandle::new(tokio::spawn(fetch_tickets(
        session.clone(),
        pipe.clone(),
        consumer,
        room,
        tx,
        stop_fetch.clone(),
    )));
    let mut follower = Follower {
        session,
        settings,
        reception: &reception,
        stop,
        previous: None,
        tasks: JoinSet::new(),
        backlog: Backlog::default(),
        prefetch: Arc::new(Semaphore::new(FOLLOW_PREFETCH)),
        idle: Idle::new(
            Instant::now(),
            settings.timeout,
            reception.out.counter().get(),
        ),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result: anyhow::Result<()> = loop {
        let ended = tokio::select! {
            biased;
            _ = cancel.cancelled() => Some(Err(Failure::Interrupted.into())),
            Some((ticket, permit)) = tickets.recv() => {
                follower.spawn(ticket, permit);
                None
            }
            Some(joined) = follower.tasks.join_next() => follower.on_joined(joined),
            _ = tick.tick() => follower.on_tick(),
        };
        if let Some(result) = ended {
            break result;
        }
    };
    // Stop taking; give back whatever is in progress or handed over but not started. Each
    // step waits on the server for a bounded time: a server that stopped answering must not
    // keep the follower from ending when it should.
    stop_fetch.cancel();
    let _ = tokio::time::timeout(GIVE_BACK_WITHIN, fetcher).await;
    follower.wind_down(tickets).await;
    reception.finish();
    result
}

/// The tickets a follower hands over with the permit that holds their room.
type Tickets = mpsc::Receiver<(jetstream::Message, OwnedSemaphorePermit)>;

/// A follower's payloads in progress.
struct Follower<'a> {
    session: &'a Session,
    settings: &'a PipeSettings,
    reception: &'a Reception,
    /// Stops the payload tasks.
    stop: CancellationToken,
    /// The turn of the payload handed over last: the next one waits for it (see [`Turn`]).
    previous: Option<oneshot::Receiver<()>>,
    tasks: JoinSet<anyhow::Result<Taken>>,
    backlog: Backlog,
    /// Permits to fetch a payload's first chunk before its turn.
    prefetch: Arc<Semaphore>,
    idle: Idle,
}

impl Follower<'_> {
    /// Takes the payload of a ticket on a task of its own, in its turn.
    fn spawn(&mut self, ticket: jetstream::Message, permit: OwnedSemaphorePermit) {
        self.idle.on_activity(Instant::now());
        let session = self.session.clone();
        let pipe = self.settings.pipe.clone();
        let Reception {
            out,
            active,
            senders,
            ..
        } = self.reception;
        let (out, active, senders) = (out.clone(), active.clone(), senders.clone());
        let (stop, backlog) = (self.stop.clone(), self.backlog.clone());
        let prefetch = self.prefetch.clone();
        let (quiet, sender_timeout) = (self.settings.quiet, self.settings.sender_timeout);
        let (pass, next) = oneshot::channel();
        let turn = Turn {
            wait: self.previous.replace(next),
            pass: Some(pass),
        };
        self.tasks.spawn(async move {
            let taker = Taker {
                session: &session,
                pipe: &pipe,
                out: &out,
                cancel: &stop,
                on_close: OnClose::GiveBack,
                quiet,
                active: &active,
                senders: &senders,
                sender_timeout,
                batch: FOLLOW_READ_BATCH,
                whole_lines: true,
                progress: None,
                backlog: Some(&backlog),
                prefetch: Some(&prefetch),
            };
            let taken = taker.take(ticket, turn).await;
            drop(permit);
            taken
        });
    }

    /// A payload task ended: `Some` when the follower ends with it.
    fn on_joined(
        &mut self,
        joined: Result<anyhow::Result<Taken>, tokio::task::JoinError>,
    ) -> Option<anyhow::Result<()>> {
        self.idle.on_activity(Instant::now());
        match joined {
            Ok(Ok(Taken::StdoutClosed)) => Some(Ok(())),
            Ok(Ok(Taken::Skipped(m))) => {
                eprintln!("skypipe: {m}");
                None
            }
            Ok(Ok(taken)) => {
                self.say(&taken);
                None
            }
            Ok(Err(e)) if payload::is_payload_fault(&e) => {
                eprintln!("skypipe: {}", crate::error::one_line(&e));
                None
            }
            Ok(Err(e)) if e.downcast_ref::<Failure>().is_some() => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(anyhow::Error::new(e).context("a payload task failed"))),
        }
    }

    /// The periodic check of the follower's `--timeout`: `Some` when it ran out.
    fn on_tick(&mut self) -> Option<anyhow::Result<()>> {
        let out = &self.reception.out;
        let busy = out.busy() || self.backlog.waiting();
        let t = self
            .idle
            .on_tick(Instant::now(), out.counter().get(), busy)?;
        Some(Err(Failure::TimedOut(format!(
            "nothing arrived on pipe {} for {}",
            self.settings.pipe,
            humantime::format_duration(t)
        ))
        .into()))
    }

    /// What a follower says of a payload taken: aborted, or resumed (unless quiet).
    fn say(&self, taken: &Taken) {
        let pipe = self.settings.pipe.as_str();
        match taken {
            Taken::Aborted { id, reason, bytes } => eprintln!(
                "skypipe: {}",
                payload::aborted_message(id, pipe, reason, Some(*bytes))
            ),
            Taken::Resumed { id, at, .. } if !self.settings.quiet => {
                eprintln!("skypipe: {}", resumed_note(id, *at));
            }
            _ => {}
        }
    }

    /// Stops the payloads in progress (they give themselves back) and gives back the tickets
    /// handed over but not started.
    async fn wind_down(&mut self, mut tickets: Tickets) {
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Ok(taken)) = joined {
                self.say(&taken);
            }
        }
        tickets.close();
        let _ = tokio::time::timeout(GIVE_BACK_WITHIN, async {
            while let Some((ticket, _permit)) = tickets.recv().await {
                let _ = ticket.ack_with(AckKind::Nak(None)).await;
            }
            let _ = self.session.client.flush().await;
        })
        .await;
    }
}
