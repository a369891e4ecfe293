//! The public server: its settings (`public.json` in the data directory) and the part of the
//! server's config they and the machines that joined make: TLS, the logins and what each may
//! do (the lists themselves are `crate::protocol::permissions`).
//!
//! Who gets in: the owner (the local credential, everything), each joined machine (its own
//! nkey, its prefix only, replies under an inbox prefix of its own), and anyone else as the
//! rendezvous user, who may only knock at a pending invite (`_SKYPIPE_JOIN.>`) and read the
//! answers (`_SKYPIPE_JOIN_INBOX.*.*`, the shape of a NATS client's replies): no pipe, no
//! JetStream API. Since every joiner is that user, each may read the others' answers: what
//! the host says there is either the public half of a key agreement or sealed with its key.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::admin::machines::store::Machines;
use crate::admin::server::tls::{self, ServerTls};
use crate::protocol::permissions::{self, Permissions};
use crate::protocol::pipe::Layout;

const PUBLIC_FILE: &str = "public.json";
/// The login of whoever connects without one.
pub(crate) const JOIN_USER: &str = "skypipe-join";

/// A certificate of the user's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

/// How the server is public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Public {
    pub(crate) listen: IpAddr,
    /// `None`: the local port.
    #[serde(default)]
    pub(crate) port: Option<u16>,
    #[serde(default)]
    pub(crate) names: Vec<String>,
    #[serde(default)]
    pub(crate) own_tls: Option<OwnTls>,
    #[serde(default)]
    pub(crate) websocket: Option<u16>,
}

