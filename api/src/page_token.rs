//! Page tokens (AIP-158): opaque to clients, HMAC-SHA256-signed with a key
//! id so keys can rotate, bound to every request field that shapes the
//! result (user, kinds, range, order), and expiring.
//!
//! Wire format, base64url without padding:
//! `version(1) | kid_len(1) | kid | expires_at(i64 BE, Unix s) |
//!  occurred_at(i64 BE, µs) | event_id(16) | mac(32)`, where `mac` is
//! HMAC-SHA256 over everything before it followed by the SHA-256 digest of
//! the request's [`Binding`]. The binding itself is not in the token: a
//! token presented with other request fields fails verification exactly
//! like a forged one, and every failure reads the same to the caller.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 16;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest token text accepted; anything longer is rejected unread.
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a token was refused. Callers answer every variant with the same
/// `INVALID_ARGUMENT` text; the variant is for logs and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not base64url, wrong length or version, or longer than allowed.
    #[error("malformed page token")]
    Malformed,
    /// Signed with a key id this server does not (or no longer) accept.
    #[error("page token signed with an unknown key")]
    UnknownKey,
    /// Forged, altered, or issued for other request fields.
    #[error("page token signature does not match this request")]
    BadSignature,
    /// Past its expiry.
    #[error("page token expired")]
    Expired,
}

/// Invalid signing keys (configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key at all.
    #[error("at least one page token key is required")]
    NoKeys,
    /// A key id that is empty, too long, or not printable ASCII.
    #[error("page token key id {0:?} must be 1-16 printable ASCII characters")]
    BadKeyId(String),
    /// Two keys share an id.
    #[error("page token key id {0:?} is used twice")]
    DuplicateKeyId(String),
    /// A secret shorter than [`MIN_SECRET_LEN`].
    #[error("page token key {0:?} needs a secret of at least 32 bytes")]
    ShortSecret(String),
}

/// A signing key.
#[derive(Clone)]
pub struct PageTokenKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for PageTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokenKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PageTokenKey {
    /// A key; validated by [`PageTokenKeys::new`].
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
        }
    }
}

/// The keys of a server: the first signs new tokens, all verify. Rotation:
/// put the new key first and keep the old one until the last token it
/// signed has expired (the token ttl), then remove it.
#[derive(Debug, Clone)]
pub struct PageTokenKeys {
    keys: Vec<PageTokenKey>,
}

impl PageTokenKeys {
    /// Validates `keys` (first = signing key).
    pub fn new(keys: Vec<PageTokenKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        for (i, key) in keys.iter().enumerate() {
            let printable = key.id.bytes().all(|b| b.is_ascii_graphic());
            if key.id.is_empty() || key.id.len() > MAX_KEY_ID_LEN || !printable {
                return Err(KeyError::BadKeyId(key.id.clone()));
            }
            if key.secret.len() < MIN_SECRET_LEN {
                return Err(KeyError::ShortSecret(key.id.clone()));
            }
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(KeyError::DuplicateKeyId(key.id.clone()));
            }
        }
        Ok(Self { keys })
    }

    fn signing(&self) -> &PageTokenKey {
        // `new` refuses an empty list.
        &self.keys[0]
    }

    fn find(&self, id: &[u8]) -> Option<&PageTokenKey> {
        self.keys.iter().find(|k| k.id.as_bytes() == id)
    }
}

/// The request fields a token is valid for (everything but the page token
/// and the page size, which a client may change between pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The method the token pages (`ListActivity`, `ListExports`): a
    /// token of one is never valid for the other.
    pub method: &'a str,
    /// Whose history.
    pub user_id: &'a str,
    /// Kinds filter, in any order (empty = all kinds).
    pub kinds: &'a [String],
    /// Range start, UTC microseconds, inclusive.
    pub from_micros: i64,
    /// Range end, UTC microseconds, exclusive.
    pub to_micros: i64,
    /// Newest first.
    pub descending: bool,
}

