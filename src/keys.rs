//! Secret format, key ids, checksums and hashing.
//!
//! A secret is `sk_live_` followed by the unpadded base64url encoding of 48
//! bytes: a 12-byte key id, 32 random bytes and a big-endian CRC32 of the 44
//! bytes before it. The key id lets the store find the key without a scan; the
//! checksum lets a mistyped or forged-shape key be refused before the store or
//! bcrypt are touched. Secrets are exactly [`SECRET_LEN`] (72) bytes, which is
//! also bcrypt's input limit, so every byte of a secret is covered by its hash.
//!
//! This module must not log: it handles secrets.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const SECRET_PREFIX: &str = "sk_live_";
pub const KEY_ID_PREFIX: &str = "key_";
const ID_BYTES: usize = 12;
const RANDOM_BYTES: usize = 32;
const CRC_BYTES: usize = 4;
const PAYLOAD_BYTES: usize = ID_BYTES + RANDOM_BYTES + CRC_BYTES;
/// Length of the base64url part of a secret.
const PAYLOAD_CHARS: usize = 64;
/// Length of every secret tollgate issues.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + PAYLOAD_CHARS;
/// Length of the listing prefix (SPEC.md: the first 12 characters).
pub const PREFIX_LEN: usize = 12;
/// Length of a key id: `key_` + 16 base64url characters.
pub const KEY_ID_LEN: usize = KEY_ID_PREFIX.len() + 16;

/// Why a presented credential was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not the shape of a tollgate secret (prefix, length, alphabet).
    Malformed,
    /// The right shape, but the checksum does not match.
    Checksum,
}

/// A secret whose shape and checksum are valid. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: String,
    key_id: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}…)", self.key_id)
    }
}

impl Secret {
    /// Parses a presented credential. Never allocates for input longer than a secret.
    pub fn parse(text: &str) -> Result<Secret, ParseError> {
        if text.len() != SECRET_LEN || !text.starts_with(SECRET_PREFIX) {
            return Err(ParseError::Malformed);
        }
        let mut payload = [0u8; PAYLOAD_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(&text.as_bytes()[SECRET_PREFIX.len()..], &mut payload) {
            Ok(PAYLOAD_BYTES) => {}
            _ => return Err(ParseError::Malformed),
        }
        // Re-encoding must give the same text: rejects non-canonical trailing bits.
        let (body, crc) = payload.split_at(ID_BYTES + RANDOM_BYTES);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err(ParseError::Checksum);
        }
        if URL_SAFE_NO_PAD.encode(payload) != text[SECRET_PREFIX.len()..] {
            return Err(ParseError::Malformed);
        }
        Ok(Secret {
            text: text.to_owned(),
            key_id: key_id_from_bytes(&payload[..ID_BYTES]),
        })
    }

    /// The id of the key this secret claims to belong to.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret itself: only for hashing, and for the one creation response.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The listing prefix: the first 12 characters.
    pub fn prefix(&self) -> &str {
        &self.text[..PREFIX_LEN]
    }

    /// SHA-256 of the secret, the key of the in-process verification cache.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

fn key_id_from_bytes(id: &[u8]) -> String {
    format!("{KEY_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(id))
}

/// A fresh random key id and its secret.
pub fn generate() -> Secret {
    let mut id = [0u8; ID_BYTES];
    rand::rng().fill_bytes(&mut id);
    generate_for_id_bytes(id)
}

/// A fresh secret for an existing key id (rotation).
pub fn generate_for(key_id: &str) -> Option<Secret> {
    let raw = key_id.strip_prefix(KEY_ID_PREFIX)?;
    let mut id = [0u8; ID_BYTES];
    match URL_SAFE_NO_PAD.decode_slice(raw.as_bytes(), &mut id) {
        Ok(ID_BYTES) => Some(generate_for_id_bytes(id)),
        _ => None,
    }
}

fn generate_for_id_bytes(id: [u8; ID_BYTES]) -> Secret {
    let mut payload = [0u8; PAYLOAD_BYTES];
    payload[..ID_BYTES].copy_from_slice(&id);
    rand::rng().fill_bytes(&mut payload[ID_BYTES..ID_BYTES + RANDOM_BYTES]);
    let crc = crc32fast::hash(&payload[..ID_BYTES + RANDOM_BYTES]);
    payload[ID_BYTES + RANDOM_BYTES..].copy_from_slice(&crc.to_be_bytes());
    let text = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
    Secret {
        text,
        key_id: key_id_from_bytes(&id),
    }
}

/// Is `id` shaped like a key id tollgate issues.
pub fn valid_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && id.starts_with(KEY_ID_PREFIX)
        && id[KEY_ID_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// bcrypt-hashes a secret. CPU-heavy: call from a blocking thread.
pub fn hash(secret: &Secret, cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(secret.expose(), cost)
}

/// Verifies a secret against a bcrypt hash. CPU-heavy: call from a blocking thread.
/// A malformed hash verifies as false.
pub fn verify(secret: &Secret, hash: &str) -> bool {
    bcrypt::verify(secret.expose(), hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_back() {
        for _ in 0..200 {
            let s = generate();
            assert_eq!(s.expose().len(), SECRET_LEN);
            assert!(s.expose().starts_with(SECRET_PREFIX));
            let p = Secret::parse(s.expose()).unwrap();
            assert_eq!(p.key_id(), s.key_id());
            assert!(valid_key_id(p.key_id()), "{}", p.key_id());
            assert_eq!(s.prefix().len(), PREFIX_LEN);
        }
    }

    #[test]
    fn rotation_keeps_the_id_and_changes_the_secret() {
        let s = generate();
        let r = generate_for(s.key_id()).unwrap();
        assert_eq!(r.key_id(), s.key_id());
        assert_ne!(r.expose(), s.expose());
        assert!(generate_for("key_short").is_none());
    }

    #[test]
    fn one_changed_character_fails_the_checksum() {
        let s = generate();
        let text = s.expose();
        for i in SECRET_PREFIX.len()..text.len() {
            let mut b = text.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert!(Secret::parse(&t).is_err(), "position {i}");
        }
    }

    #[test]
    fn wrong_shapes_are_malformed() {
        let s = generate();
        let text = s.expose();
        let cases = [
            String::new(),
            "sk_live_".into(),
            text[..text.len() - 1].into(),
            format!("{text}A"),
            text.replacen("sk_live_", "sk_test_", 1),
            format!("{}!{}", &text[..20], &text[21..]),
            "x".repeat(10_000),
        ];
        for c in cases {
            assert_eq!(Secret::parse(&c), Err(ParseError::Malformed), "{c:.30}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = generate();
        assert!(!format!("{s:?}").contains(s.expose()));
    }

    #[test]
    fn bcrypt_round_trip() {
        let s = generate();
        let h = hash(&s, 4).unwrap();
        assert!(verify(&s, &h));
        assert!(!verify(&generate(), &h));
        assert!(!verify(&s, "not a hash"));
    }
}
