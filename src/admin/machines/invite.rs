//! `skypipe invite`: lets one other machine into this machine's public server with a short
//! code, and `skypipe invite admit`, the same through a channel that authenticated both ends
//! already (`skypipe server deploy`). The exchange itself is in `crate::protocol::join` and
//! docs/protocol.md, "Joining".

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::{Client, Subject, Subscriber};
use futures::StreamExt as _;
use nix::fcntl::{Flock, FlockArg};
use rand::seq::SliceRandom as _;

use crate::admin::machines::roster::{self, change_machines, shut_out};
use crate::admin::machines::seen::now_secs;
use crate::admin::machines::store::{machine_name, Machine};
use crate::admin::server::instance::{Local, Running};
use crate::admin::server::public::Public;
use crate::admin::server::tls::ServerTls;
use crate::config::cli::{InviteAction, InviteArgs};
use crate::config::Conn;
use crate::error::{code, Failure};
use crate::paths::{open_lock, SECRET_FILE};
use crate::protocol::join::{
    b64, invite_subject, is_session, session_subject, unb64, Channel, Code, Envelope, Hello,
    HelloReply, Joiner, Outcome, Pake, Side, Welcome, JOIN_VERSION, MAX_NAMEPLATE,
};

/// How long the joiner may take between the steps of the exchange: its checks of the server
/// included.
const STEP_WAIT: Duration = Duration::from_secs(90);

