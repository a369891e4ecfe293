//! The dashboard's state: what the snapshots said, what was derived from them (rates,
//! history, stalls), and what the user chose (sort, filter, selection, view). Pure: no
//! terminal, no clock, no IO, so keys and data can be driven from tests.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::snapshot::{PayloadState, PipeSample, ServerStatus, Snapshot};

/// Rates are averaged over the samples of this last stretch of time, so one late sample
/// does not make a steady stream look jumpy.
pub const RATE_WINDOW: Duration = Duration::from_secs(3);

/// A pipe is judged stalled on the stored bytes of this last stretch of time.
pub const STALL_WINDOW: Duration = Duration::from_secs(5);

/// Throughput samples kept per pipe: more than the widest sparkline.
const HISTORY_LEN: usize = 120;

/// Snapshots kept while paused. Counters are cumulative, so dropping older held samples
/// costs resolution, not correctness.
const HELD_MAX: usize = 120;

/// What the caller should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep running.
    Continue,
    /// The user asked to leave.
    Quit,
}

/// The order of the pipe table. `s` cycles through them in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Busiest first: bytes in plus bytes out, per second (or in total when totals show).
    #[default]
    Throughput,
    /// By name, A to Z.
    Name,
    /// Most payloads waiting first.
    Waiting,
    /// Most bytes stored first.
    Stored,
    /// Oldest waiting payload first.
    Age,
}

impl SortKey {
    /// The next order in the cycle.
    pub fn next(self) -> Self {
        match self {
            SortKey::Throughput => SortKey::Name,
            SortKey::Name => SortKey::Waiting,
            SortKey::Waiting => SortKey::Stored,
            SortKey::Stored => SortKey::Age,
            SortKey::Age => SortKey::Throughput,
        }
    }

    /// How the order is named on screen.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Throughput => "throughput",
            SortKey::Name => "name",
            SortKey::Waiting => "waiting",
            SortKey::Stored => "stored",
            SortKey::Age => "age",
        }
    }
}

/// Which screen is up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum View {
    #[default]
    Table,
    /// One pipe, by name: it stays on that pipe even if the table order changes.
    Detail(String),
}

/// True when a pipe looks stuck: payloads wait, nobody is taking, and the bytes it stores
/// did not shrink across `recent_stored` (its stored bytes over the last samples, oldest
/// first; at least two are needed to tell).
pub fn is_stalled(payloads_waiting: u64, takers: u32, recent_stored: &[u64]) -> bool {
    let not_shrinking = match (recent_stored.first(), recent_stored.last()) {
        (Some(first), Some(last)) => recent_stored.len() >= 2 && last >= first,
        _ => false,
    };
    payloads_waiting > 0 && takers == 0 && not_shrinking
}

/// The bytes that moved between two samples.
#[derive(Clone, Copy, Debug)]
struct Interval {
    end: Duration,
    elapsed: Duration,
    bytes_in: u64,
    bytes_out: u64,
}

/// One pipe: its latest sample and what was derived from the samples before.
#[derive(Clone, Debug)]
pub(crate) struct Pipe {
    pub(crate) sample: PipeSample,
    intervals: VecDeque<Interval>,
    /// Throughput (in + out) of each interval, bytes per second, oldest first.
    history: VecDeque<u64>,
    /// `(at, bytes_stored)` over the stall window, oldest first.
    stored: VecDeque<(Duration, u64)>,
    /// Bytes per second of payloads that moved since the previous sample, by id.
    payload_rates: HashMap<String, f64>,
    stalled: bool,
}

impl Pipe {
    fn first(sample: PipeSample, at: Duration) -> Self {
        let mut pipe = Pipe {
            intervals: VecDeque::new(),
            history: VecDeque::new(),
            stored: VecDeque::from([(at, sample.bytes_stored)]),
            payload_rates: HashMap::new(),
            stalled: false,
            sample,
        };
        pipe.judge();
        pipe
    }

