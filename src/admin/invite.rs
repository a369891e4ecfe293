//! `skypipe invite`: lets one other machine into this machine's public server with a short
//! code, and `skypipe invite list|revoke` for the machines that joined. The exchange itself is
//! in `crate::protocol::join` and docs/protocol.md, "Joining".

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use futures::StreamExt as _;
use nix::fcntl::{Flock, FlockArg};
use rand::seq::SliceRandom as _;

use crate::admin::local::{Local, Running};
use crate::admin::public::{self, Machine, Public};
use crate::config::cli::{InviteAction, InviteArgs};
use crate::config::Conn;
use crate::error::{code, Failure};
use crate::paths::{open_lock, SECRET_FILE};
use crate::protocol::join::{
    invite_subject, is_session, session_subject, Channel, Code, Envelope, Hello, HelloReply,
    Joiner, Outcome, Pake, Side, Welcome, JOIN_VERSION, MAX_NAMEPLATE,
};

/// How long the joiner may take between the steps of the exchange: its checks of the server
/// included.
const STEP_WAIT: Duration = Duration::from_secs(90);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `skypipe invite ...`.
pub(crate) async fn cmd_invite(
    conn: &Conn,
    args: &InviteArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let local = Local::new(env, conn.local_port, conn.local_max_store)?;
    match &args.action {
        Some(InviteAction::List { json }) => list(&local, *json).await,
        Some(InviteAction::Revoke { name }) => revoke(local, name).await,
        Some(InviteAction::Admit {
            machine,
            public_key,
        }) => admit(conn, local, machine, public_key).await,
        None => invite(conn, local, args, env).await,
    }
}

/// The public local server, running, or why not.
fn public_running(local: &Local) -> anyhow::Result<(Public, Running)> {
    let Some(public) = local.public.clone() else {
        return Err(anyhow!(
            "this machine's server is not public: run `skypipe server start --public` first \
             (invites let other machines into skypipe's local server)"
        ));
    };
    match local.running() {
        Some(r) if r.public.is_some() => Ok((public, r)),
        Some(_) => Err(anyhow!(
            "the local server runs on 127.0.0.1 only: `skypipe server start --public` restarts it \
             public (a `skypipe server run` must be restarted by whoever runs it)"
        )),
        None => Err(anyhow!(
            "the local server is not running: `skypipe server start --public` starts it"
        )),
    }
}

/// Takes a free nameplate: a lock held while the invite waits.
fn claim_nameplate(local: &Local) -> anyhow::Result<(u16, Flock<File>)> {
    let dir = local.dir.join("invites");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut numbers: Vec<u16> = (1..=MAX_NAMEPLATE).collect();
    numbers.shuffle(&mut rand::rng());
    for n in numbers {
        let file = open_lock(&dir.join(format!("{n}.lock")))?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok((n, lock));
        }
    }
    Err(anyhow!(
        "{MAX_NAMEPLATE} invites are waiting already on this machine; let some end first"
    ))
}

