//! Joining a machine to a public server with a short code (docs/protocol.md, "Joining"),
//! without IO: the code, the key agreement and the messages.
//!
//! The code is `N-word-word`: `N` (the nameplate) says which pending invite is meant, and the
//! whole code is the password of a SPAKE2 exchange between the joiner (side A) and the host
//! (side B). Both end with the same key only when both used the same code; someone who watches
//! learns nothing of the code or the key, and someone in the middle gets one guess, after which
//! the host forgets the invite. Everything that matters (the host's CA and certificate, the
//! joiner's public key) then travels sealed with that key, so nobody can read or replace it.

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// The version of the join exchange; a side that does not know it refuses. 2: the joiner
/// names the session in its hello, where nobody without a login can read it.
pub(crate) const JOIN_VERSION: u32 = 2;
/// Where a pending invite listens: `_SKYPIPE_JOIN.<nameplate>`, then a session subject below.
pub(crate) const JOIN_ROOT: &str = "_SKYPIPE_JOIN";
/// The inbox prefix of a joiner's connection, the only subjects it may subscribe to.
pub(crate) const JOIN_INBOX: &str = "_SKYPIPE_JOIN_INBOX";
/// The largest nameplate handed out.
pub(crate) const MAX_NAMEPLATE: u16 = 99;

const JOINER_ID: &[u8] = b"skypipe joiner";
const HOST_ID: &[u8] = b"skypipe host";

/// The words of a code: 256 of them, so two words are 16 bits, one guess in 65,536.
pub(crate) const WORDS: [&str; 256] = [
    "acorn",
    "actor",
    "adobe",
    "agent",
    "album",
    "alley",
    "amber",
    "anchor",
    "angle",
    "ankle",
    "apple",
    "apron",
    "arena",
    "arrow",
    "atlas",
    "attic",
    "autumn",
    "avocado",
    "badge",
    "bagel",
    "bakery",
    "bamboo",
    "banjo",
    "barley",
    "basket",
    "beacon",
    "beaver",
    "bench",
    "berry",
    "bicycle",
    "bison",
    "blanket",
    "blossom",
    "bonnet",
    "bottle",
    "bracket",
    "breeze",
    "brick",
    "bridge",
    "broom",
    "bucket",
    "buffalo",
    "bugle",
    "bundle",
    "butter",
    "button",
    "cabin",
    "cactus",
    "camel",
    "candle",
    "canoe",
    "canyon",
    "carpet",
    "carrot",
    "castle",
    "cedar",
    "cellar",
    "cherry",
    "chimney",
    "chisel",
    "cider",
    "circus",
    "clover",
    "cobalt",
    "comet",
    "compass",
    "copper",
    "coral",
    "cotton",
    "cougar",
    "cradle",
    "crater",
    "crayon",
    "cricket",
    "crystal",
    "cupboard",
    "curtain",
    "cushion",
    "dagger",
    "daisy",
    "dancer",
    "denim",
    "desert",
    "dolphin",
    "domino",
    "donkey",
    "dragon",
    "drummer",
    "eagle",
    "easel",
    "ember",
    "engine",
    "falcon",
    "feather",
    "fence",
    "ferry",
    "fiddle",
    "fjord",
    "flannel",
    "flute",
    "fossil",
    "fountain",
    "fox",
    "galaxy",
    "garden",
    "garlic",
    "geyser",
    "ginger",
    "glacier",
    "goblet",
    "granite",
    "grape",
    "gravel",
    "guitar",
    "hammock",
    "harbor",
    "harvest",
    "hazel",
    "helmet",
    "heron",
    "hickory",
    "honey",
    "horizon",
    "hornet",
    "iceberg",
    "igloo",
    "indigo",
    "island",
    "ivory",
    "jacket",
    "jaguar",
    "jasmine",
    "jelly",
    "jersey",
    "jigsaw",
    "juniper",
    "kayak",
    "kettle",
    "kitten",
    "koala",
    "ladder",
    "lagoon",
    "lantern",
    "laurel",
    "lemon",
    "lentil",
    "lettuce",
    "lilac",
    "lizard",
    "lobster",
    "locket",
    "lotus",
    "magnet",
    "mango",
    "maple",
    "marble",
    "meadow",
    "melon",
    "mermaid",
    "meteor",
    "mitten",
    "monsoon",
    "mosaic",
    "muffin",
    "mustard",
    "napkin",
    "nectar",
    "needle",
    "noodle",
    "nutmeg",
    "oasis",
    "oatmeal",
    "ocean",
    "olive",
    "onion",
    "orchid",
    "otter",
    "oyster",
    "paddle",
    "pancake",
    "panther",
    "papaya",
    "parcel",
    "parrot",
    "peach",
    "pebble",
    "pelican",
    "pepper",
    "piano",
    "pickle",
    "pigeon",
    "pillow",
    "pilot",
    "pine",
    "pirate",
    "pistachio",
    "planet",
    "plum",
    "pocket",
    "pony",
    "poppy",
    "potato",
    "pretzel",
    "puffin",
    "pumpkin",
    "puzzle",
    "quartz",
    "quill",
    "rabbit",
    "raccoon",
    "radish",
    "raft",
    "rainbow",
    "raven",
    "ribbon",
    "river",
    "robin",
    "rocket",
    "saddle",
    "saffron",
    "salmon",
    "sandal",
    "satchel",
    "scarf",
    "scooter",
    "seagull",
    "shovel",
    "silver",
    "skate",
    "sled",
    "sloth",
    "snail",
    "sparrow",
    "spider",
    "spinach",
    "sponge",
    "spruce",
    "squirrel",
    "stapler",
    "starfish",
    "sunset",
    "swallow",
    "tablet",
    "tadpole",
    "teapot",
    "thistle",
    "thunder",
    "tiger",
    "timber",
    "toaster",
    "tomato",
    "topaz",
    "tractor",
    "trumpet",
    "tulip",
    "tundra",
];

