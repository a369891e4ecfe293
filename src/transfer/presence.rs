//! Presence: every running skypipe says once a second, on core NATS (nothing stored), what it
//! is doing on which pipe. The monitor counts senders, takers and listeners from it and
//! learns how many bytes takers wrote; no payload byte is ever copied for this.
//!
//! Subject `P.presence.N`, body JSON, see docs/protocol.md.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::task::AbortOnDropHandle;

use crate::protocol::pipe::{Layout, PipeName};
use crate::transfer::output::Counter;

/// How often a process announces itself.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// An announcement older than this means the process is gone.
pub(crate) const STALE: Duration = Duration::from_secs(3);

/// What a process does on a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Send,
    Take,
    Follow,
    Listen,
}

/// One announcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Announce {
    /// Protocol version.
    pub(crate) v: u32,
    pub(crate) role: Role,
    /// Random per process.
    pub(crate) instance: String,
    /// Bytes sent (senders) or written (takers, listeners) so far.
    pub(crate) bytes: u64,
    /// Payloads this process is sending or taking now.
    #[serde(default)]
    pub(crate) payloads: Vec<String>,
    /// Senders on the live path: of `bytes`, those their live taker wrote (docs/protocol.md,
    /// "The live path"); present from the moment a payload went live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) live: Option<u64>,
    /// Bytes per second of `bytes` since the announcement before (absent in the first): one
    /// announcement is enough for a monitor to know the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<u64>,
    /// The same of `live`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) live_rate: Option<u64>,
}

/// Bytes per second from `before` to `now`, `None` over too short a time to tell.
fn rate_between(before: Option<(Instant, u64)>, now: (Instant, u64)) -> Option<u64> {
    let (t0, b0) = before?;
    let span = now.0.checked_duration_since(t0)?;
    (span >= Duration::from_millis(200))
        .then(|| (now.1.saturating_sub(b0) as f64 / span.as_secs_f64()).round() as u64)
}

/// Publishes announcements until dropped.
pub(crate) struct Presence {
    /// The announcing task, stopped when this is dropped.
    _task: AbortOnDropHandle<()>,
}

impl Presence {
    pub(crate) fn start(
        client: async_nats::Client,
        layout: &Layout,
        pipe: &PipeName,
        role: Role,
        bytes: Counter,
        payloads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        live: Option<Counter>,
    ) -> Presence {
        let subject = layout.presence_subject(pipe);
        let instance = format!("{:016x}", rand::random::<u64>());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            let (mut sent_before, mut live_before) = (None, None);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let sent = bytes.get();
                let live = live
                    .as_ref()
                    .filter(|l| l.since().is_some())
                    .map(Counter::get);
                let announce = Announce {
                    v: 1,
                    role,
                    instance: instance.clone(),
                    bytes: sent,
                    payloads: payloads.lock().map(|p| p.clone()).unwrap_or_default(),
                    live,
                    rate: rate_between(sent_before, (now, sent)),
                    live_rate: live.and_then(|l| rate_between(live_before, (now, l))),
                };
                sent_before = Some((now, sent));
                // Not live yet is none live: the first live count has a rate too.
                live_before = Some((now, live.unwrap_or(0)));
                if let Ok(body) = serde_json::to_vec(&announce) {
                    let _ = client.publish(subject.clone(), body.into()).await;
                }
            }
        });
        Presence {
            _task: AbortOnDropHandle::new(task),
        }
    }
}

/// When each payload's sender last announced itself, as seen by a taker.
#[derive(Clone, Default)]
pub(crate) struct Watch {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
    /// The watching task, stopped with the last handle.
    _task: Option<std::sync::Arc<AbortOnDropHandle<()>>>,
}

impl Watch {
    /// Follows the senders' announcements on a pipe.
    pub(crate) async fn start(
        client: &async_nats::Client,
        layout: &Layout,
        pipe: &PipeName,
    ) -> Result<Watch, async_nats::SubscribeError> {
        use futures::StreamExt;
        let mut sub = client.subscribe(layout.presence_subject(pipe)).await?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if !crate::client::published_by_a_client(&msg) {
                    continue;
                }
                let Ok(a) = serde_json::from_slice::<Announce>(&msg.payload) else {
                    continue;
                };
                if a.role != Role::Send {
                    continue;
                }
                if let Ok(mut seen) = shared.lock() {
                    let now = std::time::Instant::now();
                    for id in a.payloads {
                        seen.insert(id, now);
                    }
                    // Forget senders not heard of for long.
                    seen.retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
                }
            }
        });
        Ok(Watch {
            seen,
            _task: Some(std::sync::Arc::new(AbortOnDropHandle::new(task))),
        })
    }

    /// When the sender of `id` was last heard of.
    pub(crate) fn sender_seen(&self, id: &str) -> Option<std::time::Instant> {
        self.seen.lock().ok().and_then(|s| s.get(id).copied())
    }
}

/// The shared list of payloads a process works on.
pub(crate) type Payloads = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Adds or removes a payload id in a shared list.
pub(crate) fn track(list: &Payloads, id: &str, on: bool) {
    if let Ok(mut l) = list.lock() {
        l.retain(|x| x != id);
        if on {
            l.push(id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_bytes_since_the_announcement_before() {
        let t0 = Instant::now();
        assert_eq!(rate_between(None, (t0, 5)), None);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(rate_between(Some((t0, 1000)), (t1, 2000)), Some(2000));
        assert_eq!(rate_between(Some((t0, 1000)), (t1, 1000)), Some(0));
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(
            rate_between(Some((t0, 0)), (soon, 100)),
            None,
            "too short to tell"
        );
    }

    #[test]
    fn announcements_round_trip_as_json() {
        let a = Announce {
            v: 1,
            role: Role::Take,
            instance: "ab".into(),
            bytes: 7,
            payloads: vec!["x".into()],
            live: None,
            rate: None,
            live_rate: None,
        };
        let text = serde_json::to_string(&a).expect("json");
        assert!(text.contains("\"role\":\"take\""));
        let back: Announce = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, a);
        let old: Announce =
            serde_json::from_str(r#"{"v":1,"role":"send","instance":"i","bytes":0}"#)
                .expect("parse");
        assert!(old.payloads.is_empty());
        assert!(!text.contains("live"), "only live senders say it: {text}");
        assert!(
            !text.contains("rate"),
            "the first announcement has no rate: {text}"
        );
        let live = Announce {
            role: Role::Send,
            live: Some(5),
            ..a
        };
        let text = serde_json::to_string(&live).expect("json");
        assert!(text.contains("\"live\":5"), "{text}");
        assert_eq!(
            serde_json::from_str::<Announce>(&text).expect("parse"),
            live
        );
    }
}
