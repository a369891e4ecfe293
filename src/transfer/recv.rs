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
use crate::transfer::live::{Acker, Prover};
use crate::transfer::liveness::{Liveness, Verdict};
use crate::transfer::output::{Mark, WriteEnd, Writer};
use crate::transfer::payload::{self, Reader, Start, Step, NOT_STORED};
use crate::transfer::presence::{self, Payloads, Role, Watch};
use crate::transfer::reception::Reception;

/// Longest single pull request for a ticket; longer waits repeat it.
const TICKET_POLL: Duration = Duration::from_secs(30);
/// Chunks asked for per pull request while reading a payload (bounds memory).
const READ_BATCH: i64 = 16;
/// The same for each payload a follower reads: the batches of all its payloads arrive on one
/// connection, and their sum must stay well under the server's per-connection buffer (64 MiB)
/// or the server cuts the follower off as a slow consumer.
const FOLLOW_READ_BATCH: i64 = 2;
/// How often written chunks are removed from the server.
const PURGE_EVERY: Duration = Duration::from_millis(500);
/// How often a taker checks on its sender and its server while reading.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a server may take to answer the question "are you there?".
const SERVER_ANSWER: Duration = Duration::from_secs(2);
/// How long a taker that stops waits for the server to take back what it did not write (a
/// server that does not answer then gets the ticket back after its ack wait).
const GIVE_BACK_WITHIN: Duration = Duration::from_secs(2);
/// How long an interrupted taker waits for a write in progress on a stuck stdout.
const SETTLE_WITHIN: Duration = Duration::from_millis(500);
/// Payloads a follower takes at once.
const FOLLOW_MAX_ACTIVE: usize = 1000;
/// Tickets a follower asks for in one pull request.
const FOLLOW_TICKET_BATCH: usize = 64;

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

/// What a taker does with a payload when its stdout closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnClose {
    /// The reader went away on purpose (`skypipe x | head`): the payload is taken.
    Take,
    /// Keep the unwritten rest for the next taker.
    GiveBack,
}

/// Waits for the next ticket of a pipe. `Ok(None)` when `timeout` ran out. A pull that
/// fails (the consumer was removed as idle by another taker that left, the server went away
/// for a moment) makes the consumer again before asking again.
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
            match made.unwrap_or_else(|_| Err(anyhow!("no answer within {SERVER_ANSWER:?}"))) {
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
    .map_err(|e| anyhow!("cannot remove taken chunks of {subject}: {e}"))
}

/// While a payload is read, keeps its ticket (a progress ack every [`TICKET_PROGRESS`]) and
/// removes written chunks from the server (every [`PURGE_EVERY`]), except until `hold` (if
/// set): on the live path, the few chunks stored before the sender went live stay a little
/// longer, for listeners that read them later than the taker. It runs on its own task so
/// that a write waiting on a slow stdout stops neither: a living taker never loses its
/// ticket, and one killed while it waits has removed what it wrote.
fn keep(
    ticket: jetstream::Message,
    data: stream::Stream<()>,
    subject: String,
    mark: Mark,
    hold: Hold,
) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut progress = tokio::time::interval(TICKET_PROGRESS);
        progress.tick().await;
        let mut purge_tick = tokio::time::interval(PURGE_EVERY);
        let mut purged = 0u64;
        loop {
            tokio::select! {
                _ = progress.tick() => {
                    tracing::debug!("progress ack: keeping the ticket of {subject}");
                    let _ = ticket.ack_with(AckKind::Progress).await;
                }
                _ = purge_tick.tick() => {
                    let mark = mark.get();
                    if mark > purged && !hold.holds() {
                        tracing::trace!("purging {subject} below stream sequence {mark}");
                        purged = mark;
                        if let Err(e) = purge(&data, &subject, Some(mark)).await {
                            tracing::debug!("{e}");
                        }
                    }
                }
            }
        }
    }))
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

/// How long a taker leaves the chunks stored before its payload went live (see [`keep`]).
const LIVE_PREFIX_HOLD: Duration = Duration::from_secs(2);

/// Until when purging waits, if it does.
#[derive(Clone, Default)]
struct Hold(Arc<std::sync::Mutex<Option<Instant>>>);

