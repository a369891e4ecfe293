//! The pipe protocol without any IO: pipe names, subjects, stream names, and the headers
//! that carry a payload's identity, order, end and checksum. `docs/protocol.md` is the
//! prose version of this module; keep the two in step.

use std::fmt;
use std::time::Duration;

use async_nats::HeaderMap;

/// The highest protocol version this skypipe understands (`Skypipe-Version`).
pub(crate) const VERSION: u32 = 2;
/// The version tickets and plain chunks carry: version-1 receivers read them.
pub(crate) const VERSION_PLAIN: u32 = 1;
/// The version sealed chunks carry, so that a version-1 receiver refuses them instead of
/// writing ciphertext.
pub(crate) const VERSION_SEALED: u32 = 2;
/// The pipe used when none is named.
pub(crate) const DEFAULT_PIPE: &str = "default";
/// The subject prefix used when none is configured.
pub(crate) const DEFAULT_PREFIX: &str = "skypipe";
/// Largest chunk payload; smaller when the server's `max_payload` asks for it.
pub(crate) const MAX_CHUNK: usize = 256 * 1024;
/// Room left in each message for headers, below the server's `max_payload`.
pub(crate) const HEADER_ROOM: usize = 4 * 1024;
/// Longest pipe name.
pub(crate) const MAX_NAME: usize = 128;

pub(crate) const H_VERSION: &str = "Skypipe-Version";
pub(crate) const H_ID: &str = "Skypipe-Id";
pub(crate) const H_CHUNK: &str = "Skypipe-Chunk";
pub(crate) const H_OFFSET: &str = "Skypipe-Offset";
pub(crate) const H_PRIOR_CRC: &str = "Skypipe-Prior-Crc32";
pub(crate) const H_END: &str = "Skypipe-End";
pub(crate) const H_TOTAL_CHUNKS: &str = "Skypipe-Total-Chunks";
pub(crate) const H_TOTAL_BYTES: &str = "Skypipe-Total-Bytes";
pub(crate) const H_TOTAL_CRC: &str = "Skypipe-Total-Crc32";
pub(crate) const H_REASON: &str = "Skypipe-Reason";
/// On a ticket, optional: the payload's size in bytes, when the sender knew it in advance.
pub(crate) const H_SIZE: &str = "Skypipe-Size";
pub(crate) const H_SEAL: &str = "Skypipe-Seal";
pub(crate) const H_SALT: &str = "Skypipe-Salt";
pub(crate) const H_KEY_CHECK: &str = "Skypipe-Key-Check";
/// On a ticket: the sender takes live acknowledgements (docs/protocol.md, "The live path").
pub(crate) const H_LIVE: &str = "Skypipe-Live";
pub(crate) const H_LIVE_KEY: &str = "Skypipe-Live-Key";
pub(crate) const H_LIVE_MAC: &str = "Skypipe-Live-Mac";
/// On a live acknowledgement: the taker's random token, the same on all of its messages.
pub(crate) const H_TAKER: &str = "Skypipe-Taker";
/// On a live acknowledgement: chunks `0..K` are written.
pub(crate) const H_WRITTEN: &str = "Skypipe-Written";
pub(crate) const H_NATS_TTL: &str = "Nats-TTL";
pub(crate) const H_NATS_MSG_ID: &str = "Nats-Msg-Id";

/// Why a pipe name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("pipe name is empty")]
    Empty,
    #[error("pipe name is {0} characters long; the limit is {MAX_NAME}")]
    TooLong(usize),
    #[error("pipe name {name:?} has {ch:?} at position {pos}; only letters, digits, '-' and '_' are allowed")]
    BadChar { name: String, ch: char, pos: usize },
}

/// A validated pipe name: 1 to 128 of `[A-Za-z0-9_-]`, so it can never be a NATS wildcard
/// nor reach into another pipe's subjects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PipeName(String);

