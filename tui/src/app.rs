//! The dashboard's state: what the snapshots said, what was derived from them (history,
//! stalls, staleness), and what the user chose (sort, filter, selection, scroll, view). Pure:
//! no terminal, no clock, no IO, so keys and data can be driven from tests. The time comes
//! with the updates.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;

use crate::snapshot::{ConnState, PayloadState, PipeSample, ServerStatus, Snapshot, Update};

/// A pipe is stalled when a payload waited this long with nobody to take it, or a taker
/// wrote nothing for this long while the pipe held data.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// Data older than this is stale: shown dimmed, its age in the header.
pub const STALE_AFTER: Duration = Duration::from_millis(2500);

/// A pipe with nothing in it, nobody on it and no activity for this long is idle: hidden
/// unless the user asks for all pipes (`a`).
pub const IDLE_AFTER: Duration = Duration::from_secs(3600);

/// Samples of throughput kept, per pipe and for the server: five minutes at one a second.
pub const HISTORY_LEN: usize = 300;

/// Snapshots kept while paused. Rates come with each snapshot and counters are cumulative,
/// so dropping older held samples costs history, not correctness.
const HELD_MAX: usize = 120;

/// Rows a page key moves when the table's height is not known.
const PAGE_DEFAULT: usize = 10;
/// Rows one turn of the mouse wheel moves.
const WHEEL_ROWS: isize = 3;

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

/// Why a pipe is stalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// A payload waited [`STALL_AFTER`] or longer and nobody is there to take it.
    NoTaker,
    /// A taker is there, the pipe holds data, and the taker wrote nothing for
    /// [`STALL_AFTER`] or longer.
    TakerNotWriting,
}

impl Stall {
    /// What it means, in a few words.
    pub fn reason(self) -> &'static str {
        match self {
            Stall::NoTaker => "a payload waits 30s or more and nobody takes it",
            Stall::TakerNotWriting => "a taker wrote nothing for 30s while data waits",
        }
    }

    /// A short name, for scripts.
    pub fn name(self) -> &'static str {
        match self {
            Stall::NoTaker => "no_taker",
            Stall::TakerNotWriting => "taker_not_writing",
        }
    }
}

/// Whether a pipe is stalled, and why: a payload waited [`STALL_AFTER`] with nobody to take
/// it, or its takers wrote nothing for `not_writing_for` (at least [`STALL_AFTER`]) while the
/// pipe held data. Data waiting for a taker a little while is the normal case, not a stall.
pub fn is_stalled(pipe: &PipeSample, not_writing_for: Duration) -> Option<Stall> {
    let waited = pipe.oldest_waiting.unwrap_or_default();
    if pipe.payloads_waiting > 0 && pipe.takers == 0 && waited >= STALL_AFTER {
        Some(Stall::NoTaker)
    } else if pipe.takers > 0 && pipe.bytes_stored > 0 && not_writing_for >= STALL_AFTER {
        Some(Stall::TakerNotWriting)
    } else {
        None
    }
}

/// Whether a pipe is idle: nothing stored, nobody on it, nothing seen for [`IDLE_AFTER`].
pub fn is_idle(pipe: &PipeSample) -> bool {
    pipe.payloads_stored == 0
        && pipe.payloads_waiting == 0
        && pipe.bytes_stored == 0
        && pipe.senders == 0
        && pipe.takers == 0
        && pipe.listeners == 0
        && pipe.idle_for.is_some_and(|d| d >= IDLE_AFTER)
}

/// Throughput at one sample: bytes per second in and out, `None` where not known.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Point {
    pub(crate) at: Duration,
    pub(crate) rate_in: Option<f64>,
    pub(crate) rate_out: Option<f64>,
}

/// One pipe: its latest sample and what was derived from the samples before.
#[derive(Clone, Debug)]
pub(crate) struct Pipe {
    pub(crate) sample: PipeSample,
    /// Throughput of each sample, oldest first.
    history: VecDeque<Point>,
    /// When its takers last wrote (or were first seen not writing with data there).
    out_moved_at: Duration,
    /// Bytes per second of payloads that moved since the previous sample, by id.
    payload_rates: HashMap<String, f64>,
    stall: Option<Stall>,
}

