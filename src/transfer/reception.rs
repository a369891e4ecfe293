//! What every receiving mode (take, follow, listen) sets up the same way: the stdout writer,
//! progress on stderr, presence (so the monitor sees the receiver), and the watch on the
//! pipe's senders (to tell a quiet sender from a gone one). Dropped, it stops them all and
//! ends the progress line.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::client::session::Session;
use crate::config::PipeSettings;
use crate::transfer::output::Writer;
use crate::transfer::presence::{Payloads, Presence, Role, Watch};
use crate::transfer::progress::Progress;

pub(crate) struct Reception {
    /// stdout; writes stop once `cancel` (given to [`Reception::start`]) fires.
    pub(crate) out: Arc<Writer>,
    /// The payloads being taken now, for presence.
    pub(crate) active: Payloads,
    /// The pipe's senders' announcements.
    pub(crate) senders: Watch,
    progress: Progress,
    /// Fired by Ctrl-C: the progress line is then cleared without a summary.
    cancel: CancellationToken,
    _presence: Presence,
}

impl Reception {
    pub(crate) async fn start(
        session: &Session,
        settings: &PipeSettings,
        role: Role,
        cancel: CancellationToken,
    ) -> anyhow::Result<Reception> {
        let pipe = &settings.pipe;
        let out = Arc::new(Writer::stdout(cancel.clone()).context("cannot open stdout")?);
        let senders = Watch::start(&session.client, &session.layout, pipe)
            .await
            .context("cannot watch the pipe's senders")?;
        let active = Payloads::default();
        let presence = Presence::start(
            session.client.clone(),
            &session.layout,
            pipe,
            role,
            out.counter(),
            active.clone(),
            None,
        );
        let idle = match role {
            Role::Listen => format!("listening on pipe {pipe}..."),
            _ => format!("waiting on pipe {pipe}..."),
        };
        Ok(Reception {
            progress: Progress::start(
                settings.progress,
                "received",
                None,
                out.counter(),
                Some(idle),
            ),
            cancel,
            out,
            active,
            senders,
            _presence: presence,
        })
    }

    /// The size of the payload being taken, as its ticket announced it.
    pub(crate) fn announce(&self, size: Option<u64>) {
        self.progress.announce(size);
    }

    /// Ends the progress line with its summary, or, after Ctrl-C, clears it (once; dropping
    /// clears it too).
    pub(crate) fn finish(&self) {
        if self.cancel.is_cancelled() {
            self.progress.clear();
        } else {
            self.progress.finish();
        }
    }
}

impl Drop for Reception {
    fn drop(&mut self) {
        self.progress.clear();
    }
}