impl PipeName {
    pub(crate) fn new(name: &str) -> Result<Self, NameError> {
        check_token(name)?;
        Ok(PipeName(name.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PipeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PipeName::new(s)
    }
}

/// The rule shared by pipe names and subject prefixes.
pub(crate) fn check_token(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let count = name.chars().count();
    if count > MAX_NAME {
        return Err(NameError::TooLong(count));
    }
    if let Some((pos, ch)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadChar {
            name: name.to_string(),
            ch,
            pos: pos + 1,
        });
    }
    Ok(())
}

/// Subjects and stream names under one prefix (a namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Result<Self, NameError> {
        check_token(prefix)?;
        Ok(Layout {
            prefix: prefix.to_string(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Limits-retention stream holding every payload's chunks.
    pub(crate) fn data_stream(&self) -> String {
        format!("{}-data", self.prefix)
    }

    /// Work-queue stream holding one ticket per payload, in arrival order.
    pub(crate) fn queue_stream(&self) -> String {
        format!("{}-queue", self.prefix)
    }

    pub(crate) fn data_wildcard(&self) -> String {
        format!("{}.data.>", self.prefix)
    }

    pub(crate) fn queue_wildcard(&self) -> String {
        format!("{}.q.*", self.prefix)
    }

    /// All chunks of all payloads of one pipe.
    pub(crate) fn pipe_data_wildcard(&self, pipe: &PipeName) -> String {
        format!("{}.data.{}.*", self.prefix, pipe)
    }

    /// The chunks of one payload.
    pub(crate) fn payload_subject(&self, pipe: &PipeName, id: &PayloadId) -> String {
        format!("{}.data.{}.{}", self.prefix, pipe, id)
    }

    /// The subject of a payload named by a pipe and an id read back from the server.
    pub(crate) fn payload_subject_of(&self, pipe: &str, id: &str) -> String {
        format!("{}.data.{pipe}.{id}", self.prefix)
    }

    /// Where a pipe's tickets go.
    pub(crate) fn queue_subject(&self, pipe: &PipeName) -> String {
        format!("{}.q.{}", self.prefix, pipe)
    }

    /// Where a sender publishes the chunks of a payload whose taker asked for them live
    /// (core NATS, not stored).
    pub(crate) fn live_subject(&self, pipe: &PipeName, id: &PayloadId) -> String {
        format!("{}.live.{}.{}", self.prefix, pipe, id)
    }

    /// The live chunks of every payload of one pipe (for listeners).
    pub(crate) fn pipe_live_wildcard(&self, pipe: &PipeName) -> String {
        format!("{}.live.{}.*", self.prefix, pipe)
    }

    /// Where a payload's taker asks for its chunks live and acknowledges what it wrote.
    pub(crate) fn live_ack_subject(&self, pipe: &PipeName, id: &PayloadId) -> String {
        Self::ack_subject_of(&self.live_subject(pipe, id))
    }

    /// The acknowledgement subject of the payload whose live chunks came on `live_subject`.
    pub(crate) fn ack_subject_of(live_subject: &str) -> String {
        format!("{live_subject}.ack")
    }

    /// Where running skypipes announce themselves (core NATS, not stored).
    pub(crate) fn presence_subject(&self, pipe: &PipeName) -> String {
        format!("{}.presence.{}", self.prefix, pipe)
    }

    pub(crate) fn presence_wildcard(&self) -> String {
        format!("{}.presence.*", self.prefix)
    }

    /// The durable work-queue consumer that hands out a pipe's tickets.
    pub(crate) fn queue_consumer(&self, pipe: &PipeName) -> String {
        pipe.to_string()
    }
}

/// A payload's identity: 16 lowercase hex digits, random.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PayloadId(String);

impl PayloadId {
    pub(crate) fn random() -> Self {
        PayloadId(format!("{:016x}", rand::random::<u64>()))
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| PayloadId(s.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `Nats-Msg-Id` of the ticket.
    pub(crate) fn ticket_msg_id(&self) -> String {
        format!("{}.t", self.0)
    }

    /// `Nats-Msg-Id` of chunk `n`.
    pub(crate) fn chunk_msg_id(&self, n: u64) -> String {
        format!("{}.{}", self.0, n)
    }
}

/// The `Nats-Msg-Id` of an abort marker stored in place of every chunk of its payload.
pub(crate) fn abort_msg_id(id: &PayloadId) -> String {
    format!("{}.abort", id.as_str())
}

impl fmt::Display for PayloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a payload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Complete: totals to verify.
    Eof(Totals),
    /// The sender gave up (Ctrl-C, read error); the reason is free text.
    Abort { totals: Totals, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) chunks: u64,
    pub(crate) bytes: u64,
    pub(crate) crc: u32,
}

/// The one sealing method there is (`Skypipe-Seal`): Argon2id with 19 MiB, 2 passes and
/// 1 lane derives the payload's key from the secret and the salt; XChaCha20-Poly1305 seals
/// each chunk. Another method or other parameters get another name.
pub(crate) const SEAL_SUITE: &str = "argon2id-19m-2t-1p+xchacha20poly1305";
/// Bytes of salt, and of key check, in the headers of a sealed chunk.
pub(crate) const SALT_LEN: usize = 16;
pub(crate) const KEY_CHECK_LEN: usize = 16;

/// The headers that mark a chunk as sealed: the payload's salt and key check (the same on
/// every chunk of a payload, so a listener that joins late can derive the key too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal {
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) check: [u8; KEY_CHECK_LEN],
}

/// What the headers of one chunk say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkMeta {
    pub(crate) id: PayloadId,
    pub(crate) chunk: u64,
    /// Payload bytes (plaintext) before this chunk.
    pub(crate) offset: u64,
    /// CRC-32 of the bodies before this chunk, as stored (ciphertext when sealed).
    pub(crate) prior_crc: u32,
    pub(crate) end: Option<End>,
    /// Present when the body is sealed (`docs/protocol.md`, "Sealed payloads").
    pub(crate) seal: Option<Seal>,
}

/// A chunk whose headers do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("message has no headers")]
    NoHeaders,
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {name} has a bad value {value:?}")]
    Bad { name: &'static str, value: String },
    #[error(
        "protocol version {0} is newer than this skypipe understands ({VERSION}); upgrade skypipe"
    )]
    Version(u32),
    #[error("the payload is sealed with {0:?}, which this skypipe does not know; upgrade skypipe")]
    UnknownSeal(String),
}

