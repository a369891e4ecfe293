//! How long skypipe keeps trying a server that went away, carried in the connection settings
//! (no global): a sender retries chunks for that long, a taker reads on without its server for
//! that long, then both give up with a message that names the server.

use std::time::Duration;

/// How long to keep trying by default.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Overrides the default with a duration such as `5s` (README, "Environment and files"); tests
/// use it to watch a client give up without waiting a minute.
pub(crate) const ENV: &str = "SKYPIPE_RETRY_FOR";

/// How long to keep trying a server that went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            give_up_after: GIVE_UP_AFTER,
        }
    }
}

impl RetryPolicy {
    /// The default, or [`ENV`] when it holds a duration.
    pub(crate) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        env(ENV)
            .and_then(|v| humantime::parse_duration(v.trim()).ok())
            .map_or_else(RetryPolicy::default, |give_up_after| RetryPolicy {
                give_up_after,
            })
    }

    /// The duration, as messages say it ("60s").
    pub(crate) fn shown(&self) -> String {
        humantime::format_duration(self.give_up_after).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_overrides_the_default_and_nonsense_does_not() {
        let none = |_: &str| None;
        assert_eq!(RetryPolicy::from_env(&none).give_up_after, GIVE_UP_AFTER);
        let set = |k: &str| (k == ENV).then(|| " 5s ".to_string());
        assert_eq!(
            RetryPolicy::from_env(&set).give_up_after,
            Duration::from_secs(5)
        );
        let bad = |_: &str| Some("soon".to_string());
        assert_eq!(RetryPolicy::from_env(&bad), RetryPolicy::default());
    }
}
