//! The live path's acknowledgements (docs/protocol.md, "The live path"): a taker, or a
//! listener, tells a payload's sender as it writes how many chunks of it it wrote. The
//! sender keeps what the taker has not written, and paces itself to its listeners.

use bytes::Bytes;
use tokio_util::task::AbortOnDropHandle;

use crate::protocol::pipe::{self, PayloadId};
use crate::protocol::proof::{AckKey, Half, KEY_LEN};
use crate::transfer::output::Mark;

/// How a taker proves its words: its public key and the key it shares with the sender.
#[derive(Clone)]
pub(crate) struct Prover {
    public: [u8; KEY_LEN],
    key: AckKey,
}

impl Prover {
    /// A new key pair for taking a payload whose ticket carried the sender's public key;
    /// `None` for a key that gives no secret.
    pub(crate) fn with_sender(sender: &[u8; KEY_LEN]) -> Option<Prover> {
        let half = Half::new();
        let key = half.with_sender(sender)?;
        Some(Prover {
            public: half.public(),
            key,
        })
    }

    fn sign(&self, ack: &mut pipe::LiveAck) {
        ack.proof = None;
        let mac = self.key.mac(ack);
        ack.proof = Some(pipe::LiveProof {
            key: self.public,
            mac,
        });
    }
}

/// Tells a payload's sender each move of a writer's mark, at once, until dropped.
pub(crate) struct Acker {
    client: async_nats::Client,
    subject: String,
    id: PayloadId,
    token: String,
    listener: bool,
    mark: Mark,
    prover: Option<Prover>,
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
        prover: Option<Prover>,
    ) -> Acker {
        let (c, s, i, t, m, p) = (
            client.clone(),
            subject.clone(),
            id.clone(),
            token.clone(),
            mark.clone(),
            prover.clone(),
        );
        let task = tokio::spawn(async move {
            let mut told = None;
            loop {
                let written = m.chunks();
                if told.is_none_or(|t| written > t) {
                    let ack = word(&i, &t, written, false, listener, p.as_ref());
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
            prover,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// Tells the sender this writer stops (a taker: what it did not write goes stored; a
    /// listener: the sender no longer waits for it).
    pub(crate) async fn stop(&self) {
        let written = self.mark.chunks();
        let (id, token, prover) = (&self.id, &self.token, self.prover.as_ref());
        let ack = word(id, token, written, true, self.listener, prover);
        tell(&self.client, &self.subject, &ack).await;
    }
}

/// One word of a writer (`stop`: its last), proven when it has a key.
fn word(
    id: &PayloadId,
    token: &str,
    written: u64,
    stop: bool,
    listener: bool,
    prover: Option<&Prover>,
) -> pipe::LiveAck {
    let mut ack = pipe::LiveAck {
        id: id.clone(),
        taker: token.to_string(),
        written,
        stop,
        listener,
        proof: None,
    };
    if let Some(p) = prover {
        p.sign(&mut ack);
    }
    ack
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