fn get<'a>(h: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

fn req<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, HeaderError> {
    get(h, name).ok_or(HeaderError::Missing(name))
}

fn num(h: &HeaderMap, name: &'static str) -> Result<u64, HeaderError> {
    let v = req(h, name)?;
    v.trim().parse().map_err(|_| HeaderError::Bad {
        name,
        value: v.to_string(),
    })
}

fn crc(h: &HeaderMap, name: &'static str) -> Result<u32, HeaderError> {
    let v = req(h, name)?;
    let t = v.trim();
    if t.len() != 8 {
        return Err(HeaderError::Bad {
            name,
            value: v.to_string(),
        });
    }
    u32::from_str_radix(t, 16).map_err(|_| HeaderError::Bad {
        name,
        value: v.to_string(),
    })
}

fn hex_bytes<const N: usize>(h: &HeaderMap, name: &'static str) -> Result<[u8; N], HeaderError> {
    let v = req(h, name)?;
    let bad = || HeaderError::Bad {
        name,
        value: v.to_string(),
    };
    let t = v.trim();
    if t.len() != 2 * N || !t.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The seal headers of a chunk, if it has any.
fn parse_seal(h: &HeaderMap) -> Result<Option<Seal>, HeaderError> {
    let Some(suite) = get(h, H_SEAL).map(str::trim) else {
        return Ok(None);
    };
    if suite != SEAL_SUITE {
        return Err(HeaderError::UnknownSeal(suite.to_string()));
    }
    Ok(Some(Seal {
        salt: hex_bytes(h, H_SALT)?,
        check: hex_bytes(h, H_KEY_CHECK)?,
    }))
}

/// An abort reason as a header can hold it: no control characters (header values cannot
/// hold line breaks), no surrounding spaces. Sealed chunks bind this form.
pub(crate) fn clean_reason(reason: &str) -> String {
    let clean: String = reason.chars().filter(|c| !c.is_control()).collect();
    clean.trim().to_string()
}

/// Checks `Skypipe-Version`; a missing header means version 1.
pub(crate) fn check_version(h: &HeaderMap) -> Result<(), HeaderError> {
    if let Some(v) = get(h, H_VERSION) {
        let major: u32 = v.trim().parse().map_err(|_| HeaderError::Bad {
            name: H_VERSION,
            value: v.to_string(),
        })?;
        if major > VERSION {
            return Err(HeaderError::Version(major));
        }
    }
    Ok(())
}

/// Parses a ticket's headers into the payload id it announces.
pub(crate) fn parse_ticket(h: Option<&HeaderMap>) -> Result<PayloadId, HeaderError> {
    let h = h.ok_or(HeaderError::NoHeaders)?;
    check_version(h)?;
    let v = req(h, H_ID)?;
    PayloadId::parse(v.trim()).ok_or(HeaderError::Bad {
        name: H_ID,
        value: v.to_string(),
    })
}

/// Parses a chunk's headers.
pub(crate) fn parse_chunk(h: Option<&HeaderMap>) -> Result<ChunkMeta, HeaderError> {
    let h = h.ok_or(HeaderError::NoHeaders)?;
    check_version(h)?;
    let id_text = req(h, H_ID)?;
    let id = PayloadId::parse(id_text.trim()).ok_or(HeaderError::Bad {
        name: H_ID,
        value: id_text.to_string(),
    })?;
    let chunk = num(h, H_CHUNK)?;
    let offset = num(h, H_OFFSET)?;
    let prior_crc = crc(h, H_PRIOR_CRC)?;
    let end = match get(h, H_END).map(str::trim) {
        None => None,
        Some(kind @ ("eof" | "abort")) => {
            let totals = Totals {
                chunks: num(h, H_TOTAL_CHUNKS)?,
                bytes: num(h, H_TOTAL_BYTES)?,
                crc: crc(h, H_TOTAL_CRC)?,
            };
            Some(if kind == "eof" {
                End::Eof(totals)
            } else {
                let reason = get(h, H_REASON).unwrap_or("no reason given").to_string();
                End::Abort { totals, reason }
            })
        }
        Some(other) => {
            return Err(HeaderError::Bad {
                name: H_END,
                value: other.to_string(),
            })
        }
    };
    let seal = parse_seal(h)?;
    Ok(ChunkMeta {
        id,
        chunk,
        offset,
        prior_crc,
        end,
        seal,
    })
}

/// Length of a public key and of a MAC in a ticket or an acknowledgement, in bytes (the keys
/// and MACs of `protocol::proof`).
pub(crate) const KEY_LEN: usize = 32;

/// The TTL header value: whole seconds, at least one.
pub(crate) fn ttl_value(ttl: Duration) -> String {
    ttl.as_secs().max(1).to_string()
}

/// Headers of a ticket; `size` when the sender knows the payload's size in advance.
pub(crate) fn ticket_headers(
    id: &PayloadId,
    ttl: Option<Duration>,
    size: Option<u64>,
    live: Option<&[u8; KEY_LEN]>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_VERSION, VERSION_PLAIN.to_string().as_str());
    h.insert(H_ID, id.as_str());
    h.insert(H_NATS_MSG_ID, id.ticket_msg_id().as_str());
    if let Some(ttl) = ttl {
        h.insert(H_NATS_TTL, ttl_value(ttl).as_str());
    }
    if let Some(size) = size {
        h.insert(H_SIZE, size.to_string().as_str());
    }
    if let Some(key) = live {
        h.insert(H_LIVE, "1");
        h.insert(H_LIVE_KEY, hex(key).as_str());
    }
    h
}

