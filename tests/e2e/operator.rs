//! An operator-mode test server, set up the way hosted NATS services hand out accounts: an
//! operator, a system account and one user account, each a JWT (nats-io/jwt v2 claims, signed
//! with nkeys made here), preloaded into the server's memory resolver; the user logs in with a
//! `.creds` file. The account's JetStream limits are flat or per replica tier, with or without
//! a byte-limit requirement, as [`Account`] says.

#![allow(dead_code)]

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Command;

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::harness::{bare_cmd, Bench};

/// One set of JetStream limits (the claim's `JetStreamLimits`): `-1` is no limit, `0` none
/// allowed (for storage: JetStream off in that tier).
#[derive(Debug, Clone, Copy)]
pub struct JsLimits {
    pub mem_storage: i64,
    pub disk_storage: i64,
    pub streams: i64,
    pub consumer: i64,
    /// The most bytes any one file stream may hold (0: no such limit).
    pub disk_max_stream_bytes: i64,
    /// Every stream must say how many bytes it may hold (`max_bytes`).
    pub max_bytes_required: bool,
}

impl Default for JsLimits {
    fn default() -> Self {
        JsLimits {
            mem_storage: -1,
            disk_storage: 256 * 1024 * 1024,
            streams: -1,
            consumer: -1,
            disk_max_stream_bytes: 0,
            max_bytes_required: false,
        }
    }
}

impl JsLimits {
    fn claim(&self) -> Value {
        let mut m = Map::new();
        m.insert("mem_storage".into(), self.mem_storage.into());
        m.insert("disk_storage".into(), self.disk_storage.into());
        m.insert("streams".into(), self.streams.into());
        m.insert("consumer".into(), self.consumer.into());
        if self.disk_max_stream_bytes != 0 {
            m.insert(
                "disk_max_stream_bytes".into(),
                self.disk_max_stream_bytes.into(),
            );
        }
        if self.max_bytes_required {
            m.insert("max_bytes_required".into(), true.into());
        }
        Value::Object(m)
    }
}

/// The user account: its JetStream limits, flat (the top-level ones) or per tier (`R1`,
/// `R3`, ...: the top-level ones are then left out, as multi-tenant services do).
#[derive(Debug, Clone)]
pub struct Account {
    pub limits: JsLimits,
    /// The tiers to give `limits` to; empty: flat limits.
    pub tiers: Vec<&'static str>,
}

impl Account {
    /// Flat limits: 256 MiB of file storage, nothing else limited.
    pub fn flat() -> Account {
        Account {
            limits: JsLimits::default(),
            tiers: Vec::new(),
        }
    }

    /// The same limits, given for replica tier R1 only.
    pub fn tiered() -> Account {
        Account {
            tiers: vec!["R1"],
            ..Account::flat()
        }
    }

    pub fn disk(mut self, bytes: i64) -> Account {
        self.limits.disk_storage = bytes;
        self
    }

    pub fn streams(mut self, n: i64) -> Account {
        self.limits.streams = n;
        self
    }

    pub fn consumers(mut self, n: i64) -> Account {
        self.limits.consumer = n;
        self
    }

    pub fn max_bytes_required(mut self) -> Account {
        self.limits.max_bytes_required = true;
        self
    }

    pub fn disk_max_stream_bytes(mut self, bytes: i64) -> Account {
        self.limits.disk_max_stream_bytes = bytes;
        self
    }

    fn limits_claim(&self) -> Value {
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true,
            "conn": -1, "leaf": -1,
        });
        let js = self.limits.claim();
        let Some(fields) = limits.as_object_mut() else {
            unreachable!("a JSON object")
        };
        if self.tiers.is_empty() {
            if let Value::Object(js) = js {
                fields.extend(js);
            }
        } else {
            let tiers: Map<String, Value> = self
                .tiers
                .iter()
                .map(|t| (t.to_string(), js.clone()))
                .collect();
            fields.insert("tiered_limits".into(), Value::Object(tiers));
        }
        limits
    }
}

