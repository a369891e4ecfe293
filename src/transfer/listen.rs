//! Listening in: a live copy of everything sent to a pipe from now on, through an ephemeral
//! ordered consumer on the pipe's data subjects. It takes no ticket and removes nothing, so
//! what the pipe's takers get is exactly what they would get without it.
//!
//! A listener that joins in the middle of a payload starts at the next chunk. It exits at the
//! first end of a payload unless `--follow`. One that falls behind so far that takers removed
//! chunks before it read them says how many it missed and exits 1 (with `--follow`: says so
//! and goes on with the other payloads): it never writes a gap. It also watches the pipe's
//! tickets, so a payload sent and taken whole before the listener could read any of it is
//! reported too, never silently skipped. With `--follow`, lines stay whole.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::client::session::Session;
use crate::config::PipeSettings;
use crate::error::Failure;
use crate::protocol::pipe::{self, End, PayloadId};
use crate::transfer::live::Acker;
use crate::transfer::output::WriteEnd;
use crate::transfer::payload::{self, Reader, Start, Step, NOT_STORED};
use crate::transfer::presence::{self, Role};
use crate::transfer::reception::Reception;

/// Chunks asked for per pull request. Larger than a taker's, so a listener reading as fast
/// as the takers has the chunks in hand before they are removed.
const LISTEN_BATCH: i64 = 64;
/// Bytes of live chunks held for a listener whose stdout is slower than the pipe's taker;
/// more are dropped (and reported as missed), so a slow listener's memory stays bounded.
const LIVE_BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// A payload that sent nothing to a listener for this long, while its sender no longer
/// announces itself, has ended out of the listener's sight.
const LISTEN_STALL: Duration = Duration::from_secs(5);

