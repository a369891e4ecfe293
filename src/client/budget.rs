//! What the account allows skypipe's streams: the limits of the replica tier they use (`R1`,
//! `R3`, ... when the account's limits are given per tier, as multi-tenant services do) or the
//! account's own, and the byte limit skypipe gives its streams when it creates them (README,
//! "Hosted NATS and leaf nodes").

use async_nats::jetstream::account::{Account, Limits};

/// The pair's byte limit when the account requires one and sets no storage limit to take a
/// share of.
const UNLIMITED_SHARE: u64 = 1 << 30;

/// The limits and use that count for skypipe's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The tier the limits come from (`R1`, ...); `None`: the account's flat limits.
    pub(crate) tier: Option<String>,
    /// The tiers the account has, when it has some but not the one skypipe's streams use.
    pub(crate) other_tiers: Vec<String>,
    pub(crate) limits: Limits,
    /// File and memory storage in use, bytes.
    pub(crate) storage: u64,
    /// Bytes the streams' byte limits reserve.
    pub(crate) reserved: u64,
    pub(crate) streams: usize,
    pub(crate) consumers: usize,
}

/// The tier of streams with `replicas` replicas when the account has it, else the account's
/// flat limits. A tiered account reports 0 for every flat limit.
pub(crate) fn budget(account: &Account, replicas: usize) -> Budget {
    let name = format!("R{}", replicas.max(1));
    match account.tiers.get(&name) {
        Some(t) => Budget {
            tier: Some(name),
            other_tiers: Vec::new(),
            limits: t.limits,
            storage: t.storage,
            reserved: t.reserved_storage,
            streams: t.streams,
            consumers: t.consumers,
        },
        None => {
            let mut other_tiers: Vec<String> = account
                .tiers
                .keys()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect();
            other_tiers.sort();
            Budget {
                tier: None,
                other_tiers,
                limits: account.limits,
                storage: account.storage,
                reserved: account.reserved_storage,
                streams: account.streams,
                consumers: account.consumers,
            }
        }
    }
}

impl Budget {
    /// File storage still free, bytes; `None`: no limit.
    pub(crate) fn available(&self) -> Option<u64> {
        self.limits
            .max_storage
            .map(|max| max.max(0).unsigned_abs().saturating_sub(self.storage))
    }

    /// "tier R1" or "account", for messages.
    pub(crate) fn source(&self) -> String {
        match &self.tier {
            Some(t) => format!("tier {t}"),
            None => "account".into(),
        }
    }

    /// The byte limit for skypipe's two streams together when the account requires one and
    /// none is given: half of the storage not yet reserved by other streams (or in use), per
    /// replica; 1 GiB when the account sets no storage limit.
    pub(crate) fn default_share(&self, replicas: usize) -> u64 {
        match self.limits.max_storage {
            Some(max) if max >= 0 => {
                let taken = self.reserved.max(self.storage);
                max.unsigned_abs().saturating_sub(taken) / 2 / replicas.max(1) as u64
            }
            _ => UNLIMITED_SHARE,
        }
    }
}

/// How a byte limit of the two streams together is split: the queue stream (tickets, and
/// the small payloads they carry) gets a sixteenth, the data stream the rest; neither more
/// than `per_stream` (the account's limit for one stream, when it has one).
pub(crate) fn split(total: u64, per_stream: Option<i64>) -> (u64, u64) {
    let queue = total / 16;
    let data = total - queue;
    match per_stream.filter(|m| *m > 0).map(i64::unsigned_abs) {
        Some(cap) => (data.min(cap), queue.min(cap)),
        None => (data, queue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(json: serde_json::Value) -> Account {
        serde_json::from_value(json).expect("account info")
    }

    fn limits(storage: i64, required: bool) -> serde_json::Value {
        serde_json::json!({
            "max_memory": -1, "max_storage": storage, "max_streams": -1, "max_consumers": -1,
            "max_bytes_required": required, "max_ack_pending": -1,
            "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1
        })
    }

    #[test]
    fn the_tier_of_the_streams_replicas_counts() {
        let tiered = account(serde_json::json!({
            "memory": 0, "storage": 100, "reserved_memory": 0, "reserved_storage": 0,
            "streams": 2, "consumers": 1, "limits": limits(0, false), "api": {"total": 0, "errors": 0},
            "tiers": {"R1": {"memory": 0, "storage": 100, "reserved_memory": 0,
                             "reserved_storage": 400, "streams": 2, "consumers": 1,
                             "limits": limits(1000, true)}}
        }));
        let b = budget(&tiered, 1);
        assert_eq!(b.tier.as_deref(), Some("R1"));
        assert_eq!(b.available(), Some(900));
        assert_eq!(b.default_share(1), 300);
        assert!(b.limits.max_bytes_required);
        let r3 = budget(&tiered, 3);
        assert_eq!(r3.tier, None);
        assert_eq!(r3.other_tiers, vec!["R1".to_string()]);
        assert_eq!(r3.available(), Some(0));
    }

    #[test]
    fn flat_limits_and_the_split() {
        let flat = account(serde_json::json!({
            "memory": 0, "storage": 0, "reserved_memory": 0, "reserved_storage": 0,
            "streams": 0, "consumers": 0, "limits": limits(-1, true), "api": {"total": 0, "errors": 0}
        }));
        let b = budget(&flat, 1);
        assert_eq!(b.tier, None);
        assert_eq!(b.available(), None);
        assert_eq!(b.default_share(1), UNLIMITED_SHARE);
        assert_eq!(split(1600, None), (1500, 100));
        assert_eq!(split(1600, Some(1000)), (1000, 100));
        assert_eq!(split(1600, Some(-1)), (1500, 100));
    }
}