/// Whether a ticket's sender takes live acknowledgements.
pub(crate) fn ticket_offers_live(h: Option<&HeaderMap>) -> bool {
    h.and_then(|h| get(h, H_LIVE))
        .is_some_and(|v| v.trim() == "1")
}

/// The sender's public key for proven acknowledgements, when its ticket offers the live path
/// with one.
pub(crate) fn ticket_live_key(h: Option<&HeaderMap>) -> Option<[u8; KEY_LEN]> {
    let h = h?;
    if !ticket_offers_live(Some(h)) {
        return None;
    }
    hex_bytes(h, H_LIVE_KEY).ok()
}

/// A taker's proof that an acknowledgement is its own (see `protocol::proof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveProof {
    /// The taker's public key.
    pub(crate) key: [u8; KEY_LEN],
    /// The MAC of the acknowledgement under the key it shares with the sender.
    pub(crate) mac: [u8; KEY_LEN],
}

/// What a taker tells the sender of a payload on its live acknowledgement subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveAck {
    pub(crate) id: PayloadId,
    /// Random per taker (per taking of a ticket).
    pub(crate) taker: String,
    /// Chunks `0..written` are written to the taker's output.
    pub(crate) written: u64,
    /// The taker stops (gives the payload back, or is done with it): send the rest stored.
    pub(crate) stop: bool,
    /// From a listener, not the taker: the sender paces itself to it, within limits.
    pub(crate) listener: bool,
    /// From a taker that got a key on the ticket: its proof.
    pub(crate) proof: Option<LiveProof>,
}

