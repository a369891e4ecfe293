//! JetStream domains (docs/protocol.md, "JetStream domains"): a leaf node's client reaching
//! the hub's JetStream (`--js-domain`), judged by the domain's own answer; and one domain as
//! the home of a prefix's streams, so that two domains joined by a leaf node never both hold
//! a prefix's pipes (each would store, and hand out, every payload).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_nats::jetstream::{self, context::RequestErrorKind};

use crate::client::account::query_account;
use crate::config::Conn;
use crate::protocol::pipe::Layout;

/// Whether a command waits for a domain that does not answer (within the retry time), or
/// says so at once (`check`, `setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Retry,
    Once,
}

/// Whether a JetStream request went unanswered (nobody listens for the domain's API: its
/// servers are down or cut off), as opposed to answered with a refusal.
fn unanswered(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<jetstream::context::RequestError>()
            .is_some_and(|r| {
                matches!(
                    r.kind(),
                    RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
                )
            })
    })
}

/// Checks that JetStream domain `name` answers through the connected server
/// (`$JS.<name>.API.INFO`): a leaf node without JetStream of its own reaches the hub's this
/// way, so the domain's answer, not the leaf's INFO, says whether there is JetStream. With
/// [`Wait::Retry`], a domain that does not answer is asked again within the retry time, as a
/// lost server is.
pub(crate) async fn answers(
    js: &jetstream::Context,
    name: &str,
    shown: &str,
    conn: &Conn,
    wait: Wait,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let err = match query_account(js).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if !unanswered(&err) {
            return Err(err.context(format!(
                "JetStream domain {name}, asked through the server at {shown}"
            )));
        }
        let retrying = wait == Wait::Retry && started.elapsed() < conn.retry.give_up_after;
        if !retrying {
            let waited = match wait {
                Wait::Retry => format!(" for {}", conn.retry.shown()),
                Wait::Once => String::new(),
            };
            return Err(anyhow!(
                "JetStream domain {name} does not answer through the server at {shown}{waited}: \
                 its servers are down, this server's leaf node connection to them is, or the \
                 domain is not called {name:?} (--js-domain)"
            ));
        }
        if !told {
            eprintln!(
                "skypipe: JetStream domain {name} does not answer through the server at {shown}; \
                 trying again for {}",
                conn.retry.shown()
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A domain as messages name it (`""` is a JetStream without a domain).
fn named(domain: &str) -> String {
    if domain.is_empty() {
        "the JetStream without a domain".into()
    } else {
        format!("JetStream domain {domain}")
    }
}

/// Where a prefix's streams are, as the home probe found them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No stream holds the prefix's data subjects yet.
    Homeless,
    /// Only the domain this session uses does.
    Here,
    /// Only another domain does.
    Elsewhere(String),
    /// Several domains do: each would store, and hand out, every payload.
    Overlap(Vec<String>),
}

/// The verdict on the domains whose streams stored a probe, for a session in domain `meant`.
pub(crate) fn verdict(meant: &str, homes: &BTreeSet<String>) -> Verdict {
    let mut all = homes.iter();
    match (all.next(), all.next()) {
        (None, _) => Verdict::Homeless,
        (Some(one), None) if one == meant => Verdict::Here,
        (Some(one), None) => Verdict::Elsewhere(one.clone()),
        _ => Verdict::Overlap(homes.iter().cloned().collect()),
    }
}

/// The refusal for a verdict other than [`Verdict::Here`] or [`Verdict::Homeless`].
pub(crate) fn refusal(layout: &Layout, meant: &str, verdict: &Verdict) -> Option<String> {
    let prefix = layout.prefix();
    match verdict {
        Verdict::Homeless | Verdict::Here => None,
        Verdict::Elsewhere(home) => {
            let hint = if home.is_empty() {
                "connect to a server of that JetStream (its leaf nodes reach it only with a domain)"
                    .to_string()
            } else {
                format!("use --js-domain {home}")
            };
            Some(format!(
                "prefix {prefix}'s pipes live in {} (streams {} and {}), not in {} that this \
                 command uses: {hint}; skypipe does not make a second home for them, where each \
                 payload would be taken twice",
                named(home),
                layout.data_stream(),
                layout.queue_stream(),
                named(meant),
            ))
        }
        Verdict::Overlap(homes) => {
            let names: Vec<String> = homes.iter().map(|d| named(d)).collect();
            let example = homes
                .iter()
                .find(|d| d.as_str() != meant && !d.is_empty())
                .or_else(|| homes.iter().find(|d| !d.is_empty()))
                .map(|d| {
                    format!(
                        " (e.g. `nats --js-domain {d} stream rm {}` and `... stream rm {}`)",
                        layout.data_stream(),
                        layout.queue_stream()
                    )
                })
                .unwrap_or_default();
            Some(format!(
                "prefix {prefix} has streams in {}, joined by a leaf node: each stores every \
                 payload, so a payload would be taken once in each; skypipe uses none of them \
                 until one domain's streams are removed{example} or another --prefix is used",
                names.join(" and ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_home_per_prefix() {
        assert_eq!(verdict("hub", &set(&[])), Verdict::Homeless);
        assert_eq!(verdict("hub", &set(&["hub"])), Verdict::Here);
        assert_eq!(verdict("", &set(&[""])), Verdict::Here);
        assert_eq!(
            verdict("leaf", &set(&["hub"])),
            Verdict::Elsewhere("hub".into())
        );
        assert_eq!(
            verdict("", &set(&["hub"])),
            Verdict::Elsewhere("hub".into())
        );
        assert_eq!(
            verdict("hub", &set(&["leaf", "hub"])),
            Verdict::Overlap(vec!["hub".into(), "leaf".into()])
        );
    }
}
