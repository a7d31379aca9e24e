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
/// Length of the base64url encoding of a key id's bytes.
const ID_CHARS: usize = 16;
/// Length of every secret tollgate issues.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + PAYLOAD_CHARS;
/// Length of the listing prefix (SPEC.md: the first 12 characters).
pub const PREFIX_LEN: usize = 12;
/// Length of a key id: `key_` + 16 base64url characters.
pub const KEY_ID_LEN: usize = KEY_ID_PREFIX.len() + ID_CHARS;

/// Why a presented credential was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not the shape of a tollgate secret (prefix, length, alphabet).
    Malformed,
    /// The right shape, but the checksum does not match.
    Checksum,
}

/// A secret whose shape and checksum are valid. Its `Debug` never shows it.
///
/// Held inline (no heap): the text and the key id are ASCII of fixed
/// length, checked when the secret is parsed or generated.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: [u8; SECRET_LEN],
    key_id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}…)", self.key_id())
    }
}

impl Secret {
    /// Parses a presented credential. Never allocates.
    pub fn parse(text: &str) -> Result<Secret, ParseError> {
        if text.len() != SECRET_LEN || !text.starts_with(SECRET_PREFIX) {
            return Err(ParseError::Malformed);
        }
        let encoded = &text.as_bytes()[SECRET_PREFIX.len()..];
        let mut payload = [0u8; PAYLOAD_BYTES];
        // 64 characters are exactly 48 bytes: no padding and no trailing bits,
        // so every 64 characters of the alphabet are the one canonical
        // encoding of what they decode to (no re-encoding check is needed).
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut payload) {
            Ok(PAYLOAD_BYTES) => {}
            _ => return Err(ParseError::Malformed),
        }
        let (body, crc) = payload.split_at(ID_BYTES + RANDOM_BYTES);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err(ParseError::Checksum);
        }
        let mut secret = Secret {
            text: [0; SECRET_LEN],
            key_id: [0; KEY_ID_LEN],
        };
        secret.text.copy_from_slice(text.as_bytes());
        // 12 id bytes are whole 3-byte groups: their encoding is the first 16
        // characters of the payload's.
        secret.key_id[..KEY_ID_PREFIX.len()].copy_from_slice(KEY_ID_PREFIX.as_bytes());
        secret.key_id[KEY_ID_PREFIX.len()..].copy_from_slice(&encoded[..ID_CHARS]);
        Ok(secret)
    }

    /// The id of the key this secret claims to belong to.
    pub fn key_id(&self) -> &str {
        ascii(&self.key_id)
    }

    /// The secret itself: only for hashing, and for the one creation response.
    pub fn expose(&self) -> &str {
        ascii(&self.text)
    }

    /// The listing prefix: the first 12 characters.
    pub fn prefix(&self) -> &str {
        ascii(&self.text[..PREFIX_LEN])
    }

    /// SHA-256 of the secret, the key of the in-process verification cache.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text).into()
    }
}

/// The text of a field that only ever holds base64url and ASCII prefixes.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
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
    let mut secret = Secret {
        text: [0; SECRET_LEN],
        key_id: [0; KEY_ID_LEN],
    };
    let (prefix, encoded) = secret.text.split_at_mut(SECRET_PREFIX.len());
    prefix.copy_from_slice(SECRET_PREFIX.as_bytes());
    let written = URL_SAFE_NO_PAD.encode_slice(payload, encoded);
    debug_assert_eq!(written, Ok(PAYLOAD_CHARS));
    secret.key_id[..KEY_ID_PREFIX.len()].copy_from_slice(KEY_ID_PREFIX.as_bytes());
    secret.key_id[KEY_ID_PREFIX.len()..].copy_from_slice(&encoded[..ID_CHARS]);
    secret
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

    /// The parser before it stopped allocating: decode, checksum, re-encode,
    /// key id encoded from the id bytes.
    fn reference_parse(text: &str) -> Result<(String, String), ParseError> {
        if text.len() != SECRET_LEN || !text.starts_with(SECRET_PREFIX) {
            return Err(ParseError::Malformed);
        }
        let mut payload = [0u8; PAYLOAD_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(&text.as_bytes()[SECRET_PREFIX.len()..], &mut payload) {
            Ok(PAYLOAD_BYTES) => {}
            _ => return Err(ParseError::Malformed),
        }
        let (body, crc) = payload.split_at(ID_BYTES + RANDOM_BYTES);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err(ParseError::Checksum);
        }
        if URL_SAFE_NO_PAD.encode(payload) != text[SECRET_PREFIX.len()..] {
            return Err(ParseError::Malformed);
        }
        let key_id = format!(
            "{KEY_ID_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&payload[..ID_BYTES])
        );
        Ok((text.to_owned(), key_id))
    }

    fn parsed(text: &str) -> Result<(String, String), ParseError> {
        Secret::parse(text).map(|s| (s.expose().to_owned(), s.key_id().to_owned()))
    }

    #[test]
    fn parse_agrees_with_the_reference_parser() {
        // Every character of the payload replaced by every byte that keeps
        // the text valid UTF-8 (the alphabet, padding, anything else), and
        // random valid secrets with a recomputed checksum.
        let alphabet: Vec<u8> = (0u8..0x80).collect();
        for _ in 0..8 {
            let s = generate();
            assert_eq!(parsed(s.expose()), reference_parse(s.expose()));
            assert_eq!(parsed(s.expose()).map(|p| p.1), Ok(s.key_id().to_owned()));
            for i in 0..SECRET_LEN {
                for &c in &alphabet {
                    let mut b = s.expose().as_bytes().to_vec();
                    b[i] = c;
                    let t = String::from_utf8(b).unwrap();
                    assert_eq!(parsed(&t), reference_parse(&t), "{i} {c}");
                }
            }
        }
        // Secrets with a valid checksum over varied bytes all parse, as before.
        for last in 0..64u8 {
            let mut payload = [7u8; PAYLOAD_BYTES];
            payload[ID_BYTES + RANDOM_BYTES - 1] = last;
            let crc = crc32fast::hash(&payload[..ID_BYTES + RANDOM_BYTES]);
            payload[ID_BYTES + RANDOM_BYTES..].copy_from_slice(&crc.to_be_bytes());
            let t = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
            assert!(Secret::parse(&t).is_ok(), "{t}");
            assert_eq!(parsed(&t), reference_parse(&t));
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