/// Headers of a live acknowledgement (its body is empty).
pub(crate) fn live_ack_headers(ack: &LiveAck) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_VERSION, VERSION_PLAIN.to_string().as_str());
    h.insert(H_ID, ack.id.as_str());
    h.insert(H_TAKER, ack.taker.as_str());
    h.insert(H_WRITTEN, ack.written.to_string().as_str());
    let word = match (ack.listener, ack.stop) {
        (false, false) => "go",
        (false, true) => "stop",
        (true, false) => "listen",
        (true, true) => "listen-stop",
    };
    h.insert(H_LIVE, word);
    if let Some(proof) = &ack.proof {
        h.insert(H_LIVE_KEY, hex(&proof.key).as_str());
        h.insert(H_LIVE_MAC, hex(&proof.mac).as_str());
    }
    h
}

/// Parses a live acknowledgement.
pub(crate) fn parse_live_ack(h: Option<&HeaderMap>) -> Result<LiveAck, HeaderError> {
    let h = h.ok_or(HeaderError::NoHeaders)?;
    check_version(h)?;
    let id_text = req(h, H_ID)?;
    let id = PayloadId::parse(id_text.trim()).ok_or(HeaderError::Bad {
        name: H_ID,
        value: id_text.to_string(),
    })?;
    let taker = req(h, H_TAKER)?.trim().to_string();
    let written = num(h, H_WRITTEN)?;
    let (listener, stop) = match get(h, H_LIVE).map(str::trim) {
        Some("go") | None => (false, false),
        Some("stop") => (false, true),
        Some("listen") => (true, false),
        Some("listen-stop") => (true, true),
        Some(other) => {
            return Err(HeaderError::Bad {
                name: H_LIVE,
                value: other.to_string(),
            })
        }
    };
    let proof = match (get(h, H_LIVE_KEY), get(h, H_LIVE_MAC)) {
        (None, None) => None,
        _ => Some(LiveProof {
            key: hex_bytes(h, H_LIVE_KEY)?,
            mac: hex_bytes(h, H_LIVE_MAC)?,
        }),
    };
    Ok(LiveAck {
        id,
        taker,
        written,
        stop,
        listener,
        proof,
    })
}

/// The size a ticket announces, if any (for progress only: the chunks' totals are what is
/// checked).
pub(crate) fn ticket_size(h: Option<&HeaderMap>) -> Option<u64> {
    h.and_then(|h| get(h, H_SIZE))
        .and_then(|v| v.trim().parse().ok())
}

/// A whole payload of at most this many bytes (body as published) rides in its ticket as
/// well as in its chunk: a receiver then writes it without asking the data stream.
pub(crate) const INLINE_MAX: usize = 16 * 1024;

/// Headers of a ticket that carries its payload's only chunk: the chunk's headers under the
/// ticket's message id.
pub(crate) fn inline_ticket_headers(chunk: &HeaderMap, id: &PayloadId) -> HeaderMap {
    let mut h = chunk.clone();
    h.insert(H_NATS_MSG_ID, id.ticket_msg_id().as_str());
    h
}

/// Whether a ticket carries its payload's chunk (a ticket without one has no chunk number).
pub(crate) fn ticket_is_inline(h: Option<&HeaderMap>) -> bool {
    h.is_some_and(|h| h.get(H_CHUNK).is_some())
}

