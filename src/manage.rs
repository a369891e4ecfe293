//! `skypipe ls`, `peek` and `rm`: looking at pipes and clearing them, through the ordinary
//! NATS connection and the JetStream API calls takers make (README, "Permissions for a
//! prefix", lists them).
//!
//! A payload *waits* while no taker has been handed its ticket: its ticket's stream sequence
//! is above the last one the pipe's work-queue consumer delivered. `peek` shows the oldest
//! such payload and `rm` drops them all; a payload a taker holds (or gave back part-way, for
//! the next taker to resume) is the takers' business and is left alone.

use std::io::IsTerminal as _;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures::StreamExt as _;
use skypipe_tui::units::{Age, Bytes};
use tokio_util::sync::CancellationToken;

use crate::client::session::Session;
use crate::error::{code, Failure};
use crate::protocol::pipe::{self, End, PayloadId, PipeName};
use crate::transfer::output::{WriteEnd, Writer};
use crate::transfer::payload::{self, Reader, Start, Step};

/// A payload waiting in a pipe: its ticket.
struct Waiting {
    /// The ticket's stream sequence.
    seq: u64,
    /// `None` for a ticket that names no payload (a taker would skip it).
    id: Option<PayloadId>,
}

/// The next message of `subject` at or after `seq`; `None` when there is none.
async fn next_stored(
    stream: &async_nats::jetstream::stream::Stream<()>,
    subject: &str,
    seq: u64,
) -> anyhow::Result<Option<StreamMessage>> {
    match stream.get_first_raw_message_by_subject(subject, seq).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {subject}"))),
    }
}

/// The payloads waiting in `pipe`, oldest first, and how many tickets takers hold.
async fn waiting(session: &Session, pipe: &PipeName) -> anyhow::Result<(Vec<Waiting>, u64)> {
    let layout = &session.layout;
    let queue = session.js.get_stream_no_info(layout.queue_stream()).await?;
    let (delivered, held) = match queue.consumer_info(layout.queue_consumer(pipe)).await {
        Ok(info) => (
            info.delivered.stream_sequence,
            info.num_ack_pending as u64 + info.num_redelivered as u64,
        ),
        // Nobody ever took from the pipe: every ticket waits.
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => (0, 0),
        // No streams yet: nothing was ever sent.
        Err(e) if e.kind() == ConsumerInfoErrorKind::StreamNotFound => return Ok((vec![], 0)),
        Err(e) => {
            return Err(anyhow!(e)).with_context(|| format!("cannot look at pipe {pipe}"));
        }
    };
    let subject = layout.queue_subject(pipe);
    let mut found = Vec::new();
    let mut seq = delivered + 1;
    while let Some(m) = next_stored(&queue, &subject, seq).await? {
        found.push(Waiting {
            seq: m.sequence,
            id: pipe::parse_ticket(Some(&m.headers)).ok(),
        });
        seq = m.sequence + 1;
    }
    Ok((found, held))
}

/// `skypipe ls`: one line per pipe with payloads waiting or skypipes on it.
pub(crate) async fn ls(session: &Session, json: bool) -> anyhow::Result<i32> {
    let snapshot = crate::monitor::once(session).await?;
    let pipes: Vec<_> = snapshot
        .pipes
        .iter()
        .filter(|p| {
            p.payloads_waiting > 0 || p.bytes_stored > 0 || p.senders + p.takers + p.listeners > 0
        })
        .collect();
    if json {
        let list: Vec<_> = pipes
            .iter()
            .map(|p| {
                serde_json::json!({
                    "pipe": p.name,
                    "payloads_waiting": p.payloads_waiting,
                    "bytes_stored": p.bytes_stored,
                    "oldest_waiting_seconds": p.oldest_waiting.map(|d| d.as_secs()),
                    "senders": p.senders,
                    "takers": p.takers,
                    "listeners": p.listeners,
                })
            })
            .collect();
        let report = serde_json::json!({ "server": snapshot.server.url, "pipes": list });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code::OK);
    }
    let width = pipes.iter().map(|p| p.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:<width$}  {:>7}  {:>10}  {:>6}  {:>7}  {:>6}  {:>9}",
        "PIPE", "WAITING", "BYTES", "OLDEST", "SENDERS", "TAKERS", "LISTENERS"
    );
    for p in pipes {
        let oldest = p
            .oldest_waiting
            .map_or_else(|| "-".to_string(), |d| Age(d).to_string());
        println!(
            "{:<width$}  {:>7}  {:>10}  {:>6}  {:>7}  {:>6}  {:>9}",
            p.name,
            p.payloads_waiting,
            Bytes::size(p.bytes_stored).to_string(),
            oldest,
            p.senders,
            p.takers,
            p.listeners
        );
    }
    Ok(code::OK)
}