impl Pipe {
    fn first(sample: PipeSample, at: Duration) -> Self {
        let mut pipe = Pipe {
            history: VecDeque::new(),
            out_moved_at: at,
            payload_rates: HashMap::new(),
            stall: None,
            sample,
        };
        pipe.record(at);
        pipe
    }

    fn update(&mut self, sample: PipeSample, prev_at: Duration, at: Duration) {
        // A clock that did not move gives no rate; one that went back would divide by a
        // negative time.
        if at > prev_at {
            self.payload_rates = payload_rates(&self.sample, &sample, at - prev_at);
        } else {
            self.payload_rates.clear();
        }
        let wrote = sample.bytes_out > self.sample.bytes_out;
        let holds_data = sample.takers > 0 && sample.bytes_stored > 0;
        if wrote || !holds_data {
            self.out_moved_at = at;
        }
        self.sample = sample;
        self.record(at);
    }

    fn record(&mut self, at: Duration) {
        self.history.push_back(Point {
            at,
            rate_in: self.sample.rate_in,
            rate_out: self.sample.rate_out,
        });
        if self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
        self.stall = is_stalled(&self.sample, at.saturating_sub(self.out_moved_at));
    }

    /// Bytes per second into the pipe, as measured; `None` while not known.
    pub(crate) fn rate_in(&self) -> Option<f64> {
        self.sample.rate_in
    }

    /// Bytes per second taken out of the pipe, like [`Pipe::rate_in`].
    pub(crate) fn rate_out(&self) -> Option<f64> {
        self.sample.rate_out
    }

    /// In plus out, per second, or zero while unknown.
    pub(crate) fn throughput(&self) -> f64 {
        self.rate_in().unwrap_or(0.0) + self.rate_out().unwrap_or(0.0)
    }

    pub(crate) fn history(&self) -> &VecDeque<Point> {
        &self.history
    }

    pub(crate) fn stalled(&self) -> bool {
        self.stall.is_some()
    }

    pub(crate) fn stall(&self) -> Option<Stall> {
        self.stall
    }

    pub(crate) fn idle(&self) -> bool {
        is_idle(&self.sample)
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
    /// When the last sample shown was taken.
    at: Option<Duration>,
    /// The wall time of that sample.
    wall: Option<std::time::SystemTime>,
    /// The latest time heard of, from samples and connection updates alike.
    now: Option<Duration>,
    /// The connection's state as last heard, and when.
    conn: Option<(Duration, ConnState)>,
    pipes: Vec<Pipe>,
    /// The whole server's throughput per sample, oldest first.
    history: VecDeque<Point>,
    paused: bool,
    held: VecDeque<Snapshot>,
    feed_ended: bool,
    sort: SortKey,
    filter: String,
    editing_filter: bool,
    show_idle: bool,
    hide_chart: bool,
    view: View,
    help: bool,
    totals: bool,
    /// The pipe the user selected, by name, so it stays selected while the order changes.
    /// Until the user picks one, the top row is selected, whichever pipe that is.
    selected: Option<String>,
    /// Where the selection was, to land near it when the selected pipe goes away.
    selected_row: usize,
    /// The first table row on screen.
    offset: usize,
    /// The terminal's area, as last told; empty until then.
    area: Rect,
}

impl App {
    /// A dashboard with no data yet, sorted by throughput, showing rates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one update from the collector.
    pub fn update(&mut self, update: Update) {
        match update {
            Update::Sample(snapshot) => self.push(snapshot),
            Update::Connection { at, state } => {
                self.now = self.now.max(Some(at));
                self.conn = Some((at, state));
            }
        }
    }

    /// Takes one sample. While paused it is held and applied on resume, so the screen keeps
    /// what it showed and no history is lost.
    pub fn push(&mut self, snapshot: Snapshot) {
        self.now = self.now.max(Some(snapshot.at));
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
        let Snapshot {
            at,
            wall,
            server,
            pipes,
        } = snapshot;
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
        let mut point = Point {
            at,
            rate_in: None,
            rate_out: None,
        };
        for pipe in &self.pipes {
            point.rate_in = sum_known(point.rate_in, pipe.rate_in());
            point.rate_out = sum_known(point.rate_out, pipe.rate_out());
        }
        self.history.push_back(point);
        if self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
        // A sample newer than the last connection update tells the state too.
        if self.conn.is_none_or(|(t, _)| t <= at) {
            self.conn = Some((at, server.state));
        }
        self.server = Some(server);
        self.at = Some(at);
        self.wall = Some(wall);
    }

