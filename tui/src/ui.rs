//! Drawing the dashboard: `impl Widget for &App`. Everything here reads the state and
//! writes cells; nothing changes the state, so any screen can be drawn into a test buffer.

use std::collections::VecDeque;
use std::time::Duration;

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, StatefulWidget, Table,
    TableState, Widget,
};

use crate::app::{scroll, App, Pipe, Point, Total, View, HISTORY_LEN};
use crate::layout::{self, Screen};
use crate::snapshot::{ConnState, PayloadState};
use crate::units::{Age, Bytes, Rtt};

const SPARK_BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const STALLED_STYLE: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const HEADER_STYLE: Style = Style::new().add_modifier(Modifier::BOLD.union(Modifier::UNDERLINED));
const KEY_STYLE: Style = Style::new().add_modifier(Modifier::REVERSED);
const STALE_STYLE: Style = Style::new().add_modifier(Modifier::DIM);
const IN_COLOR: Color = Color::Cyan;
const OUT_COLOR: Color = Color::Magenta;
/// The name cell starts with the selection and stall markers.
const MARKS: u16 = 2;
/// Column gaps in the pipe table.
const GAP: u16 = 1;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let Screen {
            header,
            chart,
            table,
            footer,
        } = layout::screen(self.chart_shown(), area);
        render_header(self, header, buf);
        match self.view() {
            View::Table => {
                if chart.height > 0 {
                    render_server_chart(self, chart, buf);
                }
                render_table(self, table, buf);
            }
            View::Detail(name) => {
                let body = Rect {
                    height: chart.height + table.height,
                    ..chart
                };
                render_detail(self, name, body, buf);
            }
        }
        let marker = match self.view() {
            View::Table if !self.editing_filter() => position(self, area),
            _ => None,
        };
        let reserve = marker.as_ref().map_or(0, |m| m.chars().count() + 1);
        render_footer(self, footer, reserve, buf);
        if let Some(text) = marker {
            right_aligned(Line::from(text).reversed(), footer, buf);
        }
        if self.help_shown() {
            render_help(area, buf);
        }
    }
}

fn render_header(app: &App, area: Rect, buf: &mut Buffer) {
    let [first, second] = Layout::vertical([Constraint::Length(1); 2]).areas(area);
    let mut line = vec![Span::styled(
        " skypipe monitor ",
        Style::new().bold().reversed(),
    )];
    line.extend(server_spans(app));
    Line::from(line).render(first, buf);
    if let Some(server) = app.server() {
        let mut storage = format!(" JetStream {} used", Bytes::size(server.storage_used));
        match server.storage_available {
            Some(free) => storage.push_str(&format!(", {} free", Bytes::size(free))),
            None => storage.push_str(", no limit"),
        }
        let shown = app.rows().len();
        let mut pipes = match (shown, app.pipe_count()) {
            (shown, all) if shown < all => format!("{shown} of {all} pipes"),
            (_, 1) => "1 pipe".to_string(),
            (_, all) => format!("{all} pipes"),
        };
        match app.idle_hidden() {
            0 => {}
            n => pipes.push_str(&format!(" ({n} idle hidden, a shows)")),
        }
        let style = if app.stale() {
            STALE_STYLE
        } else {
            Style::new()
        };
        Line::from(format!("{storage}  ·  {pipes}"))
            .style(style)
            .render(second, buf);
    }
    // Drawn last and right-aligned so a narrow screen cuts the server line, never this.
    let mut notes = Vec::new();
    if app.is_feed_ended() {
        notes.push(Span::styled(
            " no more data ",
            Style::new().yellow().reversed(),
        ));
    }
    if app.paused() {
        let paused = match app.held() {
            0 => " PAUSED ".to_string(),
            n => format!(" PAUSED ({n} new) "),
        };
        notes.push(Span::styled(paused, Style::new().bold().reversed()));
    }
    if !notes.is_empty() {
        right_aligned(Line::from(notes), first, buf);
    }
}

/// Draws `line` at the right end of `area`, over what was there.
fn right_aligned(line: Line, area: Rect, buf: &mut Buffer) {
    let width = u16::try_from(line.width())
        .unwrap_or(u16::MAX)
        .min(area.width);
    let right = Rect {
        x: area.right() - width,
        width,
        ..area
    };
    Clear.render(right, buf);
    line.render(right, buf);
}