/// The secret to hand over, made and saved when there is none.
fn secret_to_share(
    local: &Local,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(s) = env("SKYPIPE_SECRET").filter(|s| !s.is_empty()) {
        return Ok((s, None));
    }
    let path = local.dir.join(SECRET_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if !text.is_empty() {
            return Ok((text, None));
        }
    }
    use rand::TryRngCore as _;
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(raw.as_mut())
        .map_err(|e| anyhow!("no randomness for a secret: {e}"))?;
    let secret = crate::protocol::join::b64(raw.as_ref());
    skypipe_nats::write_private(&path, &format!("{secret}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((secret, Some(path)))
}

async fn invite(
    conn: &Conn,
    local: Local,
    args: &InviteArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let (public, running) = public_running(&local)?;
    let tls = public.tls(&local.dir)?;
    let (nameplate, _claim) = claim_nameplate(&local)?;
    let code = Code::random(nameplate);
    let session = crate::client::session::connect(&local.client_conn(conn, &running)).await?;
    let client = session.client.clone();
    let mut knock = client
        .subscribe(invite_subject(nameplate))
        .await
        .map_err(|e| anyhow!("cannot wait for the other machine: {e}"))?;
    client.flush().await.ok();

    let host = public.advertised_host();
    let target = if running.port == 4222 {
        host.clone()
    } else {
        format!("{host}:{}", running.port)
    };
    println!("On the other machine, run:");
    println!("    skypipe join {target} {code}");
    println!(
        "(valid for {}, once; waiting...)",
        humantime::format_duration(args.expires)
    );
    use std::io::Write as _;
    std::io::stdout().flush().ok();

    let first = tokio::time::timeout(args.expires, knock.next()).await;
    // Whatever comes, the code is used up.
    let _ = knock.unsubscribe().await;
    let msg = match first {
        Ok(Some(m)) => m,
        Ok(None) => return Err(anyhow!("lost the connection to the local server")),
        Err(_) => {
            return Err(Failure::TimedOut(format!(
                "the code {code} expired after {} with no machine joining",
                humantime::format_duration(args.expires)
            ))
            .into())
        }
    };
    let Some(reply_to) = msg.reply.clone() else {
        return Err(anyhow!(
            "someone knocked without a reply address: the code {code} is dead, run `skypipe \
             invite` again"
        ));
    };
    let hello: Hello = match serde_json::from_slice(&msg.payload) {
        Ok(h) => h,
        Err(_) => {
            return Err(anyhow!(
                "something that is not skypipe knocked: the code {code} is dead, run `skypipe \
                 invite` again"
            ))
        }
    };
    let refuse = |error: String| {
        let reply = HelloReply {
            error: Some(error),
            ..HelloReply::default()
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    };
    if hello.v != JOIN_VERSION {
        let why = format!(
            "the joining skypipe speaks join version {}, this one {JOIN_VERSION}: use the same \
             skypipe version on both machines",
            hello.v
        );
        client
            .publish(reply_to, refuse(why.clone()).into())
            .await
            .ok();
        client.flush().await.ok();
        return Err(anyhow!("{why}"));
    }
    if !is_session(&hello.session) {
        let why = "the joining machine named no valid session".to_string();
        client
            .publish(reply_to, refuse(why.clone()).into())
            .await
            .ok();
        client.flush().await.ok();
        return Err(anyhow!(
            "a malformed join attempt ({why}): the code {code} is dead"
        ));
    }
    let (pake, ours) = Pake::start(Side::Host, &code);
    let channel =
        match crate::protocol::join::unb64(&hello.pake).and_then(|theirs| pake.finish(&theirs)) {
            Ok(c) => c,
            Err(e) => {
                client
                    .publish(reply_to, refuse(e.clone()).into())
                    .await
                    .ok();
                return Err(anyhow!(
                    "a malformed join attempt ({e}): the code {code} is dead"
                ));
            }
        };
    // Only the joiner knows this subject (its hello went to this client alone).
    let mut steps = client
        .subscribe(session_subject(nameplate, &hello.session))
        .await
        .map_err(|e| anyhow!("cannot talk to the other machine: {e}"))?;
    let reply = HelloReply {
        v: JOIN_VERSION,
        pake: crate::protocol::join::b64(&ours),
        error: None,
    };
    client
        .publish(reply_to, serde_json::to_vec(&reply)?.into())
        .await
        .map_err(|e| anyhow!("cannot answer the other machine: {e}"))?;

    // Step 1: who it is. A message that does not open is a wrong code.
    let (joiner, reply_to) = next_sealed::<Joiner>(&mut steps, &channel, 0).await?;
    let joiner = match joiner {
        Ok(j) => j,
        Err(why) => {
            send_envelope(&client, reply_to, None, Some(why.clone())).await;
            return Err(anyhow!("{why}"));
        }
    };
    if !joiner.nkey.starts_with('U') || nkeys::KeyPair::from_public_key(&joiner.nkey).is_err() {
        let why = "the joining machine sent no valid user key".to_string();
        send_envelope(&client, reply_to, None, Some(why.clone())).await;
        return Err(anyhow!("{why}; nothing was changed"));
    }
    let machines = public::load_machines(&local.dir)?;
    let wanted = args
        .as_name
        .as_deref()
        .map_or_else(|| public::machine_name(&joiner.name), public::machine_name);
    let mut name = wanted.clone();
    let mut n = 2;
    while machines.iter().any(|m| m.name == name) {
        name = format!("{wanted}-{n}");
        n += 1;
    }
    let machine = Machine {
        name: name.clone(),
        nkey: joiner.nkey.clone(),
        prefix: conn.layout.prefix().to_string(),
        joined: now_secs(),
        version: joiner.version.clone(),
        last_seen: None,
    };
    let secret = if args.with_secret {
        Some(secret_to_share(&local, env)?)
    } else {
        None
    };
    if let Err(e) = let_in(&local, machine.clone()).await {
        let _ = shut_out(&local, &name).await;
        send_envelope(&client, reply_to, None, Some("the host failed".into())).await;
        return Err(e);
    }
    let welcome = welcome(
        &public,
        &running,
        &tls,
        &machine,
        secret.as_ref().map(|(s, _)| s.clone()),
    )?;
    let sealed = channel
        .seal(Side::Host, 0, &welcome)
        .map_err(|e| anyhow!("{e}"))?;
    send_envelope(&client, reply_to, Some(sealed), None).await;

    // Step 2: whether it got in as itself.
    let outcome = next_sealed::<Outcome>(&mut steps, &channel, 1).await;
    let outcome = match outcome {
        Ok((Ok(o), reply_to)) => {
            send_envelope(&client, reply_to, None, None).await;
            o
        }
        Ok((Err(why), _)) => Outcome {
            ok: false,
            error: Some(why),
        },
        Err(e) => Outcome {
            ok: false,
            error: Some(format!("{e:#}")),
        },
    };
    if !outcome.ok {
        shut_out(&local, &name).await?;
        return Err(anyhow!(
            "{} did not join: {}; nothing was kept",
            public::machine_name(&joiner.name),
            outcome.error.unwrap_or_else(|| "no reason given".into())
        ));
    }
    println!("{} joined as {name:?}", public::machine_name(&joiner.name));
    if let Some((_, Some(path))) = &secret {
        println!(
            "made an end-to-end secret for both machines ({}): payloads sent through this \
             server are sealed with it",
            path.display()
        );
    }
    Ok(code::OK)
}

/// The next message on the session subject that opens as message `n` of the joiner, with
/// where to answer it. `Ok((Err(why), _))`: it opened but is not what was expected, or, for
/// message 0, it does not open: the joiner used a wrong code (nobody else knows the subject).
/// After message 0 the key is known to be shared, and a message that does not open (or an
/// error in the clear) is not the joiner's: it is ignored, never acted on.
async fn next_sealed<T: for<'de> serde::Deserialize<'de>>(
    steps: &mut async_nats::Subscriber,
    channel: &Channel,
    n: u32,
) -> anyhow::Result<(Result<T, String>, async_nats::Subject)> {
    let until = tokio::time::Instant::now() + STEP_WAIT;
    loop {
        let msg = match tokio::time::timeout_at(until, steps.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(anyhow!("lost the connection to the local server")),
            Err(_) => {
                return Err(anyhow!(
                    "the other machine went quiet for {}",
                    humantime::format_duration(STEP_WAIT)
                ))
            }
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let envelope: Envelope = serde_json::from_slice(&msg.payload).unwrap_or_default();
        match envelope
            .sealed
            .as_deref()
            .map(|s| channel.open::<T>(Side::Joiner, n, s))
        {
            Some(Ok(t)) => return Ok((Ok(t), reply_to)),
            Some(Err(Some(why))) => return Ok((Err(why), reply_to)),
            _ if n == 0 => {
                return Ok((
                    Err(
                        "a machine tried to join with a wrong code; the code is dead now: run \
                         `skypipe invite` again for a new one"
                            .to_string(),
                    ),
                    reply_to,
                ))
            }
            _ => tracing::debug!("ignoring a message in the join that does not open"),
        }
    }
}

async fn send_envelope(
    client: &async_nats::Client,
    to: async_nats::Subject,
    sealed: Option<String>,
    error: Option<String>,
) {
    let envelope = Envelope { sealed, error };
    if let Ok(body) = serde_json::to_vec(&envelope) {
        let _ = client.publish(to, body.into()).await;
        let _ = client.flush().await;
    }
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
/// first). `None` when no server answers.
pub(crate) async fn remember_seen(local: &Local) -> anyhow::Result<Option<Seen>> {
    let Some(running) = local.running() else {
        return Ok(None);
    };
    let Some(seen) = seen(&running).await else {
        return Ok(None);
    };
    let mut machines = public::load_machines(&local.dir)?;
    if note_seen(&mut machines, &seen, now_secs()) {
        public::save_machines(&local.dir, &machines)?;
    }
    Ok(Some(seen))
}

fn ago(secs: u64) -> String {
    let d = now_secs().saturating_sub(secs);
    if d < 60 {
        return "just now".into();
    }
    let rounded = Duration::from_secs(if d < 3600 {
        d / 60 * 60
    } else {
        d / 3600 * 3600
    });
    format!("{} ago", humantime::format_duration(rounded))
}

/// `skypipe invite list`.
async fn list(local: &Local, json: bool) -> anyhow::Result<i32> {
    let connected = remember_seen(local).await?.map(|s| s.connected);
    let rows: Vec<(Machine, bool)> = public::load_machines(&local.dir)?
        .into_iter()
        .map(|m| {
            let on = connected
                .as_ref()
                .is_some_and(|keys| keys.contains(&m.nkey));
            (m, on)
        })
        .collect();
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(m, on)| {
                serde_json::json!({
                    "name": m.name,
                    "prefix": m.prefix,
                    "nkey": m.nkey,
                    "joined": m.joined,
                    "version": m.version,
                    "connected": on,
                    "last_seen": m.last_seen,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(code::OK);
    }
    if rows.is_empty() {
        println!("no machine has joined; `skypipe invite` lets one in");
        return Ok(code::OK);
    }
    let width = rows
        .iter()
        .map(|(m, _)| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:10}  {:16}  LAST SEEN",
        "NAME", "PREFIX", "JOINED"
    );
    for (m, on) in rows {
        let seen = if on {
            "connected now".to_string()
        } else if connected.is_none() {
            m.last_seen
                .map_or("unknown (server not running)".into(), ago)
        } else {
            m.last_seen.map_or("not yet".into(), ago)
        };
        println!(
            "{:width$}  {:10}  {:16}  {seen}",
            m.name,
            m.prefix,
            ago(m.joined)
        );
    }
    Ok(code::OK)
}

/// `skypipe invite admit`: what `skypipe server deploy` runs here over ssh, which has
/// authenticated both ends already: lets in the machine with this key (replacing one of the
/// same name, its earlier key) and prints what it needs, as [`Welcome`] JSON.
async fn admit(conn: &Conn, local: Local, name: &str, nkey: &str) -> anyhow::Result<i32> {
    let (public, running) = public_running(&local)?;
    if !nkey.starts_with('U') || nkeys::KeyPair::from_public_key(nkey).is_err() {
        return Err(Failure::Usage(format!("{nkey:?} is not a public user nkey")).into());
    }
    let name = public::machine_name(name);
    let tls = public.tls(&local.dir)?;
    let machine = Machine {
        name: name.clone(),
        nkey: nkey.to_string(),
        prefix: conn.layout.prefix().to_string(),
        joined: now_secs(),
        version: String::new(),
        last_seen: None,
    };
    let_in(&local, machine.clone()).await?;
    let welcome = welcome(&public, &running, &tls, &machine, None)?;
    println!("{}", serde_json::to_string(&welcome)?);
    Ok(code::OK)
}

/// Lets `machine` in (in place of one of the same name) and has the server read its users.
async fn let_in(local: &Local, machine: Machine) -> anyhow::Result<()> {
    let local = local.clone();
    tokio::task::spawn_blocking(move || {
        let mut machines = public::load_machines(&local.dir)?;
        machines.retain(|m| m.name != machine.name);
        machines.push(machine);
        public::save_machines(&local.dir, &machines)?;
        local.reload()
    })
    .await
    .map_err(|e| anyhow!("reload failed: {e}"))?
}

/// Takes the machine `name` out and has the server read its users; `false` when there was
/// none of that name.
async fn shut_out(local: &Local, name: &str) -> anyhow::Result<bool> {
    let (local, name) = (local.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let mut machines = public::load_machines(&local.dir)?;
        let before = machines.len();
        machines.retain(|m| m.name != name);
        if machines.len() == before {
            return Ok(false);
        }
        public::save_machines(&local.dir, &machines)?;
        local.reload()?;
        Ok(true)
    })
    .await
    .map_err(|e| anyhow!("reload failed: {e}"))?
}

/// What a machine let in needs to reach and trust the server.
fn welcome(
    public: &Public,
    running: &Running,
    tls: &crate::admin::tls::ServerTls,
    machine: &Machine,
    secret: Option<String>,
) -> anyhow::Result<Welcome> {
    Ok(Welcome {
        name: machine.name.clone(),
        urls: public.urls(running.port),
        ca_pem: tls.ca_pem()?,
        cert_sha256: tls.cert_sha256()?,
        prefix: machine.prefix.clone(),
        inbox_prefix: machine.inbox_prefix(),
        secret,
    })
}

/// `skypipe invite revoke NAME`.
async fn revoke(local: Local, name: &str) -> anyhow::Result<i32> {
    let running = local.running().is_some();
    if !shut_out(&local, name).await? {
        let machines = public::load_machines(&local.dir)?;
        let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
        return Err(anyhow!(
            "no machine named {name:?} has joined ({})",
            if names.is_empty() {
                "none has".to_string()
            } else {
                format!("these have: {}", names.join(", "))
            }
        ));
    }
    if running {
        println!("revoked {name:?}: it is refused from now on and its connections were dropped");
    } else {
        println!("revoked {name:?}: the server will refuse it when it starts");
    }
    Ok(code::OK)
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
