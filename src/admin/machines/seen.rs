//! When the joined machines were last seen: what the public server's monitoring port says of
//! their logins, kept in the machines file (the server forgets closed connections when it
//! stops).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::admin::machines::store::{Machine, Machines};
use crate::admin::server::instance::{Local, Running};

/// Now, in seconds since 1970.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The connections the server's monitoring port on 127.0.0.1 lists (`state`: `open`, or
/// `closed`: the last ones that ended, which the server keeps in memory until it stops).
fn connz(port: u16, state: &str) -> Option<Vec<serde_json::Value>> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        stream,
        "GET /connz?auth=true&state={state}&limit=100000 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = &text[text.find("\r\n\r\n")? + 4..];
    let mut v: serde_json::Value = serde_json::from_str(body).ok()?;
    match v.get_mut("connections")?.take() {
        serde_json::Value::Array(list) => Some(list),
        serde_json::Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// What the server says of the machines' logins.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The nkeys connected now.
    pub(crate) connected: Vec<String>,
    /// When the last closed connection of each nkey ended, seconds since 1970.
    pub(crate) closed: std::collections::HashMap<String, u64>,
}

/// What the running server says of the machines' logins; `None` when it does not answer.
async fn seen(running: &Running) -> Option<Seen> {
    let port = running.public.as_ref()?.http_port?;
    tokio::task::spawn_blocking(move || {
        let user = |c: &serde_json::Value| Some(c.get("authorized_user")?.as_str()?.to_string());
        let connected = connz(port, "open")?.iter().filter_map(user).collect();
        let mut closed = std::collections::HashMap::new();
        for c in connz(port, "closed").unwrap_or_default() {
            let stop = c
                .get("stop")
                .and_then(|s| s.as_str())
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            if let (Some(key), Some(stop)) = (user(&c), stop) {
                let at: &mut u64 = closed.entry(key).or_default();
                *at = (*at).max(stop);
            }
        }
        Some(Seen { connected, closed })
    })
    .await
    .ok()
    .flatten()
}

/// Notes in `machines` when each was last seen: now when connected, else when its last
/// connection ended if that is later than what was noted. Whether anything changed.
fn note_seen(machines: &mut [Machine], seen: &Seen, now: u64) -> bool {
    let mut changed = false;
    for m in machines {
        let at = if seen.connected.contains(&m.nkey) {
            Some(now)
        } else {
            seen.closed.get(&m.nkey).copied()
        };
        if let Some(at) = at.filter(|at| m.last_seen.is_none_or(|last| *at > last)) {
            m.last_seen = Some(at);
            changed = true;
        }
    }
    changed
}

/// Keeps in the machines file when each machine was last seen, from what the running server
/// knows (its closed connections are gone once it stops: `skypipe server stop` calls this
/// first). The machines, and what the server says of them (`None` when no server answers).
pub(crate) async fn remember_seen(local: &Local) -> anyhow::Result<(Machines, Option<Seen>)> {
    let mut machines = Machines::load(&local.dir)?;
    let Some(running) = local.running() else {
        return Ok((machines, None));
    };
    let Some(seen) = seen(&running).await else {
        return Ok((machines, None));
    };
    if note_seen(&mut machines.list, &seen, now_secs()) {
        machines.save(&local.dir)?;
    }
    Ok((machines, Some(seen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(nkey: &str, last_seen: Option<u64>) -> Machine {
        Machine {
            name: nkey.to_lowercase(),
            nkey: nkey.into(),
            prefix: "skypipe".into(),
            joined: 100,
            version: String::new(),
            last_seen,
        }
    }

    #[test]
    fn last_seen_is_now_when_connected_else_when_its_last_connection_ended() {
        let mut machines = vec![
            machine("UON", Some(150)),
            machine("ULEFT", None),
            machine("UOLD", Some(300)),
            machine("UNEVER", None),
        ];
        let seen = Seen {
            connected: vec!["UON".into()],
            closed: [("ULEFT".to_string(), 200), ("UOLD".to_string(), 250)]
                .into_iter()
                .collect(),
        };
        assert!(note_seen(&mut machines, &seen, 1000));
        let got: Vec<Option<u64>> = machines.iter().map(|m| m.last_seen).collect();
        // A closed connection older than what was noted changes nothing.
        assert_eq!(got, vec![Some(1000), Some(200), Some(300), None]);
        assert!(!note_seen(&mut machines, &Seen::default(), 2000));
    }
}