/// The subject a pending invite with this nameplate listens on.
pub(crate) fn invite_subject(nameplate: u16) -> String {
    format!("{JOIN_ROOT}.{nameplate}")
}

/// A code as typed: `7-crossover-clockwork`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Code {
    pub(crate) nameplate: u16,
    words: [&'static str; 2],
}

impl Code {
    /// A new code with a random pair of words.
    pub(crate) fn random(nameplate: u16) -> Code {
        let mut rng = rand::rng();
        let mut word = || WORDS[rng.random_range(0..WORDS.len())];
        Code {
            nameplate,
            words: [word(), word()],
        }
    }

    /// Reads a code, forgiving case and spaces for dashes.
    pub(crate) fn parse(text: &str) -> Result<Code, String> {
        let bad = || {
            format!(
                "{text:?} is not an invite code: a code looks like 7-acorn-zebra (a number and \
                 two words, as `skypipe invite` printed it)"
            )
        };
        let lower = text.trim().to_ascii_lowercase().replace(' ', "-");
        let mut parts = lower.split('-').filter(|p| !p.is_empty());
        let nameplate: u16 = parts
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=MAX_NAMEPLATE).contains(n))
            .ok_or_else(bad)?;
        let mut word = || -> Result<&'static str, String> {
            let w = parts.next().ok_or_else(bad)?;
            WORDS.iter().copied().find(|k| *k == w).ok_or_else(|| {
                format!("{text:?} is not an invite code: {w:?} is not one of its words")
            })
        };
        let words = [word()?, word()?];
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Code { nameplate, words })
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.nameplate, self.words[0], self.words[1])
    }
}

/// Which side sealed a message: each has its own nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Joiner = 1,
    Host = 2,
}

/// One side's half of the key agreement.
pub(crate) struct Pake(Spake2<Ed25519Group>);

