//! Bearer-token authentication: JWTs verified with configured keys.
//!
//! A token is accepted when its signature verifies with the key its `kid`
//! names (or, without a `kid`, with any configured key of its algorithm),
//! its `iss` and `aud` match the configuration, it has not expired and it
//! names a subject. What it may do comes from its space-separated `scope`
//! claim (the OAuth 2 convention): without [`SCOPE_READ_ANY`] it is a
//! customer token reading only the history of its `sub`.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Lets a token read any user's history (support agents).
pub const SCOPE_READ_ANY: &str = "activity:read:any";
/// Lets a token export a history (streamed or as a job).
pub const SCOPE_EXPORT: &str = "activity:export";
/// Lets a token subscribe to any users' events (services); without it a
/// token subscribes to its own user's only.
pub const SCOPE_SUBSCRIBE: &str = "activity:subscribe";

/// Longest bearer token looked at; longer ones are refused unparsed.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Who is calling, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: the customer's user id, or the agent's id.
    pub subject: String,
    /// May read any user's history.
    pub read_any: bool,
    /// May export.
    pub export: bool,
    /// May subscribe to any users' events.
    pub subscribe: bool,
}

/// Why a request is not authenticated. The messages are safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing bearer token (send `authorization: Bearer <JWT>`)")]
    Missing,
    /// Not `Bearer <token>`, or not a JWT.
    #[error("malformed bearer token")]
    Malformed,
    /// The `kid` names no configured key, or no key fits the algorithm.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `aud` is not this API.
    #[error("token audience is not this API")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not trusted")]
    WrongIssuer,
    /// Required claims missing or empty.
    #[error("token lacks a required claim ({0})")]
    MissingClaim(&'static str),
}