/// Headers of chunk `meta.chunk`.
pub(crate) fn chunk_headers(meta: &ChunkMeta, ttl: Option<Duration>) -> HeaderMap {
    let mut h = HeaderMap::new();
    let version = match meta.seal {
        Some(_) => VERSION_SEALED,
        None => VERSION_PLAIN,
    };
    h.insert(H_VERSION, version.to_string().as_str());
    h.insert(H_ID, meta.id.as_str());
    h.insert(H_NATS_MSG_ID, meta.id.chunk_msg_id(meta.chunk).as_str());
    h.insert(H_CHUNK, meta.chunk.to_string().as_str());
    h.insert(H_OFFSET, meta.offset.to_string().as_str());
    h.insert(H_PRIOR_CRC, format!("{:08x}", meta.prior_crc).as_str());
    if let Some(ttl) = ttl {
        h.insert(H_NATS_TTL, ttl_value(ttl).as_str());
    }
    if let Some(seal) = &meta.seal {
        h.insert(H_SEAL, SEAL_SUITE);
        h.insert(H_SALT, hex(&seal.salt).as_str());
        h.insert(H_KEY_CHECK, hex(&seal.check).as_str());
    }
    let (kind, totals, reason) = match &meta.end {
        None => return h,
        Some(End::Eof(t)) => ("eof", t, None),
        Some(End::Abort { totals, reason }) => ("abort", totals, Some(reason)),
    };
    h.insert(H_END, kind);
    h.insert(H_TOTAL_CHUNKS, totals.chunks.to_string().as_str());
    h.insert(H_TOTAL_BYTES, totals.bytes.to_string().as_str());
    h.insert(H_TOTAL_CRC, format!("{:08x}", totals.crc).as_str());
    if let Some(reason) = reason {
        h.insert(H_REASON, clean_reason(reason).as_str());
    }
    h
}

/// Chunks sent on the live path may be this big: fewer, bigger messages cost the server and
/// both ends less per byte (measured: 15% more throughput than 256 KiB chunks on loopback).
pub(crate) const MAX_LIVE_CHUNK: usize = 1024 * 1024;

/// The size of a chunk sent live for a server's `max_payload`.
pub(crate) fn live_chunk_size(max_payload: usize) -> usize {
    MAX_LIVE_CHUNK
        .min(max_payload.saturating_sub(HEADER_ROOM))
        .max(chunk_size(max_payload))
}