/// The connection first, and how old the data is: they are what changes, and a narrow
/// screen cuts the end. A round trip is only shown while it is current.
fn server_spans(app: &App) -> Vec<Span<'static>> {
    let mut spans = vec![Span::raw("  ")];
    spans.push(match app.conn_state() {
        Some(ConnState::Connected) => Span::styled("connected", Style::new().green()),
        Some(ConnState::Reconnecting) => {
            Span::styled("reconnecting…", Style::new().yellow().bold())
        }
        Some(ConnState::Disconnected) => Span::styled("disconnected", Style::new().red().bold()),
        None => Span::raw("connecting…"),
    });
    if let Some(age) = app.data_age() {
        let text = format!("  data {} old", Age(age));
        spans.push(if app.stale() {
            Span::styled(text, Style::new().yellow().bold())
        } else {
            Span::raw(text)
        });
    }
    let Some(server) = app.server() else {
        return spans;
    };
    let rtt = match server.rtt {
        Some(rtt) if !app.stale() => format!("rtt {}", Rtt(rtt)),
        _ => "rtt -".to_string(),
    };
    spans.extend([
        Span::raw(format!("  {rtt}  ")),
        Span::raw(server.url.clone()).bold(),
        Span::raw(format!("  server {}", server.version)),
    ]);
    spans
}

/// A column of the pipe table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Name,
    In,
    Out,
    Waiting,
    Stored,
    Oldest,
    Senders,
    Takers,
    Listeners,
    Trend,
}

impl Col {
    /// Left to right on screen.
    const SCREEN_ORDER: [Col; 10] = [
        Col::Name,
        Col::In,
        Col::Out,
        Col::Waiting,
        Col::Stored,
        Col::Oldest,
        Col::Senders,
        Col::Takers,
        Col::Listeners,
        Col::Trend,
    ];

    /// Most wanted first: a narrow screen keeps a prefix of this list.
    const PRIORITY: [Col; 10] = [
        Col::Name,
        Col::In,
        Col::Out,
        Col::Waiting,
        Col::Stored,
        Col::Oldest,
        Col::Takers,
        Col::Senders,
        Col::Listeners,
        Col::Trend,
    ];

    /// The narrowest the column may be.
    fn width(self) -> u16 {
        match self {
            Col::Name => MARKS + 8,
            Col::In | Col::Out => 9,
            Col::Waiting => 5,
            Col::Stored => 8,
            Col::Oldest => 6,
            Col::Senders | Col::Takers => 4,
            Col::Listeners => 6,
            Col::Trend => 10,
        }
    }

    fn title(self, totals: bool) -> &'static str {
        match self {
            Col::Name => "  PIPE",
            Col::In if totals => "IN",
            Col::Out if totals => "OUT",
            Col::In => "IN/S",
            Col::Out => "OUT/S",
            Col::Waiting => "WAIT",
            Col::Stored => "STORED",
            Col::Oldest => "OLDEST",
            Col::Senders => "SEND",
            Col::Takers => "TAKE",
            Col::Listeners => "LISTEN",
            Col::Trend => "RECENT",
        }
    }
}

/// Name room the table wants before it spends width on the sparkline.
const NAME_BEFORE_TREND: u16 = MARKS + 14;
/// The name column never grows past this; long names are cut.
const NAME_MAX: u16 = MARKS + 32;
/// Nor does the sparkline.
const TREND_MAX: u16 = 60;

/// The columns that fit in `width`, in screen order, with their widths. Columns are kept
/// in priority order while they fit; a name is worth more than a sparkline, so the
/// sparkline only comes when names have some room. Spare width goes to the name up to its
/// longest, then to the sparkline.
fn layout_columns(width: u16, longest_name: u16) -> Vec<(Col, u16)> {
    let name_wanted = MARKS
        .saturating_add(longest_name)
        .clamp(Col::Name.width(), NAME_MAX);
    let mut used = 0u16;
    let mut kept = Vec::new();
    for col in Col::PRIORITY {
        let mut need = col.width() + if kept.is_empty() { 0 } else { GAP };
        if col == Col::Trend {
            need += name_wanted.min(NAME_BEFORE_TREND) - Col::Name.width();
        }
        // A column that does not fit is skipped; a later, narrower one may still fit.
        if used.saturating_add(need) <= width {
            used = used.saturating_add(col.width() + if kept.is_empty() { 0 } else { GAP });
            kept.push(col);
        }
    }
    let mut spare = width.saturating_sub(used);
    let name_extra = if kept.contains(&Col::Trend) {
        spare.min(name_wanted - Col::Name.width())
    } else {
        spare
    };
    spare -= name_extra;
    let trend_extra = spare.min(TREND_MAX - Col::Trend.width());
    Col::SCREEN_ORDER
        .into_iter()
        .filter(|c| kept.contains(c))
        .map(|c| {
            let w = match c {
                Col::Name => c.width() + name_extra,
                Col::Trend => c.width() + trend_extra,
                _ => c.width(),
            };
            (c, w)
        })
        .collect()
}