    /// Marks the data feed as finished: the screen stays, saying no more data comes.
    pub fn feed_ended(&mut self) {
        self.feed_ended = true;
    }

    /// Tells the app the terminal's size, for scrolling and the mouse.
    pub fn set_area(&mut self, area: Rect) {
        self.area = area;
        self.fix_scroll();
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

    /// Shows idle pipes too (see [`is_idle`]).
    pub fn set_show_idle(&mut self, show: bool) {
        self.show_idle = show;
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

    /// Whether idle pipes are shown.
    pub fn shows_idle(&self) -> bool {
        self.show_idle
    }

    /// Whether the server's chart is shown above the table (when there is room).
    pub fn chart_shown(&self) -> bool {
        !self.hide_chart
    }

    pub(crate) fn server(&self) -> Option<&ServerStatus> {
        self.server.as_ref()
    }

    pub(crate) fn at(&self) -> Option<Duration> {
        self.at
    }

    pub(crate) fn wall(&self) -> Option<std::time::SystemTime> {
        self.wall
    }

    /// The connection's state as last heard.
    pub(crate) fn conn_state(&self) -> Option<ConnState> {
        self.conn.map(|(_, s)| s)
    }

    /// How old the data shown is, by the latest time heard of.
    pub(crate) fn data_age(&self) -> Option<Duration> {
        Some(self.now?.saturating_sub(self.at?))
    }

    /// Whether the numbers shown may no longer be true: the connection is not up, the data
    /// is older than [`STALE_AFTER`], or no more comes.
    pub(crate) fn stale(&self) -> bool {
        self.has_data()
            && (self.conn_state() != Some(ConnState::Connected)
                || self.data_age().is_some_and(|a| a > STALE_AFTER)
                || self.feed_ended)
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

    /// Idle pipes hidden from the table now.
    pub(crate) fn idle_hidden(&self) -> usize {
        if self.show_idle {
            0
        } else {
            self.pipes.iter().filter(|p| p.idle()).count()
        }
    }

    pub(crate) fn pipe(&self, name: &str) -> Option<&Pipe> {
        self.pipes.iter().find(|p| p.sample.name == name)
    }

    /// The whole server's throughput per sample, oldest first.
    pub(crate) fn history(&self) -> &VecDeque<Point> {
        &self.history
    }

    /// The first table row on screen, as scrolled.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// The table rows: idle ones hidden unless asked for, filtered, then sorted; ties go by
    /// name so rows never swap at random.
    pub(crate) fn rows(&self) -> Vec<&Pipe> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Pipe> = self
            .pipes
            .iter()
            .filter(|p| self.show_idle || !p.idle())
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
        // A sum with a pipe whose rate is not known is not known either.
        let mut total = Total {
            pipes: rows.len(),
            rate_in: Some(0.0),
            rate_out: Some(0.0),
            ..Total::default()
        };
        for pipe in rows {
            let s = &pipe.sample;
            total.rate_in = sum_all(total.rate_in, pipe.rate_in());
            total.rate_out = sum_all(total.rate_out, pipe.rate_out());
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
            KeyCode::Char('a') => self.set_show_idle(!self.show_idle),
            KeyCode::Char('c') => {
                self.hide_chart = !self.hide_chart;
                self.fix_scroll();
            }
            _ if matches!(self.view, View::Detail(_)) => self.detail_key(key),
            _ => self.table_key(key),
        }
        Action::Continue
    }

    /// Handles the mouse: the wheel scrolls the selection, a click on a row selects it.
    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        if self.help || !matches!(self.view, View::Table) {
            return;
        }
        match mouse.kind {
            MouseEventKind::ScrollDown => self.move_selection(WHEEL_ROWS),
            MouseEventKind::ScrollUp => self.move_selection(-WHEEL_ROWS),
            MouseEventKind::Down(MouseButton::Left) => {
                let rows_area = crate::layout::table_rows_area(self.chart_shown(), self.area);
                let inside = mouse.row >= rows_area.y
                    && mouse.row < rows_area.bottom()
                    && mouse.column >= rows_area.x
                    && mouse.column < rows_area.right();
                if !inside {
                    return;
                }
                let row = self.offset + usize::from(mouse.row - rows_area.y);
                let rows = self.rows();
                if let Some(pipe) = rows.get(row) {
                    self.selected = Some(pipe.sample.name.clone());
                    self.selected_row = row;
                }
            }
            _ => {}
        }
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

    /// Rows a page key moves: the rows on screen, less one to keep the context.
    fn page(&self) -> isize {
        let visible = crate::layout::table_rows_area(self.chart_shown(), self.area).height;
        let rows = match usize::from(visible) {
            0 => PAGE_DEFAULT,
            n => n.saturating_sub(1).max(1),
        };
        isize::try_from(rows).unwrap_or(isize::MAX)
    }

    fn table_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-self.page()),
            KeyCode::PageDown => self.move_selection(self.page()),
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
        self.fix_scroll();
    }

