//! The live path's acknowledgements (docs/protocol.md, "The live path"): a taker, or a
//! listener, tells a payload's sender as it writes how many chunks of it it wrote. The
//! sender keeps what the taker has not written, and paces itself to its listeners.

use bytes::Bytes;
use tokio_util::task::AbortOnDropHandle;

use crate::protocol::pipe::{self, PayloadId};
use crate::transfer::output::Mark;

/// Tells a payload's sender each move of a writer's mark, at once, until dropped.
pub(crate) struct Acker {
    client: async_nats::Client,
    subject: String,
    id: PayloadId,
    token: String,
    listener: bool,
    mark: Mark,
    _task: AbortOnDropHandle<()>,
}

impl Acker {
    /// Starts telling; the first word (chunks written so far) goes at once: from a taker, it
    /// asks for the payload live.
    pub(crate) fn start(
        client: async_nats::Client,
        subject: String,
        id: PayloadId,
        token: String,
        listener: bool,
        mark: Mark,
    ) -> Acker {
        let (c, s, i, t, m) = (
            client.clone(),
            subject.clone(),
            id.clone(),
            token.clone(),
            mark.clone(),
        );
        let task = tokio::spawn(async move {
            let mut told = None;
            loop {
                let written = m.chunks();
                if told.is_none_or(|t| written > t) {
                    let ack = pipe::LiveAck {
                        id: i.clone(),
                        taker: t.clone(),
                        written,
                        stop: false,
                        listener,
                    };
                    tell(&c, &s, &ack).await;
                    told = Some(written);
                }
                m.moved().await;
            }
        });
        Acker {
            client,
            subject,
            id,
            token,
            listener,
            mark,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// Tells the sender this writer stops (a taker: what it did not write goes stored; a
    /// listener: the sender no longer waits for it).
    pub(crate) async fn stop(&self) {
        let ack = pipe::LiveAck {
            id: self.id.clone(),
            taker: self.token.clone(),
            written: self.mark.chunks(),
            stop: true,
            listener: self.listener,
        };
        tell(&self.client, &self.subject, &ack).await;
    }
}

/// Publishes one acknowledgement (headers only) on a payload's acknowledgement subject.
pub(crate) async fn tell(client: &async_nats::Client, subject: &str, ack: &pipe::LiveAck) {
    let headers = pipe::live_ack_headers(ack);
    if let Err(e) = client
        .publish_with_headers(subject.to_string(), headers, Bytes::new())
        .await
    {
        tracing::debug!("{e}");
    }
}
