//! Looking after the server and the setup: skypipe's own local server, `skypipe check` and
//! `skypipe setup`, shell completions and the man page.

pub(crate) mod completions;
pub(crate) mod deploy;
pub(crate) mod invite;
pub(crate) mod join;
pub(crate) mod local;
pub(crate) mod public;
pub(crate) mod setup;
pub(crate) mod tls;
