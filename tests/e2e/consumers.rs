//! An account with a consumer quota: pipes are free to use over time, however many there
//! are; a taker whose pipe's consumer went away meanwhile recovers.

use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};

use super::harness::*;

/// A server whose only account may have `max` JetStream consumers; clients without a login
/// are its user.
fn consumer_quota(max: usize) -> Bench {
    Bench::with(|c| {
        c.extra = format!(
            "accounts {{\n  team: {{\n    jetstream: {{ max_consumers: {max}, max_file: 1G, \
             max_mem: 0 }}\n    users: [ {{ user: team, password: \"team-secret\" }} ]\n  }}\n}}\n\
             no_auth_user: team\n"
        );
    })
}

/// Runs `work` with a JetStream context on the bench's server.
fn with_js<T>(b: &Bench, work: impl AsyncFnOnce(jetstream::Context) -> T) -> T {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(b.url()).await.expect("connect");
        work(jetstream::new(client)).await
    })
}

/// The queue consumers the server holds, by name.
fn queue_consumers(b: &Bench) -> Vec<String> {
    with_js(b, async |js| {
        let stream = js
            .get_stream_no_info("skypipe-queue")
            .await
            .expect("stream");
        let mut names = stream.consumer_names();
        let mut all = Vec::new();
        while let Some(name) = futures::StreamExt::next(&mut names).await {
            all.push(name.expect("a name"));
        }
        all.sort();
        all
    })
}

/// A pipe's queue consumer as a taker makes it (docs/protocol.md, "Receiving").
fn queue_consumer_config(pipe: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(pipe.to_string()),
        filter_subject: format!("skypipe.q.{pipe}"),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        inactive_threshold: Duration::from_secs(24 * 60 * 60),
        ..Default::default()
    }
}

#[test]
fn a_hundred_and_fifty_pipes_in_turn_under_a_limit_of_a_hundred_consumers() {
    let b = consumer_quota(100);
    for i in 0..150 {
        let pipe = format!("pipe-{i}");
        // Every third payload is two chunks, read with a consumer of its own.
        let data = if i % 3 == 0 {
            random_bytes(300_000, i)
        } else {
            format!("payload {i}\n").into_bytes()
        };
        let sent = b.send_bytes(&[&pipe], &data);
        assert_ok(&sent);
        let got = b.recv(&["recv", &pipe]);
        assert!(
            got.status.success(),
            "pipe {i}: {}",
            stderr_of(&got).trim_end()
        );
        assert_eq!(sha(&got.stdout), sha(&data), "pipe {i}");
    }
    // `check` tells the account's consumer use against its limit.
    let out = b
        .cmd(&["check"])
        .stdin(Stdio::null())
        .output()
        .expect("check");
    assert_ok(&out);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains("consumers"))
        .unwrap_or_else(|| panic!("no consumers line:\n{report}"));
    assert!(line.starts_with("ok"), "{line}");
    assert!(line.contains(" of 100"), "{line}");
}

#[test]
fn consumers_left_behind_make_room_but_one_holding_a_ticket_stays() {
    let b = consumer_quota(100);
    // A ticket waits in pipe `held`...
    assert_ok(&b.send_bytes(&["held"], b"held payload\n"));
    // ...and is out with a taker that has not acknowledged it; 99 other pipes' consumers
    // were left behind (takers killed, older skypipes): the account is at its limit.
    let ticket = with_js(&b, async |js| {
        let stream = js.get_stream("skypipe-queue").await.expect("stream");
        let held = stream
            .create_consumer(queue_consumer_config("held"))
            .await
            .expect("held consumer");
        let mut batch = held
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .expect("fetch");
        let ticket = futures::StreamExt::next(&mut batch)
            .await
            .expect("a ticket")
            .expect("a ticket");
        for i in 0..99 {
            stream
                .create_consumer(queue_consumer_config(&format!("old-{i:02}")))
                .await
                .expect("a consumer left behind");
        }
        ticket.info().expect("info").stream_sequence
    });
    assert_eq!(queue_consumers(&b).len(), 100);

    // A new pipe works all the same.
    let data = random_bytes(300_000, 5);
    assert_ok(&b.send_bytes(&["fresh"], &data));
    let got = b.recv(&["recv", "fresh"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));

    // The consumers that made room were idle ones, the oldest first; the one holding a
    // ticket stays, and so does its ticket.
    let left = queue_consumers(&b);
    assert!(left.contains(&"held".to_string()), "{left:?}");
    assert!(!left.contains(&"old-00".to_string()), "{left:?}");
    assert!(left.contains(&"old-98".to_string()), "{left:?}");
    let (_, out_with_taker, _) = queue_state(&b.url(), "held").expect("held consumer");
    assert_eq!(
        out_with_taker, 1,
        "ticket {ticket} is still out with its taker"
    );
}

