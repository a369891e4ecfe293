//! Diagnostics on stderr through `tracing`: what skypipe does (server, streams, payload ids,
//! chunk counts, retries), for `-v` and more. Off unless asked for, so a plain run pays
//! nothing for it. Messages never carry secrets: URLs are shown without credentials, and
//! payload bytes, secrets and keys are never logged.

use tracing_subscriber::EnvFilter;

/// The variable that filters diagnostics (`RUST_LOG` syntax); `RUST_LOG` works too.
pub(crate) const LOG_ENV: &str = "SKYPIPE_LOG";

/// The filter for a number of `-v`: 1 what skypipe does, 2 its retries and timing
/// decisions, 3 and more everything skypipe says, and the NATS client's own (at most at info,
/// whatever the filter says: below that it prints passwords).
fn filter_for(verbose: u8) -> &'static str {
    match verbose {
        0 => "off",
        1 => "skypipe=info,skypipe_nats=info",
        2 => "skypipe=debug,skypipe_nats=debug",
        _ => "skypipe=trace,skypipe_nats=trace,async_nats=info",
    }
}

/// Starts diagnostics on stderr when `-v` was given or `SKYPIPE_LOG` / `RUST_LOG` is set.
pub(crate) fn init(verbose: u8) {
    let from_env = std::env::var(LOG_ENV)
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|v| !v.trim().is_empty());
    let filter = match (verbose, from_env) {
        (_, Some(spec)) => EnvFilter::try_new(spec.trim())
            .unwrap_or_else(|_| EnvFilter::new(filter_for(verbose.max(1)))),
        (0, None) => return,
        (n, None) => EnvFilter::new(filter_for(n)),
    };
    // The NATS client prints server addresses with their passwords at debug and below.
    let filter = match "async_nats=info".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose >= 2)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_is_a_valid_filter() {
        for n in 0..5 {
            assert!(EnvFilter::try_new(filter_for(n)).is_ok(), "{n}");
        }
    }
}