/// A configuration problem with a verification key (`kid`). A cause (an
/// I/O or key error) is the `source()` and is not repeated in the message:
/// the binary prints the chain (`{err:#}`), "api.jwt key "k1": read
/// /etc/k1.pem: No such file or directory (os error 2)".
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    /// An HS256 secret too short to resist guessing.
    #[error("api.jwt key {kid:?}: HS256 secrets must be at least 32 bytes")]
    ShortSecret {
        /// The key id.
        kid: String,
    },
    /// A public key not given as `<type>:<path>`.
    #[error("api.jwt key {kid:?}: expected rsa:<path>, ec:<path> or ed25519:<path>")]
    BadSpec {
        /// The key id.
        kid: String,
    },
    /// The PEM file cannot be read.
    #[error("api.jwt key {kid:?}: read {path}")]
    Read {
        /// The key id.
        kid: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key type other than `rsa`, `ec`, `ed25519`.
    #[error("api.jwt key {kid:?}: unknown key type {kind:?}")]
    UnknownType {
        /// The key id.
        kid: String,
        /// The type given.
        kind: String,
    },
    /// The PEM file does not hold a key of its type.
    #[error("api.jwt key {kid:?}: parse {path}")]
    Parse {
        /// The key id.
        kid: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A kid named by an HS256 secret and a public key.
    #[error("api.jwt key {kid:?}: kid configured twice")]
    Duplicate {
        /// The key id.
        kid: String,
    },
}

/// The claims Strata reads (others are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the customer's user id, or the agent's id.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies bearer tokens.
pub struct Authenticator {
    keys: BTreeMap<String, VerifyingKey>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Authenticator {
    /// Keys from configuration: HS256 secrets by kid, and public keys by
    /// kid as `rsa:<pem path>`, `ec:<pem path>` or `ed25519:<pem path>`.
    pub fn new(
        hs256: &BTreeMap<String, String>,
        public: &BTreeMap<String, String>,
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<Self, KeyConfigError> {
        let mut keys = BTreeMap::new();
        for (kid, secret) in hs256 {
            if secret.len() < 32 {
                return Err(KeyConfigError::ShortSecret { kid: kid.clone() });
            }
            keys.insert(
                kid.clone(),
                VerifyingKey {
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret.as_bytes()),
                },
            );
        }
        for (kid, spec) in public {
            let (kind, path) = spec
                .split_once(':')
                .ok_or_else(|| KeyConfigError::BadSpec { kid: kid.clone() })?;
            let pem = std::fs::read(path).map_err(|source| KeyConfigError::Read {
                kid: kid.clone(),
                path: path.to_string(),
                source,
            })?;
            let (algorithm, key) = match kind {
                "rsa" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                "ec" => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
                "ed25519" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
                other => {
                    return Err(KeyConfigError::UnknownType {
                        kid: kid.clone(),
                        kind: other.to_string(),
                    })
                }
            };
            let key = key.map_err(|source| KeyConfigError::Parse {
                kid: kid.clone(),
                path: path.to_string(),
                source,
            })?;
            if keys.contains_key(kid) {
                return Err(KeyConfigError::Duplicate { kid: kid.clone() });
            }
            keys.insert(kid.clone(), VerifyingKey { algorithm, key });
        }
        Ok(Self {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway,
        })
    }

    /// Whether any key is configured (without one, every call is refused).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies the value of an `authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?
            .trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let jwt_header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let candidates: Vec<&VerifyingKey> = match &jwt_header.kid {
            Some(kid) => self.keys.get(kid).into_iter().collect(),
            None => self.keys.values().collect(),
        };
        let candidates: Vec<&VerifyingKey> = candidates
            .into_iter()
            .filter(|k| k.algorithm == jwt_header.alg)
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let mut last = AuthError::BadSignature;
        for candidate in candidates {
            let mut validation = Validation::new(candidate.algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            validation.leeway = self.leeway.as_secs();
            validation.validate_nbf = true;
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &validation) {
                Ok(data) => return principal(data.claims),
                Err(err) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match err.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::WrongAudience,
                        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                            "exp" => AuthError::MissingClaim("exp"),
                            "sub" => AuthError::MissingClaim("sub"),
                            "iss" => AuthError::MissingClaim("iss"),
                            _ => AuthError::MissingClaim("aud"),
                        },
                        _ => AuthError::Malformed,
                    };
                    // Only a bad signature may mean "another key of the
                    // same algorithm"; anything else is final.
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn principal(claims: Claims) -> Result<Principal, AuthError> {
    if claims.sub.is_empty() {
        return Err(AuthError::MissingClaim("sub"));
    }
    let scopes: Vec<&str> = claims.scope.split_ascii_whitespace().collect();
    Ok(Principal {
        read_any: scopes.contains(&SCOPE_READ_ANY),
        export: scopes.contains(&SCOPE_EXPORT),
        subscribe: scopes.contains(&SCOPE_SUBSCRIBE),
        subject: claims.sub,
    })
}

/// Issues an HS256 token (`strata token`, tests, the demo). Production
/// deployments usually have their identity provider issue tokens instead.
pub fn issue_hs256(
    kid: &str,
    secret: &str,
    claims: &Claims,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authenticator() -> Authenticator {
        let hs = BTreeMap::from([("k1".to_string(), SECRET.to_string())]);
        Authenticator::new(
            &hs,
            &BTreeMap::new(),
            "strata",
            "strata-history",
            Duration::ZERO,
        )
        .expect("keys")
    }

    fn claims(sub: &str, scope: &str, exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: sub.into(),
            iss: "strata".into(),
            aud: "strata-history".into(),
            exp: (now + exp_in) as u64,
            iat: Some(now as u64),
            scope: scope.into(),
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn valid_tokens_carry_subject_and_scopes() {
        let auth = authenticator();
        let token = issue_hs256("k1", SECRET, &claims("u1", "", 60)).expect("issue");
        let p = auth.authenticate(Some(&bearer(&token))).expect("valid");
        assert_eq!(p.subject, "u1");
        assert!(!p.read_any && !p.export);
        let token = issue_hs256(
            "k1",
            SECRET,
            &claims("agent", "activity:read:any activity:export", 60),
        )
        .expect("issue");
        let p = auth.authenticate(Some(&bearer(&token))).expect("valid");
        assert!(p.read_any && p.export);
    }

    #[test]
    fn failures_are_specific() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some("Bearer not-a-jwt")),
            Err(AuthError::Malformed)
        );
        let expired = issue_hs256("k1", SECRET, &claims("u1", "", -120)).expect("issue");
        assert_eq!(
            auth.authenticate(Some(&bearer(&expired))),
            Err(AuthError::Expired)
        );
        let forged =
            issue_hs256("k1", &SECRET.replace('0', "x"), &claims("u1", "", 60)).expect("issue");
        assert_eq!(
            auth.authenticate(Some(&bearer(&forged))),
            Err(AuthError::BadSignature)
        );
        let unknown = issue_hs256("k9", SECRET, &claims("u1", "", 60)).expect("issue");
        assert_eq!(
            auth.authenticate(Some(&bearer(&unknown))),
            Err(AuthError::UnknownKey)
        );
        let mut wrong_aud = claims("u1", "", 60);
        wrong_aud.aud = "other".into();
        let token = issue_hs256("k1", SECRET, &wrong_aud).expect("issue");
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Err(AuthError::WrongAudience)
        );
        let mut wrong_iss = claims("u1", "", 60);
        wrong_iss.iss = "evil".into();
        let token = issue_hs256("k1", SECRET, &wrong_iss).expect("issue");
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Err(AuthError::WrongIssuer)
        );
        let token = issue_hs256("k1", SECRET, &claims("", "", 60)).expect("issue");
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Err(AuthError::MissingClaim("sub"))
        );
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        let auth = authenticator();
        let valid = issue_hs256("k1", SECRET, &claims("u1", "", 60)).expect("issue");
        let mut parts = valid.split('.');
        let _header = parts.next();
        let body = parts.next().expect("body");
        use base64::Engine;
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let unsigned = format!("{none_header}.{body}.");
        assert!(auth.authenticate(Some(&bearer(&unsigned))).is_err());
        let rs_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let confused = format!("{rs_header}.{body}.AAAA");
        assert_eq!(
            auth.authenticate(Some(&bearer(&confused))),
            Err(AuthError::UnknownKey)
        );
    }
}