/// `skypipe peek NAME`: writes the oldest waiting payload to stdout, as a taker would, and
/// leaves it in the pipe.
pub(crate) async fn peek(
    session: &Session,
    pipe: &PipeName,
    cancel: CancellationToken,
) -> anyhow::Result<i32> {
    let (list, held) = waiting(session, pipe).await?;
    let Some(id) = list.into_iter().find_map(|w| w.id) else {
        let taken = match held {
            0 => String::new(),
            n => format!(" ({n} being taken, or given back part-way to the next taker)"),
        };
        return Err(anyhow!("no payload waits in pipe {pipe}{taken}"));
    };
    let layout = &session.layout;
    let data = session.js.get_stream_no_info(layout.data_stream()).await?;
    let subject = layout.payload_subject(pipe, &id);
    let out = Writer::stdout(cancel.clone()).context("cannot write to stdout")?;
    let mut reader = Reader::new(id.clone(), Start::AtZero, false).opening(session.opener(pipe));
    let mut seq = 1;
    let end = loop {
        if cancel.is_cancelled() {
            return Err(Failure::Interrupted.into());
        }
        let Some(msg) = next_stored(&data, &subject, seq).await? else {
            reader.nothing_more_stored()?;
            let _ = out.flush().await;
            return Err(anyhow!(
                "payload {id} of pipe {pipe} is still being sent: the {} bytes stored so far \
                 were written, a taker would wait for the rest",
                reader.offset
            ));
        };
        seq = msg.sequence + 1;
        let meta = pipe::parse_chunk(Some(&msg.headers))
            .map_err(|e| payload::bad_headers(&id, msg.sequence, e))?;
        match reader.accept(meta, msg.payload, msg.sequence, &out).await? {
            Step::More => {}
            Step::End(end) => break end,
            Step::Stopped(WriteEnd::Closed) => return Ok(code::OK),
            Step::Stopped(end) => return Err(write_failed(end)),
        }
    };
    match out.flush().await {
        WriteEnd::Ok | WriteEnd::Closed => {}
        end => return Err(write_failed(end)),
    }
    match end {
        End::Eof(_) => Ok(code::OK),
        End::Abort { reason, totals } => Err(Failure::Aborted(payload::aborted_message(
            &id,
            pipe.as_str(),
            &reason,
            Some(totals.bytes),
        ))
        .into()),
    }
}

fn write_failed(end: WriteEnd) -> anyhow::Error {
    match end {
        WriteEnd::Interrupted => Failure::Interrupted.into(),
        WriteEnd::Failed(e) => anyhow!("cannot write to stdout: {e}"),
        WriteEnd::Ok | WriteEnd::Closed => anyhow!("stdout ended"),
    }
}

/// `skypipe rm NAME`: drops the payloads waiting in a pipe, after asking when stdin and
/// stderr are a terminal (unless `yes`). Takers waiting on the pipe go on waiting.
pub(crate) async fn rm(session: &Session, pipe: &PipeName, yes: bool) -> anyhow::Result<i32> {
    let (list, held) = waiting(session, pipe).await?;
    let kept = match held {
        0 => String::new(),
        n => format!("; {n} held by takers are theirs and stay"),
    };
    if list.is_empty() {
        eprintln!("skypipe: no payload waits in pipe {pipe}{kept}");
        return Ok(code::OK);
    }
    let n = list.len();
    if !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!("drop the {n} payload(s) waiting in pipe {pipe}? [y/N] ");
        let mut answer = String::new();
        let read = tokio::task::spawn_blocking(move || {
            std::io::stdin().read_line(&mut answer).map(|_| answer)
        })
        .await
        .context("cannot read the answer")?;
        let answer = read.context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Err(anyhow!("nothing was dropped: not confirmed"));
        }
    }
    // Only tickets queued by now: a payload sent while `rm` runs is not dropped.
    let upto = list.iter().map(|w| w.seq).max().unwrap_or(0);
    let dropped = drop_waiting(session, pipe, upto, n).await?;
    tracing::info!("dropped {dropped} payloads of pipe {pipe}");
    let meanwhile = match n.saturating_sub(dropped) {
        0 => String::new(),
        k => format!(" ({k} more went to takers meanwhile)"),
    };
    eprintln!("skypipe: dropped {dropped} payload(s) waiting in pipe {pipe}{meanwhile}{kept}");
    Ok(code::OK)
}