/// Listens on the pipe until the first payload ends (or forever with `--follow`).
pub(crate) async fn listen(
    session: &Session,
    settings: &PipeSettings,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let pipe = &settings.pipe;
    let follow = settings.mode.keeps_going();
    let data = session
        .js
        .get_stream_no_info(session.layout.data_stream())
        .await?;
    let config = pull::OrderedConfig {
        filter_subject: session.layout.pipe_data_wildcard(pipe),
        deliver_policy: DeliverPolicy::New,
        max_batch: LISTEN_BATCH,
        ..Default::default()
    };
    let consumer = match data.create_consumer(config.clone()).await {
        Ok(c) => c,
        Err(e) if crate::client::errors::is(&e, crate::client::errors::Refusal::NoStream) => {
            session.ensure_streams().await?;
            data.create_consumer(config).await?
        }
        Err(e)
            if crate::client::errors::is(&e, crate::client::errors::Refusal::ConsumerLimit)
                && session.make_room().await > 0 =>
        {
            data.create_consumer(config).await?
        }
        Err(e) => {
            return Err(anyhow!(e))
                .with_context(|| format!("cannot listen on pipe {pipe} at {}", session.url))
        }
    };
    let consumer_name = consumer.cached_info().name.clone();
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("cannot listen on pipe {pipe} at {}", session.url))?;
    // Chunks sent live to a taker (docs/protocol.md, "The live path"), subscribed to before
    // the tickets below: every payload announced from then on reaches this listener stored or
    // live.
    let (live_tx, mut live) = tokio::sync::mpsc::unbounded_channel::<async_nats::Message>();
    // This listener's token in its acknowledgements of live chunks.
    let token = format!("{:016x}", rand::random::<u64>());
    let held = Arc::new(AtomicUsize::new(0));
    let _live_feed = match session
        .client
        .subscribe(session.layout.pipe_live_wildcard(pipe))
        .await
    {
        Ok(mut sub) => {
            let held = held.clone();
            let (client, token) = (session.client.clone(), token.clone());
            Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                async move {
                    let mut told = HashSet::new();
                    while let Some(m) = sub.next().await {
                        if !crate::client::published_by_a_client(&m) {
                            continue;
                        }
                        // The sender hears of this listener at its first live chunk, before
                        // the listener gets to it (opening a sealed payload takes a while).
                        if let Ok(meta) = pipe::parse_chunk(m.headers.as_ref()) {
                            if told.insert(meta.id.clone()) {
                                let ack = pipe::LiveAck {
                                    id: meta.id,
                                    taker: token.clone(),
                                    written: 0,
                                    stop: false,
                                    listener: true,
                                    proof: None,
                                };
                                let subject = format!("{}.ack", m.subject);
                                crate::transfer::live::tell(&client, &subject, &ack).await;
                            }
                        }
                        let len = m.payload.len();
                        if held.load(Ordering::Relaxed) + len > LIVE_BUFFER_BYTES {
                            tracing::debug!("a live chunk dropped: this listener is behind");
                            continue;
                        }
                        held.fetch_add(len, Ordering::Relaxed);
                        if live_tx.send(m).is_err() {
                            return;
                        }
                    }
                },
            )))
        }
        Err(e) => {
            tracing::debug!("no live chunks for this listener: {e}");
            None
        }
    };
    // Tickets published from now on: their chunks are published after the consumer above
    // exists, so each of them must reach this listener, or be reported as missed.
    let mut tickets = session
        .client
        .subscribe(session.layout.queue_subject(pipe))
        .await
        .with_context(|| format!("cannot listen on pipe {pipe} at {}", session.url))?;
    tracing::info!("listening on pipe {pipe}");
    let reception = Reception::start(session, settings, Role::Listen, cancel.clone()).await?;
    let Reception { out, senders, .. } = &reception;
    let mut payloads: HashMap<PayloadId, (Reader, Instant)> = HashMap::new();
    // The live payloads' acknowledgements.
    let mut ackers: HashMap<PayloadId, Acker> = HashMap::new();
    // Payloads announced by a ticket and not seen yet, with when the ticket came.
    let mut announced: HashMap<PayloadId, Instant> = HashMap::new();
    // Payloads ended, or given up on (missed), whose late chunks are ignored.
    let mut done: HashSet<PayloadId> = HashSet::new();
    let mut last_activity = Instant::now();
    let mut last_bytes = out.counter().get();
    // Whether the last chunk read was the last one stored: only then can silence be judged
    // (a listener held up by a slow stdout has chunks waiting for it).
    let mut caught_up = true;
    let mut caught_up_since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        // A chunk to write: from the data stream, or the one an inline ticket carries.
        let (meta, chunk, seq) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break Err(Failure::Interrupted.into()),
            _ = tick.tick() => {
                // Bytes written are activity too: a write that waited on stdout is no silence.
                let bytes = out.counter().get();
                if bytes != last_bytes || out.busy() {
                    last_bytes = bytes;
                    last_activity = Instant::now();
                }
                let sender_gone = |id: &PayloadId| {
                    senders
                        .sender_seen(id.as_str())
                        .is_none_or(|t| t.elapsed() >= presence::STALE)
                };
                let settled = caught_up && caught_up_since.elapsed() >= LISTEN_STALL;
                let gone = payloads
                    .iter()
                    .find(|(id, (_, last))| settled && last.elapsed() >= LISTEN_STALL && sender_gone(id));
                let mut missed: Option<anyhow::Error> = None;
                if let Some((id, (reader, _))) = gone {
                    let (id, bytes) = (id.clone(), reader.offset);
                    payloads.remove(&id);
                    ackers.remove(&id);
                    done.insert(id.clone());
                    missed = Some(payload::MissedEnd { id, bytes }.into());
                } else if let Some(id) = announced
                    .iter()
                    .find(|(id, at)| settled && at.elapsed() >= LISTEN_STALL && sender_gone(id))
                    .map(|(id, _)| id.clone())
                {
                    announced.remove(&id);
                    done.insert(id.clone());
                    missed = Some(payload::MissedWhole { id }.into());
                }
                if let Some(e) = missed {
                    if follow {
                        eprintln!("skypipe: {e}");
                    } else {
                        break Err(e);
                    }
                }
                if let Some(t) = settings.timeout {
                    if last_activity.elapsed() >= t {
                        let what = if follow { "nothing arrived" } else { "no payload ended" };
                        break Err(Failure::TimedOut(format!(
                            "{what} on pipe {pipe} within {}",
                            humantime::format_duration(t)
                        )).into());
                    }
                }
                continue;
            }
            Some(ticket) = tickets.next() => {
                if !crate::client::published_by_a_client(&ticket) {
                    continue;
                }
                let Ok(id) = pipe::parse_ticket(ticket.headers.as_ref()) else { continue };
                if done.contains(&id) || payloads.contains_key(&id) {
                    continue;
                }
                // A small payload rides whole in its ticket: written from there, it cannot be
                // taken and removed before this listener reads its stored copy.
                if pipe::ticket_is_inline(ticket.headers.as_ref()) {
                    if let Ok(meta) = pipe::parse_chunk(ticket.headers.as_ref()) {
                        if meta.id == id {
                            last_activity = Instant::now();
                            announced.remove(&id);
                            (meta, ticket.payload.clone(), 0)
                        } else {
                            continue;
                        }
                    } else {
                        announced.entry(id).or_insert_with(Instant::now);
                        continue;
                    }
                } else {
                    announced.entry(id).or_insert_with(Instant::now);
                    continue;
                }
            }
            // Stored chunks first: live ones that follow them wait for them.
            msg = messages.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Err(anyhow!(e)).with_context(|| {
                        format!("lost the connection while listening on pipe {pipe} at {}", session.url)
                    }),
                    None => break Err(anyhow!("the server ended the listen on pipe {pipe}")),
                };
                last_activity = Instant::now();
                let (seq, pending) = msg
                    .info()
                    .map(|i| (i.stream_sequence, i.pending))
                    .map_err(payload::no_info)?;
                let was_caught_up = std::mem::replace(&mut caught_up, pending == 0);
                if caught_up && !was_caught_up {
                    caught_up_since = Instant::now();
                }
                let meta = match pipe::parse_chunk(msg.headers.as_ref()) {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("skypipe: ignoring a malformed message on pipe {pipe}: {e}");
                        continue;
                    }
                };
                (meta, msg.message.payload.clone(), seq)
            }
            Some(msg) = live.recv() => {
                held.fetch_sub(msg.payload.len(), Ordering::Relaxed);
                last_activity = Instant::now();
                match pipe::parse_chunk(msg.headers.as_ref()) {
                    Ok(meta) => (meta, msg.payload, NOT_STORED),
                    Err(e) => {
                        eprintln!("skypipe: ignoring a malformed message on pipe {pipe}: {e}");
                        continue;
                    }
                }
            }
        };
        let id = meta.id.clone();
        if done.contains(&id) {
            continue;
        }
        // A payload whose ticket this listener saw starts at chunk 0: its first chunks may be
        // stored ones that reach the consumer after live ones that follow them.
        let start = if announced.remove(&id).is_some() {
            Start::AtZero
        } else {
            Start::AtFirstSeen
        };
        let (reader, last) = payloads.entry(id.clone()).or_insert_with(|| {
            let reader = Reader::new(id.clone(), start, true)
                .opening(session.opener(pipe))
                .whole_lines(follow);
            (reader, Instant::now())
        });
        // A payload that came live: its sender paces itself to what this listener wrote.
        if seq == NOT_STORED && !ackers.contains_key(&id) {
            let acker = Acker::start(
                session.client.clone(),
                session.layout.live_ack_subject(pipe, &id),
                id.clone(),
                token.clone(),
                true,
                reader.mark.clone(),
                None,
            );
            ackers.insert(id.clone(), acker);
        }
        let step = reader.accept(meta, chunk, seq, out).await;
        // After the write: time spent waiting on stdout is not the sender's silence.
        *last = Instant::now();
        match step {
            Ok(Step::More) => {}
            Ok(Step::Stopped(WriteEnd::Closed)) => break Ok(()),
            Ok(Step::Stopped(WriteEnd::Interrupted)) => break Err(Failure::Interrupted.into()),
            Ok(Step::Stopped(WriteEnd::Failed(m))) => break Err(anyhow!(m)),
            Ok(Step::Stopped(WriteEnd::Ok)) => break Err(anyhow!("the stdout writer stopped")),
            Ok(Step::End(end)) => {
                payloads.remove(&id);
                ackers.remove(&id);
                done.insert(id.clone());
                match end {
                    End::Eof(_) if follow => {}
                    End::Eof(_) => break Ok(()),
                    End::Abort { reason, .. } => {
                        let m = payload::aborted_message(&id, pipe.as_str(), &reason, None);
                        if follow {
                            eprintln!("skypipe: {m}");
                        } else {
                            break Err(Failure::Aborted(m).into());
                        }
                    }
                }
            }
            // A payload this listener fell behind on: said, and the others go on.
            Err(e) if follow && payload::is_payload_fault(&e) => {
                payloads.remove(&id);
                if let Some(acker) = ackers.remove(&id) {
                    acker.stop().await;
                }
                done.insert(id);
                eprintln!("skypipe: {e}");
            }
            Err(e) => break Err(e),
        }
    };
    let _ = out.flush().await;
    reception.finish();
    // Senders still pacing themselves to this listener need not any more.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for acker in ackers.values() {
            acker.stop().await;
        }
        let _ = session.client.flush().await;
    })
    .await;
    let _ =
        tokio::time::timeout(Duration::from_secs(2), data.delete_consumer(&consumer_name)).await;
    result
}