    fn update(&mut self, sample: PipeSample, prev_at: Duration, at: Duration) {
        // A clock that did not move gives no rate; one that went back would divide by a
        // negative time. Keep the sample, skip the interval.
        if at > prev_at {
            let elapsed = at - prev_at;
            let interval = Interval {
                end: at,
                elapsed,
                // Counters are not meant to go back, but a collector restart resets them.
                bytes_in: sample.bytes_in.saturating_sub(self.sample.bytes_in),
                bytes_out: sample.bytes_out.saturating_sub(self.sample.bytes_out),
            };
            self.intervals.push_back(interval);
            while self.intervals.len() > 1
                && self
                    .intervals
                    .front()
                    .is_some_and(|i| i.end + RATE_WINDOW <= at)
            {
                self.intervals.pop_front();
            }
            let moved = interval.bytes_in.saturating_add(interval.bytes_out);
            self.history
                .push_back((moved as f64 / elapsed.as_secs_f64()) as u64);
            if self.history.len() > HISTORY_LEN {
                self.history.pop_front();
            }
            self.payload_rates = payload_rates(&self.sample, &sample, elapsed);
        } else {
            self.payload_rates.clear();
        }
        self.stored.push_back((at, sample.bytes_stored));
        while self
            .stored
            .front()
            .is_some_and(|&(t, _)| t + STALL_WINDOW < at)
        {
            self.stored.pop_front();
        }
        self.sample = sample;
        self.judge();
    }

    fn judge(&mut self) {
        let stored: Vec<u64> = self.stored.iter().map(|&(_, b)| b).collect();
        self.stalled = is_stalled(self.sample.payloads_waiting, self.sample.takers, &stored);
    }

    fn rate(&self, bytes: impl Fn(&Interval) -> u64) -> Option<f64> {
        let elapsed: f64 = self.intervals.iter().map(|i| i.elapsed.as_secs_f64()).sum();
        if elapsed <= 0.0 {
            return None;
        }
        let moved: f64 = self.intervals.iter().map(|i| bytes(i) as f64).sum();
        Some(moved / elapsed)
    }

    /// Bytes per second into the pipe, averaged over [`RATE_WINDOW`]; `None` until two
    /// samples were seen.
    pub(crate) fn rate_in(&self) -> Option<f64> {
        self.rate(|i| i.bytes_in)
    }

    /// Bytes per second taken out of the pipe, like [`Pipe::rate_in`].
    pub(crate) fn rate_out(&self) -> Option<f64> {
        self.rate(|i| i.bytes_out)
    }

    /// In plus out, per second, or zero while unknown.
    pub(crate) fn throughput(&self) -> f64 {
        self.rate_in().unwrap_or(0.0) + self.rate_out().unwrap_or(0.0)
    }

    pub(crate) fn history(&self) -> &VecDeque<u64> {
        &self.history
    }

    pub(crate) fn stalled(&self) -> bool {
        self.stalled
    }

    /// The rate of one payload, when it moved between the last two samples.
    pub(crate) fn payload_rate(&self, id: &str) -> Option<f64> {
        self.payload_rates.get(id).copied()
    }
}

fn payload_rates(prev: &PipeSample, now: &PipeSample, elapsed: Duration) -> HashMap<String, f64> {
    let before: HashMap<&str, u64> = prev
        .payloads
        .iter()
        .map(|p| (p.id.as_str(), p.bytes))
        .collect();
    now.payloads
        .iter()
        .filter(|p| p.state != PayloadState::Waiting)
        .filter_map(|p| {
            let was = before.get(p.id.as_str())?;
            let rate = p.bytes.saturating_sub(*was) as f64 / elapsed.as_secs_f64();
            Some((p.id.clone(), rate))
        })
        .collect()
}

/// Sums over the pipes shown in the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Total {
    pub(crate) pipes: usize,
    pub(crate) rate_in: Option<f64>,
    pub(crate) rate_out: Option<f64>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) waiting: u64,
    pub(crate) stored: u64,
    pub(crate) oldest: Option<Duration>,
    pub(crate) senders: u64,
    pub(crate) takers: u64,
    pub(crate) listeners: u64,
}

