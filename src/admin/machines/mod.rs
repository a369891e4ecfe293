//! The machines that share a public server (docs/protocol.md, "Joining"):
//! - `invite`: `skypipe invite` on the host: a code, the host's side of the exchange, and
//!   `invite admit` for `skypipe server deploy`.
//! - `join`: `skypipe join HOST CODE` on the guest: its side of the exchange, and `settle`,
//!   which saves and checks what it was given (for `deploy` too); `errors` are its failures.
//! - `roster`: `invite list` and `invite revoke`, and every change to the list of machines,
//!   which the running server reads at once.
//! - `seen`: when each machine was last seen, from the server's monitoring port.
//! - `store`: the one list of machines that joined (`machines.json`).

pub(crate) mod errors;
pub(crate) mod invite;
pub(crate) mod join;
pub(crate) mod roster;
pub(crate) mod seen;
pub(crate) mod store;
