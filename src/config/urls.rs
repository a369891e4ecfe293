//! Server URLs: a comma-separated list checked one by one, the login some carry before the
//! `@`, `ws://` made `wss://` when TLS is asked for, and URLs as messages show them (without
//! passwords).

use crate::config::ConfigError;

/// Removes `user:password@` from a URL so it can be shown.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        (None, Some(at)) => url[at + 1..].to_string(),
        _ => url.to_string(),
    }
}

/// The `user:password` (or a lone token) before the `@` of a URL, percent-decoded.
pub(crate) fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (info, _) = authority.rsplit_once('@')?;
    let (name, password) = match info.split_once(':') {
        Some((n, p)) => (n, Some(percent_decode(p))),
        None => (info, None),
    };
    Some((percent_decode(name), password)).filter(|(n, _)| !n.is_empty())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a comma-separated URL list and checks each URL.
pub(crate) fn parse_urls(text: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(ConfigError::Url {
            url: text.to_string(),
            reason: "no URL given".into(),
        });
    }
    for url in &urls {
        check_url(url)?;
    }
    Ok(urls)
}

/// Whether a URL dials a WebSocket listener (`ws://` or `wss://`) rather than a NATS
/// client port.
pub(crate) fn is_websocket(url: &str) -> bool {
    url.starts_with("ws://") || url.starts_with("wss://")
}

/// `ws://` becomes `wss://`: used when TLS is asked for (a CA, a client certificate or TLS
/// first), so a plain WebSocket URL never quietly drops it. The natscli does the same.
pub(crate) fn with_websocket_tls(url: String) -> String {
    match url.strip_prefix("ws://") {
        Some(rest) => format!("wss://{rest}"),
        None => url,
    }
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Url {
        url: redact_url(url),
        reason: reason.to_string(),
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                return Err(bad("the scheme must be nats://, tls://, ws:// or wss://"));
            }
            rest
        }
        None => url,
    };
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    if host_port.is_empty() {
        return Err(bad("no host"));
    }
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').and_then(|(_, p)| p.strip_prefix(':')),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad("the port is not a number from 0 to 65535"));
    }
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| bad(&e.to_string()))
}

/// The host and port a URL dials, for telling servers apart (the scheme's default port when
/// none is given).
pub(crate) fn server_of(url: &str) -> Option<(String, u16)> {
    let addr = url.parse::<async_nats::ServerAddr>().ok()?;
    Some((addr.host().to_ascii_lowercase(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::ConnArgs;
    use crate::config::{env_of, resolve_conn};
    #[test]
    fn bad_urls() {
        for u in ["http://x:1", "nats://x:notaport", "", "nats://"] {
            assert!(parse_urls(u).is_err(), "{u}");
        }
        for u in [
            "nats://127.0.0.1:4222",
            "localhost:4222",
            "tls://a.b:4443",
            "ws://h:80",
            "wss://nats.example.org",
            "wss://u:p@nats.example.org:443/nats",
        ] {
            assert!(parse_urls(u).is_ok(), "{u}");
        }
        assert!(parse_urls("ws://h:notaport").is_err());
    }

    #[test]
    fn websocket_urls_mix_with_nats_urls() {
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("NATS_URL", "nats://a:4222, ws://b:8080,wss://c:443")]),
        )
        .expect("ok");
        assert_eq!(c.urls, ["nats://a:4222", "ws://b:8080", "wss://c:443"]);
        assert!(!is_websocket(&c.urls[0]));
        assert!(is_websocket(&c.urls[1]) && is_websocket(&c.urls[2]));
    }

    #[test]
    fn credentials_in_urls() {
        assert_eq!(
            url_credentials("nats://u:p%40ss@h:1"),
            Some(("u".into(), Some("p@ss".into())))
        );
        assert_eq!(url_credentials("tls://tok@h"), Some(("tok".into(), None)));
        assert_eq!(url_credentials("nats://h:1"), None);
        assert_eq!(url_credentials("nats://h:1/a@b"), None);
        let server = |url: &str| ConnArgs {
            server: Some(url.into()),
            ..Default::default()
        };
        let conn =
            resolve_conn(&server("nats://h:1,nats://alice:pw@h:2"), &env_of(&[])).expect("ok");
        assert_eq!(
            (conn.user.as_deref(), conn.password.as_deref()),
            (Some("alice"), Some("pw"))
        );
        // A login given otherwise wins.
        let conn = resolve_conn(
            &server("nats://alice:pw@h:2"),
            &env_of(&[("NATS_TOKEN", "t")]),
        )
        .expect("ok");
        assert_eq!((conn.user, conn.token.as_deref()), (None, Some("t")));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("nats://u:p@h:1"), "nats://h:1");
        assert_eq!(redact_url("u:p@h:1"), "h:1");
        assert_eq!(redact_url("nats://h:1"), "nats://h:1");
    }
}
