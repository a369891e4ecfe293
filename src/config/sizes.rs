//! Sizes as the command line and the environment give them (`10GiB`, `500m`), and the
//! least sizes skypipe accepts for a store and for its streams.

use crate::config::ConfigError;

/// The smallest byte limit skypipe gives its two streams together.
pub(crate) const MIN_MAX_BYTES: u64 = 1 << 20;

/// A size in bytes: a number, optionally with a fraction, then optionally a unit: B, K, M,
/// G or T, each with or without `B` or `iB` after it, all powers of 1024 (as nats-server
/// reads sizes), in any case: `10GiB`, `500m`, `1.5G`, `1048576`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?} is not a size (try 500MiB, 10GiB or 1TiB)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 500MiB, 10GiB or 1TiB)"))?;
    let bytes = (value * (1u64 << shift) as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

/// The least `--max-store`: JetStream needs room for a few chunks at least.
pub(crate) const MIN_MAX_STORE: u64 = 1 << 20;

/// A `--max-store` size: [`parse_size`], at least [`MIN_MAX_STORE`].
pub(crate) fn parse_max_store(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    if bytes < MIN_MAX_STORE {
        return Err(format!("{s:?} is less than the least store size, 1MiB"));
    }
    Ok(bytes)
}

/// Reads a byte limit for skypipe's streams: a size ([`parse_size`]) of at
/// least [`MIN_MAX_BYTES`].
pub(crate) fn parse_max_bytes(value: &str, from: &'static str) -> Result<u64, ConfigError> {
    let bytes = parse_size(value).map_err(|reason| ConfigError::MaxBytes { from, reason })?;
    if bytes < MIN_MAX_BYTES {
        return Err(ConfigError::MaxBytes {
            from,
            reason: format!(
                "{value:?} is less than the smallest, {} bytes",
                MIN_MAX_BYTES
            ),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("10 gb"), Ok(10 << 30));
        assert_eq!(parse_size("500m"), Ok(500 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        for bad in ["", "lots", "10XB", "-1G", "1.2.3G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_max_store("1000").is_err());
        assert_eq!(parse_max_store("1MiB"), Ok(1 << 20));
    }
}