fn render_table(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = app.rows();
    let longest = rows
        .iter()
        .map(|p| p.sample.name.chars().count())
        .max()
        .unwrap_or(0);
    let columns = layout_columns(area.width, u16::try_from(longest).unwrap_or(u16::MAX));
    let header = Row::new(
        columns
            .iter()
            .map(|&(c, _)| aligned(c, c.title(app.totals()).to_string())),
    )
    .style(HEADER_STYLE);
    let widths = columns.iter().map(|&(_, w)| Constraint::Length(w));

    if rows.is_empty() {
        let [head, message] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
        let table = Table::new(Vec::<Row>::new(), widths)
            .header(header)
            .column_spacing(GAP);
        Widget::render(table, head, buf);
        let text = if !app.has_data() {
            "  waiting for the first sample…".to_string()
        } else if app.pipe_count() == 0 {
            "  no pipes yet: try `echo hello | skypipe hello`".to_string()
        } else if app.filter().is_empty() {
            "  every pipe is idle: a shows them".to_string()
        } else {
            format!("  no pipe name contains \"{}\"", app.filter())
        };
        Line::from(text).italic().render(message, buf);
        return;
    }

    let selected = app.selected_index(&rows);
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, pipe)| pipe_row(app, pipe, &columns, selected == Some(i)))
        .collect();
    let total = total_row(app, &app.total(&rows), &columns);
    // The table ends right after its last row; the total sits under it, not at the bottom.
    let height = u16::try_from(rows.len())
        .unwrap_or(u16::MAX)
        .saturating_add(2)
        .min(area.height);
    let area = Rect { height, ..area };
    let visible = usize::from(area.height.saturating_sub(2));
    let offset = scroll(app.offset(), selected, rows.len(), visible);
    let mut table = Table::new(body, widths)
        .header(header)
        .footer(total)
        .column_spacing(GAP)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    if app.stale() {
        table = table.style(STALE_STYLE);
    }
    let mut state = TableState::default()
        .with_offset(offset)
        .with_selected(selected);
    StatefulWidget::render(table, area, buf, &mut state);
}

/// Which rows show: "19-22 of 40".
fn position(app: &App, area: Rect) -> Option<String> {
    let rows = app.rows();
    if rows.is_empty() {
        return None;
    }
    let visible = usize::from(layout::table_rows_area(app.chart_shown(), area).height);
    let offset = scroll(app.offset(), app.selected_index(&rows), rows.len(), visible);
    let last = (offset + visible).min(rows.len());
    Some(format!(" {}-{last} of {} ", offset + 1, rows.len()))
}

fn aligned(col: Col, text: String) -> Cell<'static> {
    let alignment = match col {
        Col::Name | Col::Trend => Alignment::Left,
        _ => Alignment::Right,
    };
    Cell::from(Line::from(text).alignment(alignment))
}

fn pipe_row(app: &App, pipe: &Pipe, columns: &[(Col, u16)], selected: bool) -> Row<'static> {
    let s = &pipe.sample;
    let cells = columns.iter().map(|&(col, width)| {
        let text = match col {
            Col::Name => {
                let mark = if selected { '>' } else { ' ' };
                let stall = if pipe.stalled() { '!' } else { ' ' };
                let room = usize::from(width.saturating_sub(MARKS));
                format!("{mark}{stall}{}", fit(&s.name, room))
            }
            Col::In if app.totals() => Bytes::size(s.bytes_in).to_string(),
            Col::Out if app.totals() => Bytes::size(s.bytes_out).to_string(),
            Col::In => rate(pipe.rate_in()),
            Col::Out => rate(pipe.rate_out()),
            Col::Waiting => s.payloads_waiting.to_string(),
            Col::Stored => Bytes::size(s.bytes_stored).to_string(),
            Col::Oldest => oldest(s.oldest_waiting),
            Col::Senders => s.senders.to_string(),
            Col::Takers => s.takers.to_string(),
            Col::Listeners => s.listeners.to_string(),
            Col::Trend => spark(
                pipe.history()
                    .iter()
                    .map(|p| (p.rate_in.unwrap_or(0.0) + p.rate_out.unwrap_or(0.0)) as u64),
                usize::from(width),
            ),
        };
        aligned(col, text)
    });
    let row = Row::new(cells.collect::<Vec<_>>());
    if pipe.stalled() {
        row.style(STALLED_STYLE)
    } else {
        row
    }
}