    /// Keeps the user's pick on a shown pipe: the same one while it is shown, else the one
    /// now in its row (or the last row). With nothing shown, the pick waits.
    fn fix_selection(&mut self) {
        if self.selected.is_some() {
            let rows = self.rows();
            if let Some(row) = self.selected_index(&rows) {
                self.selected = Some(rows[row].sample.name.clone());
                self.selected_row = row;
            }
        }
        self.fix_scroll();
    }

    /// Scrolls as little as needed to keep the selection on screen, and no further than the
    /// last row.
    fn fix_scroll(&mut self) {
        let visible =
            usize::from(crate::layout::table_rows_area(self.chart_shown(), self.area).height);
        let rows = self.rows();
        let selected = self.selected_index(&rows);
        self.offset = scroll(self.offset, selected, rows.len(), visible);
    }
}

/// The first row to show of `len` rows, `visible` at a time, starting from `offset`, so that
/// `selected` shows.
pub(crate) fn scroll(offset: usize, selected: Option<usize>, len: usize, visible: usize) -> usize {
    if visible == 0 {
        return offset.min(len.saturating_sub(1));
    }
    let mut offset = offset.min(len.saturating_sub(visible));
    if let Some(sel) = selected {
        if sel < offset {
            offset = sel;
        } else if sel >= offset + visible {
            offset = sel + 1 - visible;
        }
    }
    offset
}

fn sum_all(acc: Option<f64>, rate: Option<f64>) -> Option<f64> {
    Some(acc? + rate?)
}

/// The sum of the rates known, for the chart; `None` when none is.
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

    /// A pipe that took `bytes_in` bytes in, all of them over the last second.
    fn with_in(name: &str, bytes_in: u64) -> PipeSample {
        PipeSample {
            bytes_in,
            rate_in: Some(bytes_in as f64),
            ..pipe(name)
        }
    }

    fn rate_in(app: &App, name: &str) -> Option<f64> {
        app.pipe(name).and_then(Pipe::rate_in)
    }

    #[test]
    fn rates_are_the_collectors_and_unknown_stays_unknown() {
        let mut app = App::new();
        let unknown = PipeSample {
            rate_in: None,
            rate_out: None,
            ..with_in("a", 5_000)
        };
        app.push(snapshot(0, vec![unknown]));
        assert_eq!(rate_in(&app, "a"), None);
        assert_eq!(app.total(&app.rows()).rate_in, None);
        let known = PipeSample {
            rate_in: Some(1_000_000.0),
            ..with_in("a", 1_005_000)
        };
        app.push(snapshot(1, vec![known]));
        assert_eq!(rate_in(&app, "a"), Some(1_000_000.0));
        assert_eq!(
            crate::units::Bytes::rate(1_000_000.0).to_string(),
            "1.0 MB/s"
        );
    }

    #[test]
    fn history_holds_a_point_per_sample_and_is_bounded() {
        let mut app = App::new();
        for t in 0..400u64 {
            let p = PipeSample {
                rate_in: Some(100.0),
                rate_out: Some(50.0),
                ..pipe("a")
            };
            app.push(snapshot(t, vec![p, pipe("b")]));
        }
        let history = app.pipe("a").expect("pipe").history();
        assert_eq!(history.len(), HISTORY_LEN);
        assert!(history
            .iter()
            .all(|p| p.rate_in == Some(100.0) && p.rate_out == Some(50.0)));
        // The server's history sums the pipes.
        assert_eq!(app.history().len(), HISTORY_LEN);
        assert_eq!(app.history().back().and_then(|p| p.rate_in), Some(100.0));
        assert_eq!(
            app.history().back().map(|p| p.at),
            Some(Duration::from_secs(399))
        );
    }

