//! The interactive dashboard: terminal events, a frame tick and the snapshot channel in one
//! `select!`. Samples come at about 1 Hz and keys whenever; frames are drawn at most
//! [`FRAME`] apart and only when something changed, so an idle dashboard costs nothing.

use std::io;
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event, EventStream};
use futures::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::app::{Action, App};
use crate::snapshot::Update;

/// The shortest time between two frames (about 30 per second).
pub const FRAME: Duration = Duration::from_millis(33);

/// Runs the dashboard until the user quits (`q`, Ctrl-C) or the terminal's input ends.
///
/// Takes over the terminal (raw mode, alternate screen, the mouse) and gives it back on every
/// way out, panics included. When the sender side of `updates` closes, the screen stays up,
/// saying no more data comes, until the user quits.
pub async fn run(updates: mpsc::Receiver<Update>, app: App) -> io::Result<()> {
    // try_init installs the same restoring panic hook as init, but returns its errors.
    let mut terminal = ratatui::try_init()?;
    // Without the mouse the dashboard still works: the keys do everything. A panic gives the
    // mouse back too, before the hook of try_init restores the rest.
    let _ = crossterm::execute!(io::stdout(), EnableMouseCapture);
    let restore = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(io::stdout(), DisableMouseCapture);
        restore(info);
    }));
    let result = event_loop(&mut terminal, updates, app).await;
    let _ = crossterm::execute!(io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    mut snapshots: mpsc::Receiver<Update>,
    mut app: App,
) -> io::Result<()> {
    let size = terminal.size()?;
    app.set_area(ratatui::layout::Rect::new(0, 0, size.width, size.height));
    let mut events = EventStream::new();
    let mut frames = tokio::time::interval(FRAME);
    frames.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut changed = true;
    let mut feed_open = true;
    loop {
        tokio::select! {
            _ = frames.tick(), if changed => {
                terminal.draw(|frame| frame.render_widget(&app, frame.area()))?;
                changed = false;
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    if app.on_key(key) == Action::Quit {
                        return Ok(());
                    }
                    changed = true;
                }
                Some(Ok(Event::Mouse(mouse))) => {
                    app.on_mouse(mouse);
                    changed = true;
                }
                // draw() resizes the buffers; the app needs the size to scroll.
                Some(Ok(Event::Resize(width, height))) => {
                    app.set_area(ratatui::layout::Rect::new(0, 0, width, height));
                    changed = true;
                }
                Some(Ok(Event::FocusGained)) => changed = true,
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            },
            snapshot = snapshots.recv(), if feed_open => {
                match snapshot {
                    Some(update) => app.update(update),
                    None => {
                        feed_open = false;
                        app.feed_ended();
                    }
                }
                changed = true;
            }
        }
    }
}
