//! The commands that look after skypipe rather than move bytes, by what a user does:
//! - [`server`]: skypipe's own server: local, public with TLS, or deployed to another machine.
//! - [`machines`]: the machines that share a public server: `invite` on the host, `join` on
//!   the guest, and the one list of those that joined.
//! - [`setup`]: `skypipe check` and `skypipe setup`: a server checked, then saved as a context.
//! - [`completions`]: shell completions and the man page.
//!
//! `server` reads the list of machines (`machines::store`) to write the server's logins;
//! `machines` starts, reloads and reaches the server through `server`. No file imports one that
//! imports it back.

pub(crate) mod completions;
pub(crate) mod machines;
pub(crate) mod server;
pub(crate) mod setup;
