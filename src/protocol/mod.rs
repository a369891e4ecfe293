//! The pipe protocol without IO (docs/protocol.md): names, subjects and headers, and the
//! sealing of chunks.

pub(crate) mod crypto;
pub(crate) mod join;
pub(crate) mod permissions;
pub(crate) mod pipe;
pub(crate) mod proof;
