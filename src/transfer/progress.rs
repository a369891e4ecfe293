//! Progress on stderr: a one-line bar (bytes, rate, and for a sender reading a regular file
//! the percentage and time left) when stderr is a terminal, plain lines every few seconds with
//! `--progress` when it is not, nothing with `-q`. The line clears at the end.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio_util::task::AbortOnDropHandle;

use crate::config::ProgressMode;
use crate::transfer::output::Counter;

/// A running progress display; [`Progress::finish`] ends it with a summary line,
/// [`Progress::clear`] without one (Ctrl-C, a failure).
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    task: Option<AbortOnDropHandle<()>>,
    /// What the summary line says: the verb and the bytes (counted from the first one).
    summary: Option<(String, Counter)>,
    /// The size of what is received, when its sender announced it.
    announced: Announced,
    finished: std::sync::atomic::AtomicBool,
}

/// A byte count for people (`12.3 MB`), the one style of the whole workspace: the dashboard's.
pub(crate) fn human_bytes(n: u64) -> String {
    skypipe_tui::units::Bytes::size(n).to_string()
}

/// A byte rate for people (`1.05 MB/s`).
pub(crate) fn human_rate(bytes_per_second: f64) -> String {
    skypipe_tui::units::Bytes::rate(bytes_per_second).to_string()
}

impl Progress {
    /// Starts showing `counter` (bytes `verb`, e.g. "sent"); `total` when known. `idle` is
    /// what the bar says until the first byte (a receiver: `waiting on pipe NAME...`).
    pub(crate) fn start(
        mode: ProgressMode,
        verb: &str,
        total: Option<u64>,
        counter: Counter,
        idle: Option<String>,
    ) -> Self {
        let summary = Some((verb.to_string(), counter.clone()));
        match mode {
            ProgressMode::Off => Progress {
                bar: None,
                task: None,
                summary: None,
                announced: Announced::default(),
                finished: Default::default(),
            },
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
                let idle_style = idle.as_ref().and_then(|text| {
                    ProgressStyle::with_template(&text.replace('{', "{{").replace('}', "}}")).ok()
                });
                let announced = Announced::default();
                let (b, c, told) = (bar.clone(), counter.clone(), announced.clone());
                let verb = verb.to_string();
                match idle_style {
                    Some(style) => {
                        bar.set_style(style);
                        // Drawn once now: a bar that does not move is not redrawn.
                        bar.tick();
                    }
                    None => set_bytes_style(&bar, &verb, total.is_some()),
                }
                let mut idle = idle.is_some();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    loop {
                        tick.tick().await;
                        let n = c.get();
                        if idle && n > 0 {
                            // The first byte: from now on, bytes and rate, and the share of
                            // the size the sender announced, when it did.
                            idle = false;
                            let size = told.get();
                            if let Some(size) = size {
                                b.set_length(size);
                            }
                            b.reset_elapsed();
                            set_bytes_style(&b, &verb, size.is_some());
                        }
                        b.set_position(n);
                    }
                });
                Progress {
                    bar: Some(bar),
                    task: Some(AbortOnDropHandle::new(task)),
                    summary,
                    announced,
                    finished: Default::default(),
                }
            }
            ProgressMode::Lines => {
                let verb = verb.to_string();
                let (c, v) = (counter.clone(), verb.clone());
                let started = Instant::now();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(2));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        eprintln!("skypipe: {}", line(&v, c.get(), started.elapsed(), total));
                    }
                });
                Progress {
                    bar: None,
                    task: Some(AbortOnDropHandle::new(task)),
                    summary: Some((verb, counter)),
                    announced: Announced::default(),
                    finished: Default::default(),
                }
            }
        }
    }

    /// Stops the display: the bar is cleared, and one summary line says how many bytes went
    /// in how long (when any did). Once: later calls, and [`Progress::clear`], do nothing.
    pub(crate) fn finish(&self) {
        if self.stop() {
            if let Some((verb, counter)) = &self.summary {
                if let Some(first) = counter.since() {
                    eprintln!("skypipe: {}", summary(verb, counter.get(), first.elapsed()));
                }
            }
        }
    }

    /// The size of the payload being received, as its sender announced it: the bar shows
    /// the share received once bytes come.
    pub(crate) fn announce(&self, size: Option<u64>) {
        self.announced.set(size);
    }

    /// Stops the display and clears the line, with no summary (Ctrl-C, a failure).
    pub(crate) fn clear(&self) {
        self.stop();
    }

    /// Stops the display; whether it was still running.
    fn stop(&self) -> bool {
        if self
            .finished
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        true
    }
}

/// A size announced to the progress task.
#[derive(Debug, Clone, Default)]
struct Announced(std::sync::Arc<std::sync::Mutex<Option<u64>>>);

impl Announced {
    fn set(&self, size: Option<u64>) {
        if let Ok(mut s) = self.0.lock() {
            *s = size;
        }
    }

    fn get(&self) -> Option<u64> {
        self.0.lock().ok().and_then(|s| *s)
    }
}

/// Bytes and rate, and with `of_total` the share of the length and the time left.
fn set_bytes_style(bar: &ProgressBar, verb: &str, of_total: bool) {
    let template = if of_total {
        format!("{{done}} {verb} of {{all}} ({{percent}}%), {{speed}}, {{eta}} left")
    } else {
        format!("{{done}} {verb}, {{speed}}")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(
            style
                .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_bytes(s.pos()));
                })
                .with_key("all", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_bytes(s.len().unwrap_or(0)));
                })
                .with_key("speed", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_rate(s.per_sec()));
                }),
        );
    }
}

/// The summary line: `2.0 MB received in 1.3s, 1.5 MB/s`.
fn summary(verb: &str, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "{} {verb} in {secs:.1}s, {}",
        human_bytes(bytes),
        human_rate(bytes as f64 / secs)
    )
}

fn line(verb: &str, bytes: u64, elapsed: Duration, total: Option<u64>) -> String {
    let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001);
    let mut s = format!("{} {verb}, {}", human_bytes(bytes), human_rate(rate));
    if let Some(t) = total.filter(|t| *t > 0) {
        s.push_str(&format!(", {}%", bytes * 100 / t));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_bytes_time_and_rate() {
        assert_eq!(
            summary("received", 3_000_000, Duration::from_secs(2)),
            "3.0 MB received in 2.0s, 1.5 MB/s"
        );
    }

    #[test]
    fn lines_say_bytes_rate_and_percent() {
        let l = line("sent", 2_000_000, Duration::from_secs(2), Some(4_000_000));
        assert_eq!(l, "2.0 MB sent, 1.0 MB/s, 50%");
    }
}