/// The whole dashboard: data, derived numbers and the user's choices.
#[derive(Clone, Debug, Default)]
pub struct App {
    server: Option<ServerStatus>,
    at: Option<Duration>,
    pipes: Vec<Pipe>,
    paused: bool,
    held: VecDeque<Snapshot>,
    feed_ended: bool,
    sort: SortKey,
    filter: String,
    editing_filter: bool,
    view: View,
    help: bool,
    totals: bool,
    /// The pipe the user selected, by name, so it stays selected while the order changes.
    /// Until the user picks one, the top row is selected, whichever pipe that is.
    selected: Option<String>,
    /// Where the selection was, to land near it when the selected pipe goes away.
    selected_row: usize,
}

impl App {
    /// A dashboard with no data yet, sorted by throughput, showing rates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one sample. While paused it is held and applied on resume, so the screen keeps
    /// what it showed and no counter history is lost.
    pub fn push(&mut self, snapshot: Snapshot) {
        if self.paused {
            self.held.push_back(snapshot);
            if self.held.len() > HELD_MAX {
                self.held.pop_front();
            }
            return;
        }
        self.apply(snapshot);
        self.fix_selection();
    }

    fn apply(&mut self, snapshot: Snapshot) {
        let Snapshot { at, server, pipes } = snapshot;
        let mut known: HashMap<String, Pipe> = self
            .pipes
            .drain(..)
            .map(|p| (p.sample.name.clone(), p))
            .collect();
        let prev_at = self.at;
        self.pipes = pipes
            .into_iter()
            .map(|sample| match (known.remove(&sample.name), prev_at) {
                (Some(mut pipe), Some(prev_at)) => {
                    pipe.update(sample, prev_at, at);
                    pipe
                }
                _ => Pipe::first(sample, at),
            })
            .collect();
        self.server = Some(server);
        self.at = Some(at);
    }

    /// Marks the data feed as finished: the screen stays, saying no more data comes.
    pub fn feed_ended(&mut self) {
        self.feed_ended = true;
    }

    /// Sets the table order.
    pub fn set_sort(&mut self, sort: SortKey) {
        self.sort = sort;
        self.fix_selection();
    }

    /// Shows only pipes whose name contains `filter` (ignoring case); empty shows all.
    pub fn set_filter(&mut self, filter: impl Into<String>) {
        self.filter = filter.into();
        self.fix_selection();
    }

    /// Shows cumulative bytes in and out instead of rates.
    pub fn set_totals(&mut self, totals: bool) {
        self.totals = totals;
        self.fix_selection();
    }

    /// The current table order.
    pub fn sort(&self) -> SortKey {
        self.sort
    }

    /// The current name filter.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Whether new snapshots are being held back.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether the table shows cumulative bytes instead of rates.
    pub fn totals(&self) -> bool {
        self.totals
    }

    pub(crate) fn server(&self) -> Option<&ServerStatus> {
        self.server.as_ref()
    }

    pub(crate) fn at(&self) -> Option<Duration> {
        self.at
    }

    pub(crate) fn has_data(&self) -> bool {
        self.at.is_some()
    }

    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn is_feed_ended(&self) -> bool {
        self.feed_ended
    }

    pub(crate) fn view(&self) -> &View {
        &self.view
    }

    pub(crate) fn help_shown(&self) -> bool {
        self.help
    }

    pub(crate) fn editing_filter(&self) -> bool {
        self.editing_filter
    }

    pub(crate) fn pipe_count(&self) -> usize {
        self.pipes.len()
    }

    pub(crate) fn pipe(&self, name: &str) -> Option<&Pipe> {
        self.pipes.iter().find(|p| p.sample.name == name)
    }