impl Hold {
    fn holds(&self) -> bool {
        self.0
            .lock()
            .map(|h| h.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    /// Holds purging back for [`LIVE_PREFIX_HOLD`] from now (unless released).
    fn start(&self) {
        if let Ok(mut h) = self.0.lock() {
            let until = Instant::now() + LIVE_PREFIX_HOLD;
            if h.is_none_or(|t| t > Instant::now()) {
                *h = Some(until);
            }
        }
    }

    fn release(&self) {
        if let Ok(mut h) = self.0.lock() {
            *h = Some(Instant::now());
        }
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
    /// Lets the next payload of a follower start writing: passed once everything stored of
    /// this one is written (or when this one ends, dropped).
    turn: Option<oneshot::Sender<()>>,
    pipe: PipeName,
    /// Whether the ticket's sender offers the live path.
    offers_live: bool,
    live: Option<LiveIn>,
    /// Holds purging back when the payload goes live (see [`keep`]).
    purge_hold: Hold,
    /// Whether stored chunks wait to be written (a follower's idle clock).
    behind: Behind,
    /// Chunks stored after the start of the last reader opened, when it was opened.
    stored_ahead: u64,
}

enum ReadEnd {
    Done(End),
    Stopped(WriteEnd),
    Cancelled,
}

impl Take<'_> {
    /// Lets the next payload of a follower write (see [`Turn`]).
    fn pass_turn(&mut self) {
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
    fn sender_alive(&self, id: &PayloadId) -> bool {
        self.senders
            .sender_seen(id.as_str())
            .is_some_and(|t| t.elapsed() < presence::STALE)
    }

    /// An ordered consumer on the payload's subject from the stream sequence after `after`
    /// (from the start when 0), and its messages.
    async fn open_reader(&mut self, after: u64) -> anyhow::Result<(String, pull::Ordered)> {
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
                    return Err(anyhow!(e).context(self.session.no_room()));
                }
                self.data.create_consumer(config).await?
            }
            made => made?,
        };
        let name = consumer.cached_info().name.clone();
        self.stored_ahead = consumer.cached_info().num_pending;
        Ok((name, consumer.messages().await?))
    }

    /// The first stored chunk, fetched with one request: a small payload (a trigger, a
    /// line) is then read without a consumer at all. Returns how the read ended, or the stream
    /// sequence to go on after (0 when nothing is stored yet).
    async fn read_first(&mut self, out: &Writer) -> anyhow::Result<Result<ReadEnd, u64>> {
        let msg = match self
            .data
            .get_first_raw_message_by_subject(&self.subject, 1)
            .await
        {
            Ok(m) => m,
            // Not stored yet (or not allowed to ask): the consumer waits for it.
            Err(_) => return Ok(Err(0)),
        };
        let meta = pipe::parse_chunk(Some(&msg.headers))
            .map_err(|e| payload::bad_headers(&self.reader.id, msg.sequence, e))?;
        Ok(
            match self
                .reader
                .accept(meta, msg.payload, msg.sequence, out)
                .await?
            {
                Step::More => Err(msg.sequence),
                Step::End(end) => Ok(ReadEnd::Done(end)),
                Step::Stopped(end) => Ok(ReadEnd::Stopped(end)),
            },
        )
    }

