//! skypipe's own server, from this machine:
//! - `local`: the `skypipe server start|stop|status|run|preflight` commands, and starting the
//!   server for a pipe command when nothing else is configured.
//! - `instance`: the server as a process: its files in the data directory, its config, its
//!   credential, finding it running, starting, stopping and reloading it.
//! - `public`: how it is public (`public.json`), and the logins and TLS that make its config.
//! - `tls`: its private CA and the certificate it serves.
//! - `deploy`: `skypipe server deploy`: the same server installed on another machine over
//!   `ssh` (`ssh`: running commands there), which this machine then joins.

pub(crate) mod deploy;
pub(crate) mod instance;
pub(crate) mod local;
pub(crate) mod public;
pub(crate) mod ssh;
pub(crate) mod tls;
