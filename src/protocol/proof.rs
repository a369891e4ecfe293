//! Proven live acknowledgements (docs/protocol.md, "The live path"): a sender and its live
//! taker agree on a key no other login of the prefix can know (X25519 between a key on the
//! ticket and one on the taker's first word), and every word of the taker carries a MAC under
//! it. A word that does not prove itself is not believed, so nobody but the taker can make
//! the sender drop chunks the taker did not write.

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::protocol::pipe::LiveAck;
/// Length of a public key and of a MAC, in bytes: the wire's (see `pipe`).
pub(crate) use crate::protocol::pipe::KEY_LEN;

/// One side's key pair, new for each payload (sender) or each taking (taker).
pub(crate) struct Half {
    secret: StaticSecret,
    public: [u8; KEY_LEN],
}

impl Half {
    pub(crate) fn new() -> Half {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes);
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Half { secret, public }
    }

    pub(crate) fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// The key this side shares with the other, whose public key is `theirs`. `sender` and
    /// `taker` are the two public keys in their roles, so both sides derive the same key.
    /// `None` for a public key that gives no secret (a low-order point).
    fn shared(
        &self,
        theirs: &[u8; KEY_LEN],
        sender: &[u8; KEY_LEN],
        taker: &[u8; KEY_LEN],
    ) -> Option<AckKey> {
        let dh = self.secret.diffie_hellman(&PublicKey::from(*theirs));
        if !dh.was_contributory() {
            return None;
        }
        let mut h = Sha256::new();
        h.update(b"skypipe live ack key 1\0");
        h.update(dh.as_bytes());
        h.update(sender);
        h.update(taker);
        Some(AckKey(h.finalize().into()))
    }

    /// The sender's key with the taker whose public key is `taker`.
    pub(crate) fn with_taker(&self, taker: &[u8; KEY_LEN]) -> Option<AckKey> {
        self.shared(taker, &self.public, taker)
    }

    /// The taker's key with the sender whose public key is `sender`.
    pub(crate) fn with_sender(&self, sender: &[u8; KEY_LEN]) -> Option<AckKey> {
        self.shared(sender, sender, &self.public)
    }
}

/// The key a sender and its live taker share.
#[derive(Clone)]
pub(crate) struct AckKey([u8; KEY_LEN]);

impl AckKey {
    /// The MAC state over an acknowledgement: its payload, token, count and word.
    fn keyed(&self, ack: &LiveAck) -> Hmac<Sha256> {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            unreachable!("HMAC takes a key of any length")
        };
        m.update(b"skypipe live ack 1\0");
        m.update(ack.id.as_str().as_bytes());
        m.update(b"\0");
        m.update(ack.taker.as_bytes());
        m.update(b"\0");
        m.update(&ack.written.to_be_bytes());
        m.update(&[u8::from(ack.stop), u8::from(ack.listener)]);
        m
    }

    /// The MAC of an acknowledgement.
    pub(crate) fn mac(&self, ack: &LiveAck) -> [u8; KEY_LEN] {
        self.keyed(ack).finalize().into_bytes().into()
    }

    /// Whether `ack` carries the MAC of this key (compared in constant time).
    pub(crate) fn proves(&self, ack: &LiveAck) -> bool {
        ack.proof
            .as_ref()
            .is_some_and(|p| self.keyed(ack).verify_slice(&p.mac).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pipe::{LiveProof, PayloadId};

    fn ack(written: u64) -> LiveAck {
        LiveAck {
            id: PayloadId::random(),
            taker: "00112233aabbccdd".into(),
            written,
            stop: false,
            listener: false,
            proof: None,
        }
    }

    #[test]
    fn both_ends_derive_one_key_and_only_it_proves_a_word() {
        let sender = Half::new();
        let taker = Half::new();
        let theirs = taker.with_sender(&sender.public()).expect("taker's key");
        let ours = sender.with_taker(&taker.public()).expect("sender's key");
        let mut word = ack(7);
        word.proof = Some(LiveProof {
            key: taker.public(),
            mac: theirs.mac(&word),
        });
        assert!(ours.proves(&word));

        // Another count, another word, or another payload under the same MAC: not proven.
        let mut more = word.clone();
        more.written = 8;
        assert!(!ours.proves(&more));
        let mut stop = word.clone();
        stop.stop = true;
        assert!(!ours.proves(&stop));
        let mut other = word.clone();
        other.id = PayloadId::random();
        assert!(!ours.proves(&other));

        // A third party's key pair gives another key; no proof is no proof.
        let forger = Half::new();
        let forged = forger.with_sender(&sender.public()).expect("forger's key");
        let mut fake = ack(100);
        fake.proof = Some(LiveProof {
            key: taker.public(),
            mac: forged.mac(&fake),
        });
        assert!(!ours.proves(&fake));
        assert!(!ours.proves(&ack(7)));
    }

    #[test]
    fn a_public_key_that_gives_no_secret_is_refused() {
        let sender = Half::new();
        assert!(sender.with_taker(&[0u8; KEY_LEN]).is_none());
    }
}
