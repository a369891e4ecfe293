//! The account's JetStream usage and limits, as the server tells them.

use anyhow::{anyhow, Context as _};
use async_nats::jetstream;

/// The account's JetStream usage and limits (`$JS.API.INFO`). Servers before 2.10 leave out
/// the reserved sizes, which async-nats' `query_account` requires, so missing ones count as 0.
pub(crate) async fn query_account(
    js: &jetstream::Context,
) -> anyhow::Result<jetstream::account::Account> {
    use jetstream::response::Response;
    let response: Response<serde_json::Value> = js.request("INFO", b"").await?;
    match response {
        Response::Err { error } => Err(anyhow!(error)),
        Response::Ok(mut value) => {
            if let Some(fields) = value.as_object_mut() {
                for name in ["reserved_memory", "reserved_storage"] {
                    fields.entry(name).or_insert(serde_json::Value::from(0));
                }
                // The same in each replica tier.
                if let Some(tiers) = fields.get_mut("tiers").and_then(|t| t.as_object_mut()) {
                    for tier in tiers.values_mut().filter_map(|t| t.as_object_mut()) {
                        for name in ["reserved_memory", "reserved_storage"] {
                            tier.entry(name).or_insert(serde_json::Value::from(0));
                        }
                    }
                }
            }
            serde_json::from_value(value).context("cannot read the server's account info")
        }
    }
}