    /// Reads the payload to `out` until its end, a stop of stdout, or cancellation.
    async fn read(&mut self, out: &Writer, cancel: &CancellationToken) -> anyhow::Result<ReadEnd> {
        let id = self.reader.id.clone();
        if let Some((meta, body)) = self.inline.take() {
            // Should it not be the whole payload after all, the stored chunks follow (the
            // stored copy of this one is then skipped as a duplicate).
            match self.reader.accept(meta, body, 0, out).await? {
                Step::End(end) => return Ok(ReadEnd::Done(end)),
                Step::Stopped(end) => return Ok(ReadEnd::Stopped(end)),
                Step::More => {}
            }
        }
        if self.offers_live && self.live.is_none() {
            self.live = LiveIn::ask(
                self.session,
                &self.pipe,
                &id,
                self.reader.mark.clone(),
                pipe::ticket_live_key(self.ticket.headers.as_ref()),
            )
            .await;
            if self.live.is_some() {
                self.purge_hold.start();
            }
        }
        // The highest chunk number that came live: a stored chunk after it means the sender
        // left the live path, and what it stores is purged as it is written again.
        let mut live_max: Option<u64> = None;
        let after = match self.read_first(out).await? {
            Ok(end) => return Ok(end),
            Err(after) => after,
        };
        if after == 0 {
            // Nothing stored yet: a live payload, which must not hold back the next one.
            self.pass_turn();
            self.behind.set(false);
        }
        let (mut consumer_name, mut messages) = self
            .open_reader(after)
            .await
            .with_context(|| format!("cannot read payload {id} from {}", self.session.url))?;
        tracing::debug!("reading payload {id} after stream sequence {after} ({consumer_name})");
        // Whether more is stored than was written so far (the consumer counted it).
        self.behind.set(self.stored_ahead > 0);
        let mut lost_since: Option<Instant> = None;
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watch.tick().await;
        let mut clocks = Liveness::new(
            Instant::now(),
            self.sender_timeout,
            self.session.conn.retry.give_up_after,
        );
        let end = loop {
            let gap_due = clocks.gap_due();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break ReadEnd::Cancelled,
                _ = tokio::time::sleep_until(
                    tokio::time::Instant::from_std(gap_due.unwrap_or_else(Instant::now))
                ), if gap_due.is_some() => {
                    clocks.gap_judged();
                    // The sender, if it lives, may still publish the missing chunk again.
                    if !self.sender_alive(&id) {
                        self.reader.nothing_more_stored()?;
                    }
                }
                _ = watch.tick() => {
                    let connected = self.session.client.connection_state()
                        == async_nats::connection::State::Connected;
                    let verdict =
                        clocks.on_tick(Instant::now(), connected, self.senders.sender_seen(id.as_str()));
                    if verdict == Verdict::ServerLost {
                        return Err(anyhow!(
                            "lost the server at {} for {} while reading payload {id}; \
                             the payload is incomplete",
                            self.session.url,
                            self.session.conn.retry.shown()
                        ));
                    }
                    if verdict == Verdict::AskServer {
                        let answers = tokio::select! {
                            biased;
                            _ = cancel.cancelled() => break ReadEnd::Cancelled,
                            a = self.server_answers() => a,
                        };
                        if !clocks.on_server_answer(answers) {
                            continue;
                        }
                        // A gap below a stored end is said as such.
                        self.reader.nothing_more_stored()?;
                        if let Some(missing) = self.reader.missing() {
                            return Err(self.reader.corrupt(format!(
                                "chunk {missing} never arrived (later chunks did)"
                            )));
                        }
                        return Err(payload::Vanished {
                            id: id.clone(),
                            waited: humantime::format_duration(self.sender_timeout).to_string(),
                            bytes: self.reader.offset,
                        }
                        .into());
                    }
                }
                Some(msg) = next_live(&mut self.live) => {
                    let meta = pipe::parse_chunk(msg.headers.as_ref())
                        .map_err(|e| payload::bad_headers(&id, NOT_STORED, e))?;
                    if live_max.is_none() {
                        // Longer, from the first live chunk on.
                        self.purge_hold.start();
                    }
                    live_max = live_max.max(Some(meta.chunk));
                    let step = self.reader.accept(meta, msg.payload, NOT_STORED, out).await?;
                    clocks.on_chunk(Instant::now());
                    if self.reader.missing().is_none() {
                        // Everything before this live chunk is written: the payload is live.
                        self.pass_turn();
                        self.behind.set(false);
                    }
                    match step {
                        Step::More => {}
                        Step::End(end) => break ReadEnd::Done(end),
                        Step::Stopped(WriteEnd::Interrupted) => break ReadEnd::Cancelled,
                        Step::Stopped(end) => break ReadEnd::Stopped(end),
                    }
                }
                msg = messages.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        failed => {
                            // A cluster node that died can take the ordered consumer (one
                            // replica) with it, and the client does not always make a new
                            // one: read on after the last chunk seen, for a while.
                            let since = *lost_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > self.session.conn.retry.give_up_after {
                                return match failed {
                                    Some(Err(e)) => Err(anyhow!(e)).with_context(|| {
                                        format!(
                                            "lost the connection while reading payload {id} from {}",
                                            self.session.url
                                        )
                                    }),
                                    _ => Err(anyhow!("the server ended the read of payload {id}")),
                                };
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            if let Ok((name, m)) = self.open_reader(self.reader.max_seen).await {
                                let old = std::mem::replace(&mut consumer_name, name);
                                let data = self.data.clone();
                                tokio::spawn(async move { data.delete_consumer(&old).await });
                                messages = m;
                            }
                            continue;
                        }
                    };
                    lost_since = None;
                    let (seq, last) = msg
                        .info()
                        .map(|i| (i.stream_sequence, i.pending == 0))
                        .map_err(payload::no_info)?;
                    let meta = pipe::parse_chunk(msg.headers.as_ref())
                        .map_err(|e| payload::bad_headers(&id, seq, e))?;
                    if live_max.is_some_and(|m| meta.chunk > m) {
                        self.purge_hold.release();
                    }
                    let bytes = msg.message.payload.clone();
                    // More stored after this one: it waits for this taker.
                    self.behind.set(!last);
                    let step = self.reader.accept(meta, bytes, seq, out).await?;
                    clocks.on_chunk(Instant::now());
                    if last {
                        // Everything stored is written: the payload is live from here on.
                        self.pass_turn();
                    }
                    match step {
                        // The end is stored, nothing more is, and a chunk before it is
                        // missing: corrupt, unless a living sender may still publish it again.
                        Step::More if last && self.reader.missing().is_some() => {
                            clocks.on_gap(Instant::now());
                        }
                        Step::More => {}
                        Step::End(end) => break ReadEnd::Done(end),
                        Step::Stopped(WriteEnd::Interrupted) => break ReadEnd::Cancelled,
                        Step::Stopped(end) => break ReadEnd::Stopped(end),
                    }
                }
            }
        };
        self.consumer = Some(consumer_name);
        Ok(end)
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
        acked.map_err(|e| anyhow!("cannot confirm payload {} as taken: {e}", self.reader.id))?;
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
        let mark = self.reader.mark.get();
        let _ = tokio::time::timeout(GIVE_BACK_WITHIN, async {
            // Before the ticket goes back: the sender stores what was not written first.
            self.stop_live().await;
            if mark > 0 {
                let _ = purge(&self.data, &self.subject, Some(mark)).await;
            }
            let _ = self.ticket.ack_with(AckKind::Nak(None)).await;
            self.drop_consumer().await;
            let _ = self.session.client.flush().await;
        })
        .await;
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
        let (session, out, cancel, quiet) = (self.session, self.out, self.cancel, self.quiet);
        let delivered = ticket.info().map(|i| i.delivered).unwrap_or(1);
        let redelivered = delivered > 1;
        tracing::info!(
            "took payload {id} of pipe {} (delivery {delivered})",
            self.pipe
        );
        let start = if redelivered {
            Start::AtFirstSeen
        } else {
            Start::AtZero
        };
        // A resumed payload writes only its rest: a share of the whole would mislead.
        if let (Some(progress), false) = (self.progress, redelivered) {
            progress.announce(pipe::ticket_size(ticket.headers.as_ref()));
        }
        let data = session
            .js
            .get_stream_no_info(session.layout.data_stream())
            .await?;
        // A ticket given out before may have had its payload written by the taker that lost
        // it: only the stored chunks say where to resume, so its inline copy is not used.
        let inline = if redelivered || !pipe::ticket_is_inline(ticket.headers.as_ref()) {
            None
        } else {
            pipe::parse_chunk(ticket.headers.as_ref())
                .ok()
                .map(|meta| (meta, ticket.payload.clone()))
        };
        let offers_live = pipe::ticket_offers_live(ticket.headers.as_ref());
        let mut take = Take {
            senders: self.senders.clone(),
            sender_timeout: self.sender_timeout,
            session,
            subject: session.layout.payload_subject(self.pipe, &id),
            reader: Reader::new(id.clone(), start, false)
                .opening(session.opener(self.pipe))
                .whole_lines(self.whole_lines),
            ticket,
            data,
            consumer: None,
            batch: self.batch,
            inline,
            turn: turn.pass.take(),
            pipe: self.pipe.clone(),
            offers_live,
            live: None,
            purge_hold: Hold::default(),
            behind: self.backlog.map(Backlog::enter).unwrap_or_default(),
            stored_ahead: 0,
        };
        // The ticket is kept from now until the payload is finished or given back, however
        // long stdout makes the writes (and the final flush) wait.
        let _keeper = keep(
            take.ticket.clone(),
            take.data.clone(),
            take.subject.clone(),
            take.reader.mark.clone(),
            take.purge_hold.clone(),
        );
        let read = async {
            if let Some(wait) = turn.wait.take() {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(ReadEnd::Cancelled),
                    // A payload before this one that ended, however, closes its side.
                    _ = wait => {}
                }
            }
            take.read(out, cancel).await
        };
        let end = match read.await {
            Ok(end) => end,
            Err(e) if payload::is_payload_fault(&e) => {
                let _ = out.flush().await;
                let _ = tokio::time::timeout(GIVE_BACK_WITHIN, take.finish(AckKind::Term)).await;
                return Err(payload::Removed(e).into());
            }
            // Not for this receiver (no secret, another secret, or plain; or a newer skypipe's
            // payload): left in the pipe for another one.
            Err(e) if crypto::is_refused(&e) || e.downcast_ref::<payload::Newer>().is_some() => {
                take.give_back(out, false).await;
                return Err(e);
            }
            // Connection trouble: the ticket comes back to some taker after its ack wait.
            Err(e) => return Err(e),
        };
        let resumed = take.reader.started_at;
        let complete = matches!(end, ReadEnd::Done(End::Eof(_)));
        if let (Some(at), false, false) = (resumed, quiet, complete) {
            eprintln!("skypipe: {}", resumed_note(&id, at));
        }
        match end {
            ReadEnd::Cancelled | ReadEnd::Stopped(WriteEnd::Interrupted) => {
                take.give_back(out, true).await;
                Err(Failure::Interrupted.into())
            }
            ReadEnd::Stopped(WriteEnd::Closed) => {
                match self.on_close {
                    OnClose::Take => take.finish(AckKind::Ack).await?,
                    OnClose::GiveBack => take.give_back(out, false).await,
                }
                Ok(Taken::StdoutClosed)
            }
            ReadEnd::Stopped(WriteEnd::Failed(m)) => {
                take.give_back(out, false).await;
                Err(anyhow!(m))
            }
            ReadEnd::Stopped(WriteEnd::Ok) => Err(anyhow!("the stdout writer stopped")),
            ReadEnd::Done(end) => {
                match out.flush().await {
                    WriteEnd::Failed(m) => {
                        take.give_back(out, false).await;
                        return Err(anyhow!(m));
                    }
                    WriteEnd::Interrupted => {
                        take.give_back(out, true).await;
                        return Err(Failure::Interrupted.into());
                    }
                    WriteEnd::Ok | WriteEnd::Closed => {}
                }
                take.finish(AckKind::Ack).await?;
                let bytes = take.reader.offset;
                tracing::info!(
                    "payload {id} taken: {} chunks, {bytes} bytes",
                    take.reader.chunks()
                );
                Ok(match (end, resumed) {
                    (End::Eof(_), None) => Taken::Complete,
                    (End::Eof(_), Some(at)) => Taken::Resumed { id, at, bytes },
                    (End::Abort { reason, .. }, _) => Taken::Aborted { id, reason, bytes },
                })
            }
        }
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
    let taken = take_one(session, settings, &mut consumer, cancel).await;
    // Nothing of this taker is in flight now (its ticket is acked or given back): its
    // pipe's queue consumer goes unless another taker uses it. Ctrl-C exits at once.
    if !taken.as_ref().is_err_and(is_interrupted) {
        session.leave_pipe(pipe).await;
    }
    taken
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Failure>(), Some(Failure::Interrupted))
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
        while permits.len() < FOLLOW_TICKET_BATCH {
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
    let Reception {
        out,
        active,
        senders,
        ..
    } = &reception;
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
    // Each payload waits for the one before it (see `Turn`).
    let mut previous: Option<oneshot::Receiver<()>> = None;
    let mut tasks: JoinSet<anyhow::Result<Taken>> = JoinSet::new();
    let backlog = Backlog::default();
    let mut last_activity = Instant::now();
    let mut last_bytes = out.counter().get();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Err(Failure::Interrupted.into()),
            Some((ticket, permit)) = tickets.recv() => {
                last_activity = Instant::now();
                let (session, pipe, out, stop, active, senders) = (
                    session.clone(),
                    pipe.clone(),
                    out.clone(),
                    stop.clone(),
                    active.clone(),
                    senders.clone(),
                );
                let (quiet, sender_timeout) = (settings.quiet, settings.sender_timeout);
                let backlog = backlog.clone();
                let (pass, next) = oneshot::channel();
                let turn = Turn { wait: previous.replace(next), pass: Some(pass) };
                tasks.spawn(async move {
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
                    };
                    let taken = taker.take(ticket, turn).await;
                    drop(permit);
                    taken
                });
            }
            Some(joined) = tasks.join_next() => {
                last_activity = Instant::now();
                match joined {
                    Ok(Ok(Taken::Complete)) => {}
                    Ok(Ok(Taken::Resumed { id, at, .. })) => {
                        if !settings.quiet {
                            eprintln!("skypipe: {}", resumed_note(&id, at));
                        }
                    }
                    Ok(Ok(Taken::Aborted { id, reason, bytes })) => {
                        eprintln!("skypipe: {}", payload::aborted_message(&id, pipe.as_str(), &reason, Some(bytes)));
                    }
                    Ok(Ok(Taken::Skipped(m))) => eprintln!("skypipe: {m}"),
                    Ok(Ok(Taken::StdoutClosed)) => break Ok(()),
                    Ok(Err(e)) if payload::is_payload_fault(&e) => eprintln!("skypipe: {e:#}"),
                    Ok(Err(e)) if e.downcast_ref::<Failure>().is_some() => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(anyhow!("a payload task failed: {e}")),
                }
            }
            _ = tick.tick() => {
                let bytes = out.counter().get();
                // Data waiting to be written is not idleness, however slowly it comes.
                if bytes != last_bytes || out.busy() || backlog.waiting() {
                    last_bytes = bytes;
                    last_activity = Instant::now();
                }
                if let Some(t) = settings.timeout {
                    if last_activity.elapsed() >= t {
                        break Err(Failure::TimedOut(format!(
                            "nothing arrived on pipe {pipe} for {}",
                            humantime::format_duration(t)
                        )).into());
                    }
                }
            }
        }
    };
    // Stop taking; give back whatever is in progress or handed over but not started. Each
    // step waits on the server for a bounded time: a server that stopped answering must not
    // keep the follower from ending when it should.
    stop_fetch.cancel();
    let _ = tokio::time::timeout(GIVE_BACK_WITHIN, fetcher).await;
    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(Taken::Aborted { id, reason, bytes })) => eprintln!(
                "skypipe: {}",
                payload::aborted_message(&id, pipe.as_str(), &reason, Some(bytes))
            ),
            Ok(Ok(Taken::Resumed { id, at, .. })) if !settings.quiet => {
                eprintln!("skypipe: {}", resumed_note(&id, at));
            }
            _ => {}
        }
    }
    tickets.close();
    let _ = tokio::time::timeout(GIVE_BACK_WITHIN, async {
        while let Some((ticket, _permit)) = tickets.recv().await {
            let _ = ticket.ack_with(AckKind::Nak(None)).await;
        }
        let _ = session.client.flush().await;
    })
    .await;
    reception.finish();
    // As a plain taker does: its pipe's queue consumer goes when nothing is in flight on it
    // (payloads given back keep it).
    if !result.as_ref().is_err_and(is_interrupted) {
        session.leave_pipe(&pipe).await;
    }
    result
}