impl Public {
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Option<Public>> {
        let path = dir.join(PUBLIC_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not skypipe's", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub(crate) fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let path = dir.join(PUBLIC_FILE);
        skypipe_nats::write_private(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub(crate) fn forget(dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(PUBLIC_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// The `listen` host as the server's config writes it.
    pub(crate) fn host(&self) -> String {
        match self.listen {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        }
    }

    /// Where this machine's own skypipe reaches the server.
    pub(crate) fn client_host(&self) -> String {
        match self.listen {
            IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".into(),
            IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".into(),
            _ => self.host(),
        }
    }

    /// The certificate the server serves: the user's own, or one from skypipe's CA.
    pub(crate) fn tls(&self, data_dir: &Path) -> anyhow::Result<ServerTls> {
        match &self.own_tls {
            Some(own) => Ok(ServerTls {
                cert: own.cert.clone(),
                key: own.key.clone(),
                ca: own.ca.clone(),
            }),
            None => tls::ensure(
                &data_dir.join("tls"),
                &tls::names_for(self.listen, &self.names),
            ),
        }
    }

    /// The name other machines reach this one by: the first `--name`, else the address it
    /// listens on, else its host name, else one of its addresses.
    pub(crate) fn advertised_host(&self) -> String {
        if let Some(n) = self.names.first() {
            return n.clone();
        }
        if !self.listen.is_unspecified() {
            return self.host();
        }
        if let Some(h) = tls::host_name() {
            return h;
        }
        tls::interface_addresses()
            .into_iter()
            .find(|a| !a.is_loopback())
            .map_or_else(|| "127.0.0.1".into(), |a| a.to_string())
    }

    /// The URLs a joined machine is given, the first to try first.
    pub(crate) fn urls(&self, port: u16) -> Vec<String> {
        let host = self.advertised_host();
        let mut urls = vec![format!("tls://{host}:{port}")];
        if let Some(ws) = self.websocket {
            urls.push(format!("wss://{host}:{ws}"));
        }
        urls
    }
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server config's logins: the owner, each machine, and the rendezvous user that anyone
/// without a login is (`join_password` is random and never used: nobody logs in as it).
pub(crate) fn render_auth(
    owner: &str,
    machines: &Machines,
    join_password: &str,
) -> anyhow::Result<String> {
    let mut c = String::from("authorization {\n  users = [\n");
    let _ = writeln!(c, "    {{ nkey: \"{owner}\" }}");
    for m in &machines.list {
        let layout = Layout::new(&m.prefix)
            .with_context(|| format!("the machine {:?} has a bad prefix", m.name))?;
        let _ = writeln!(
            c,
            "    {{ nkey: \"{}\", {} }}",
            m.nkey,
            render_permissions(&permissions::for_prefix(&layout, &m.inbox_prefix()))
        );
    }
    let _ = writeln!(
        c,
        "    {{ user: \"{JOIN_USER}\", password: \"{join_password}\", {} }}",
        render_permissions(&permissions::rendezvous())
    );
    c.push_str("  ]\n}\n");
    let _ = writeln!(c, "no_auth_user: \"{JOIN_USER}\"");
    Ok(c)
}

/// A login's `permissions` as the server config writes them.
fn render_permissions(p: &Permissions) -> String {
    format!(
        "permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }}",
        quoted(&p.publish),
        quoted(&p.subscribe)
    )
}

/// Seconds a client has for its TLS handshake, from the moment it connects. nats-server
/// (2.15) holds a connection's lock through its handshake, and a reload of the config (each
/// invite and revoke) waits for every connection's lock while new connections and the owner's
/// commands wait for the reload: someone who opens the port and says nothing holds them all
/// up for this long. Two seconds (nats-server's default) is two round trips and the crypto
/// with room to spare over any link a pipe is worth using; skypipe's own clients give up on a
/// connection after 4.
pub(crate) const TLS_HANDSHAKE_SECS: u32 = 2;

/// The config's TLS block for a certificate.
pub(crate) fn render_tls(tls: &ServerTls) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: {TLS_HANDSHAKE_SECS}\n}}\n",
        tls.cert.display(),
        tls.key.display()
    )
}

/// Reads `--listen ADDR[:PORT]`.
pub(crate) fn parse_listen(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bad = || {
        format!(
            "--listen {text:?}: give an address of this machine, optionally with a port \
             (0.0.0.0, 192.0.2.7:4222, [::]:4222)"
        )
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port()).filter(|p| *p != 0)));
    }
    let trimmed = text.trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse::<IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_lets_in_the_owner_each_machine_to_its_prefix_and_strangers_to_knock() {
        let machines = Machines {
            list: vec![crate::admin::machines::store::Machine {
                name: "box".into(),
                nkey: "UBOX".into(),
                prefix: "teamb".into(),
                joined: 0,
                version: String::new(),
                last_seen: None,
            }],
        };
        let auth = render_auth("UOWNER", &machines, "pw").expect("rendered");
        let lines: Vec<&str> = auth.lines().collect();
        assert_eq!(lines[2], "    { nkey: \"UOWNER\" }");
        let teamb = permissions::for_prefix(&Layout::new("teamb").expect("prefix"), "_INBOX_box");
        assert_eq!(
            lines[3],
            format!("    {{ nkey: \"UBOX\", {} }}", render_permissions(&teamb))
        );
        assert!(lines[3].contains("subscribe: { allow: [\"_INBOX_box.>\", \"teamb.presence.>\""));
        assert_eq!(
            lines[4],
            "    { user: \"skypipe-join\", password: \"pw\", permissions: { publish: { allow: \
             [\"_SKYPIPE_JOIN.>\"] }, subscribe: { allow: [\"_SKYPIPE_JOIN_INBOX.*.*\"] } } }"
        );
        assert_eq!(lines.last(), Some(&"no_auth_user: \"skypipe-join\""));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("0.0.0.0"),
            Ok(("0.0.0.0".parse().expect("ip"), None))
        );
        assert_eq!(
            parse_listen("127.0.0.2:4333"),
            Ok(("127.0.0.2".parse().expect("ip"), Some(4333)))
        );
        assert_eq!(parse_listen("[::]:4222").map(|l| l.1), Ok(Some(4222)));
        assert!(parse_listen("example.org").is_err());
    }
}