/// A signed JWT of `nats` claims of subject `sub`, issued by `issuer`.
pub fn sign(issuer: &KeyPair, sub: &str, name: &str, nats: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = json!({
        "iat": now,
        "iss": issuer.public_key(),
        "sub": sub,
        "name": name,
        "nats": nats,
    });
    // The claims' id: a hash of them, as the jwt library makes it (any unique text passes).
    let id = BASE32_NOPAD.encode(&Sha256::digest(claims.to_string().as_bytes()));
    claims["jti"] = Value::String(id);
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("sign a JWT");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// A `.creds` file's text: the user's JWT and its nkey seed, in the standard framing.
pub fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The server's config text for an operator, its system account and the user account
/// (`operator`, `system_account`, a memory resolver with the accounts preloaded), and the
/// user's creds file text.
pub struct OperatorSetup {
    pub config: String,
    pub creds: String,
    /// The user account's public key.
    pub account: String,
}

impl OperatorSetup {
    pub fn new(account: &Account) -> OperatorSetup {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let user_account = KeyPair::new_account();
        let user = KeyPair::new_user();

        let operator_jwt = sign(
            &operator,
            &operator.public_key(),
            "test-operator",
            json!({
                "type": "operator", "version": 2,
                "system_account": system.public_key(),
            }),
        );
        let system_jwt = sign(
            &operator,
            &system.public_key(),
            "SYS",
            json!({
                "type": "account", "version": 2,
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                           "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
            }),
        );
        let account_jwt = sign(
            &operator,
            &user_account.public_key(),
            "hosted",
            json!({
                "type": "account", "version": 2,
                "limits": account.limits_claim(),
            }),
        );
        let user_jwt = sign(
            &user_account,
            &user.public_key(),
            "pipes",
            json!({
                "type": "user", "version": 2,
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            }),
        );
        let config = format!(
            "operator: \"{operator_jwt}\"\n\
             system_account: \"{sys}\"\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}\n",
            sys = system.public_key(),
            acc = user_account.public_key(),
        );
        let seed = user.seed().expect("the user's seed");
        OperatorSetup {
            config,
            creds: creds_text(&user_jwt, &seed),
            account: user_account.public_key(),
        }
    }
}

/// A [`Bench`] whose server runs in operator mode with one user account (see the module).
pub struct OperatorBench {
    pub bench: Bench,
    /// The user's `.creds` file.
    pub creds: PathBuf,
}

impl OperatorBench {
    pub fn new(account: Account) -> OperatorBench {
        let setup = OperatorSetup::new(&account);
        let mut bench = Bench::with(|c| c.extra.push_str(&setup.config));
        let creds = bench.file("user.creds", setup.creds.as_bytes());
        let path = creds.to_str().expect("a UTF-8 temp path").to_string();
        // Every command of the bench logs in as the user.
        bench.env.push(("NATS_CREDS".into(), path));
        OperatorBench { bench, creds }
    }

    pub fn creds_str(&self) -> &str {
        self.creds.to_str().expect("a UTF-8 temp path")
    }

    /// `skypipe -s URL --creds FILE ARGS`, the server and login named on the command line
    /// alone (no NATS_* variables). [`Bench::cmd`] gives them as NATS_URL and NATS_CREDS.
    pub fn creds_cmd(&self, args: &[&str]) -> Command {
        let mut c = bare_cmd(&self.path("home"));
        c.args(["-s", &self.url(), "--creds", self.creds_str()]);
        c.args(args);
        c
    }

    /// A connected client of the user account.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_credentials_file(&self.creds)
            .await
            .expect("read the creds file")
            .connect(self.bench.url())
            .await
            .expect("the user logs in")
    }

    /// The account's JetStream info (`$JS.API.INFO`), as the server reports it.
    pub fn account_info(&self) -> Value {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let client = self.client().await;
            let reply = client
                .request("$JS.API.INFO", "".into())
                .await
                .expect("account info");
            serde_json::from_slice(&reply.payload).expect("JSON")
        })
    }

    /// The `max_bytes` of one of skypipe's streams (-1: none).
    pub fn stream_max_bytes(&self, stream: &str) -> i64 {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let js = async_nats::jetstream::new(self.client().await);
            let mut s = js.get_stream(stream).await.expect("the stream exists");
            s.info().await.expect("stream info").config.max_bytes
        })
    }
}

impl Deref for OperatorBench {
    type Target = Bench;
    fn deref(&self) -> &Bench {
        &self.bench
    }
}
