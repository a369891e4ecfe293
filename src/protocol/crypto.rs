//! Sealed payloads: end-to-end encryption that the server cannot read.
//!
//! With a secret (`SKYPIPE_SECRET` or `--secret-file`) a sender derives a key for each payload
//! from the secret and a random salt with Argon2id, and seals every chunk with
//! XChaCha20-Poly1305 under a fresh random nonce. The associated data of each chunk binds the
//! prefix, the pipe, the payload id, the chunk number, its offset and its end (kind, totals
//! and reason), so a chunk cannot be altered, moved to another place, payload or pipe, or
//! turned into (or out of) the last one without the receiver noticing. `docs/protocol.md`,
//! "Sealed payloads", is the prose version.
//!
//! A receiver opens each chunk before writing a byte of it. Whether it may read a payload at
//! all (a secret for a sealed one; `--allow-plaintext` for a plain one when it has a secret)
//! is decided at the first chunk, so a refused payload writes nothing.

use std::fmt;
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::protocol::pipe::{ChunkMeta, End, PayloadId, Seal, KEY_CHECK_LEN, SALT_LEN, SEAL_SUITE};

/// Random nonce at the front of a sealed body.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305 tag at the end of a sealed body.
pub(crate) const TAG_LEN: usize = 16;
/// How much longer a sealed body is than the bytes it holds.
pub(crate) const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Argon2id cost: OWASP's first recommended setting. About 60 ms on one core of a busy
/// 2-core machine, paid once per payload by each end (64 MiB and 3 passes took 270 ms and
/// would break the 32 MiB memory budget); `SEAL_SUITE` names these values.
const KDF_MEMORY_KIB: u32 = 19 * 1024;
const KDF_PASSES: u32 = 2;
const KDF_LANES: u32 = 1;
const KEY_LEN: usize = 32;

/// The user's secret. Never printed; zeroed when the last copy goes.
#[derive(Clone)]
pub(crate) struct Secret {
    bytes: Arc<Zeroizing<Vec<u8>>>,
    /// One key derivation at a time: each holds 19 MiB, and a follower may start many
    /// payloads at once.
    gate: Arc<Semaphore>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Secret {
            bytes: Arc::new(Zeroizing::new(bytes)),
            gate: Arc::new(Semaphore::new(1)),
        }
    }

    /// Derives the key of a payload sealed with `salt`, off the async threads.
    pub(crate) async fn derive(&self, salt: [u8; SALT_LEN]) -> anyhow::Result<PayloadKey> {
        let _turn = self.gate.acquire().await?;
        let bytes = self.bytes.clone();
        tokio::task::spawn_blocking(move || derive_blocking(&bytes, salt)).await?
    }

    /// Derives the key of a new payload under a fresh random salt.
    pub(crate) async fn new_payload_key(&self) -> anyhow::Result<PayloadKey> {
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        self.derive(salt).await
    }
}

/// What a command does about sealing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Crypto {
    /// Senders seal with it; receivers open with it and refuse plain payloads.
    pub(crate) secret: Option<Secret>,
    /// A receiver with a secret accepts plain payloads too.
    pub(crate) allow_plaintext: bool,
}

/// The key of one payload, and the headers that name it.
pub(crate) struct PayloadKey {
    cipher: XChaCha20Poly1305,
    seal: Seal,
}

fn derive_blocking(secret: &[u8], salt: [u8; SALT_LEN]) -> anyhow::Result<PayloadKey> {
    let params = Params::new(
        KDF_MEMORY_KIB,
        KDF_PASSES,
        KDF_LANES,
        Some(KEY_LEN + KEY_CHECK_LEN),
    )
    .map_err(|e| anyhow::anyhow!("bad key derivation parameters: {e}"))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN + KEY_CHECK_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(secret, &salt, &mut out[..])
        .map_err(|e| anyhow::anyhow!("cannot derive a key from the secret: {e}"))?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&out[..KEY_LEN]));
    let mut check = [0u8; KEY_CHECK_LEN];
    check.copy_from_slice(&out[KEY_LEN..]);
    Ok(PayloadKey {
        cipher,
        seal: Seal { salt, check },
    })
}

