//! The yardstick for skypipe's speed: the same bytes moved with raw async-nats, in the best
//! way we know, with none of skypipe's protocol. The benchmark (`examples/bench.rs`) runs it
//! beside skypipe.
//!
//! ```text
//! raw_baseline publish URL SUBJECT < file     JetStream publish, 256 KiB chunks, ack window
//! raw_baseline read URL SUBJECT > file        ordered pull read-back until the end marker
//! raw_baseline wait URL SUBJECT                a trigger's waiter: one message, acked, then exit
//! raw_baseline trigger URL SUBJECT             a trigger: one message published, its ack awaited
//! ```
//! `wait` and `trigger` are the least two async-nats processes can do for a trigger: the
//! waiter pulls one message from a durable consumer (made once, like a pipe's) and acks it.
//! It creates (or reuses) a file-storage stream `RAW` on `raw.>`. The last message carries a
//! header `Eof: 1`; `read` stops there. `read` then purges the subject, as skypipe does.

use std::collections::VecDeque;
use std::io::{Read, Write};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

const CHUNK: usize = 256 * 1024;
const WINDOW: usize = 32;

fn usage() -> ! {
    eprintln!("usage: raw_baseline publish|read|wait|trigger URL SUBJECT");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), async_nats::Error> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(url), Some(subject)) = (args.get(1), args.get(2), args.get(3)) else {
        usage()
    };
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    match mode.as_str() {
        "publish" => publish(&js, subject).await?,
        "read" => read(&stream, subject).await?,
        "wait" => wait(&stream, subject).await?,
        "trigger" => {
            js.publish(subject.to_string(), Bytes::from_static(b"\n"))
                .await?
                .await?;
        }
        _ => usage(),
    }
    client.flush().await?;
    Ok(())
}

async fn publish(js: &jetstream::Context, subject: &str) -> Result<(), async_nats::Error> {
    // A reader thread keeps stdin busy while acks come back, as skypipe's does.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            let mut filled = 0;
            while filled < CHUNK {
                match stdin.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(_) => break,
                }
            }
            buf.truncate(filled);
            let last = filled < CHUNK;
            if tx.blocking_send(buf.freeze()).is_err() || last {
                return;
            }
        }
    });
    let mut window = VecDeque::new();
    while let Some(data) = rx.recv().await {
        let last = data.len() < CHUNK;
        let mut headers = async_nats::HeaderMap::new();
        if last {
            headers.insert("Eof", "1");
        }
        if window.len() >= WINDOW {
            if let Some(ack) = window.pop_front() {
                ack.await?;
            }
        }
        window.push_back(
            js.publish_with_headers(subject.to_string(), headers, data)
                .await?,
        );
        if last {
            break;
        }
    }
    for ack in window {
        ack.await?;
    }
    Ok(())
}

async fn read(stream: &stream::Stream, subject: &str) -> Result<(), async_nats::Error> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_string(),
            max_batch: 16,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    // Unbuffered, straight to fd 1, as skypipe writes.
    use std::os::fd::AsFd;
    let mut out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        out.write_all(&msg.payload)?;
        let eof = msg.headers.as_ref().and_then(|h| h.get("Eof")).is_some();
        if eof {
            break;
        }
    }
    out.flush()?;
    stream.purge().filter(subject).await?;
    Ok(())
}

async fn wait(stream: &stream::Stream, subject: &str) -> Result<(), async_nats::Error> {
    let name = subject.replace('.', "-");
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subject.to_string(),
                ..Default::default()
            },
        )
        .await?;
    // The readiness line, as skypipe's "waiting on pipe".
    eprintln!("waiting");
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(std::time::Duration::from_secs(30))
        .messages()
        .await?;
    match batch.next().await {
        Some(msg) => {
            let msg = msg?;
            std::io::stdout().write_all(&msg.payload)?;
            msg.double_ack().await?;
            Ok(())
        }
        None => Err("nothing arrived".into()),
    }
}
