//! Numbers for people: byte sizes and rates, ages, round trips.
//!
//! Every byte count on screen goes through [`Bytes`], so sizes and rates read alike
//! everywhere. Units are decimal (1 kB = 1000 B), as in network rates and disk sizes.
//! The `Display` impls honour width and alignment (`{:>9}`), so tables can line them up.

use std::fmt;
use std::time::Duration;

const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];

/// A byte count or a byte rate, shown with three significant digits: `512 B`, `1.2 MB`,
/// `34.5 kB/s`, `120 GB`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bytes {
    value: f64,
    per_second: bool,
}

impl Bytes {
    /// A size in bytes.
    pub fn size(bytes: u64) -> Self {
        Bytes {
            value: bytes as f64,
            per_second: false,
        }
    }

    /// A rate in bytes per second. Negative or non-finite rates show as zero: a rate is
    /// never meant to be either, and the screen should not lie louder than the data.
    pub fn rate(bytes_per_second: f64) -> Self {
        let value = if bytes_per_second.is_finite() && bytes_per_second > 0.0 {
            bytes_per_second
        } else {
            0.0
        };
        Bytes {
            value,
            per_second: true,
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = if self.per_second { "/s" } else { "" };
        let mut value = self.value;
        let mut unit = 0;
        // Rounding decides the unit: 999.96 kB must become "1.0 MB", not "1000 kB".
        while unit + 1 < UNITS.len() && value.round() >= 1000.0 {
            value /= 1000.0;
            unit += 1;
        }
        let text = if unit == 0 {
            format!("{} B{suffix}", value.round())
        } else if (value * 10.0).round() < 1000.0 {
            format!("{value:.1} {}{suffix}", UNITS[unit])
        } else {
            format!("{value:.0} {}{suffix}", UNITS[unit])
        };
        f.pad(&text)
    }
}

/// How long something has been waiting, to the second and no finer than it matters:
/// `0s`, `42s`, `4m12s`, `2h`, `2h5m`, `3d4h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age(pub Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let text = match (d, h, m) {
            (0, 0, 0) => format!("{s}s"),
            (0, 0, _) if s == 0 => format!("{m}m"),
            (0, 0, _) => format!("{m}m{s}s"),
            (0, _, 0) => format!("{h}h"),
            (0, _, _) => format!("{h}h{m}m"),
            (_, 0, _) => format!("{d}d"),
            _ => format!("{d}d{h}h"),
        };
        f.pad(&text)
    }
}

/// A network round trip: `850µs`, `1.2ms`, `35ms`, `1.50s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtt(pub Duration);

impl fmt::Display for Rtt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        let ms = self.0.as_secs_f64() * 1000.0;
        let text = if micros < 1000 {
            format!("{micros}µs")
        } else if ms < 9.95 {
            format!("{ms:.1}ms")
        } else if ms < 999.5 {
            format!("{ms:.0}ms")
        } else {
            format!("{:.2}s", self.0.as_secs_f64())
        };
        f.pad(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(n: u64) -> String {
        Bytes::size(n).to_string()
    }

    fn rate(r: f64) -> String {
        Bytes::rate(r).to_string()
    }

    #[test]
    fn sizes_keep_three_significant_digits() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1000), "1.0 kB");
        assert_eq!(size(1234), "1.2 kB");
        assert_eq!(size(12_345), "12.3 kB");
        assert_eq!(size(123_456), "123 kB");
        assert_eq!(size(1_200_000), "1.2 MB");
        assert_eq!(size(5_000_000_000), "5.0 GB");
        assert_eq!(size(u64::MAX), "18.4 EB");
    }

    #[test]
    fn rounding_moves_to_the_next_unit() {
        assert_eq!(size(999_960), "1.0 MB");
        assert_eq!(size(99_960), "100 kB");
        assert_eq!(size(99_940), "99.9 kB");
    }

    #[test]
    fn rates_carry_per_second() {
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(0.4), "0 B/s");
        assert_eq!(rate(512.0), "512 B/s");
        assert_eq!(rate(1_000_000.0), "1.0 MB/s");
        assert_eq!(rate(34_500.0), "34.5 kB/s");
    }

    #[test]
    fn nonsense_rates_show_as_zero() {
        assert_eq!(rate(-5.0), "0 B/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
        assert_eq!(rate(f64::INFINITY), "0 B/s");
    }

    #[test]
    fn width_and_alignment_apply() {
        assert_eq!(format!("{:>9}", Bytes::rate(1e6)), " 1.0 MB/s");
        assert_eq!(format!("{:<6}|", Age(Duration::from_secs(3))), "3s    |");
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        let age = |s| Age(Duration::from_secs(s)).to_string();
        assert_eq!(Age(Duration::from_millis(400)).to_string(), "0s");
        assert_eq!(age(3), "3s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(60), "1m");
        assert_eq!(age(252), "4m12s");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(7500), "2h5m");
        assert_eq!(age(86_400), "1d");
        assert_eq!(age(86_400 * 3 + 4 * 3600 + 59), "3d4h");
    }

    #[test]
    fn round_trips() {
        let rtt = |us| Rtt(Duration::from_micros(us)).to_string();
        assert_eq!(rtt(850), "850µs");
        assert_eq!(rtt(1234), "1.2ms");
        assert_eq!(rtt(35_400), "35ms");
        assert_eq!(rtt(1_500_000), "1.50s");
    }
}