/// Where a payload belongs: bound into every chunk, so a chunk copied to another pipe (or
/// another prefix) does not open there.
#[derive(Debug, Clone, Default)]
pub(crate) struct Place {
    pub(crate) prefix: String,
    pub(crate) pipe: String,
}

fn field(ad: &mut Vec<u8>, bytes: &[u8]) {
    ad.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    ad.extend_from_slice(bytes);
}

/// The associated data of a chunk: everything about it but its body and the checksums
/// (which cover the sealed bodies and so add nothing here). See docs/protocol.md.
pub(crate) fn associated_data(place: &Place, meta: &ChunkMeta) -> Vec<u8> {
    let mut ad = Vec::with_capacity(128);
    field(&mut ad, SEAL_SUITE.as_bytes());
    field(&mut ad, place.prefix.as_bytes());
    field(&mut ad, place.pipe.as_bytes());
    field(&mut ad, meta.id.as_str().as_bytes());
    ad.extend_from_slice(&meta.chunk.to_be_bytes());
    ad.extend_from_slice(&meta.offset.to_be_bytes());
    match &meta.end {
        None => ad.push(0),
        Some(End::Eof(t)) => {
            ad.push(1);
            ad.extend_from_slice(&t.chunks.to_be_bytes());
            ad.extend_from_slice(&t.bytes.to_be_bytes());
        }
        Some(End::Abort { totals, reason }) => {
            ad.push(2);
            ad.extend_from_slice(&totals.chunks.to_be_bytes());
            ad.extend_from_slice(&totals.bytes.to_be_bytes());
            field(
                &mut ad,
                crate::protocol::pipe::clean_reason(reason).as_bytes(),
            );
        }
    }
    ad
}

/// Seals the chunks of one payload.
pub(crate) struct Sealer {
    key: PayloadKey,
    place: Place,
}

impl Sealer {
    pub(crate) fn new(key: PayloadKey, place: Place) -> Self {
        Sealer { key, place }
    }

    /// The seal headers every chunk of this payload carries.
    pub(crate) fn seal_headers(&self) -> Seal {
        self.key.seal
    }

    /// The sealed body of a chunk: nonce, ciphertext, tag. `meta` is the chunk as it will
    /// be published (its `seal` set, its totals' CRC not yet known: it is not bound).
    pub(crate) fn seal(&self, meta: &ChunkMeta, plain: &[u8]) -> anyhow::Result<Bytes> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut body = BytesMut::with_capacity(plain.len() + OVERHEAD);
        body.extend_from_slice(&nonce);
        body.extend_from_slice(plain);
        let ad = associated_data(&self.place, meta);
        let tag = self
            .key
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &ad, &mut body[NONCE_LEN..])
            .map_err(|_| anyhow::anyhow!("cannot seal chunk {}", meta.chunk))?;
        body.extend_from_slice(&tag);
        Ok(body.freeze())
    }
}

/// Opens a sealed body; `None` when it does not authenticate.
fn open_body(key: &PayloadKey, ad: &[u8], body: &[u8]) -> Option<Bytes> {
    if body.len() < OVERHEAD {
        return None;
    }
    let (nonce, rest) = body.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plain = BytesMut::from(ciphertext);
    key.cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            ad,
            &mut plain,
            Tag::from_slice(tag),
        )
        .ok()?;
    Some(plain.freeze())
}

/// A payload this receiver may not or cannot read. Nothing of it was written, and a taker
/// leaves it in the pipe for a receiver that can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "payload {id} on pipe {pipe} is encrypted and no secret was given (set SKYPIPE_SECRET \
         or use --secret-file); nothing was written and the payload was left in the pipe"
    )]
    NoSecret { id: PayloadId, pipe: String },
    #[error(
        "payload {id} on pipe {pipe} was encrypted with a different secret; nothing was \
         written and the payload was left in the pipe"
    )]
    WrongSecret { id: PayloadId, pipe: String },
    #[error(
        "payload {id} on pipe {pipe} is not encrypted, and a receiver with a secret refuses \
         plain payloads unless given --allow-plaintext; nothing was written and the payload \
         was left in the pipe"
    )]
    Plaintext { id: PayloadId, pipe: String },
}

