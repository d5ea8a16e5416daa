//! Single connection parameters of a [`DatabaseUrl`], in both forms the
//! drivers accept (`postgres://...?key=value&...` and `key=value ...`):
//! read one, take some out (the TLS settings, which Strata interprets
//! itself), or add one the URL does not set (the `[postgres]` defaults).

use super::secret::{key_value_pairs, percent_decode, url_rest_start, userinfo_end};
use super::DatabaseUrl;

impl DatabaseUrl {
    /// The decoded value of parameter `key`, when the URL sets it (the last
    /// one wins, as in the drivers).
    pub fn param(&self, key: &str) -> Option<String> {
        self.take_params(&[key]).1.pop().map(|(_, value)| value)
    }

    /// The URL without the parameters named in `keys`, and those
    /// parameters in order with their values decoded (percent-escapes in a
    /// URL, quotes and backslashes in a key=value string). Everything else
    /// is kept byte for byte.
    pub fn take_params(&self, keys: &[&str]) -> (DatabaseUrl, Vec<(String, String)>) {
        let url = &self.0;
        let mut taken = Vec::new();
        let rest = match url_rest_start(url) {
            Some(rest_start) => {
                let (head, query) = split_query(url, rest_start);
                let Some(query) = query else {
                    return (self.clone(), taken);
                };
                let mut kept = Vec::new();
                for param in query.split('&') {
                    let (key, value) = param.split_once('=').unwrap_or((param, ""));
                    let key = percent_decode(key);
                    if keys.contains(&key.as_str()) {
                        taken.push((key, percent_decode(value)));
                    } else if !param.is_empty() {
                        kept.push(param);
                    }
                }
                if kept.is_empty() {
                    head.to_string()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
            None => {
                let mut kept = String::with_capacity(url.len());
                for pair in key_value_pairs(url) {
                    if keys.contains(&pair.key) {
                        taken.push((pair.key.to_string(), unquote(pair.value)));
                    } else {
                        if !kept.is_empty() {
                            kept.push(' ');
                        }
                        kept.push_str(pair.text);
                    }
                }
                kept
            }
        };
        (DatabaseUrl(rest), taken)
    }

    /// The URL with `key=value` added, unless it already sets `key`.
    pub fn with_default_param(&self, key: &str, value: &str) -> DatabaseUrl {
        if self.param(key).is_some() {
            return self.clone();
        }
        let url = &self.0;
        match url_rest_start(url) {
            Some(rest_start) => {
                let separator = match split_query(url, rest_start).1 {
                    Some(query) if !query.is_empty() => "&",
                    Some(_) => "",
                    None => "?",
                };
                DatabaseUrl(format!(
                    "{url}{separator}{}={}",
                    percent_encode(key),
                    percent_encode(value)
                ))
            }
            None => {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                let separator = if url.trim().is_empty() { "" } else { " " };
                DatabaseUrl(format!("{}{separator}{key}='{quoted}'", url.trim_end()))
            }
        }
    }
}

/// A URL split before its query (the '?' after the userinfo), and the
/// query without its '?'.
fn split_query(url: &str, rest_start: usize) -> (&str, Option<&str>) {
    let rest = &url[rest_start..];
    let after_userinfo = userinfo_end(rest).map_or(0, |at| at + 1);
    match rest[after_userinfo..].find('?') {
        Some(q) => {
            let at = rest_start + after_userinfo + q;
            (&url[..at], Some(&url[at + 1..]))
        }
        None => (url, None),
    }
}

/// A key=value string's value without its quotes and escapes.
fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('\'')
        .map(|quoted| quoted.strip_suffix('\'').unwrap_or(quoted))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `text` with every byte but unreserved ones and '/' as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(url: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
        let (rest, params) = DatabaseUrl::new(url).take_params(keys);
        (rest.expose().to_string(), params)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn url_parameters_are_taken_out_decoded_and_the_rest_is_kept() {
        assert_eq!(
            taken(
                "postgres://u:p%3Fw@db.example:5432/hot?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca%20file.pem",
                &["sslmode", "sslrootcert"]
            ),
            (
                "postgres://u:p%3Fw@db.example:5432/hot?application_name=x".to_string(),
                pairs(&[("sslmode", "verify-full"), ("sslrootcert", "/etc/ca file.pem")])
            )
        );
        assert_eq!(
            taken("postgresql://db/hot?sslmode=require", &["sslmode"]),
            (
                "postgresql://db/hot".to_string(),
                pairs(&[("sslmode", "require")])
            )
        );
        // A '?' in the password is not the query.
        assert_eq!(
            taken("postgres://u:a?b@db/hot", &["sslmode"]),
            ("postgres://u:a?b@db/hot".to_string(), vec![])
        );
    }

    #[test]
    fn key_value_parameters_are_taken_out_unquoted_and_the_rest_is_kept() {
        assert_eq!(
            taken(
                "host=db sslmode = verify-ca  sslrootcert='/etc/it\\'s ca.pem' password='a b' user=u",
                &["sslmode", "sslrootcert"]
            ),
            (
                "host=db password='a b' user=u".to_string(),
                pairs(&[("sslmode", "verify-ca"), ("sslrootcert", "/etc/it's ca.pem")])
            )
        );
    }

    #[test]
    fn a_default_is_added_only_where_the_url_is_silent() {
        let url = DatabaseUrl::new("postgres://db/hot");
        let with = url.with_default_param("sslrootcert", "/etc/ca file.pem");
        assert_eq!(
            with.expose(),
            "postgres://db/hot?sslrootcert=/etc/ca%20file.pem"
        );
        assert_eq!(
            with.param("sslrootcert").as_deref(),
            Some("/etc/ca file.pem")
        );
        let twice = with.with_default_param("sslmode", "verify-full");
        assert_eq!(
            twice.expose(),
            "postgres://db/hot?sslrootcert=/etc/ca%20file.pem&sslmode=verify-full"
        );
        assert_eq!(twice.with_default_param("sslmode", "disable"), twice);

        let dsn = DatabaseUrl::new("host=db user=u");
        let with = dsn.with_default_param("sslkey", "/k/it's");
        assert_eq!(with.expose(), "host=db user=u sslkey='/k/it\\'s'");
        assert_eq!(with.param("sslkey").as_deref(), Some("/k/it's"));
    }
}