impl Pake {
    /// Starts the exchange; the bytes go to the other side.
    pub(crate) fn start(side: Side, code: &Code) -> (Pake, Vec<u8>) {
        let password = Password::new(code.to_string());
        let (a, b) = (Identity::new(JOINER_ID), Identity::new(HOST_ID));
        let (state, msg) = match side {
            Side::Joiner => Spake2::<Ed25519Group>::start_a(&password, &a, &b),
            Side::Host => Spake2::<Ed25519Group>::start_b(&password, &a, &b),
        };
        (Pake(state), msg)
    }

    /// Ends the exchange with the other side's bytes. A wrong code is not noticed here but by
    /// the first sealed message that does not open.
    pub(crate) fn finish(self, theirs: &[u8]) -> Result<Channel, String> {
        let key = self
            .0
            .finish(theirs)
            .map_err(|e| format!("the other side's key exchange is malformed: {e}"))?;
        let mut hash = Sha256::new();
        hash.update(b"skypipe join v1 channel key");
        hash.update(&key);
        let key = hash.finalize();
        Ok(Channel {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }
}

/// Messages sealed with the agreed key. Each side numbers its messages from 0 and no number
/// is used twice, so a nonce never repeats under the key.
pub(crate) struct Channel {
    cipher: ChaCha20Poly1305,
}

fn nonce(side: Side, n: u32) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[0] = side as u8;
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    *Nonce::from_slice(&bytes)
}

impl Channel {
    /// Seals message `n` of `side` as base64 text.
    pub(crate) fn seal<T: Serialize>(&self, side: Side, n: u32, msg: &T) -> Result<String, String> {
        let mut body = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(side, n), b"", &mut body)
            .map_err(|_| "cannot seal a message".to_string())?;
        body.extend_from_slice(&tag);
        Ok(b64(&body))
    }

    /// Opens message `n` of `side`. `Err(None)`: it does not open (the two sides used
    /// different codes, or it was changed on the way); `Err(Some(_))`: it opened but is not
    /// the message expected.
    pub(crate) fn open<T: for<'de> Deserialize<'de>>(
        &self,
        side: Side,
        n: u32,
        text: &str,
    ) -> Result<T, Option<String>> {
        let mut body = unb64(text).map_err(|_| None)?;
        let at = body.len().checked_sub(16).ok_or(None)?;
        let tag = Tag::clone_from_slice(&body[at..]);
        body.truncate(at);
        self.cipher
            .decrypt_in_place_detached(&nonce(side, n), b"", &mut body, &tag)
            .map_err(|_| None)?;
        serde_json::from_slice(&body).map_err(|e| Some(format!("a malformed message: {e}")))
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("bad base64: {e}"))
}

/// Joiner to host, on the invite's subject: the first half of the key agreement, and the
/// session: the last token of the subject of the rest of the exchange. Only the host reads
/// this subject (anyone without a login may publish there, not subscribe), so nobody else
/// learns where the session goes on, and nobody else can speak in it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) v: u32,
    pub(crate) pake: String,
    #[serde(default)]
    pub(crate) session: String,
}

