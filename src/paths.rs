//! Where skypipe keeps things on this machine: its data directory (the local server's files),
//! its config directory, the natscli's, and the record a running local server leaves in its
//! data directory. Everything above reads locations from here and nowhere else.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};

/// The local server's credential in the data directory: the nkey seed of its only user.
pub(crate) const NKEY_FILE: &str = "local-user.nk";
/// The end-to-end secret `skypipe invite --with-secret` made, in the data directory.
pub(crate) const SECRET_FILE: &str = "secret";

/// The data directory: `$XDG_DATA_HOME/skypipe` or `~/.local/share/skypipe`.
pub(crate) fn data_dir(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    if let Some(x) = env("XDG_DATA_HOME").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(x).join("skypipe"));
    }
    match env("HOME").filter(|s| !s.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/skypipe")),
        None => Err(anyhow!(
            "cannot tell where the local server keeps its data: neither XDG_DATA_HOME nor HOME is set"
        )),
    }
}

/// skypipe's config directory: `$XDG_CONFIG_HOME/skypipe` or `~/.config/skypipe`.
pub(crate) fn skypipe_config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    nats_config_dir(env).and_then(|d| d.parent().map(|p| p.join("skypipe")))
}

/// The natscli's config directory: `$XDG_CONFIG_HOME/nats` or `~/.config/nats`.
pub(crate) fn nats_config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(x) = env("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(x).join("nats"));
    }
    env("HOME")
        .filter(|s| !s.is_empty())
        .map(|h| PathBuf::from(h).join(".config").join("nats"))
}

/// Where contexts go and where skypipe's config goes: the natscli's config directory and
/// skypipe's, or why they cannot be told.
pub(crate) fn context_dirs(
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let nats_dir = nats_config_dir(env)
        .ok_or_else(|| anyhow!("cannot tell where contexts go: set HOME or XDG_CONFIG_HOME"))?;
    let skypipe_dir = skypipe_config_dir(env)
        .ok_or_else(|| anyhow!("cannot tell where skypipe's config goes: set HOME"))?;
    Ok((nats_dir, skypipe_dir))
}

/// Makes a directory (and its parents) that only its owner may enter.
pub(crate) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Opens (making it when missing) a file that is only ever locked, never written.
pub(crate) fn open_lock(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// What `server.json` in the data directory records about the running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) pid: u32,
    pub(crate) port: u16,
    /// "background" (`server start`, auto-start) or "foreground" (`server run`).
    pub(crate) mode: String,
    /// The store size it started with (`max_file_store`); absent from older skypipes' files.
    #[serde(default)]
    pub(crate) max_store: Option<u64>,
    /// How it is public, when it is.
    #[serde(default)]
    pub(crate) public: Option<PublicState>,
}

/// What a running public server needs its owner's skypipe to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PublicState {
    /// Where this machine reaches it (an address).
    pub(crate) host: String,
    /// The CA its certificate chains to.
    pub(crate) ca: PathBuf,
    /// Its WebSocket port, if it has one.
    #[serde(default)]
    pub(crate) websocket: Option<u16>,
    /// Its monitoring port on 127.0.0.1 (for `skypipe invite list`).
    #[serde(default)]
    pub(crate) http_port: Option<u16>,
}

/// `server.json` in a data directory: what skypipe recorded about the running server.
pub(crate) fn state_file(dir: &Path) -> PathBuf {
    dir.join("server.json")
}

pub(crate) fn read_state(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(state_file(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Where the owner reaches the local server when it runs public (its URL and CA), from the
/// state it recorded; `None` when it is not public (or not running).
pub(crate) fn owner_route(env: &dyn Fn(&str) -> Option<String>) -> Option<(String, PathBuf)> {
    let state = read_state(&data_dir(env).ok()?)?;
    let public = state.public?;
    Some((format!("tls://{}:{}", public.host, state.port), public.ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_follows_xdg() {
        let env = |k: &str| match k {
            "XDG_DATA_HOME" => Some("/x/data".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(data_dir(&env).ok(), Some(PathBuf::from("/x/data/skypipe")));
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            data_dir(&env).ok(),
            Some(PathBuf::from("/home/u/.local/share/skypipe"))
        );
        assert!(data_dir(&|_: &str| None).is_err());
    }
}