fn total_row(app: &App, total: &Total, columns: &[(Col, u16)]) -> Row<'static> {
    let cells = columns.iter().map(|&(col, _)| {
        let text = match col {
            Col::Name => "  total".to_string(),
            Col::In if app.totals() => Bytes::size(total.bytes_in).to_string(),
            Col::Out if app.totals() => Bytes::size(total.bytes_out).to_string(),
            Col::In => rate(total.rate_in),
            Col::Out => rate(total.rate_out),
            Col::Waiting => total.waiting.to_string(),
            Col::Stored => Bytes::size(total.stored).to_string(),
            Col::Oldest => oldest(total.oldest),
            Col::Senders => total.senders.to_string(),
            Col::Takers => total.takers.to_string(),
            Col::Listeners => total.listeners.to_string(),
            Col::Trend => String::new(),
        };
        aligned(col, text)
    });
    Row::new(cells.collect::<Vec<_>>()).style(Style::new().bold())
}

pub(crate) fn rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| Bytes::rate(r).to_string())
}

pub(crate) fn oldest(age: Option<std::time::Duration>) -> String {
    age.map_or_else(|| "-".to_string(), |a| Age(a).to_string())
}

/// `name` cut to `room` characters, with an ellipsis when cut.
fn fit(name: &str, room: usize) -> String {
    if name.chars().count() <= room {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(room.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The last `width` values as bars, scaled to their own peak, newest on the right. Zero is
/// blank so an idle pipe reads as idle; anything above zero gets at least the lowest bar.
fn spark(values: impl DoubleEndedIterator<Item = u64>, width: usize) -> String {
    let mut recent: Vec<u64> = values.rev().take(width).collect();
    recent.reverse();
    let peak = recent.iter().copied().max().unwrap_or(0);
    let mut out = " ".repeat(width - recent.len());
    for v in recent {
        let bar = if v == 0 || peak == 0 {
            ' '
        } else {
            let level = (v as f64 / peak as f64 * SPARK_BARS.len() as f64).ceil() as usize;
            SPARK_BARS[level.clamp(1, SPARK_BARS.len()) - 1]
        };
        out.push(bar);
    }
    out
}

fn render_detail(app: &App, name: &str, area: Rect, buf: &mut Buffer) {
    let Some(pipe) = app.pipe(name) else {
        let text = vec![
            Line::from(format!(" pipe {name}")).bold(),
            Line::from(" This pipe is gone: the server no longer has it. Esc goes back.").italic(),
        ];
        Paragraph::new(text).render(area, buf);
        return;
    };
    let s = &pipe.sample;
    let mut title = vec![Span::raw(format!(" pipe {}", s.name)).bold()];
    if let Some(stall) = pipe.stall() {
        title.push(Span::styled(
            format!("  ! stalled: {}", stall.reason()),
            STALLED_STYLE,
        ));
    }
    let since = app
        .at()
        .map_or_else(|| "-".to_string(), |at| Age(at).to_string());
    let info = vec![
        Line::from(title),
        Line::from(format!(
            " in {}   out {}   since the monitor started ({since} ago): in {}, out {}",
            rate(pipe.rate_in()),
            rate(pipe.rate_out()),
            Bytes::size(s.bytes_in),
            Bytes::size(s.bytes_out),
        )),
        Line::from(format!(
            " on the server: {} in {} payload{} ({} waiting, oldest {})",
            Bytes::size(s.bytes_stored),
            s.payloads_stored,
            if s.payloads_stored == 1 { "" } else { "s" },
            s.payloads_waiting,
            oldest(s.oldest_waiting),
        )),
        Line::from(format!(
            " senders {}   takers {}   listeners {}",
            s.senders, s.takers, s.listeners
        )),
    ];
    let info_height = 5;
    let rest = area.height.saturating_sub(info_height);
    // The payloads get the rows they need, up to half of what is left; the graphs the rest,
    // when there is room for them at all.
    let wanted = u16::try_from(s.payloads.len().max(1) + 1).unwrap_or(u16::MAX);
    let graphs_fit = rest >= 12;
    let payload_height = if graphs_fit {
        wanted.clamp(2, rest / 2)
    } else {
        rest
    };
    let [info_area, graph_area, payload_area] = Layout::vertical([
        Constraint::Length(info_height),
        Constraint::Length(rest - payload_height),
        Constraint::Length(payload_height),
    ])
    .areas(area);
    let mut style = Style::new();
    if app.stale() {
        style = STALE_STYLE;
    }
    Paragraph::new(info).style(style).render(info_area, buf);
    if graphs_fit {
        let [in_area, out_area] =
            Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(graph_area);
        let now = app.at().unwrap_or_default();
        let series = |f: fn(&Point) -> Option<f64>| points(pipe.history(), now, f);
        let span = chart_span(pipe.history());
        rate_chart(
            vec![("in", IN_COLOR, series(|p| p.rate_in))],
            " ",
            span,
            app.stale(),
        )
        .render(in_area, buf);
        rate_chart(
            vec![("out", OUT_COLOR, series(|p| p.rate_out))],
            " ",
            span,
            app.stale(),
        )
        .render(out_area, buf);
    }
    render_payloads(pipe, payload_area, buf);
}

/// The points of one series, `x` in seconds before `now` (negative); samples where the rate
/// is not known are left out.
fn points(
    history: &VecDeque<Point>,
    now: Duration,
    rate: fn(&Point) -> Option<f64>,
) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|p| Some((-(now.saturating_sub(p.at).as_secs_f64()), rate(p)?)))
        .collect()
}

/// The longest a chart spans: as much as the history holds.
const CHART_SECS: f64 = HISTORY_LEN as f64;

/// The chart's span for `history`: whole minutes, enough for what it holds, at most
/// [`CHART_SECS`], so a young monitor's chart is not squeezed into a corner.
fn chart_span(history: &VecDeque<Point>) -> f64 {
    let held = match (history.front(), history.back()) {
        (Some(first), Some(last)) => last.at.saturating_sub(first.at).as_secs_f64(),
        _ => 0.0,
    };
    ((held / 60.0).ceil().max(1.0) * 60.0).min(CHART_SECS)
}

/// A line chart of rates over the last [`CHART_SECS`], newest on the right, scaled to its
/// peak; each series named with its latest value.
fn rate_chart(series: Vec<Series>, title: &'static str, span: f64, stale: bool) -> ChartWidget {
    ChartWidget {
        series,
        title,
        span,
        stale,
    }
}

/// One line of a chart: its name, colour and points.
type Series = (&'static str, Color, Vec<(f64, f64)>);

struct ChartWidget {
    series: Vec<Series>,
    title: &'static str,
    /// Seconds from the left edge to now.
    span: f64,
    stale: bool,
}

impl Widget for ChartWidget {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let peak = self
            .series
            .iter()
            .flat_map(|(_, _, d)| d.iter().map(|&(_, y)| y))
            .fold(0.0_f64, f64::max);
        // Some headroom, and a scale even when nothing moves.
        let top = if peak > 0.0 { peak * 1.1 } else { 1000.0 };
        // The title is the legend: each series' name, in its colour, with its latest value.
        let mut title = vec![Span::raw(self.title)];
        for (name, color, data) in &self.series {
            let latest = data.last().map(|&(_, y)| y);
            title.push(Span::styled(
                format!("{name} {}", rate(latest)),
                Style::new().fg(*color).bold(),
            ));
            title.push(Span::raw(" "));
        }
        let datasets = self
            .series
            .iter()
            .map(|(_, color, data)| {
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::new().fg(*color))
                    .data(data)
            })
            .collect();
        let minutes = (self.span / 60.0).round();
        let mut chart = Chart::new(datasets)
            .block(Block::bordered().title(Line::from(title)))
            .x_axis(
                Axis::default()
                    .bounds([-self.span, 0.0])
                    .labels([format!("-{minutes}m"), "now".to_string()]),
            )
            .y_axis(
                Axis::default()
                    .bounds([0.0, top])
                    .labels(["0".to_string(), Bytes::rate(top).to_string()]),
            )
            .legend_position(None);
        if self.stale {
            chart = chart.style(STALE_STYLE);
        }
        chart.render(area, buf);
    }
}

