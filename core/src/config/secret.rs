//! Secret values of the configuration: [`DatabaseUrl`] (a connection URL
//! whose password is redacted in `Debug` and `Display`, in every form the
//! drivers accept) and [`Secret`] (never printed at all).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Postgres connection URL whose password never reaches logs or `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct DatabaseUrl(pub(super) String);

impl DatabaseUrl {
    /// Wraps a URL or key=value connection string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: pass it to a driver, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with every password replaced by `***`, in each form
    /// tokio-postgres and libpq accept: the userinfo of a `postgres://` or
    /// `postgresql://` URL (whatever the password holds: `/`, `@`, `:`,
    /// `?`, percent-escapes), `password=` and `sslpassword=` query
    /// parameters, and `password` / `sslpassword` in a key=value string
    /// (spaces around `=`, quoted values with `\'` inside).
    pub fn redacted(&self) -> String {
        match url_rest_start(&self.0) {
            Some(rest_start) => redact_url(&self.0, rest_start),
            None => redact_key_value(&self.0),
        }
    }
}

/// Where the text after `scheme://` begins, when `url` is a URL rather
/// than a key=value string.
pub(super) fn url_rest_start(url: &str) -> Option<usize> {
    let scheme_end = url.find("://")?;
    (scheme_end > 0
        && url[..scheme_end]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
    .then_some(scheme_end + 3)
}

/// The index of the '@' ending the userinfo of `rest` (a URL's text after
/// `://`), if it has one. It is the last '@' before the query: a password
/// may hold '/', '@' and ':' (unescaped, tokio-postgres still ends it at
/// its first '@'; taking the last one covers both readings).
pub(super) fn userinfo_end(rest: &str) -> Option<usize> {
    let query_start = rest.find('?').unwrap_or(rest.len());
    rest[..query_start].rfind('@').or_else(|| {
        // No '@' before the first '?': a password may hold the '?'
        // itself (tokio-postgres takes everything up to the first '@').
        // An '@' after a '/' is in the path or the query, not userinfo.
        let first = rest.find('@')?;
        (!rest[..first].contains('/')).then_some(first)
    })
}

/// Connection parameters holding a secret, as the drivers spell them
/// (case-sensitive: libpq does not accept `PASSWORD`).
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// [`DatabaseUrl::redacted`] for a URL; `rest_start` is where the text
/// after `://` begins.
fn redact_url(url: &str, rest_start: usize) -> String {
    let (head, rest) = url.split_at(rest_start);
    let at = userinfo_end(rest);
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.find('?') {
        Some(q) => {
            out.push_str(&after_userinfo[..=q]);
            out.push_str(&redact_query(&after_userinfo[q + 1..]));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// A URL query with the values of secret parameters replaced by `***`.
/// Keys are compared percent-decoded, as the drivers decode them.
fn redact_query(query: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut in_secret = false;
    for param in query.split('&') {
        match param.split_once('=') {
            Some((key, _)) if SECRET_PARAMETERS.contains(&percent_decode(key).as_str()) => {
                parts.push(format!("{key}=***"));
                in_secret = true;
            }
            Some(_) => {
                parts.push(param.to_string());
                in_secret = false;
            }
            // An unescaped '&' inside the secret: the rest is secret too.
            None if in_secret => {}
            None => parts.push(param.to_string()),
        }
    }
    parts.join("&")
}

/// `%XX` escapes decoded (invalid ones kept as they are).
pub(super) fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = if bytes[i] == b'%' {
            match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => Some((high * 16 + low) as u8),
                _ => None,
            }
        } else {
            None
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`DatabaseUrl::redacted`] for a key=value string: the string as it
/// is, each secret parameter's value (see [`key_value_pairs`]) replaced by
/// `***`.
fn redact_key_value(dsn: &str) -> String {
    let mut out = String::with_capacity(dsn.len());
    let mut copied = 0;
    for pair in key_value_pairs(dsn) {
        if let Some(at) = pair
            .value_at
            .filter(|_| SECRET_PARAMETERS.contains(&pair.key))
        {
            out.push_str(&dsn[copied..at]);
            out.push_str("***");
            copied = at + pair.value.len();
        }
    }
    out.push_str(&dsn[copied..]);
    out
}

/// One `key = value` of a key=value string.
pub(super) struct Pair<'a> {
    pub(super) key: &'a str,
    /// The value as written (quotes and escapes included).
    pub(super) value: &'a str,
    /// Where `value` starts in the string; `None` for a word without `=`.
    pub(super) value_at: Option<usize>,
    /// The whole pair as written.
    pub(super) text: &'a str,
}

/// The pairs of a key=value string, parsed the way tokio-postgres and
/// libpq parse it: `key`, optional spaces, `=`, optional spaces, then a
/// value that is either `'quoted'` (with `\'` and `\\` escapes) or runs
/// to the next whitespace (with `\` escapes). A word without `=` is a pair
/// of its own with an empty value, so that the driver still sees (and
/// refuses) it.
pub(super) fn key_value_pairs(dsn: &str) -> Vec<Pair<'_>> {
    let mut pairs = Vec::new();
    let mut rest = dsn.trim_start();
    while !rest.is_empty() {
        let start = dsn.len() - rest.len();
        let key_end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start();
        let (value, value_at, end) = match after_key.strip_prefix('=') {
            Some(after_equals) => {
                let value_text = after_equals.trim_start();
                let value_len = key_value_len(value_text);
                let value_start = dsn.len() - value_text.len();
                (
                    &dsn[value_start..value_start + value_len],
                    Some(value_start),
                    value_start + value_len,
                )
            }
            // A word alone: keep it and go on (the key is not empty, since
            // an empty one means `rest` starts with '=').
            None => ("", None, start + key_end),
        };
        pairs.push(Pair {
            key,
            value,
            value_at,
            text: &dsn[start..end],
        });
        rest = dsn[end..].trim_start();
    }
    pairs
}

/// Length of the value at the start of `text`, quotes included; an
/// unterminated quoted value runs to the end.
fn key_value_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    if text.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
    } else {
        while let Some((i, c)) = chars.next() {
            if c.is_whitespace() {
                return i;
            }
            if c == '\\' {
                chars.next();
            }
        }
    }
    text.len()
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_string())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A secret from configuration; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(pub(super) String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: pass it to a client, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `url` redacted, through `redacted()`, `Debug` and `Display`, shows
    /// neither `secret` nor any 4+ character piece of it, and still
    /// shows each of `kept`.
    fn assert_redacted(url: &str, secret: &str, kept: &[&str]) {
        let url = DatabaseUrl::new(url);
        for shown in [url.redacted(), format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains(secret), "{shown:?} shows {secret:?}");
            for piece in secret
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|piece| piece.len() >= 4)
            {
                assert!(
                    !shown.contains(piece),
                    "{shown:?} shows {piece:?} of {secret:?}"
                );
            }
            assert!(shown.contains("***"), "{shown:?} hides nothing");
            for part in kept {
                assert!(shown.contains(part), "{shown:?} lost {part:?}");
            }
        }
    }

    #[test]
    fn redacts_url_userinfo_whatever_the_password_holds() {
        let odd = "Zx9-SECRET/with@odd:chars";
        assert_redacted(
            &format!("postgres://app:{odd}@db.internal:5432/strata"),
            odd,
            &["postgres://app:", "db.internal:5432/strata"],
        );
        assert_redacted(
            &format!("postgresql://app:{odd}@db.internal/strata?sslmode=require"),
            odd,
            &["postgresql://", "db.internal/strata", "sslmode=require"],
        );
        let escaped = "Zx9-SECRET%2Fescaped%40odd%3Achars";
        assert_redacted(
            &format!("postgres://app:{escaped}@db.internal/strata"),
            escaped,
            &["db.internal/strata"],
        );
        let question = "Zx9?QUESTION#mark";
        assert_redacted(
            &format!("postgres://app:{question}@db.internal/strata"),
            question,
            &["db.internal/strata"],
        );
        assert_redacted(
            "postgres://app:Zx9-MULTIHOST@db1.internal:5432,db2.internal:5433/strata",
            "Zx9-MULTIHOST",
            &["db1.internal:5432", "db2.internal:5433"],
        );
        assert_eq!(
            DatabaseUrl::new("postgres://u:pw@h/db").redacted(),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn redacts_url_query_passwords() {
        assert_redacted(
            "postgres://db.internal/strata?user=app&password=Zx9-QUERY%2Fsecret&sslmode=require",
            "Zx9-QUERY%2Fsecret",
            &["db.internal/strata", "user=app", "sslmode=require"],
        );
        assert_redacted(
            "postgresql://app@db.internal/strata?sslpassword=Zx9-SSLQUERY&sslkey=/etc/k.pem",
            "Zx9-SSLQUERY",
            &["app@db.internal/strata", "sslkey=/etc/k.pem"],
        );
        assert_redacted(
            "postgres://db.internal/strata?pass%77ord=Zx9-ENCODEDKEY",
            "Zx9-ENCODEDKEY",
            &["db.internal/strata"],
        );
        assert_redacted(
            "postgres://db.internal/strata?password=Zx9-AMP&ERSAND&application_name=x",
            "Zx9-AMP&ERSAND",
            &["db.internal/strata", "application_name=x"],
        );
        let both = "postgres://app:Zx9-USERINFO@db.internal/strata?password=Zx9-QUERYTOO";
        assert_redacted(both, "Zx9-USERINFO", &["db.internal/strata"]);
        assert_redacted(both, "Zx9-QUERYTOO", &["db.internal/strata"]);
        assert_eq!(
            DatabaseUrl::new("postgres://h/db?application_name=a@b&password=x").redacted(),
            "postgres://h/db?application_name=a@b&password=***"
        );
    }

    #[test]
    fn redacts_key_value_passwords() {
        let odd = "Zx9-SECRET/with@odd:chars";
        assert_redacted(
            &format!("host=db.internal password={odd} user=app"),
            odd,
            &["host=db.internal", "user=app"],
        );
        assert_redacted(
            "host=db.internal password = Zx9-SPACED user=app dbname=strata",
            "Zx9-SPACED",
            &["host=db.internal", "user=app", "dbname=strata"],
        );
        let quoted = r"'Zx9 QUOTED \' with spaces'";
        assert_redacted(
            &format!("host=db.internal password={quoted} user=app"),
            quoted,
            &["host=db.internal", "user=app"],
        );
        assert_redacted(
            r"host=db.internal password=Zx9\ ESCAPED\ spaces user=app",
            r"Zx9\ ESCAPED\ spaces",
            &["host=db.internal", "user=app"],
        );
        assert_redacted(
            "host=db.internal sslpassword='Zx9-SSLKV' sslkey=/etc/k.pem",
            "Zx9-SSLKV",
            &["host=db.internal", "sslkey=/etc/k.pem"],
        );
        assert_redacted(
            "password=Zx9-FIRST\thost=db.internal",
            "Zx9-FIRST",
            &["host=db.internal"],
        );
        assert_eq!(
            DatabaseUrl::new("host=h password='a b' user=u").redacted(),
            "host=h password=*** user=u"
        );
        assert_eq!(
            DatabaseUrl::new("host=h user=u").redacted(),
            "host=h user=u"
        );
        assert_eq!(
            DatabaseUrl::new("postgres://u@h/db").redacted(),
            "postgres://u@h/db"
        );
    }
}
