//! natscli contexts, read and written in one place: the natscli's own files
//! (`~/.config/nats/context.txt`, `context/NAME.json`) and skypipe's config file, which names
//! the context skypipe uses without changing the natscli's selection.

use std::io::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{io_reason, nonempty, ConfigError};
use crate::paths::{nats_config_dir, skypipe_config_dir};

/// The natscli's context file, the fields skypipe uses. Unknown fields are ignored, as the
/// natscli ignores ours.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ContextFile {
    pub(crate) url: String,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) token: String,
    pub(crate) creds: String,
    pub(crate) nkey: String,
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) ca: String,
    pub(crate) tls_first: bool,
    pub(crate) inbox_prefix: String,
    pub(crate) jetstream_domain: String,
    pub(crate) jetstream_api_prefix: String,
    /// skypipe's own: the subject prefix for this context.
    pub(crate) skypipe_prefix: String,
    /// skypipe's own: replicas of the streams it creates (0: not set).
    pub(crate) skypipe_replicas: usize,
    /// skypipe's own: the file with the end-to-end secret (`skypipe join` of an invite made
    /// with `--with-secret`).
    pub(crate) skypipe_secret_file: String,
    /// skypipe's own: the bytes its two streams may hold together when it creates them (0:
    /// not set).
    pub(crate) skypipe_max_bytes: u64,
}

/// skypipe's own config file, `$XDG_CONFIG_HOME/skypipe/config.json` (or under
/// `~/.config`). It names the natscli context skypipe uses, so that skypipe can have a
/// server of its own without changing the natscli's selection.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SkypipeConfig {
    pub(crate) context: String,
}

/// Reads skypipe's config file; a missing file is an empty config.
pub(crate) fn load_skypipe_config(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SkypipeConfig, ConfigError> {
    let Some(dir) = skypipe_config_dir(env) else {
        return Ok(SkypipeConfig::default());
    };
    let path = dir.join("config.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ConfigError::BadConfigFile {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SkypipeConfig::default()),
        Err(e) => Err(ConfigError::BadConfigFile {
            path,
            reason: io_reason(&e),
        }),
    }
}

/// Loads the context chosen by `--context`, `NATS_CONTEXT`, skypipe's config file or the
/// natscli's `context.txt`, in that order.
pub(crate) fn load_context(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, ContextFile)>, ConfigError> {
    let Some(dir) = nats_config_dir(env) else {
        return Ok(None);
    };
    let name = match flag
        .map(str::to_string)
        .or_else(|| env("NATS_CONTEXT"))
        .filter(|s| !s.is_empty())
    {
        Some(n) => n,
        None => match nonempty(&load_skypipe_config(env)?.context) {
            Some(n) => n,
            None => match std::fs::read_to_string(dir.join("context.txt")) {
                Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
                _ => return Ok(None),
            },
        },
    };
    if name.contains('/') || name.contains("..") {
        return Err(ConfigError::BadContext {
            name: name.clone(),
            path: dir.join("context"),
            reason: "a context name cannot contain '/' or '..'".into(),
        });
    }
    let path = dir.join("context").join(format!("{name}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NoContext { name, path })
        }
        Err(e) => {
            return Err(ConfigError::BadContext {
                name,
                path,
                reason: e.to_string(),
            })
        }
    };
    let ctx: ContextFile = serde_json::from_str(&text).map_err(|e| ConfigError::BadContext {
        name: name.clone(),
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some((name, ctx)))
}

/// Reads a JSON object (or starts an empty one), changes it, writes it back privately.
pub(crate) fn merge_json(
    path: &Path,
    change: impl FnOnce(&mut Map<String, Value>),
) -> anyhow::Result<()> {
    let mut map = match std::fs::read_to_string(path) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(anyhow!(
                    "{} exists but is not a JSON object; move it away first",
                    path.display()
                ))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
        }
    };
    change(&mut map);
    let mut text = serde_json::to_string_pretty(&Value::Object(map))?;
    text.push('\n');
    write_private(path, text.as_bytes())
}

/// Writes a file readable by its owner only (contexts hold secrets), replacing it whole.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