    #[test]
    fn pipes_that_disappear_go_away() {
        let mut app = App::new();
        app.push(snapshot(0, vec![pipe("a"), pipe("b")]));
        app.push(snapshot(1, vec![pipe("b")]));
        assert_eq!(names(&app), ["b"]);
        // Coming back, it starts over: no history from before.
        app.push(snapshot(2, vec![with_in("a", 9_000), pipe("b")]));
        assert_eq!(app.pipe("a").expect("pipe").history().len(), 1);
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

    fn waiting_for(secs: u64, takers: u32) -> PipeSample {
        PipeSample {
            payloads_waiting: 1,
            payloads_stored: 1,
            bytes_stored: 10,
            oldest_waiting: Some(Duration::from_secs(secs)),
            takers,
            ..pipe("a")
        }
    }

    #[test]
    fn data_waiting_for_a_taker_is_normal_until_the_threshold() {
        let zero = Duration::ZERO;
        assert_eq!(is_stalled(&waiting_for(0, 0), zero), None, "just sent");
        assert_eq!(is_stalled(&waiting_for(29, 0), zero), None);
        assert_eq!(is_stalled(&waiting_for(30, 0), zero), Some(Stall::NoTaker));
        assert_eq!(
            is_stalled(&waiting_for(7200, 1), zero),
            None,
            "a taker is there"
        );
        assert_eq!(
            is_stalled(&pipe("a"), STALL_AFTER * 10),
            None,
            "nothing waits"
        );
    }

    #[test]
    fn a_taker_that_writes_nothing_while_data_waits_is_stalled() {
        let stuck = waiting_for(0, 1);
        assert_eq!(is_stalled(&stuck, Duration::from_secs(29)), None);
        assert_eq!(
            is_stalled(&stuck, STALL_AFTER),
            Some(Stall::TakerNotWriting)
        );
        let empty = PipeSample {
            bytes_stored: 0,
            ..stuck
        };
        assert_eq!(
            is_stalled(&empty, STALL_AFTER),
            None,
            "a taker waiting on a slow sender holds nothing"
        );
    }

    #[test]
    fn the_app_times_a_taker_that_writes_nothing() {
        let mut app = App::new();
        let stuck = |t: u64, out: u64| {
            snapshot(
                t,
                vec![PipeSample {
                    bytes_out: out,
                    ..waiting_for(0, 1)
                }],
            )
        };
        app.push(stuck(0, 100));
        app.push(stuck(10, 200));
        app.push(stuck(39, 200));
        assert!(
            !app.pipe("a").expect("pipe").stalled(),
            "29 s without a byte"
        );
        app.push(stuck(40, 200));
        assert_eq!(
            app.pipe("a").and_then(Pipe::stall),
            Some(Stall::TakerNotWriting)
        );
        app.push(stuck(41, 300));
        assert!(!app.pipe("a").expect("pipe").stalled(), "it wrote again");
    }

    #[test]
    fn the_app_marks_stalled_pipes() {
        let app = fixtures::stalled();
        assert!(app.pipe("nightly-export").expect("pipe").stalled());
        assert!(!app.pipe("logs").expect("pipe").stalled());
    }

    #[test]
    fn a_lost_connection_makes_the_data_stale_at_once() {
        let mut app = fixtures::ten_pipes();
        assert!(!app.stale());
        assert_eq!(app.data_age(), Some(Duration::ZERO));
        app.update(Update::Connection {
            at: Duration::from_millis(12_250),
            state: ConnState::Reconnecting,
        });
        assert!(app.stale(), "reconnecting: stale however young");
        assert_eq!(app.conn_state(), Some(ConnState::Reconnecting));
        assert_eq!(app.data_age(), Some(Duration::from_millis(250)));
        // Back, and a fresh sample: live again.
        app.update(Update::Connection {
            at: Duration::from_millis(12_500),
            state: ConnState::Connected,
        });
        app.push(snapshot(13, vec![pipe("a")]));
        assert!(!app.stale());
    }

    #[test]
    fn old_data_is_stale_even_when_connected() {
        let mut app = fixtures::ten_pipes();
        app.update(Update::Connection {
            at: Duration::from_millis(14_000),
            state: ConnState::Connected,
        });
        assert!(!app.stale(), "2 s old");
        app.update(Update::Connection {
            at: Duration::from_millis(14_750),
            state: ConnState::Connected,
        });
        assert!(app.stale(), "2.75 s old");
    }

    #[test]
    fn idle_pipes_hide_until_a_shows_them() {
        let mut app = fixtures::many_pipes();
        assert_eq!(app.rows().len(), 41);
        assert_eq!(app.idle_hidden(), 3);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.rows().len(), 44);
        assert_eq!(app.idle_hidden(), 0);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.rows().len(), 41);
        // Quiet for an hour but holding a payload: not idle.
        let holding = PipeSample {
            idle_for: Some(IDLE_AFTER * 2),
            payloads_stored: 1,
            ..pipe("a")
        };
        assert!(!is_idle(&holding));
        let quiet = PipeSample {
            payloads_stored: 0,
            ..holding
        };
        assert!(is_idle(&quiet));
        assert!(!is_idle(&PipeSample {
            idle_for: None,
            ..quiet
        }));
    }

    fn sized(mut app: App, width: u16, height: u16) -> App {
        app.set_area(Rect::new(0, 0, width, height));
        app
    }

    #[test]
    fn scrolling_follows_the_selection_by_as_little_as_needed() {
        // 80x24: 12 rows of the table show below the chart.
        let mut app = sized(fixtures::many_pipes(), 80, 24);
        let visible =
            usize::from(crate::layout::table_rows_area(app.chart_shown(), app.area).height);
        assert_eq!(visible, 12);
        assert_eq!(app.offset(), 0);
        for _ in 0..12 {
            press(&mut app, KeyCode::Char('j'));
        }
        assert_eq!(app.offset(), 1, "one down past the bottom scrolls one");
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(
            app.offset(),
            1,
            "going back up within the screen does not scroll"
        );
        press(&mut app, KeyCode::PageDown);
        assert_eq!(app.selected_row, 11 + 11);
        assert_eq!(app.offset(), 22 + 1 - visible);
        press(&mut app, KeyCode::Char('G'));
        assert_eq!(app.selected_row, 40);
        assert_eq!(app.offset(), 41 - visible);
        press(&mut app, KeyCode::PageUp);
        assert_eq!(app.selected_row, 29);
        assert_eq!(app.offset(), 29);
        press(&mut app, KeyCode::Char('g'));
        assert_eq!((app.selected_row, app.offset()), (0, 0));
        // Without the chart, the table gets its rows.
        press(&mut app, KeyCode::Char('c'));
        assert!(!app.chart_shown());
        assert_eq!(
            crate::layout::table_rows_area(app.chart_shown(), app.area).height,
            19
        );
    }

    fn mouse(app: &mut App, kind: MouseEventKind, column: u16, row: u16) {
        app.on_mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        });
    }

    #[test]
    fn the_wheel_scrolls_and_a_click_selects() {
        let mut app = sized(fixtures::many_pipes(), 80, 24);
        let rows = crate::layout::table_rows_area(app.chart_shown(), app.area);
        mouse(&mut app, MouseEventKind::ScrollDown, 10, 5);
        assert_eq!(app.selected_row, 3);
        mouse(&mut app, MouseEventKind::ScrollUp, 10, 5);
        mouse(&mut app, MouseEventKind::ScrollUp, 10, 5);
        assert_eq!(app.selected_row, 0);
        let order = names(&app);
        mouse(
            &mut app,
            MouseEventKind::Down(MouseButton::Left),
            10,
            rows.y + 4,
        );
        assert_eq!(selected(&app), Some(order[4].clone()));
        // The header row, the chart and the footer select nothing.
        mouse(
            &mut app,
            MouseEventKind::Down(MouseButton::Left),
            10,
            rows.y - 1,
        );
        mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 10, 3);
        mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 10, 23);
        assert_eq!(selected(&app), Some(order[4].clone()));
        // Scrolled, a click picks the row under it.
        press(&mut app, KeyCode::Char('G'));
        mouse(
            &mut app,
            MouseEventKind::Down(MouseButton::Left),
            10,
            rows.y,
        );
        assert_eq!(selected(&app), Some(order[41 - 12].clone()));
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
        assert_eq!(app.pipe("a").expect("pipe").sample.bytes_in, 7_000);
        assert_eq!(app.history().len(), 4, "no sample lost");
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