    /// The table rows: filtered, then sorted; ties go by name so rows never swap at random.
    pub(crate) fn rows(&self) -> Vec<&Pipe> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Pipe> = self
            .pipes
            .iter()
            .filter(|p| needle.is_empty() || p.sample.name.to_lowercase().contains(&needle))
            .collect();
        let totals = self.totals;
        let busy = |p: &Pipe| {
            if totals {
                p.sample.bytes_in as f64 + p.sample.bytes_out as f64
            } else {
                p.throughput()
            }
        };
        rows.sort_by(|a, b| {
            let (sa, sb) = (&a.sample, &b.sample);
            let order = match self.sort {
                SortKey::Throughput => busy(b).total_cmp(&busy(a)),
                SortKey::Name => std::cmp::Ordering::Equal,
                SortKey::Waiting => sb.payloads_waiting.cmp(&sa.payloads_waiting),
                SortKey::Stored => sb.bytes_stored.cmp(&sa.bytes_stored),
                SortKey::Age => sb.oldest_waiting.cmp(&sa.oldest_waiting),
            };
            order.then_with(|| sa.name.cmp(&sb.name))
        });
        rows
    }

    /// The index of the selected row in `rows` (from [`App::rows`]); `None` when empty.
    pub(crate) fn selected_index(&self, rows: &[&Pipe]) -> Option<usize> {
        let last = rows.len().checked_sub(1)?;
        let picked = self
            .selected
            .as_deref()
            .and_then(|name| rows.iter().position(|p| p.sample.name == name));
        match (&self.selected, picked) {
            (None, _) => Some(0),
            (Some(_), Some(row)) => Some(row),
            (Some(_), None) => Some(self.selected_row.min(last)),
        }
    }

    /// The name of the selected pipe, if any row is shown.
    pub(crate) fn selected_name(&self) -> Option<String> {
        let rows = self.rows();
        let row = self.selected_index(&rows)?;
        Some(rows[row].sample.name.clone())
    }

    pub(crate) fn total(&self, rows: &[&Pipe]) -> Total {
        let mut total = Total {
            pipes: rows.len(),
            ..Total::default()
        };
        for pipe in rows {
            let s = &pipe.sample;
            total.rate_in = sum_known(total.rate_in, pipe.rate_in());
            total.rate_out = sum_known(total.rate_out, pipe.rate_out());
            total.bytes_in = total.bytes_in.saturating_add(s.bytes_in);
            total.bytes_out = total.bytes_out.saturating_add(s.bytes_out);
            total.waiting = total.waiting.saturating_add(s.payloads_waiting);
            total.stored = total.stored.saturating_add(s.bytes_stored);
            total.oldest = total.oldest.max(s.oldest_waiting);
            total.senders += u64::from(s.senders);
            total.takers += u64::from(s.takers);
            total.listeners += u64::from(s.listeners);
        }
        total
    }

    /// Handles one key press and says whether to go on.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return Action::Quit;
        }
        if self.help {
            match key.code {
                KeyCode::Char('q') => return Action::Quit,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Enter => self.help = false,
                _ => {}
            }
            return Action::Continue;
        }
        if self.editing_filter {
            self.filter_key(key, ctrl);
            return Action::Continue;
        }
        // Commands are plain keys: Ctrl-S or Alt-Q is not `s` or `q`.
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return Action::Continue;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('r') => self.set_totals(!self.totals),
            KeyCode::Char('s') => self.set_sort(self.sort.next()),
            _ if matches!(self.view, View::Detail(_)) => self.detail_key(key),
            _ => self.table_key(key),
        }
        Action::Continue
    }

    fn filter_key(&mut self, key: KeyEvent, ctrl: bool) {
        match key.code {
            KeyCode::Enter => self.editing_filter = false,
            KeyCode::Esc => {
                self.editing_filter = false;
                self.set_filter("");
            }
            KeyCode::Backspace => {
                self.filter.pop();
                self.fix_selection();
            }
            KeyCode::Char('u') if ctrl => self.set_filter(""),
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                self.filter.push(c);
                self.fix_selection();
            }
            KeyCode::Up => self.move_selection(-1),
            KeyCode::Down => self.move_selection(1),
            _ => {}
        }
    }

    fn table_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(isize::MAX),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Esc => self.set_filter(""),
            KeyCode::Enter => {
                if let Some(name) = self.selected_name() {
                    self.view = View::Detail(name);
                }
            }
            _ => {}
        }
    }

    fn detail_key(&mut self, key: KeyEvent) {
        if matches!(
            key.code,
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h')
        ) {
            self.view = View::Table;
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            while let Some(snapshot) = self.held.pop_front() {
                self.apply(snapshot);
            }
            self.fix_selection();
        }
    }

    fn move_selection(&mut self, by: isize) {
        let rows = self.rows();
        let Some(last) = rows.len().checked_sub(1) else {
            return;
        };
        let current = self.selected_index(&rows).unwrap_or(0);
        let row = current.saturating_add_signed(by).min(last);
        self.selected = Some(rows[row].sample.name.clone());
        self.selected_row = row;
    }

    /// Keeps the user's pick on a shown pipe: the same one while it is shown, else the one
    /// now in its row (or the last row). With nothing shown, the pick waits.
    fn fix_selection(&mut self) {
        if self.selected.is_none() {
            return;
        }
        let rows = self.rows();
        if let Some(row) = self.selected_index(&rows) {
            self.selected = Some(rows[row].sample.name.clone());
            self.selected_row = row;
        }
    }
}

