//! The home probe (docs/protocol.md, "JetStream domains"): a session asks which domains'
//! streams hold its prefix's data subjects, and refuses to use a prefix whose streams live in
//! another domain, or in several.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt as _;

use crate::client::account::query_account;
use crate::client::domain::{refusal, verdict, Verdict};
use crate::client::session::Session;

/// How long the home probe waits for its first answer.
const PROBE_FIRST: Duration = Duration::from_secs(3);
/// The least time the probe keeps listening after the first answer, for the answers of
/// streams further away (across the leaf node connection).
const PROBE_MORE: Duration = Duration::from_millis(200);
/// The token under `P.data` that probe messages use: not a pipe name (pipe names have no
/// `~`), so no listener or taker of a pipe ever sees one.
pub(crate) const PROBE_TOKEN: &str = "~home";

impl Session {
    /// The domain this session's streams are in: the one given, else the server's own (its
    /// account info's `domain`, `""` for none). `None` when the server does not say.
    pub(crate) async fn meant_domain(&self) -> Option<String> {
        if let Some(d) = &self.domain {
            return Some(d.clone());
        }
        query_account(&self.js)
            .await
            .ok()
            .map(|a| a.domain.unwrap_or_default())
    }

    /// Publishes a probe message to a subject only the prefix's data streams capture
    /// (`P.data.~home.<random>`), as a core request, and collects every stream's publish
    /// acknowledgement: each names its domain. Removes the probe from each stream again.
    pub(crate) async fn homes(&self) -> anyhow::Result<BTreeSet<String>> {
        let subject = format!(
            "{}.data.{PROBE_TOKEN}.{:016x}",
            self.layout.prefix(),
            rand::random::<u64>()
        );
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .context("cannot listen for the home probe's answers")?;
        let sent = Instant::now();
        self.client
            .publish_with_reply(subject.clone(), inbox, Bytes::new())
            .await
            .context("cannot publish the home probe")?;
        let mut until = tokio::time::Instant::now() + PROBE_FIRST;
        let mut stored: Vec<(String, String)> = Vec::new();
        let mut first = true;
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, answers.next()).await {
            if msg.status.is_some() {
                // No responders: no stream captures the subject (nothing more will come).
                break;
            }
            if first {
                first = false;
                until = tokio::time::Instant::now() + PROBE_MORE.max(sent.elapsed() * 3);
            }
            let ack: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            let field = |name: &str| ack.get(name).and_then(|v| v.as_str()).map(str::to_string);
            if let Some(stream) = field("stream") {
                stored.push((field("domain").unwrap_or_default(), stream));
            }
        }
        let _ = answers.unsubscribe().await;
        for (domain, stream) in &stored {
            self.forget_probe(domain, stream, &subject).await;
        }
        tracing::debug!("home probe {subject} stored by {stored:?}");
        Ok(stored.into_iter().map(|(domain, _)| domain).collect())
    }

    /// Removes a probe message from a stream of domain `domain`.
    async fn forget_probe(&self, domain: &str, stream: &str, subject: &str) {
        let builder = jetstream::ContextBuilder::new().timeout(Duration::from_secs(5));
        let js = if domain.is_empty() {
            // The JetStream without a domain: reachable only as this server's own.
            self.js.clone()
        } else {
            builder.domain(domain).build(self.client.clone())
        };
        let purged = match js.get_stream_no_info(stream).await {
            Ok(s) => s
                .purge()
                .filter(subject)
                .await
                .map(|_| ())
                .map_err(|e| anyhow!(e)),
            Err(e) => Err(anyhow!(e)),
        };
        if let Err(e) = purged {
            tracing::debug!("cannot remove the home probe from {stream} in {domain:?}: {e}");
        }
    }

    /// Where the prefix's streams are, for a session in domain `meant`.
    pub(crate) async fn home_verdict(&self, meant: &str) -> anyhow::Result<Verdict> {
        Ok(verdict(meant, &self.homes().await?))
    }

    /// Before a pipe command uses the streams: when domains are in play (one was given, or
    /// the server has one), makes sure the prefix's streams are in this session's domain
    /// alone, or nowhere yet. Learns the session's domain too, which a sender compares with
    /// the domain its ticket's acknowledgement names. A server without a domain costs one
    /// request.
    pub(crate) async fn settle_domain(&mut self) -> anyhow::Result<()> {
        let Some(meant) = self.meant_domain().await else {
            return Ok(());
        };
        self.domain = Some(meant.clone());
        if meant.is_empty() {
            return Ok(());
        }
        let verdict = self.home_verdict(&meant).await?;
        match refusal(&self.layout, &meant, &verdict) {
            Some(text) => Err(anyhow!(text)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_no_pipe() {
        assert!(crate::protocol::pipe::PipeName::new(PROBE_TOKEN).is_err());
    }
}