/// Whether an error is a [`Refused`] payload.
pub(crate) fn is_refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Refused>().is_some()
}

/// Why a chunk could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Refused(Refused),
    /// The chunk is not what its sender sealed there: a corrupt payload.
    Bad(String),
    /// Something on this side failed (the key derivation).
    Failed(anyhow::Error),
}

enum State {
    /// No chunk opened yet.
    Unknown,
    Plain,
    Sealed(PayloadKey),
}

/// Opens the chunks of one payload, in order, deciding at the first one whether this
/// receiver may read it.
pub(crate) struct Opener {
    crypto: Crypto,
    place: Place,
    state: State,
}

impl Default for Opener {
    /// No secret: plain payloads only.
    fn default() -> Self {
        Opener::new(Crypto::default(), Place::default())
    }
}

impl Opener {
    pub(crate) fn new(crypto: Crypto, place: Place) -> Self {
        Opener {
            crypto,
            place,
            state: State::Unknown,
        }
    }

    /// The bytes a chunk holds, or why it cannot be had.
    pub(crate) async fn open(&mut self, meta: &ChunkMeta, body: Bytes) -> Result<Bytes, OpenError> {
        if let State::Unknown = self.state {
            let pipe = self.place.pipe.clone();
            let refused =
                |r: fn(PayloadId, String) -> Refused| OpenError::Refused(r(meta.id.clone(), pipe));
            match (&meta.seal, &self.crypto.secret) {
                (None, Some(_)) if !self.crypto.allow_plaintext => {
                    return Err(refused(|id, pipe| Refused::Plaintext { id, pipe }))
                }
                (None, _) => self.state = State::Plain,
                (Some(_), None) => return Err(refused(|id, pipe| Refused::NoSecret { id, pipe })),
                (Some(seal), Some(secret)) => {
                    let key = secret.derive(seal.salt).await.map_err(OpenError::Failed)?;
                    if key.seal.check != seal.check {
                        return Err(refused(|id, pipe| Refused::WrongSecret { id, pipe }));
                    }
                    self.state = State::Sealed(key);
                }
            }
        }
        let n = meta.chunk;
        match (&self.state, &meta.seal) {
            (State::Plain, None) => Ok(body),
            (State::Plain, Some(_)) => Err(OpenError::Bad(format!(
                "chunk {n} is encrypted but the chunks before it were not"
            ))),
            (State::Sealed(_), None) => Err(OpenError::Bad(format!(
                "chunk {n} is not encrypted but the chunks before it were"
            ))),
            (State::Sealed(key), Some(seal)) if *seal != key.seal => Err(OpenError::Bad(format!(
                "chunk {n} is encrypted under another key than the chunks before it"
            ))),
            (State::Sealed(key), Some(_)) => {
                let ad = associated_data(&self.place, meta);
                open_body(key, &ad, &body).ok_or_else(|| {
                    OpenError::Bad(format!(
                        "chunk {n} failed authentication: it was altered, or does not belong \
                         at this place in this payload"
                    ))
                })
            }
            (State::Unknown, _) => Err(OpenError::Failed(anyhow::anyhow!(
                "chunk {n} was opened before the payload's kind was known"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pipe::Totals;

    fn place(pipe: &str) -> Place {
        Place {
            prefix: "skypipe".into(),
            pipe: pipe.into(),
        }
    }

    fn meta(id: &PayloadId, chunk: u64, offset: u64, seal: Seal, end: Option<End>) -> ChunkMeta {
        ChunkMeta {
            id: id.clone(),
            chunk,
            offset,
            prior_crc: 0,
            end,
            seal: Some(seal),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn with_secret(s: &str) -> Crypto {
        Crypto {
            secret: Some(Secret::new(s.as_bytes().to_vec())),
            allow_plaintext: false,
        }
    }

    #[test]
    fn sealed_chunks_open_only_in_their_place() {
        rt().block_on(async {
            let crypto = with_secret("correct horse");
            let secret = crypto.secret.clone().expect("secret");
            let key = secret.new_payload_key().await.expect("key");
            let sealer = Sealer::new(key, place("docs"));
            let seal = sealer.seal_headers();
            let id = PayloadId::random();
            let m0 = meta(&id, 0, 0, seal, None);
            let end = Some(End::Eof(Totals {
                chunks: 2,
                bytes: 8,
                crc: 0,
            }));
            let m1 = meta(&id, 1, 5, seal, end);
            let b0 = sealer.seal(&m0, b"hello").expect("seal");
            let b1 = sealer.seal(&m1, b"abc").expect("seal");
            assert_eq!(b0.len(), 5 + OVERHEAD);
            assert!(!b0.windows(5).any(|w| w == b"hello"));

            let mut o = Opener::new(crypto.clone(), place("docs"));
            assert_eq!(&o.open(&m0, b0.clone()).await.expect("opens")[..], b"hello");
            assert_eq!(&o.open(&m1, b1.clone()).await.expect("opens")[..], b"abc");

            // The same body at another chunk number, as another payload, on another pipe,
            // without its end, or with one bit flipped: none opens.
            let mut o = Opener::new(crypto.clone(), place("docs"));
            assert!(matches!(
                o.open(&meta(&id, 1, 0, seal, None), b0.clone()).await,
                Err(OpenError::Bad(_))
            ));
            let mut o = Opener::new(crypto.clone(), place("docs"));
            let other = meta(&PayloadId::random(), 0, 0, seal, None);
            assert!(matches!(
                o.open(&other, b0.clone()).await,
                Err(OpenError::Bad(_))
            ));
            let mut o = Opener::new(crypto.clone(), place("other"));
            assert!(matches!(
                o.open(&m0, b0.clone()).await,
                Err(OpenError::Bad(_))
            ));
            let mut o = Opener::new(crypto.clone(), place("docs"));
            o.open(&m0, b0.clone()).await.expect("opens");
            let no_end = meta(&id, 1, 5, seal, None);
            assert!(matches!(
                o.open(&no_end, b1.clone()).await,
                Err(OpenError::Bad(_))
            ));
            let mut flipped = b1.to_vec();
            flipped[NONCE_LEN + 1] ^= 1;
            assert!(matches!(
                o.open(&m1, Bytes::from(flipped)).await,
                Err(OpenError::Bad(_))
            ));

            // The wrong secret, no secret, a plain chunk for a receiver with a secret.
            let mut o = Opener::new(with_secret("wrong"), place("docs"));
            assert!(matches!(
                o.open(&m0, b0.clone()).await,
                Err(OpenError::Refused(Refused::WrongSecret { .. }))
            ));
            let mut o = Opener::new(Crypto::default(), place("docs"));
            assert!(matches!(
                o.open(&m0, b0.clone()).await,
                Err(OpenError::Refused(Refused::NoSecret { .. }))
            ));
            let plain = ChunkMeta {
                seal: None,
                ..m0.clone()
            };
            let mut o = Opener::new(crypto.clone(), place("docs"));
            assert!(matches!(
                o.open(&plain, Bytes::from_static(b"x")).await,
                Err(OpenError::Refused(Refused::Plaintext { .. }))
            ));
            let allow = Crypto {
                allow_plaintext: true,
                ..crypto.clone()
            };
            let mut o = Opener::new(allow, place("docs"));
            assert_eq!(
                &o.open(&plain, Bytes::from_static(b"x")).await.expect("ok")[..],
                b"x"
            );
        });
    }

    #[test]
    fn each_payload_gets_its_own_salt_and_key() {
        rt().block_on(async {
            let secret = Secret::new(b"s".to_vec());
            let a = secret.new_payload_key().await.expect("key");
            let b = secret.new_payload_key().await.expect("key");
            assert_ne!(a.seal.salt, b.seal.salt);
            assert_ne!(a.seal.check, b.seal.check);
            let again = secret.derive(a.seal.salt).await.expect("key");
            assert_eq!(again.seal, a.seal);
            assert_eq!(format!("{secret:?}"), "Secret(..)");
        });
    }
}