/// `skypipe invite ...`.
pub(crate) async fn cmd_invite(
    conn: &Conn,
    args: &InviteArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let local = Local::new(env, conn.local_port, conn.local_max_store)?;
    match &args.action {
        Some(InviteAction::List { json }) => roster::list(&local, *json).await,
        Some(InviteAction::Revoke { name }) => roster::revoke(local, name).await,
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
        .context("no randomness for a secret")?;
    let secret = b64(raw.as_ref());
    skypipe_nats::write_private(&path, &format!("{secret}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((secret, Some(path)))
}

/// One invite's side of the exchange, from the knock on: the connection to the local
/// server, the code, and the joiner's subject once it has one.
struct Host {
    client: Client,
    code: Code,
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
    let host = Host {
        client: session.client.clone(),
        code,
    };
    let knock = host.listen().await?;
    show_code(&public, &running, &host.code, args.expires);
    let (hello, reply_to) = host.wait_knock(knock, args.expires).await?;
    let (channel, mut steps) = host.agree(&hello, reply_to).await?;

    // Step 1: who it is. A message that does not open is a wrong code.
    let (joiner, reply_to) = host.who(&mut steps, &channel).await?;
    let secret = if args.with_secret {
        Some(secret_to_share(&local, env)?)
    } else {
        None
    };
    let wanted = args
        .as_name
        .as_deref()
        .map_or_else(|| machine_name(&joiner.name), machine_name);
    let machine = match let_in_new(&local, &joiner, &wanted, conn).await {
        Ok(m) => m,
        Err(e) => {
            send_envelope(&host.client, reply_to, None, Some("the host failed".into())).await;
            return Err(e);
        }
    };
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
    send_envelope(&host.client, reply_to, Some(sealed), None).await;

    // Step 2: whether it got in as itself.
    let outcome = host.outcome(&mut steps, &channel).await;
    if !outcome.ok {
        let _gone = shut_out(&local, &machine.name).await?;
        return Err(anyhow!(
            "{} did not join: {}; nothing was kept",
            machine_name(&joiner.name),
            outcome.error.unwrap_or_else(|| "no reason given".into())
        ));
    }
    println!(
        "{} joined as {:?}",
        machine_name(&joiner.name),
        machine.name
    );
    if let Some((_, Some(path))) = &secret {
        println!(
            "made an end-to-end secret for both machines ({}): payloads sent through this \
             server are sealed with it",
            path.display()
        );
    }
    Ok(code::OK)
}

/// What the user runs on the other machine.
fn show_code(public: &Public, running: &Running, code: &Code, expires: Duration) {
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
        humantime::format_duration(expires)
    );
    use std::io::Write as _;
    std::io::stdout().flush().ok();
}

impl Host {
    /// Waits at the invite's subject.
    async fn listen(&self) -> anyhow::Result<Subscriber> {
        let knock = self
            .client
            .subscribe(invite_subject(self.code.nameplate))
            .await
            .context("cannot wait for the other machine")?;
        self.client.flush().await.ok();
        Ok(knock)
    }

    /// The first knock, with where to answer it; whatever comes, the code is used up.
    async fn wait_knock(
        &self,
        mut knock: Subscriber,
        expires: Duration,
    ) -> anyhow::Result<(Hello, Subject)> {
        let code = &self.code;
        let first = tokio::time::timeout(expires, knock.next()).await;
        let _ = knock.unsubscribe().await;
        let msg = match first {
            Ok(Some(m)) => m,
            Ok(None) => return Err(anyhow!("lost the connection to the local server")),
            Err(_) => {
                return Err(Failure::TimedOut(format!(
                    "the code {code} expired after {} with no machine joining",
                    humantime::format_duration(expires)
                ))
                .into())
            }
        };
        let Some(reply_to) = msg.reply.clone() else {
            return Err(anyhow!(
                "someone knocked without a reply address: the code {code} is dead, run \
                 `skypipe invite` again"
            ));
        };
        let Ok(hello) = serde_json::from_slice::<Hello>(&msg.payload) else {
            return Err(anyhow!(
                "something that is not skypipe knocked: the code {code} is dead, run `skypipe \
                 invite` again"
            ));
        };
        Ok((hello, reply_to))
    }

    /// Answers the hello with the host's half of the key agreement, listening first on the
    /// session subject that only the joiner knows (its hello went to this client alone).
    async fn agree(
        &self,
        hello: &Hello,
        reply_to: Subject,
    ) -> anyhow::Result<(Channel, Subscriber)> {
        let code = &self.code;
        if hello.v != JOIN_VERSION {
            let why = format!(
                "the joining skypipe speaks join version {}, this one {JOIN_VERSION}: use the \
                 same skypipe version on both machines",
                hello.v
            );
            self.refuse(reply_to, &why).await;
            return Err(anyhow!("{why}"));
        }
        if !is_session(&hello.session) {
            let why = "the joining machine named no valid session";
            self.refuse(reply_to, why).await;
            return Err(anyhow!(
                "a malformed join attempt ({why}): the code {code} is dead"
            ));
        }
        let (pake, ours) = Pake::start(Side::Host, code);
        let channel = match unb64(&hello.pake).and_then(|theirs| pake.finish(&theirs)) {
            Ok(c) => c,
            Err(e) => {
                self.refuse(reply_to, &e).await;
                return Err(anyhow!(
                    "a malformed join attempt ({e}): the code {code} is dead"
                ));
            }
        };
        let steps = self
            .client
            .subscribe(session_subject(code.nameplate, &hello.session))
            .await
            .context("cannot talk to the other machine")?;
        let reply = HelloReply {
            v: JOIN_VERSION,
            pake: b64(&ours),
            error: None,
        };
        self.client
            .publish(reply_to, serde_json::to_vec(&reply)?.into())
            .await
            .context("cannot answer the other machine")?;
        Ok((channel, steps))
    }

    /// Says no to a hello, in the clear.
    async fn refuse(&self, reply_to: Subject, why: &str) {
        let reply = HelloReply {
            error: Some(why.to_string()),
            ..HelloReply::default()
        };
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        self.client.publish(reply_to, body.into()).await.ok();
        self.client.flush().await.ok();
    }

    /// Step 1: the joiner, with a key that is a user's, and where to answer it.
    async fn who(
        &self,
        steps: &mut Subscriber,
        channel: &Channel,
    ) -> anyhow::Result<(Joiner, Subject)> {
        let (joiner, reply_to) = next_sealed::<Joiner>(steps, channel, 0).await?;
        let joiner = match joiner {
            Ok(j) => j,
            Err(why) => {
                send_envelope(&self.client, reply_to, None, Some(why.clone())).await;
                return Err(anyhow!("{why}"));
            }
        };
        if !is_user_key(&joiner.nkey) {
            let why = "the joining machine sent no valid user key".to_string();
            send_envelope(&self.client, reply_to, None, Some(why.clone())).await;
            return Err(anyhow!("{why}; nothing was changed"));
        }
        Ok((joiner, reply_to))
    }

    /// Step 2: what the joiner says of its login, acknowledged; a failure when it says
    /// nothing that opens.
    async fn outcome(&self, steps: &mut Subscriber, channel: &Channel) -> Outcome {
        match next_sealed::<Outcome>(steps, channel, 1).await {
            Ok((Ok(o), reply_to)) => {
                send_envelope(&self.client, reply_to, None, None).await;
                o
            }
            Ok((Err(why), _)) => Outcome {
                ok: false,
                error: Some(why),
            },
            Err(e) => Outcome {
                ok: false,
                error: Some(crate::error::one_line(&e)),
            },
        }
    }
}

/// Whether `nkey` is a public user nkey.
fn is_user_key(nkey: &str) -> bool {
    nkey.starts_with('U') && nkeys::KeyPair::from_public_key(nkey).is_ok()
}

/// The next message on the session subject that opens as message `n` of the joiner, with
/// where to answer it. `Ok((Err(why), _))`: it opened but is not what was expected, or, for
/// message 0, it does not open: the joiner used a wrong code (nobody else knows the subject).
/// After message 0 the key is known to be shared, and a message that does not open (or an
/// error in the clear) is not the joiner's: it is ignored, never acted on.
async fn next_sealed<T: for<'de> serde::Deserialize<'de>>(
    steps: &mut Subscriber,
    channel: &Channel,
    n: u32,
) -> anyhow::Result<(Result<T, String>, Subject)> {
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
    client: &Client,
    to: Subject,
    sealed: Option<String>,
    error: Option<String>,
) {
    let envelope = Envelope { sealed, error };
    if let Ok(body) = serde_json::to_vec(&envelope) {
        let _ = client.publish(to, body.into()).await;
        let _ = client.flush().await;
    }
}

/// `skypipe invite admit`: what `skypipe server deploy` runs here over ssh, which has
/// authenticated both ends already: lets in the machine with this key (replacing one of the
/// same name, its earlier key) and prints what it needs, as [`Welcome`] JSON.
async fn admit(conn: &Conn, local: Local, name: &str, nkey: &str) -> anyhow::Result<i32> {
    let (public, running) = public_running(&local)?;
    if !is_user_key(nkey) {
        return Err(Failure::Usage(format!("{nkey:?} is not a public user nkey")).into());
    }
    let tls = public.tls(&local.dir)?;
    let machine = Machine {
        name: machine_name(name),
        nkey: nkey.to_string(),
        prefix: conn.layout.prefix().to_string(),
        joined: now_secs(),
        version: String::new(),
        last_seen: None,
    };
    let admitted = machine.clone();
    let ((), told) = change_machines(&local, move |machines| {
        machines.put(admitted);
        ((), true)
    })
    .await?;
    told?;
    let welcome = welcome(&public, &running, &tls, &machine, None)?;
    println!("{}", serde_json::to_string(&welcome)?);
    Ok(code::OK)
}

/// Lets the joiner in under `wanted` or, when a machine has that name, the first free
/// `wanted-N`, and has the server read its users; takes it out again when the server could
/// not be told.
async fn let_in_new(
    local: &Local,
    joiner: &Joiner,
    wanted: &str,
    conn: &Conn,
) -> anyhow::Result<Machine> {
    let mut machine = Machine {
        name: wanted.to_string(),
        nkey: joiner.nkey.clone(),
        prefix: conn.layout.prefix().to_string(),
        joined: now_secs(),
        version: joiner.version.clone(),
        last_seen: None,
    };
    let (machine, told) = change_machines(local, move |machines| {
        machine.name = machines.free_name(&machine.name);
        machines.put(machine.clone());
        (machine, true)
    })
    .await?;
    if let Err(e) = told {
        let _ = shut_out(local, &machine.name).await;
        return Err(e);
    }
    Ok(machine)
}

/// What a machine let in needs to reach and trust the server.
fn welcome(
    public: &Public,
    running: &Running,
    tls: &ServerTls,
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