#[test]
fn a_taker_whose_pipes_consumer_was_removed_recovers() {
    let b = Bench::new();
    let taker = b.spawn_ready(&["recv", "w", "--timeout", "60s"], &waiting("w"));
    wait_waiting(&b.url(), "w");
    with_js(&b, async |js| {
        let stream = js
            .get_stream_no_info("skypipe-queue")
            .await
            .expect("stream");
        stream.delete_consumer("w").await.expect("delete");
    });
    assert_ok(&b.send_bytes(&["w"], b"after the consumer went\n"));
    let out = taker.wait_output(HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, b"after the consumer went\n");
}

#[test]
fn takers_that_leave_leave_their_pipes_consumer_for_the_next() {
    let b = Bench::new();
    // Two takers wait on one pipe and each takes one payload.
    let first = b.spawn_ready(&["recv", "two"], &waiting("two"));
    let second = b.spawn_ready(&["recv", "two"], &waiting("two"));
    assert!(
        eventually(HANG, || queue_state(&b.url(), "two")
            .is_some_and(|(_, _, w)| w == 2)),
        "both takers wait"
    );
    assert_ok(&b.send_bytes(&["two"], b"one\n"));
    assert_ok(&b.send_bytes(&["two"], b"two\n"));
    let (a, c) = (first.wait_output(HANG), second.wait_output(HANG));
    assert_ok(&a);
    assert_ok(&c);
    let mut got = [a.stdout, c.stdout];
    got.sort();
    assert_eq!(got, [b"one\n".to_vec(), b"two\n".to_vec()]);
    // Both gone: the pipe keeps its one queue consumer (removing it as a taker leaves raced
    // other takers and handed a payload out twice); the account's limit makes room when needed.
    assert_eq!(queue_consumers(&b).len(), 1, "{:?}", queue_consumers(&b));
}

#[test]
fn takers_churning_over_more_pipes_than_the_consumer_limit_get_each_payload_once() {
    // Eight pipes, room for six consumers: four workers, each taking from two pipes in turn,
    // make room all the time from consumers their neighbours used a moment ago. A consumer
    // removed while the server still held a ticket it had just acknowledged would hand that
    // ticket out again to the next consumer of the pipe.
    let b = consumer_quota(6);
    const WORKERS: usize = 4;
    const ROUNDS: usize = 30;
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let b = &b;
            s.spawn(move || {
                for r in 0..ROUNDS {
                    let pipe = format!("churn-{}", w + WORKERS * (r % 2));
                    let data = format!("worker {w} round {r}\n");
                    assert_ok(&b.send_bytes(&[&pipe], data.as_bytes()));
                    let got = b.recv(&["-v", "recv", &pipe]);
                    assert!(
                        got.status.success(),
                        "worker {w} round {r}: {}",
                        stderr_of(&got).trim_end()
                    );
                    assert_eq!(
                        String::from_utf8_lossy(&got.stdout),
                        data,
                        "worker {w} round {r} on {pipe}: {}",
                        stderr_of(&got)
                    );
                }
            });
        }
    });
    assert!(queue_consumers(&b).len() <= 6);
}