/// The chunk size for a server's `max_payload`.
pub(crate) fn chunk_size(max_payload: usize) -> usize {
    MAX_CHUNK
        .min(max_payload.saturating_sub(HEADER_ROOM))
        .max(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for n in ["a", "files", "A-b_9", &"x".repeat(128)] {
            assert!(PipeName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn bad_names_name_the_problem() {
        assert_eq!(PipeName::new(""), Err(NameError::Empty));
        assert_eq!(
            PipeName::new(&"x".repeat(129)),
            Err(NameError::TooLong(129))
        );
        for (n, ch) in [
            ("a.b", '.'),
            ("*", '*'),
            (">", '>'),
            ("a b", ' '),
            ("é", 'é'),
        ] {
            match PipeName::new(n) {
                Err(NameError::BadChar { ch: c, .. }) => assert_eq!(c, ch),
                other => panic!("{n}: {other:?}"),
            }
        }
    }

    #[test]
    fn subjects() {
        let l = Layout::new("skypipe").expect("prefix");
        let p = PipeName::new("files").expect("name");
        let id = PayloadId("00ff".into());
        assert_eq!(l.payload_subject(&p, &id), "skypipe.data.files.00ff");
        assert_eq!(l.queue_subject(&p), "skypipe.q.files");
        assert_eq!(l.pipe_data_wildcard(&p), "skypipe.data.files.*");
        assert_eq!(l.data_stream(), "skypipe-data");
    }

    #[test]
    fn chunk_headers_round_trip() {
        let id = PayloadId::random();
        for end in [
            None,
            Some(End::Eof(Totals {
                chunks: 3,
                bytes: 10,
                crc: 0xdead_beef,
            })),
            Some(End::Abort {
                totals: Totals {
                    chunks: 1,
                    bytes: 0,
                    crc: 0,
                },
                reason: "interrupted\n".into(),
            }),
        ] {
            let sealed = Seal {
                salt: [0xa5; SALT_LEN],
                check: *b"0123456789abcdef",
            };
            for seal in [None, Some(sealed)] {
                let meta = ChunkMeta {
                    id: id.clone(),
                    chunk: 2,
                    offset: 7,
                    prior_crc: 0x0102_0304,
                    end: end.clone(),
                    seal,
                };
                let h = chunk_headers(&meta, Some(Duration::from_secs(60)));
                let mut back = parse_chunk(Some(&h)).expect("parses");
                if let Some(End::Abort { reason, .. }) = &mut back.end {
                    assert_eq!(reason, "interrupted");
                    *reason = "interrupted\n".into();
                }
                assert_eq!(back, meta);
                assert_eq!(h.get(H_NATS_TTL).map(|v| v.as_str()), Some("60"));
                let version = if seal.is_some() { "2" } else { "1" };
                assert_eq!(h.get(H_VERSION).map(|v| v.as_str()), Some(version));
            }
        }
    }

    #[test]
    fn an_inline_ticket_is_a_ticket_and_its_chunk() {
        let id = PayloadId::random();
        let meta = ChunkMeta {
            id: id.clone(),
            chunk: 0,
            offset: 0,
            prior_crc: 0,
            end: Some(End::Eof(Totals {
                chunks: 1,
                bytes: 3,
                crc: 0x1234_5678,
            })),
            seal: None,
        };
        let chunk = chunk_headers(&meta, None);
        let ticket = inline_ticket_headers(&chunk, &id);
        assert_eq!(parse_ticket(Some(&ticket)), Ok(id.clone()));
        assert_eq!(parse_chunk(Some(&ticket)), Ok(meta));
        let msg_id = ticket.get(H_NATS_MSG_ID).map(|v| v.as_str().to_string());
        assert_eq!(msg_id, Some(id.ticket_msg_id()));
        assert_ne!(
            chunk.get(H_NATS_MSG_ID).map(|v| v.as_str().to_string()),
            msg_id,
            "the chunk and the ticket are de-duplicated apart"
        );
        assert!(ticket_is_inline(Some(&ticket)));
        assert!(!ticket_is_inline(Some(&ticket_headers(
            &id, None, None, None
        ))));
        let sized = ticket_headers(&id, None, Some(3_000_000), None);
        assert_eq!(ticket_size(Some(&sized)), Some(3_000_000));
        assert_eq!(parse_ticket(Some(&sized)).ok(), Some(id.clone()));
        assert_eq!(
            ticket_size(Some(&ticket_headers(&id, None, None, None))),
            None
        );
        assert!(!ticket_is_inline(None));
    }

    #[test]
    fn live_acknowledgements_round_trip_and_bad_ones_are_refused() {
        let ack = LiveAck {
            id: PayloadId::random(),
            taker: "0123456789abcdef".into(),
            written: 42,
            stop: false,
            listener: false,
            proof: None,
        };
        assert_eq!(
            parse_live_ack(Some(&live_ack_headers(&ack))),
            Ok(ack.clone())
        );
        let stop = LiveAck { stop: true, ..ack };
        assert_eq!(
            parse_live_ack(Some(&live_ack_headers(&stop))),
            Ok(stop.clone())
        );
        let mut bad = live_ack_headers(&stop);
        bad.insert(H_WRITTEN, "many");
        assert!(parse_live_ack(Some(&bad)).is_err());
        let mut bad = live_ack_headers(&stop);
        bad.insert(H_LIVE, "maybe");
        assert!(parse_live_ack(Some(&bad)).is_err());
        assert!(parse_live_ack(None).is_err());
        let proven = LiveAck {
            proof: Some(LiveProof {
                key: [7; KEY_LEN],
                mac: [9; KEY_LEN],
            }),
            ..stop.clone()
        };
        assert_eq!(
            parse_live_ack(Some(&live_ack_headers(&proven))),
            Ok(proven.clone())
        );
        let mut half = live_ack_headers(&stop);
        half.insert(H_LIVE_KEY, hex(&[7; KEY_LEN]).as_str());
        assert!(parse_live_ack(Some(&half)).is_err(), "a key without a MAC");
        let id = PayloadId::random();
        let offer = ticket_headers(&id, None, None, Some(&[5; KEY_LEN]));
        assert!(ticket_offers_live(Some(&offer)));
        assert_eq!(ticket_live_key(Some(&offer)), Some([5; KEY_LEN]));
        let plain = ticket_headers(&id, None, None, None);
        assert!(!ticket_offers_live(Some(&plain)));
        assert_eq!(ticket_live_key(Some(&plain)), None);
        let layout = Layout::new("team").expect("layout");
        let pipe = PipeName::new("p").expect("pipe");
        let live = layout.live_subject(&pipe, &id);
        assert_eq!(live, format!("team.live.p.{id}"));
        assert_eq!(layout.live_ack_subject(&pipe, &id), format!("{live}.ack"));
        assert!(!layout.data_wildcard().starts_with("team.live"));
    }

    #[test]
    fn seal_headers_are_checked() {
        let meta = ChunkMeta {
            id: PayloadId::random(),
            chunk: 0,
            offset: 0,
            prior_crc: 0,
            end: None,
            seal: Some(Seal {
                salt: [1; SALT_LEN],
                check: [2; KEY_CHECK_LEN],
            }),
        };
        let mut h = chunk_headers(&meta, None);
        h.insert(H_SALT, "0101");
        assert!(matches!(
            parse_chunk(Some(&h)),
            Err(HeaderError::Bad { name: H_SALT, .. })
        ));
        h.insert(H_SEAL, "rot13");
        assert_eq!(
            parse_chunk(Some(&h)),
            Err(HeaderError::UnknownSeal("rot13".into()))
        );
        assert_eq!(clean_reason(" a\nb\t "), "ab");
    }

    #[test]
    fn broken_headers_are_errors() {
        let mut h = HeaderMap::new();
        h.insert(H_ID, "abc");
        assert_eq!(parse_chunk(Some(&h)), Err(HeaderError::Missing(H_CHUNK)));
        h.insert(H_CHUNK, "x");
        assert!(matches!(
            parse_chunk(Some(&h)),
            Err(HeaderError::Bad { .. })
        ));
        h.insert(H_VERSION, "9");
        assert_eq!(parse_chunk(Some(&h)), Err(HeaderError::Version(9)));
        assert_eq!(parse_chunk(None), Err(HeaderError::NoHeaders));
    }

    proptest::proptest! {
        // Whatever another client puts in the headers, parsing answers and never panics.
        #[test]
        fn parsing_arbitrary_headers_never_panics(
            values in proptest::collection::vec("\\PC{0,24}", 10),
            present in proptest::collection::vec(proptest::bool::ANY, 10),
        ) {
            let names = [
                H_VERSION, H_ID, H_CHUNK, H_OFFSET, H_PRIOR_CRC, H_END,
                H_TOTAL_CHUNKS, H_TOTAL_BYTES, H_TOTAL_CRC, H_REASON,
            ];
            let mut h = HeaderMap::new();
            for ((name, value), on) in names.iter().zip(&values).zip(&present) {
                if *on {
                    h.insert(*name, value.as_str());
                }
            }
            let _ = parse_chunk(Some(&h));
            let _ = parse_ticket(Some(&h));
        }

        #[test]
        fn valid_chunk_headers_round_trip(
            chunk in 0u64..u64::MAX, offset in 0u64..u64::MAX, crc in proptest::num::u32::ANY,
            end in proptest::option::of((1u64..1000, 0u64..1 << 40, proptest::num::u32::ANY)),
        ) {
            let meta = ChunkMeta {
                id: PayloadId::random(),
                chunk,
                offset,
                prior_crc: crc,
                end: end.map(|(chunks, bytes, crc)| End::Eof(Totals { chunks, bytes, crc })),
                seal: None,
            };
            let back = parse_chunk(Some(&chunk_headers(&meta, None)));
            proptest::prop_assert_eq!(back, Ok(meta));
        }
    }

    #[test]
    fn chunk_size_fits_max_payload() {
        assert_eq!(chunk_size(1024 * 1024), MAX_CHUNK);
        assert_eq!(chunk_size(64 * 1024), 60 * 1024);
        assert_eq!(live_chunk_size(1024 * 1024), 1020 * 1024);
        assert_eq!(live_chunk_size(8 * 1024 * 1024), MAX_LIVE_CHUNK);
        assert_eq!(live_chunk_size(64 * 1024), 60 * 1024);
    }
}