/// A session token: 32 lowercase hex digits (128 random bits), so one subject token that
/// nobody can guess.
pub(crate) fn new_session() -> String {
    let raw: [u8; 16] = rand::random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` is a session token as [`new_session`] makes them: never a wildcard, never
/// more than one subject token.
pub(crate) fn is_session(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The subject of the rest of a join after its hello.
pub(crate) fn session_subject(nameplate: u16, session: &str) -> String {
    format!("{JOIN_ROOT}.{nameplate}.{session}")
}

/// Host to joiner, the reply to [`Hello`]: the second half of the key agreement.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct HelloReply {
    #[serde(default)]
    pub(crate) v: u32,
    #[serde(default)]
    pub(crate) pake: String,
    /// Set instead of the rest when the host refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Any message on the session subject: sealed text, or (from the host only) an error in the
/// clear. The host acts on nothing the joiner sent that does not open.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Joiner's message 0: who it is.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Joiner {
    /// The name it would like (its host name); the host may give another.
    pub(crate) name: String,
    /// Its public nkey (`U...`); the seed never leaves the joiner.
    pub(crate) nkey: String,
    /// Its skypipe version, for the host's list.
    pub(crate) version: String,
}

/// Host's message 0: how to reach and trust the server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Welcome {
    /// The name the joiner has on the server.
    pub(crate) name: String,
    /// The server's client URLs, the one to try first first.
    pub(crate) urls: Vec<String>,
    /// The CA that signed the server's certificate, PEM.
    pub(crate) ca_pem: String,
    /// SHA-256 of the server certificate (DER), hex: the joiner compares it with the one it
    /// was shown.
    pub(crate) cert_sha256: String,
    /// The subject prefix the joiner may use.
    pub(crate) prefix: String,
    /// The inbox prefix the joiner must use for replies.
    pub(crate) inbox_prefix: String,
    /// The end-to-end secret, with `skypipe invite --with-secret`.
    #[serde(default)]
    pub(crate) secret: Option<String>,
}

/// Joiner's message 1: whether it reached the server as itself and saved the context.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// SHA-256 in hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back() {
        for n in [1, 42, MAX_NAMEPLATE] {
            let code = Code::random(n);
            assert_eq!(Code::parse(&code.to_string()), Ok(code.clone()));
            assert_eq!(
                Code::parse(&code.to_string().to_uppercase().replace('-', " ")),
                Ok(code)
            );
        }
        for bad in [
            "",
            "7",
            "7-acorn",
            "0-acorn-zebra",
            "100-acorn-zebra",
            "x-acorn-zebra",
        ] {
            assert!(Code::parse(bad).is_err(), "{bad}");
        }
        assert!(Code::parse("7-acorn-nosuchword")
            .expect_err("unknown word")
            .contains("nosuchword"));
        assert!(Code::parse("7-acorn-zebra-extra").is_err());
    }

    #[test]
    fn session_tokens_are_one_plain_token() {
        let s = new_session();
        assert!(is_session(&s), "{s}");
        assert_ne!(s, new_session());
        for bad in [
            "",
            ">",
            "*",
            "a.b",
            &s[..31],
            &s.to_uppercase(),
            &format!("{s}0"),
        ] {
            assert!(!is_session(bad), "{bad}");
        }
    }

    #[test]
    fn the_words_are_distinct_and_plain() {
        let mut sorted = WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), WORDS.len());
        assert!(WORDS
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    fn agree(joiner_code: &Code, host_code: &Code) -> (Channel, Channel) {
        let (j, j_msg) = Pake::start(Side::Joiner, joiner_code);
        let (h, h_msg) = Pake::start(Side::Host, host_code);
        (
            j.finish(&h_msg).expect("joiner finishes"),
            h.finish(&j_msg).expect("host finishes"),
        )
    }

    #[test]
    fn the_same_code_opens_and_another_does_not() {
        let code = Code::random(7);
        let (joiner, host) = agree(&code, &code);
        let sealed = joiner
            .seal(
                Side::Joiner,
                0,
                &Outcome {
                    ok: true,
                    error: None,
                },
            )
            .expect("seal");
        let got: Outcome = host.open(Side::Joiner, 0, &sealed).expect("opens");
        assert!(got.ok);
        // Another number, another side: does not open.
        assert!(host.open::<Outcome>(Side::Joiner, 1, &sealed).is_err());
        assert!(host.open::<Outcome>(Side::Host, 0, &sealed).is_err());

        let other = Code::parse(&format!("7-{}-{}", WORDS[0], WORDS[1])).expect("code");
        let wrong = if other == code {
            Code::random(8)
        } else {
            other
        };
        let (joiner, host) = agree(&code, &wrong);
        let sealed = joiner
            .seal(
                Side::Joiner,
                0,
                &Outcome {
                    ok: true,
                    error: None,
                },
            )
            .expect("seal");
        assert!(matches!(
            host.open::<Outcome>(Side::Joiner, 0, &sealed),
            Err(None)
        ));
    }
}