fn render_server_chart(app: &App, area: Rect, buf: &mut Buffer) {
    let now = app.at().unwrap_or_default();
    let series = |f: fn(&Point) -> Option<f64>| points(app.history(), now, f);
    rate_chart(
        vec![
            ("in", IN_COLOR, series(|p| p.rate_in)),
            ("out", OUT_COLOR, series(|p| p.rate_out)),
        ],
        " whole server: ",
        chart_span(app.history()),
        app.stale(),
    )
    .render(area, buf);
}

fn render_payloads(pipe: &Pipe, area: Rect, buf: &mut Buffer) {
    let payloads = &pipe.sample.payloads;
    if payloads.is_empty() {
        Line::from(" no payloads in flight or waiting")
            .italic()
            .render(area, buf);
        return;
    }
    let titles = ["  PAYLOAD", "STATE", "SIZE", "RATE", "AGE", "SENDER"];
    let header = Row::new(titles.iter().enumerate().map(|(i, t)| {
        let alignment = if i < 2 || i == 5 {
            Alignment::Left
        } else {
            Alignment::Right
        };
        Cell::from(Line::from(*t).alignment(alignment))
    }))
    .style(HEADER_STYLE);
    let rows = payloads.iter().map(|p| {
        let (state, style) = match p.state {
            PayloadState::Sending => ("sending", Style::new().green()),
            PayloadState::Taking => ("taking", Style::new().cyan()),
            PayloadState::Waiting => ("waiting", Style::new()),
        };
        let rate = pipe
            .payload_rate(&p.id)
            .map_or_else(|| "-".to_string(), |r| Bytes::rate(r).to_string());
        let sender = match &p.sender {
            Some(instance) => instance.clone(),
            None if p.state == PayloadState::Sending => "(not heard)".to_string(),
            None => "done".to_string(),
        };
        Row::new([
            Cell::from(format!("  {}", p.id)),
            Cell::from(state).style(style),
            Cell::from(Line::from(Bytes::size(p.bytes).to_string()).right_aligned()),
            Cell::from(Line::from(rate).right_aligned()),
            Cell::from(Line::from(Age(p.age).to_string()).right_aligned()),
            Cell::from(sender),
        ])
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(16),
    ];
    let table = Table::new(rows, widths).header(header).column_spacing(GAP);
    Widget::render(table, area, buf);
}

/// The footer: what is on, then the keys, as many whole hints as fit in the width less
/// `reserve`.
fn render_footer(app: &App, area: Rect, reserve: usize, buf: &mut Buffer) {
    let mut spans = Vec::new();
    let hints: Vec<(&str, &str)> = if app.editing_filter() {
        spans.push(Span::raw(" filter: "));
        spans.push(Span::raw(format!("{}▏", app.filter())).bold());
        vec![("enter", "keep"), ("esc", "clear")]
    } else {
        match app.view() {
            View::Table => {
                spans.push(Span::raw(format!(" sort: {}", app.sort().label())));
                if !app.filter().is_empty() {
                    spans.push(Span::raw("  filter: "));
                    spans.push(Span::raw(app.filter().to_string()).bold());
                }
                if app.totals() {
                    spans.push(Span::raw("  IN, OUT: bytes since the monitor started").bold());
                }
                vec![
                    ("q", "quit"),
                    ("?", "help"),
                    ("enter", "open"),
                    ("/", "filter"),
                    ("s", "sort"),
                    ("r", "rates/totals"),
                    ("a", if app.shows_idle() { "hide idle" } else { "all" }),
                    ("space", "pause"),
                    ("c", "chart"),
                ]
            }
            View::Detail(_) => vec![
                ("esc", "back"),
                ("q", "quit"),
                ("?", "help"),
                ("space", "pause"),
            ],
        }
    };
    // Whole hints only: drop them from the end until the line fits.
    let room = usize::from(area.width).saturating_sub(reserve);
    let mut shown = hints.len();
    let width = |spans: &[Span], n: usize| {
        spans.iter().map(Span::width).sum::<usize>()
            + keys(&hints[..n]).iter().map(Span::width).sum::<usize>()
    };
    while shown > 0 && width(&spans, shown) > room {
        shown -= 1;
    }
    spans.extend(keys(&hints[..shown]));
    Line::from(spans).render(area, buf);
}

fn keys(hints: &[(&str, &str)]) -> Vec<Span<'static>> {
    hints
        .iter()
        .flat_map(|(key, what)| {
            [
                Span::raw("  "),
                Span::styled(key.to_string(), KEY_STYLE),
                Span::raw(format!(" {what}")),
            ]
        })
        .collect()
}

