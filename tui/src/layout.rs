//! Where the parts of the dashboard go on a screen of a given size: read by the drawing
//! (`ui`) and by the state (`app`, which scrolls the table by the rows it shows).

use ratatui::layout::{Constraint, Layout, Rect};

/// The server chart comes when the body has this many rows.
const CHART_FROM: u16 = 16;

/// Where the parts of the screen go.
pub(crate) struct Screen {
    pub(crate) header: Rect,
    pub(crate) chart: Rect,
    pub(crate) table: Rect,
    pub(crate) footer: Rect,
}

/// The parts of a screen of `area`, with room for the server chart when `chart_shown` and
/// the screen is tall enough.
pub(crate) fn screen(chart_shown: bool, area: Rect) -> Screen {
    // The two header lines share with the body on a very short terminal: the body
    // (the point of the screen) gets what is left, down to nothing.
    let header_height = if area.height >= 8 { 2 } else { 1 };
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(header_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    // The chart is a luxury: a short screen keeps the table.
    let chart_height = if chart_shown && body.height >= CHART_FROM {
        (body.height / 3).clamp(6, 12)
    } else {
        0
    };
    let [chart, table] =
        Layout::vertical([Constraint::Length(chart_height), Constraint::Fill(1)]).areas(body);
    Screen {
        header,
        chart,
        table,
        footer,
    }
}

/// Where the pipe table's rows go on a screen of `area` (between its header and total
/// rows), whether or not there are rows to fill it.
pub(crate) fn table_rows_area(chart_shown: bool, area: Rect) -> Rect {
    let table = screen(chart_shown, area).table;
    Rect {
        y: table.y.saturating_add(1),
        height: table.height.saturating_sub(2),
        ..table
    }
}
