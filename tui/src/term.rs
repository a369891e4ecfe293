//! The interactive dashboard: terminal events, a frame tick and the snapshot channel in one
//! `select!`. Samples come at about 1 Hz and keys whenever; frames are drawn at most
//! [`FRAME`] apart and only when something changed, so an idle dashboard costs nothing.

use std::io;
use std::time::Duration;

use crossterm::event::{Event, EventStream};
use futures::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::app::{Action, App};
use crate::snapshot::Snapshot;

/// The shortest time between two frames (about 30 per second).
pub const FRAME: Duration = Duration::from_millis(33);

/// Runs the dashboard until the user quits (`q`, Ctrl-C) or the terminal's input ends.
///
/// Takes over the terminal (raw mode, alternate screen) and gives it back on every way out,
/// panics included. When the sender side of `snapshots` closes, the screen stays up, saying
/// no more data comes, until the user quits.
pub async fn run(snapshots: mpsc::Receiver<Snapshot>, app: App) -> io::Result<()> {
    // try_init installs the same restoring panic hook as init, but returns its errors.
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, snapshots, app).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    mut snapshots: mpsc::Receiver<Snapshot>,
    mut app: App,
) -> io::Result<()> {
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
                // A resize needs nothing but a new frame: draw() resizes the buffers.
                Some(Ok(Event::Resize(..) | Event::FocusGained)) => changed = true,
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            },
            snapshot = snapshots.recv(), if feed_open => {
                match snapshot {
                    Some(snapshot) => app.push(snapshot),
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