const HELP: [(&str, &str); 17] = [
    ("↑ ↓  j k", "select a pipe (or the mouse: wheel, click)"),
    ("pgup pgdn", "a page up or down"),
    ("g G", "first or last pipe"),
    ("enter", "open the selected pipe"),
    ("esc", "back; clear the filter"),
    ("/", "filter pipes by name"),
    ("s", "sort: throughput, name, waiting, stored, age"),
    ("r", "rates, or bytes since the monitor started"),
    ("a", "all pipes, or hide idle ones (1h quiet, empty)"),
    ("c", "hide or show the server's chart"),
    ("space", "pause; resume"),
    ("?", "this help"),
    ("q  ctrl-c", "quit"),
    ("", ""),
    ("!", "stalled: a payload waits 30s with no taker,"),
    ("", "or a taker wrote nothing for 30s"),
    ("dim", "stale: the data is old or the server is lost"),
];

fn render_help(area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::raw(format!(" {key:<10} ")).bold(),
                Span::raw(format!("{what} ")),
            ])
        })
        .collect();
    let widest = lines.iter().map(Line::width).max().unwrap_or(0);
    let width = u16::try_from(widest + 2)
        .unwrap_or(u16::MAX)
        .min(area.width);
    let height = u16::try_from(lines.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    Clear.render(popup, buf);
    Paragraph::new(lines)
        .block(Block::bordered().title(" keys (esc closes) "))
        .render(popup, buf);
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::fixtures::{self, snapshot};

    /// The screen as text, one quoted line per row, as a person would see it (less colour).
    fn draw(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal
            .draw(|frame| frame.render_widget(app, frame.area()))
            .expect("draw");
        terminal.backend().to_string()
    }

    fn press(app: &mut App, code: KeyCode) {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    #[test]
    fn before_the_first_sample() {
        insta::assert_snapshot!(draw(&App::new(), 80, 8));
    }

    #[test]
    fn empty_server() {
        let mut app = App::new();
        app.push(snapshot(0, vec![]));
        insta::assert_snapshot!(draw(&app, 80, 10));
    }

    /// The screen at the two sizes that matter: a roomy terminal and the classic one. The
    /// app is told the size first, as the terminal loop does.
    fn both_sizes(mut app: App) -> String {
        let mut out = String::new();
        for (width, height) in [(120, 35), (80, 24)] {
            app.set_area(Rect::new(0, 0, width, height));
            out.push_str(&format!(
                "{width}x{height}\n{}\n",
                draw(&app, width, height)
            ));
        }
        out
    }

    #[test]
    fn server_chart_above_the_table() {
        insta::assert_snapshot!(both_sizes(fixtures::many_pipes()));
    }

    #[test]
    fn scrolled_list_says_where_it_is() {
        let mut app = fixtures::many_pipes();
        app.set_area(Rect::new(0, 0, 80, 24));
        for _ in 0..20 {
            press(&mut app, KeyCode::Char('j'));
        }
        let text = both_sizes(app);
        // 20 rows down: at 80x24 (12 rows) the screen scrolled to show the selection.
        assert!(text.contains(" 10-21 of 41 "), "{text}");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn all_pipes_with_a() {
        let mut app = fixtures::many_pipes();
        press(&mut app, KeyCode::Char('a'));
        press(&mut app, KeyCode::Char('G'));
        insta::assert_snapshot!(both_sizes(app));
    }

    #[test]
    fn detail_with_in_and_out_graphs() {
        let mut app = fixtures::many_pipes();
        app.set_filter("nightly");
        press(&mut app, KeyCode::Enter);
        insta::assert_snapshot!(both_sizes(app));
    }

    #[test]
    fn detail_with_payloads() {
        let mut app = fixtures::busy_pipe();
        press(&mut app, KeyCode::Enter);
        insta::assert_snapshot!(both_sizes(app));
    }

    #[test]
    fn server_lost_dims_the_data_and_says_so() {
        let app = fixtures::server_lost();
        let text = both_sizes(app.clone());
        assert!(text.contains("reconnecting…  data 6s old"), "{text}");
        assert!(!text.contains("rtt 1.2ms"), "no current round trip: {text}");
        let mut buf = Buffer::empty(Rect::new(0, 0, 120, 35));
        (&app).render(buf.area, &mut buf);
        let first_row = layout::table_rows_area(app.chart_shown(), buf.area).y;
        assert!(
            buf[(4, first_row)].modifier.contains(Modifier::DIM),
            "stale rows are dim"
        );
        let mut fresh = Buffer::empty(buf.area);
        (&fixtures::ten_pipes()).render(fresh.area, &mut fresh);
        assert!(!fresh[(4, first_row)].modifier.contains(Modifier::DIM));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn ten_pipes() {
        insta::assert_snapshot!(draw(&fixtures::ten_pipes(), 110, 18));
    }

    #[test]
    fn ten_pipes_at_80_columns() {
        insta::assert_snapshot!(draw(&fixtures::ten_pipes(), 80, 18));
    }

    #[test]
    fn narrow() {
        insta::assert_snapshot!(draw(&fixtures::ten_pipes(), 60, 20));
    }

    #[test]
    fn short_terminal_scrolls_to_the_selection() {
        let mut app = fixtures::ten_pipes();
        for _ in 0..8 {
            press(&mut app, KeyCode::Down);
        }
        insta::assert_snapshot!(draw(&app, 80, 9));
    }

    #[test]
    fn totals_instead_of_rates() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Char('r'));
        insta::assert_snapshot!(draw(&app, 110, 18));
    }

    #[test]
    fn filtering_and_paused() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Char(' '));
        app.push(snapshot(13, vec![]));
        press(&mut app, KeyCode::Char('/'));
        for c in "ep".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        insta::assert_snapshot!(draw(&app, 100, 10));
    }

    #[test]
    fn filter_matching_nothing() {
        let mut app = fixtures::ten_pipes();
        app.set_filter("nope");
        insta::assert_snapshot!(draw(&app, 80, 8));
    }

    #[test]
    fn detail_view() {
        let mut app = fixtures::busy_pipe();
        press(&mut app, KeyCode::Enter);
        insta::assert_snapshot!(draw(&app, 90, 20));
    }

    #[test]
    fn detail_of_a_pipe_that_went_away() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Enter);
        app.push(snapshot(13, vec![]));
        insta::assert_snapshot!(draw(&app, 80, 8));
    }

    #[test]
    fn help_overlay() {
        let mut app = fixtures::ten_pipes();
        press(&mut app, KeyCode::Char('?'));
        insta::assert_snapshot!(draw(&app, 80, 20));
    }

    #[test]
    fn stalled_pipe() {
        insta::assert_snapshot!(draw(&fixtures::stalled(), 100, 8));
    }

    #[test]
    fn stalled_pipe_detail() {
        let mut app = fixtures::stalled();
        press(&mut app, KeyCode::Enter);
        insta::assert_snapshot!(draw(&app, 100, 10));
    }

    #[test]
    fn stalled_rows_are_red() {
        let app = fixtures::stalled();
        let mut buf = Buffer::empty(Rect::new(0, 0, 100, 8));
        (&app).render(buf.area, &mut buf);
        // Row 3 is the first pipe: the stalled one sorts first by throughput.
        assert_eq!(buf[(1, 3)].symbol(), "!");
        assert_eq!(buf[(1, 3)].fg, Color::Red);
        assert_ne!(buf[(1, 4)].fg, Color::Red);
    }

    #[test]
    fn any_size_draws_without_panicking() {
        let mut detail = fixtures::busy_pipe();
        press(&mut detail, KeyCode::Enter);
        let mut help = fixtures::ten_pipes();
        press(&mut help, KeyCode::Char('?'));
        let apps = [App::new(), fixtures::ten_pipes(), detail, help];
        // Every width where columns come and go, and the heights where parts are dropped.
        let widths = (0..=90).chain((95..=130).step_by(5));
        let heights = [0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 14, 15, 26];
        for app in &apps {
            for width in widths.clone() {
                for height in heights {
                    let mut buf = Buffer::empty(Rect::new(0, 0, width, height));
                    app.render(buf.area, &mut buf);
                }
            }
        }
    }

    #[test]
    fn huge_screens_draw_too() {
        let columns = layout_columns(u16::MAX, u16::MAX);
        assert_eq!(columns.len(), Col::SCREEN_ORDER.len());
    }

    #[test]
    fn sparklines_scale_to_their_peak() {
        assert_eq!(spark([0, 1, 2, 4, 8].into_iter(), 7), "   ▁▂▄█");
        assert_eq!(spark([5, 5].into_iter(), 2), "██");
        assert_eq!(spark([0, 0].into_iter(), 3), "   ");
        assert_eq!(spark([1, 1000].into_iter(), 2), "▁█", "small is not zero");
        assert_eq!(
            spark([9, 1, 2].into_iter(), 2),
            "▄█",
            "only what fits counts"
        );
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        assert_eq!(fit("backups", 10), "backups");
        assert_eq!(fit("reports-quarterly", 8), "reports…");
        assert_eq!(fit("abc", 0), "…");
    }
}
