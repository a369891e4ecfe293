//! The crypto settings: the secret that seals payloads (a file, `SKYPIPE_SECRET`, or the
//! local server's saved one) and whether plain payloads are let through.

use std::path::Path;

use crate::config::{io_reason, ConfigError};
use crate::protocol::crypto::{Crypto, Secret};

/// The secret from `--secret-file` (its contents less one final line break) or else
/// `SKYPIPE_SECRET`, and what to do with plain payloads.
pub(crate) fn resolve_crypto(
    secret_file: Option<&std::path::Path>,
    allow_plaintext: bool,
    env: &dyn Fn(&str) -> Option<String>,
    saved: Option<&Path>,
) -> Result<Crypto, ConfigError> {
    let saved = saved.filter(|p| p.exists()).map(Path::to_path_buf);
    let from_env = env("SKYPIPE_SECRET").filter(|s| !s.is_empty());
    let file = match (secret_file, &from_env) {
        (Some(f), _) => Some(f.to_path_buf()),
        (None, None) => saved,
        (None, Some(_)) => None,
    };
    let secret = match &file {
        Some(path) => {
            let mut bytes = std::fs::read(path).map_err(|e| ConfigError::File {
                what: "secret",
                path: path.to_path_buf(),
                reason: io_reason(&e),
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            if bytes.is_empty() {
                return Err(ConfigError::EmptySecret(format!("in {}", path.display())));
            }
            Some(Secret::new(bytes))
        }
        None => from_env.map(|s| Secret::new(s.into_bytes())),
    };
    Ok(Crypto {
        secret,
        allow_plaintext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_of;

    #[test]
    fn the_secret_comes_from_the_file_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "from file\r\n").expect("write");
        let env = env_of(&[("SKYPIPE_SECRET", "from env")]);
        let c = resolve_crypto(Some(&file), false, &env, None).expect("ok");
        assert!(c.secret.is_some());
        assert!(!format!("{c:?}").contains("from"), "never printed: {c:?}");
        let c = resolve_crypto(None, true, &env_of(&[("SKYPIPE_SECRET", "")]), None).expect("ok");
        assert!(c.secret.is_none() && c.allow_plaintext);
        std::fs::write(&file, "\n").expect("write");
        assert!(matches!(
            resolve_crypto(Some(&file), false, &env, None),
            Err(ConfigError::EmptySecret(_))
        ));
        let missing = std::path::Path::new("/nonexistent/s");
        assert!(matches!(
            resolve_crypto(Some(missing), false, &env, None),
            Err(ConfigError::File { .. })
        ));
    }
}