impl Binding<'_> {
    /// SHA-256 of a canonical, length-prefixed encoding (kinds sorted and
    /// deduplicated, so their order in the request does not matter).
    fn digest(&self) -> [u8; 32] {
        let mut kinds: Vec<&str> = self.kinds.iter().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut hasher = Sha256::new();
        hasher.update(b"strata.v1.");
        hasher.update(self.method.as_bytes());
        hasher.update(b"\0");
        hasher.update((self.user_id.len() as u64).to_be_bytes());
        hasher.update(self.user_id.as_bytes());
        hasher.update((kinds.len() as u64).to_be_bytes());
        for kind in kinds {
            hasher.update((kind.len() as u64).to_be_bytes());
            hasher.update(kind.as_bytes());
        }
        hasher.update(self.from_micros.to_be_bytes());
        hasher.update(self.to_micros.to_be_bytes());
        hasher.update([u8::from(self.descending)]);
        hasher.finalize().into()
    }
}

/// Where the next page starts: after (or, descending, before) this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last returned event's `occurred_at`, UTC microseconds.
    pub occurred_at_micros: i64,
    /// The last returned event's id.
    pub event_id: [u8; 16],
}

/// A token's bytes and its key id's length, after the length, base64,
/// version and key-id-length checks. Nothing in it is believed yet.
fn decode_header(
    token: &str,
    max_len: usize,
    version: u8,
) -> Result<(Vec<u8>, usize), PageTokenError> {
    if token.len() > max_len {
        return Err(PageTokenError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::Malformed)?;
    match raw.as_slice() {
        [found, kid_len, ..]
            if *found == version && (1..=MAX_KEY_ID_LEN).contains(&usize::from(*kid_len)) =>
        {
            let kid_len = usize::from(*kid_len);
            Ok((raw, kid_len))
        }
        _ => Err(PageTokenError::Malformed),
    }
}

fn mac(key: &PageTokenKey, body: &[u8], binding: &[u8; 32]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = match HmacSha256::new_from_slice(&key.secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    mac.update(binding);
    mac
}

impl PageTokenKeys {
    /// Issues a token for `cursor`, valid for `binding` until
    /// `expires_at` (Unix seconds).
    pub fn issue(&self, cursor: &Cursor, binding: &Binding<'_>, expires_at: i64) -> String {
        let key = self.signing();
        let mut body = Vec::with_capacity(2 + key.id.len() + 8 + 8 + 16 + MAC_LEN);
        body.push(VERSION);
        body.push(key.id.len() as u8);
        body.extend_from_slice(key.id.as_bytes());
        body.extend_from_slice(&expires_at.to_be_bytes());
        body.extend_from_slice(&cursor.occurred_at_micros.to_be_bytes());
        body.extend_from_slice(&cursor.event_id);
        let tag = mac(key, &body, &binding.digest()).finalize().into_bytes();
        body.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Checks `token` against `binding` at time `now` (Unix seconds) and
    /// returns its cursor. The MAC is compared in constant time and checked
    /// before anything the token says is believed.
    pub fn verify(
        &self,
        token: &str,
        binding: &Binding<'_>,
        now: i64,
    ) -> Result<Cursor, PageTokenError> {
        let (raw, kid_len) = decode_header(token, MAX_TOKEN_LEN, VERSION)?;
        let rest = &raw[2..];
        if rest.len() != kid_len + 8 + 8 + 16 + MAC_LEN {
            return Err(PageTokenError::Malformed);
        }
        let (kid, rest) = rest.split_at(kid_len);
        let key = self.find(kid).ok_or(PageTokenError::UnknownKey)?;
        let body_len = raw.len() - MAC_LEN;
        let (body, tag) = raw.split_at(body_len);
        mac(key, body, &binding.digest())
            .verify_slice(tag)
            .map_err(|_| PageTokenError::BadSignature)?;
        let field = |at: usize| -> [u8; 8] {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&rest[at..at + 8]);
            bytes
        };
        let expires_at = i64::from_be_bytes(field(0));
        if now >= expires_at {
            return Err(PageTokenError::Expired);
        }
        let mut event_id = [0u8; 16];
        event_id.copy_from_slice(&rest[16..32]);
        Ok(Cursor {
            occurred_at_micros: i64::from_be_bytes(field(8)),
            event_id,
        })
    }
}

/// Version byte of sealed tokens ([`PageTokenKeys::seal`]); page tokens
/// are [`VERSION`], so neither is ever read as the other.
const SEALED_VERSION: u8 = 2;
/// Longest sealed token text accepted; anything longer is rejected unread.
pub const MAX_SEALED_TOKEN_LEN: usize = 1024;

impl PageTokenKeys {
    /// Signs `payload` (at most a few hundred bytes) for `binding`, the
    /// digest of what the token is valid for (domain-separated by the
    /// caller): `version(2) | kid_len | kid | payload | mac(32)`, base64url.
    /// Sealed tokens do not expire; the caller decides what a payload may
    /// still mean (resume tokens: the stream's floor).
    pub fn seal(&self, payload: &[u8], binding: &[u8; 32]) -> String {
        let key = self.signing();
        let mut body = Vec::with_capacity(2 + key.id.len() + payload.len() + MAC_LEN);
        body.push(SEALED_VERSION);
        body.push(key.id.len() as u8);
        body.extend_from_slice(key.id.as_bytes());
        body.extend_from_slice(payload);
        let tag = mac(key, &body, binding).finalize().into_bytes();
        body.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The payload of a token made by [`Self::seal`] for `binding`; the
    /// MAC is compared in constant time before the payload is returned.
    pub fn open(&self, token: &str, binding: &[u8; 32]) -> Result<Vec<u8>, PageTokenError> {
        let (raw, kid_len) = decode_header(token, MAX_SEALED_TOKEN_LEN, SEALED_VERSION)?;
        let rest = &raw[2..];
        if rest.len() < kid_len + MAC_LEN {
            return Err(PageTokenError::Malformed);
        }
        let key = self
            .find(&rest[..kid_len])
            .ok_or(PageTokenError::UnknownKey)?;
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        mac(key, body, binding)
            .verify_slice(tag)
            .map_err(|_| PageTokenError::BadSignature)?;
        Ok(body[2 + kid_len..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn keys(ids: &[&str]) -> PageTokenKeys {
        PageTokenKeys::new(
            ids.iter()
                .map(|id| PageTokenKey::new(*id, format!("{id}-secret-of-at-least-32-bytes-long")))
                .collect(),
        )
        .expect("valid keys")
    }

    fn cursor() -> Cursor {
        Cursor {
            occurred_at_micros: 1_763_600_000_123_456,
            event_id: *b"0123456789abcdef",
        }
    }

    const NOW: i64 = 1_763_700_000;

    #[test]
    fn round_trip_and_kind_order_does_not_matter() {
        let keys = keys(&["k1"]);
        let kinds = vec!["login".to_string(), "deposit".to_string()];
        let binding = Binding {
            method: "ListActivity",
            user_id: "user-1",
            kinds: &kinds,
            from_micros: 0,
            to_micros: i64::MAX,
            descending: true,
        };
        let token = keys.issue(&cursor(), &binding, NOW + 3600);
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(keys.verify(&token, &binding, NOW), Ok(cursor()));
        let reordered = vec!["deposit".to_string(), "login".to_string()];
        let same = Binding {
            method: "ListActivity",
            kinds: &reordered,
            ..binding.clone()
        };
        assert_eq!(keys.verify(&token, &same, NOW), Ok(cursor()));
    }

    #[test]
    fn other_request_fields_are_refused() {
        let keys = keys(&["k1"]);
        let none: Vec<String> = Vec::new();
        let login = vec!["login".to_string()];
        let binding = Binding {
            method: "ListActivity",
            user_id: "user-1",
            kinds: &none,
            from_micros: 10,
            to_micros: 20,
            descending: false,
        };
        let token = keys.issue(&cursor(), &binding, NOW + 60);
        let others = [
            Binding {
                method: "ListActivity",
                user_id: "user-2",
                ..binding.clone()
            },
            Binding {
                method: "ListActivity",
                kinds: &login,
                ..binding.clone()
            },
            Binding {
                method: "ListActivity",
                from_micros: 11,
                ..binding.clone()
            },
            Binding {
                method: "ListActivity",
                to_micros: 21,
                ..binding.clone()
            },
            Binding {
                method: "ListActivity",
                descending: true,
                ..binding.clone()
            },
            Binding {
                method: "ListExports",
                ..binding.clone()
            },
        ];
        for other in others {
            assert_eq!(
                keys.verify(&token, &other, NOW),
                Err(PageTokenError::BadSignature),
                "{other:?}"
            );
        }
    }

    #[test]
    fn expiry_and_rotation() {
        let none: Vec<String> = Vec::new();
        let binding = Binding {
            method: "ListActivity",
            user_id: "u",
            kinds: &none,
            from_micros: 0,
            to_micros: 1,
            descending: false,
        };
        let old = keys(&["k1"]);
        let token = old.issue(&cursor(), &binding, NOW + 60);
        assert_eq!(
            old.verify(&token, &binding, NOW + 60),
            Err(PageTokenError::Expired)
        );
        // Overlap: k2 signs, k1 still verifies.
        let rotated = keys(&["k2", "k1"]);
        assert_eq!(rotated.verify(&token, &binding, NOW), Ok(cursor()));
        assert!(rotated.issue(&cursor(), &binding, NOW + 60).len() > 10);
        // After the overlap, k1's tokens are refused.
        let retired = keys(&["k2"]);
        assert_eq!(
            retired.verify(&token, &binding, NOW),
            Err(PageTokenError::UnknownKey)
        );
        // Same id, other secret: a forgery.
        let impostor = PageTokenKeys::new(vec![PageTokenKey::new(
            "k1",
            "a-completely-different-secret-32-bytes+",
        )])
        .expect("valid");
        assert_eq!(
            impostor.verify(&token, &binding, NOW),
            Err(PageTokenError::BadSignature)
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let short = PageTokenKeys::new(vec![PageTokenKey::new("k", "short")]);
        assert_eq!(short.err(), Some(KeyError::ShortSecret("k".into())));
        assert_eq!(PageTokenKeys::new(Vec::new()).err(), Some(KeyError::NoKeys));
        let long_id = "x".repeat(17);
        let err = PageTokenKeys::new(vec![PageTokenKey::new(long_id.clone(), [0u8; 32])]);
        assert_eq!(err.err(), Some(KeyError::BadKeyId(long_id)));
        let dup = PageTokenKeys::new(vec![
            PageTokenKey::new("a", [1u8; 32]),
            PageTokenKey::new("a", [2u8; 32]),
        ]);
        assert_eq!(dup.err(), Some(KeyError::DuplicateKeyId("a".into())));
    }

    /// 30,000 mutants of a valid token (bit flips, truncations, extensions,
    /// random bytes, random text): none verifies, none panics.
    #[test]
    fn fuzzed_tokens_never_verify() {
        let keys = keys(&["k1"]);
        let none: Vec<String> = Vec::new();
        let binding = Binding {
            method: "ListActivity",
            user_id: "user-1",
            kinds: &none,
            from_micros: 0,
            to_micros: i64::MAX,
            descending: false,
        };
        let token = keys.issue(&cursor(), &binding, NOW + 3600);
        let raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2026);
        let mut checked = 0;
        for round in 0..30_000 {
            let candidate = match round % 5 {
                0 => {
                    let mut bytes = raw.clone();
                    let bit = rng.gen_range(0..bytes.len() * 8);
                    bytes[bit / 8] ^= 1 << (bit % 8);
                    URL_SAFE_NO_PAD.encode(bytes)
                }
                1 => URL_SAFE_NO_PAD.encode(&raw[..rng.gen_range(0..raw.len())]),
                2 => {
                    let mut bytes = raw.clone();
                    bytes.extend((0..rng.gen_range(1..8)).map(|_| rng.gen::<u8>()));
                    URL_SAFE_NO_PAD.encode(bytes)
                }
                3 => {
                    let bytes: Vec<u8> = (0..raw.len()).map(|_| rng.gen()).collect();
                    URL_SAFE_NO_PAD.encode(bytes)
                }
                _ => (0..rng.gen_range(0..200))
                    .map(|_| rng.gen_range(32u8..127) as char)
                    .collect(),
            };
            if candidate == token {
                continue;
            }
            assert!(
                keys.verify(&candidate, &binding, NOW).is_err(),
                "mutant {round} verified: {candidate}"
            );
            checked += 1;
        }
        assert!(checked >= 29_000);
    }
}
