//! The dashboard without a terminal: a plain table for `skypipe monitor --once` or a stdout
//! that is not a terminal, and a JSON report for scripts. Both show the pipes the table
//! would show (same filter, same order).

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::snapshot::ConnState;
use crate::ui::{oldest, rate};
use crate::units::Bytes;

/// The pipe table as plain text: a header line, one line per pipe, a total line. Columns
/// are separated by spaces and padded to line up; rates (or cumulative bytes when the app
/// shows totals) are in human units, and `-` marks what is not known yet (a rate needs two
/// samples).
pub fn text_table(app: &App) -> String {
    let rows = app.rows();
    let (title_in, title_out) = if app.totals() {
        ("IN", "OUT")
    } else {
        ("IN/S", "OUT/S")
    };
    let header = [
        "PIPE", title_in, title_out, "WAIT", "STORED", "OLDEST", "SEND", "TAKE", "LISTEN",
        "STALLED",
    ]
    .map(String::from)
    .to_vec();
    let mut lines = vec![header];
    for pipe in &rows {
        let s = &pipe.sample;
        let (bytes_in, bytes_out) = if app.totals() {
            (
                Bytes::size(s.bytes_in).to_string(),
                Bytes::size(s.bytes_out).to_string(),
            )
        } else {
            (rate(pipe.rate_in()), rate(pipe.rate_out()))
        };
        lines.push(vec![
            s.name.clone(),
            bytes_in,
            bytes_out,
            s.payloads_waiting.to_string(),
            Bytes::size(s.bytes_stored).to_string(),
            oldest(s.oldest_waiting),
            s.senders.to_string(),
            s.takers.to_string(),
            s.listeners.to_string(),
            if pipe.stalled() { "yes" } else { "no" }.to_string(),
        ]);
    }
    let total = app.total(&rows);
    let (total_in, total_out) = if app.totals() {
        (
            Bytes::size(total.bytes_in).to_string(),
            Bytes::size(total.bytes_out).to_string(),
        )
    } else {
        (rate(total.rate_in), rate(total.rate_out))
    };
    lines.push(vec![
        "TOTAL".to_string(),
        total_in,
        total_out,
        total.waiting.to_string(),
        Bytes::size(total.stored).to_string(),
        oldest(total.oldest),
        total.senders.to_string(),
        total.takers.to_string(),
        total.listeners.to_string(),
        String::new(),
    ]);

    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c > 0 {
                text.push_str("  ");
            }
            // Names and the stall flag read left to right; numbers line up on the right.
            if c == 0 || c == columns - 1 {
                text.push_str(&format!("{cell:<width$}", width = widths[c]));
            } else {
                text.push_str(&format!("{cell:>width$}", width = widths[c]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Everything the dashboard knows, as data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When the last sample was taken, as an RFC 3339 UTC time (`2026-12-01T23:07:39.123Z`);
    /// `None` before the first sample.
    pub time: Option<String>,
    /// When the last sample was taken, in seconds since the monitor started; `None` before
    /// the first sample.
    pub at_secs: Option<f64>,
    /// The server, as of the last sample; `None` before the first sample.
    pub server: Option<ServerReport>,
    /// The pipes, filtered and ordered as in the table.
    pub pipes: Vec<PipeReport>,
}

/// The server in a [`Report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    /// The server URL.
    pub url: String,
    /// The `nats-server` version.
    pub version: String,
    /// `connected`, `reconnecting` or `disconnected`.
    pub state: ConnState,
    /// Round trip in milliseconds, if measured.
    pub rtt_ms: Option<f64>,
    /// JetStream bytes in use.
    pub storage_used: u64,
    /// JetStream bytes still free; `None` when there is no limit.
    pub storage_available: Option<u64>,
}

/// One pipe in a [`Report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipeReport {
    /// The pipe's name.
    pub name: String,
    /// Bytes per second into the pipe over the last few seconds; `None` while not known.
    pub in_per_sec: Option<f64>,
    /// Bytes per second its takers wrote over the last few seconds; `None` while not known.
    pub out_per_sec: Option<f64>,
    /// Bytes into the pipe since the monitor started.
    pub bytes_in: u64,
    /// Bytes out of the pipe since the monitor started.
    pub bytes_out: u64,
    /// Payloads not taken yet.
    pub payloads_waiting: u64,
    /// Payloads the server holds for the pipe (waiting and being taken).
    pub payloads_stored: u64,
    /// Bytes the pipe holds on the server.
    pub bytes_stored: u64,
    /// Age of the oldest waiting payload in seconds; `None` when nothing waits.
    pub oldest_waiting_secs: Option<f64>,
    /// Senders publishing into the pipe.
    pub senders: u32,
    /// Receivers waiting or taking.
    pub takers: u32,
    /// Listeners watching the pipe.
    pub listeners: u32,
    /// Something is wrong: see `stalled_reason`.
    pub stalled: bool,
    /// `no_taker` (a payload waited 30 s or more and nobody takes it) or `taker_not_writing`
    /// (a taker wrote nothing for 30 s while the pipe holds data); `None` when not stalled.
    pub stalled_reason: Option<String>,
    /// Seconds since anything was seen happening on the pipe; `None` when nothing tells.
    pub idle_secs: Option<f64>,
    /// Nothing stored, nobody on it, and nothing seen for an hour.
    pub idle: bool,
}

/// The dashboard as a [`Report`].
pub fn report(app: &App) -> Report {
    let server = app.server().map(|s| ServerReport {
        url: s.url.clone(),
        version: s.version.clone(),
        state: s.state,
        rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
        storage_used: s.storage_used,
        storage_available: s.storage_available,
    });
    let pipes = app
        .rows()
        .into_iter()
        .map(|p| {
            let s = &p.sample;
            PipeReport {
                name: s.name.clone(),
                in_per_sec: p.rate_in(),
                out_per_sec: p.rate_out(),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                payloads_waiting: s.payloads_waiting,
                payloads_stored: s.payloads_stored,
                bytes_stored: s.bytes_stored,
                oldest_waiting_secs: s.oldest_waiting.map(|d| d.as_secs_f64()),
                senders: s.senders,
                takers: s.takers,
                listeners: s.listeners,
                stalled: p.stalled(),
                stalled_reason: p.stall().map(|s| s.name().to_string()),
                idle_secs: s.idle_for.map(|d| d.as_secs_f64()),
                idle: p.idle(),
            }
        })
        .collect();
    Report {
        time: app
            .wall()
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        at_secs: app.at().map(|d| d.as_secs_f64()),
        server,
        pipes,
    }
}

/// The dashboard as JSON (a [`Report`]).
pub fn json_report(app: &App) -> serde_json::Value {
    // Plain structs with string keys always serialize; Null is only a formal fallback.
    serde_json::to_value(report(app)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, pipe, snapshot};

    #[test]
    fn table_of_ten_pipes() {
        insta::assert_snapshot!(text_table(&fixtures::ten_pipes()));
    }

    #[test]
    fn table_of_totals_follows_the_filter() {
        let mut app = fixtures::ten_pipes();
        app.set_totals(true);
        app.set_filter("s");
        insta::assert_snapshot!(text_table(&app));
    }

    #[test]
    fn table_of_no_pipes_has_a_header_and_a_total() {
        let mut app = crate::App::new();
        app.push(snapshot(0, vec![]));
        let text = text_table(&app);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header[..3], ["PIPE", "IN/S", "OUT/S"], "{text}");
        assert!(lines[1].starts_with("TOTAL"), "{text}");
    }

    #[test]
    fn table_lines_have_no_trailing_spaces() {
        let text = text_table(&fixtures::ten_pipes());
        assert_eq!(text.lines().count(), 12);
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn json_of_a_stalled_pipe() {
        let json = json_report(&fixtures::stalled());
        let text = serde_json::to_string_pretty(&json).expect("json");
        insta::assert_snapshot!(text);
        let back: Report = serde_json::from_value(json).expect("a report");
        assert!(back.pipes[0].stalled);
        assert_eq!(back.pipes[0].name, "nightly-export");
        assert_eq!(back.pipes[0].in_per_sec, Some(2_000_000.0));
    }

    #[test]
    fn json_before_any_sample_is_empty() {
        let json = json_report(&crate::App::new());
        assert_eq!(
            json,
            serde_json::json!({ "time": null, "at_secs": null, "server": null, "pipes": [] })
        );
    }

    #[test]
    fn json_rates_are_null_until_known() {
        let mut app = crate::App::new();
        let unknown = crate::PipeSample {
            rate_in: None,
            rate_out: None,
            ..pipe("a")
        };
        app.push(snapshot(0, vec![unknown]));
        let json = json_report(&app);
        assert_eq!(json["time"], "2027-01-15T08:00:00.000Z");
        assert_eq!(json["at_secs"], 0.0);
        assert_eq!(json["pipes"][0]["in_per_sec"], serde_json::Value::Null);
        assert_eq!(
            json["pipes"][0]["oldest_waiting_secs"],
            serde_json::Value::Null
        );
        assert_eq!(json["server"]["state"], "connected");
        assert_eq!(json["server"]["rtt_ms"], 1.24);
    }
}