/// Tickets `rm` pulls from a pipe's consumer at once.
const RM_BATCH: usize = 64;
/// How long `rm` waits for the server to hand over a ticket it asked for.
const RM_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// How many times `rm` makes the pipe's queue consumer again when it went while `rm` used it.
const RM_RENEWALS: u32 = 3;

/// Drops the payload of a ticket handed to `rm`: the ticket first (once it is gone no taker
/// can be handed the payload), then its chunks.
async fn drop_ticket(
    session: &Session,
    data: &async_nats::jetstream::stream::Stream<()>,
    pipe: &PipeName,
    ticket: &async_nats::jetstream::Message,
) -> anyhow::Result<()> {
    ticket
        .double_ack_with(AckKind::Term)
        .await
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("cannot drop a payload of pipe {pipe}"))?;
    if let Ok(id) = pipe::parse_ticket(ticket.headers.as_ref()) {
        data.purge()
            .filter(session.layout.payload_subject(pipe, &id))
            .await
            .with_context(|| format!("cannot drop payload {id} of pipe {pipe}"))?;
    }
    Ok(())
}

/// Drops the payloads waiting in `pipe` whose tickets are at most `upto`, taking their tickets
/// from the pipe's work-queue consumer as a taker would: the consumer hands each ticket to one
/// puller only, so a ticket a taker was handed, even a moment ago, is never `rm`'s. A ticket
/// handed to `rm` for the first time waits for no one: it is terminated (removed), then its
/// chunks are purged. One handed out before (given back part-way, or whose taker's ack wait
/// ran out) comes to `rm` first, ahead of new ones: it is kept aside until the end and then
/// given back (a nak, in order), first in line for the next taker as before. It asks for no
/// more than the `n` tickets that waited, so a payload queued meanwhile is rarely touched.
/// Returns how many payloads were dropped.
async fn drop_waiting(
    session: &Session,
    pipe: &PipeName,
    upto: u64,
    n: usize,
) -> anyhow::Result<usize> {
    let mut consumer = session.queue_consumer(pipe).await?;
    let data = session
        .js
        .get_stream_no_info(session.layout.data_stream())
        .await?;
    let mut kept_aside = Vec::new();
    let mut dropped = 0;
    let mut renewals = 0;
    let result: anyhow::Result<()> = async {
        while dropped < n {
            // No wait: what waits now is handed over at once, and nothing else.
            let mut batch = consumer
                .fetch()
                .max_messages((n - dropped).min(RM_BATCH))
                .messages()
                .await
                .with_context(|| format!("cannot take the tickets of pipe {pipe}"))?;
            let (mut got, mut past, mut renewed) = (0, false, false);
            loop {
                // A server that stopped answering does not end a pull request.
                let next = tokio::time::timeout(RM_ANSWER, batch.next())
                    .await
                    .map_err(|_| {
                        anyhow!(
                            "the server at {} stopped answering; dropped {dropped} of the {n} \
                             payloads waiting in pipe {pipe}",
                            session.url
                        )
                    })?;
                let Some(ticket) = next else { break };
                let ticket = match ticket {
                    Ok(ticket) => ticket,
                    // The pipe's queue consumer went (removed to make room under the
                    // account's consumer limit, see docs/protocol.md, "Consumers"): made
                    // again, as a taker does.
                    Err(e) if renewals < RM_RENEWALS => {
                        tracing::debug!("asking pipe {pipe} for its tickets again: {e}");
                        renewals += 1;
                        consumer = session.queue_consumer(pipe).await?;
                        renewed = true;
                        break;
                    }
                    // Such as takers holding as many tickets as the pipe hands out at once.
                    Err(e) => {
                        return Err(anyhow!(
                            "dropped {dropped} of the {n} payloads waiting in pipe {pipe}: the \
                             server hands out no more of its tickets now ({e})"
                        ))
                    }
                };
                got += 1;
                let (seq, delivered) = ticket
                    .info()
                    .map(|i| (i.stream_sequence, i.delivered))
                    .map_err(anyhow::Error::from_boxed)
                    .with_context(|| format!("a ticket of pipe {pipe} without its info"))?;
                if delivered > 1 || seq > upto {
                    past |= seq > upto;
                    kept_aside.push(ticket);
                    continue;
                }
                drop_ticket(session, &data, pipe, &ticket).await?;
                dropped += 1;
            }
            if !renewed && (got == 0 || past) {
                break;
            }
        }
        Ok(())
    }
    .await;
    for ticket in &kept_aside {
        let _ = ticket.ack_with(AckKind::Nak(None)).await;
    }
    let _ = session.client.flush().await;
    result.map(|()| dropped)
}