fn sum_known(acc: Option<f64>, rate: Option<f64>) -> Option<f64> {
    match (acc, rate) {
        (None, None) => None,
        (a, r) => Some(a.unwrap_or(0.0) + r.unwrap_or(0.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, pipe, snapshot};

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn names(app: &App) -> Vec<String> {
        app.rows().iter().map(|p| p.sample.name.clone()).collect()
    }

    fn selected(app: &App) -> Option<String> {
        app.selected_name()
    }

    fn with_in(name: &str, bytes_in: u64) -> PipeSample {
        PipeSample {
            bytes_in,
            ..pipe(name)
        }
    }

    fn at_millis(ms: u64, pipes: Vec<PipeSample>) -> Snapshot {
        Snapshot {
            at: Duration::from_millis(ms),
            ..snapshot(0, pipes)
        }
    }

    fn rate_in(app: &App, name: &str) -> Option<f64> {
        app.pipe(name).and_then(Pipe::rate_in)
    }

    #[test]
    fn a_million_bytes_in_a_second_is_a_megabyte_per_second() {
        let mut app = App::new();
        app.push(snapshot(10, vec![with_in("a", 5_000)]));
        app.push(snapshot(11, vec![with_in("a", 1_005_000)]));
        let rate = rate_in(&app, "a").expect("two samples give a rate");
        assert!((rate - 1_000_000.0).abs() < 1e-6, "{rate}");
        assert_eq!(crate::units::Bytes::rate(rate).to_string(), "1.0 MB/s");
    }

    #[test]
    fn rates_use_the_measured_elapsed_time() {
        let mut app = App::new();
        app.push(at_millis(0, vec![with_in("a", 0)]));
        app.push(at_millis(1_250, vec![with_in("a", 1_000_000)]));
        let rate = rate_in(&app, "a").expect("rate");
        assert!((rate - 800_000.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn one_sample_gives_no_rate_yet() {
        let mut app = App::new();
        app.push(snapshot(0, vec![with_in("a", 5_000)]));
        assert_eq!(rate_in(&app, "a"), None);
    }

    #[test]
    fn a_counter_going_back_counts_as_nothing_moved() {
        let mut app = App::new();
        app.push(snapshot(0, vec![with_in("a", 5_000_000)]));
        app.push(snapshot(1, vec![with_in("a", 1_000)]));
        assert_eq!(rate_in(&app, "a"), Some(0.0));
        app.push(snapshot(2, vec![with_in("a", 301_000)]));
        // The interval after the reset counts in full: (0 + 300 kB) over 2 s.
        assert_eq!(rate_in(&app, "a"), Some(150_000.0));
    }

    #[test]
    fn a_clock_that_does_not_move_gives_no_interval() {
        let mut app = App::new();
        app.push(snapshot(3, vec![with_in("a", 0)]));
        app.push(snapshot(3, vec![with_in("a", 1_000)]));
        assert_eq!(rate_in(&app, "a"), None);
        app.push(snapshot(2, vec![with_in("a", 2_000)]));
        assert_eq!(rate_in(&app, "a"), None);
    }

    #[test]
    fn rates_are_the_mean_over_the_last_three_seconds() {
        let mut app = App::new();
        let mut total = 0;
        app.push(snapshot(0, vec![with_in("a", 0)]));
        for (t, step) in [
            (1, 1_000_000),
            (2, 3_000_000),
            (3, 2_000_000),
            (4, 6_000_000),
        ] {
            total += step;
            app.push(snapshot(t, vec![with_in("a", total)]));
        }
        // Seconds 2..4 moved 3 + 2 + 6 MB; the first second has left the window.
        let rate = rate_in(&app, "a").expect("rate");
        assert!((rate - 11_000_000.0 / 3.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn a_long_gap_still_gives_the_last_interval() {
        let mut app = App::new();
        app.push(snapshot(0, vec![with_in("a", 0)]));
        app.push(snapshot(10, vec![with_in("a", 10_000)]));
        assert_eq!(rate_in(&app, "a"), Some(1_000.0));
    }

    #[test]
    fn history_holds_throughput_per_sample_and_is_bounded() {
        let mut app = App::new();
        for t in 0..200u64 {
            let p = PipeSample {
                bytes_in: 100 * t,
                bytes_out: 50 * t,
                ..pipe("a")
            };
            app.push(snapshot(t, vec![p]));
        }
        let history = app.pipe("a").expect("pipe").history();
        assert_eq!(history.len(), HISTORY_LEN);
        assert!(history.iter().all(|&v| v == 150));
    }

    #[test]
    fn pipes_that_disappear_go_away() {
        let mut app = App::new();
        app.push(snapshot(0, vec![pipe("a"), pipe("b")]));
        app.push(snapshot(1, vec![pipe("b")]));
        assert_eq!(names(&app), ["b"]);
        // Coming back, it starts over: no rate from the old counters.
        app.push(snapshot(2, vec![with_in("a", 9_000), pipe("b")]));
        assert_eq!(rate_in(&app, "a"), None);
    }

    #[test]
    fn payload_rates_come_from_two_samples_of_the_same_payload() {
        let app = fixtures::busy_pipe();
        let pipe = app.pipe("backups").expect("pipe");
        assert_eq!(pipe.payload_rate("Qd3kV9x1Lm2Pz8"), Some(40_000_000.0));
        assert_eq!(pipe.payload_rate("Qd3kV9x1Lm2Q7c"), Some(35_000_000.0));
        assert_eq!(
            pipe.payload_rate("Qd3kV9x1Lm2Q1a"),
            None,
            "waiting: not moving"
        );
    }

    #[test]
    fn stalled_needs_waiting_data_no_takers_and_no_shrinking() {
        assert!(is_stalled(1, 0, &[10, 20]));
        assert!(is_stalled(1, 0, &[10, 10, 10]), "flat counts as stalled");
        assert!(!is_stalled(1, 0, &[20, 10]), "shrinking: someone is taking");
        assert!(!is_stalled(0, 0, &[10, 20]), "nothing waits");
        assert!(!is_stalled(1, 1, &[10, 20]), "a taker is there");
        assert!(!is_stalled(1, 0, &[10]), "one sample cannot tell");
        assert!(!is_stalled(1, 0, &[]));
        assert!(
            is_stalled(1, 0, &[20, 5, 20]),
            "judged on the ends of the window"
        );
    }

    #[test]
    fn the_app_marks_stalled_pipes() {
        let app = fixtures::stalled();
        assert!(app.pipe("nightly-export").expect("pipe").stalled());
        assert!(!app.pipe("logs").expect("pipe").stalled());
    }

    #[test]
    fn a_pipe_seen_once_is_not_stalled_yet() {
        let mut app = App::new();
        let stuck = PipeSample {
            payloads_waiting: 1,
            bytes_stored: 10,
            ..pipe("a")
        };
        app.push(snapshot(0, vec![stuck.clone()]));
        assert!(!app.pipe("a").expect("pipe").stalled());
        app.push(snapshot(1, vec![stuck]));
        assert!(app.pipe("a").expect("pipe").stalled());
    }

    #[test]
    fn s_cycles_the_sort() {
        let mut app = fixtures::ten_pipes();
        assert_eq!(app.sort(), SortKey::Throughput);
        assert_eq!(names(&app)[0], "backups");
        let mut seen = vec![];
        for _ in 0..5 {
            press(&mut app, KeyCode::Char('s'));
            seen.push(app.sort());
        }
        assert_eq!(
            seen,
            [
                SortKey::Name,
                SortKey::Waiting,
                SortKey::Stored,
                SortKey::Age,
                SortKey::Throughput
            ]
        );
        app.set_sort(SortKey::Name);
        assert_eq!(names(&app)[..3], ["backups", "builds", "db-dump"]);
        app.set_sort(SortKey::Waiting);
        assert_eq!(names(&app)[0], "reports-quarterly-finance-eu-west");
        app.set_sort(SortKey::Stored);
        assert_eq!(names(&app)[0], "iso");
        app.set_sort(SortKey::Age);
        assert_eq!(names(&app)[..2], ["iso", "images"]);
    }

    #[test]
    fn slash_filters_by_name_and_esc_clears() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Char('/'));
        assert!(app.editing_filter());
        typed(&mut app, "Ep");
        assert_eq!(app.filter(), "Ep");
        assert_eq!(
            names(&app),
            ["reports-quarterly-finance-eu-west", "deploy-trigger"]
        );
        // While typing, letters are text, not commands.
        typed(&mut app, "qs");
        assert_eq!(app.filter(), "Epqs");
        assert_eq!(app.sort(), SortKey::Throughput);
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Backspace);
        assert_eq!(app.filter(), "Ep");
        press(&mut app, KeyCode::Enter);
        assert!(!app.editing_filter());
        assert_eq!(app.filter(), "Ep", "enter keeps the filter");
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.filter(), "", "esc in the table clears it");
        assert_eq!(names(&app).len(), 10);

        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "zzz");
        assert!(names(&app).is_empty());
        assert_eq!(selected(&app), None);
        press(&mut app, KeyCode::Esc);
        assert!(!app.editing_filter());
        assert_eq!(app.filter(), "", "esc while typing drops the filter");
        assert_eq!(names(&app).len(), 10);
    }

    #[test]
    fn selection_moves_and_stops_at_the_ends() {
        let mut app = fixtures::ten_pipes();
        let order = names(&app);
        assert_eq!(selected(&app), Some(order[0].clone()));
        press(&mut app, KeyCode::Up);
        assert_eq!(selected(&app), Some(order[0].clone()));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(selected(&app), Some(order[2].clone()));
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(selected(&app), Some(order[1].clone()));
        for _ in 0..20 {
            press(&mut app, KeyCode::Down);
        }
        assert_eq!(selected(&app), Some(order[9].clone()));
        press(&mut app, KeyCode::Home);
        assert_eq!(selected(&app), Some(order[0].clone()));
        press(&mut app, KeyCode::End);
        assert_eq!(selected(&app), Some(order[9].clone()));
    }

    #[test]
    fn the_selection_follows_its_pipe_and_lands_nearby_when_it_goes() {
        let mut app = App::new();
        app.push(snapshot(
            0,
            vec![with_in("a", 0), with_in("b", 0), with_in("c", 0)],
        ));
        press(&mut app, KeyCode::Down);
        assert_eq!(selected(&app).as_deref(), Some("b"));
        // b becomes the busiest and moves to the top: still selected.
        app.push(snapshot(
            1,
            vec![with_in("a", 0), with_in("b", 500), with_in("c", 0)],
        ));
        assert_eq!(names(&app), ["b", "a", "c"]);
        assert_eq!(selected(&app).as_deref(), Some("b"));
        // b goes away: the pipe now in its row is selected.
        app.push(snapshot(2, vec![with_in("a", 0), with_in("c", 0)]));
        assert_eq!(selected(&app).as_deref(), Some("a"));
    }

    #[test]
    fn until_the_user_picks_the_top_row_is_selected() {
        let mut app = App::new();
        app.push(snapshot(0, vec![with_in("a", 0), with_in("b", 0)]));
        assert_eq!(selected(&app).as_deref(), Some("a"));
        app.push(snapshot(1, vec![with_in("a", 0), with_in("b", 500)]));
        assert_eq!(selected(&app).as_deref(), Some("b"));
    }

    #[test]
    fn enter_opens_the_selected_pipe_and_esc_comes_back() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Down);
        let name = selected(&app).expect("a selection");
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view(), &View::Detail(name.clone()));
        // The detail stays on its pipe while the table below reorders.
        press(&mut app, KeyCode::Down);
        assert_eq!(app.view(), &View::Detail(name));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.view(), &View::Table);
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.view(), &View::Table);
    }

    #[test]
    fn enter_with_no_pipes_stays_on_the_table() {
        let mut app = App::new();
        app.push(snapshot(0, vec![]));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view(), &View::Table);
    }

    #[test]
    fn space_pauses_and_held_snapshots_apply_on_resume() {
        let mut app = App::new();
        app.push(snapshot(0, vec![with_in("a", 0)]));
        app.push(snapshot(1, vec![with_in("a", 1_000)]));
        press(&mut app, KeyCode::Char(' '));
        assert!(app.paused());
        let shown = |app: &App| -> Vec<(PipeSample, Option<f64>)> {
            app.rows()
                .iter()
                .map(|p| (p.sample.clone(), p.rate_in()))
                .collect()
        };
        let before = shown(&app);
        app.push(snapshot(2, vec![with_in("a", 4_000), pipe("b")]));
        app.push(snapshot(3, vec![with_in("a", 7_000), pipe("b")]));
        assert_eq!(shown(&app), before);
        assert_eq!(names(&app), ["a"]);
        assert_eq!(app.held(), 2);
        press(&mut app, KeyCode::Char(' '));
        assert!(!app.paused());
        assert_eq!(app.held(), 0);
        assert_eq!(names(&app), ["a", "b"]);
        assert_eq!(rate_in(&app, "a"), Some(7_000.0 / 3.0));
    }

    #[test]
    fn r_toggles_totals() {
        let mut app = fixtures::ten_pipes();
        assert!(!app.totals());
        press(&mut app, KeyCode::Char('r'));
        assert!(app.totals());
        press(&mut app, KeyCode::Char('r'));
        assert!(!app.totals());
    }

    #[test]
    fn question_mark_shows_help_until_esc() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Char('?'));
        assert!(app.help_shown());
        // Keys under the help do nothing...
        press(&mut app, KeyCode::Char('s'));
        press(&mut app, KeyCode::Enter);
        assert!(!app.help_shown(), "enter closes it");
        assert_eq!(app.sort(), SortKey::Throughput);
        assert_eq!(app.view(), &View::Table);
        press(&mut app, KeyCode::Char('?'));
        press(&mut app, KeyCode::Esc);
        assert!(!app.help_shown());
        press(&mut app, KeyCode::Char('?'));
        press(&mut app, KeyCode::Char('?'));
        assert!(!app.help_shown());
        press(&mut app, KeyCode::Char('?'));
        // ...except quitting.
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn q_and_ctrl_c_quit() {
        let mut app = fixtures::ten_pipes();
        assert_eq!(press(&mut app, KeyCode::Char('x')), Action::Continue);
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_c), Action::Quit);
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(
            app.on_key(ctrl_c),
            Action::Quit,
            "even while typing a filter"
        );
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Continue);
    }

    #[test]
    fn commands_with_ctrl_or_alt_are_not_commands() {
        let mut app = fixtures::ten_pipes();
        let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        let alt_q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT);
        assert_eq!(app.on_key(ctrl_s), Action::Continue);
        assert_eq!(app.on_key(alt_q), Action::Continue);
        assert_eq!(app.sort(), SortKey::Throughput);
        let shift_g = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        app.on_key(shift_g);
        assert_eq!(
            selected(&app).as_deref(),
            Some("iso"),
            "shift is how G is typed"
        );
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut app = fixtures::ten_pipes();
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(app.on_key(release), Action::Continue);
    }
}
