//! A subscription's filter: checked against its limits, turned into the
//! parameters of the one read statement (`read.rs`, so the filter is
//! applied in the database, the same way for catch-up and live), and
//! digested so that resume tokens are bound to it.
//!
//! Payload comparisons become one SQL/JSON path predicate
//! (`jsonb_path_match`) whose keys are quoted here and whose values are
//! passed as path variables, never spliced into the text.

use serde_json::Value;
use sha2::{Digest, Sha256};
use strata_proto::v1::{ComparisonOperator, PayloadComparison, SubscriptionFilter};

use crate::error::InvalidArgument;

/// Most kinds one filter names.
pub const MAX_FILTER_KINDS: usize = 50;
/// Most sources one filter names.
pub const MAX_FILTER_SOURCES: usize = 50;
/// Most users one filter names.
pub const MAX_FILTER_USERS: usize = 1000;
/// Longest `payload_contains_json`, in bytes.
pub const MAX_CONTAINS_BYTES: usize = 4096;
/// Most payload comparisons in one filter.
pub const MAX_COMPARISONS: usize = 8;
/// Most keys in one comparison's path.
pub const MAX_PATH_KEYS: usize = 8;
/// Longest key of a comparison's path, in bytes.
pub const MAX_PATH_KEY_BYTES: usize = 128;
/// Longest `value_json` of a comparison, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// A checked filter; `None` fields match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Kinds, sorted and deduplicated.
    pub kinds: Option<Vec<String>>,
    /// Sources, sorted and deduplicated.
    pub sources: Option<Vec<String>>,
    /// Users, sorted and deduplicated.
    pub users: Option<Vec<String>>,
    /// The object the payload must contain, as canonical JSON text.
    pub contains: Option<String>,
    /// The comparisons as one SQL/JSON path predicate over `$v0`, `$v1`...
    pub path_predicate: Option<String>,
    /// The predicate's variables as a JSON object text.
    pub path_variables: Option<String>,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidArgument {
    InvalidArgument::Filter {
        field,
        problem: problem.into(),
    }
}

/// A set of names checked by `valid`, sorted and deduplicated; `None`
/// when empty.
fn names(
    field: &'static str,
    given: &[String],
    max: usize,
    valid: impl Fn(&str) -> bool,
) -> Result<Option<Vec<String>>, InvalidArgument> {
    if given.len() > max {
        return Err(invalid(field, format!("at most {max} values")));
    }
    if let Some(bad) = given.iter().find(|name| !valid(name)) {
        let shown: String = bad.chars().take(64).collect();
        return Err(invalid(field, format!("{shown:?} is not a valid value")));
    }
    if given.is_empty() {
        return Ok(None);
    }
    let mut names = given.to_vec();
    names.sort_unstable();
    names.dedup();
    Ok(Some(names))
}

impl Filter {
    /// Checks `filter` (absent: everything).
    pub fn parse(filter: Option<&SubscriptionFilter>) -> Result<Self, InvalidArgument> {
        let Some(filter) = filter else {
            return Ok(Self::everything());
        };
        use strata_core::event::{validate_kind, validate_source, validate_user_id};
        let kinds = names("filter.kinds", &filter.kinds, MAX_FILTER_KINDS, |k| {
            validate_kind(k).is_ok()
        })?;
        let sources = names("filter.sources", &filter.sources, MAX_FILTER_SOURCES, |s| {
            validate_source(s).is_ok()
        })?;
        let users = names("filter.user_ids", &filter.user_ids, MAX_FILTER_USERS, |u| {
            validate_user_id(u).is_ok() && !u.contains('\0')
        })?;
        let contains = contains(&filter.payload_contains_json)?;
        let (path_predicate, path_variables) = comparisons(&filter.payload_comparisons)?;
        Ok(Self {
            kinds,
            sources,
            users,
            contains,
            path_predicate,
            path_variables,
        })
    }

    /// The filter that matches every event.
    pub fn everything() -> Self {
        Self {
            kinds: None,
            sources: None,
            users: None,
            contains: None,
            path_predicate: None,
            path_variables: None,
        }
    }

    /// SHA-256 of a canonical, length-prefixed encoding: the identity of
    /// the filter for resume tokens and for sharing live reads.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"strata.v1.Subscribe\0");
        let mut text = |value: &str| {
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        };
        for list in [&self.kinds, &self.sources, &self.users] {
            match list {
                None => text("*"),
                Some(values) => {
                    text(&values.len().to_string());
                    for value in values {
                        text(value);
                    }
                }
            }
        }
        for value in [&self.contains, &self.path_predicate, &self.path_variables] {
            text(value.as_deref().unwrap_or("*"));
        }
        hasher.finalize().into()
    }
}

/// `payload_contains_json`: empty, or a JSON object (re-encoded with sorted
/// keys, so the same object always digests the same).
fn contains(given: &str) -> Result<Option<String>, InvalidArgument> {
    const FIELD: &str = "filter.payload_contains_json";
    if given.trim().is_empty() {
        return Ok(None);
    }
    if given.len() > MAX_CONTAINS_BYTES {
        return Err(invalid(
            FIELD,
            format!("at most {MAX_CONTAINS_BYTES} bytes"),
        ));
    }
    let value: Value =
        serde_json::from_str(given).map_err(|err| invalid(FIELD, format!("not JSON: {err}")))?;
    if !value.is_object() {
        return Err(invalid(FIELD, "must be a JSON object"));
    }
    if has_nul(&value) {
        return Err(invalid(FIELD, "holds a NUL character, which jsonb cannot"));
    }
    Ok(Some(canonical(&value)))
}

/// Whether a string (or key) in `value` holds U+0000, which jsonb refuses.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// JSON text with object keys sorted at every level.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The comparisons as a path predicate (`$."a"."b" > $v0 && ...`) and its
/// variables (`{"v0": 100}`).
fn comparisons(
    given: &[PayloadComparison],
) -> Result<(Option<String>, Option<String>), InvalidArgument> {
    const FIELD: &str = "filter.payload_comparisons";
    if given.is_empty() {
        return Ok((None, None));
    }
    if given.len() > MAX_COMPARISONS {
        return Err(invalid(
            FIELD,
            format!("at most {MAX_COMPARISONS} comparisons"),
        ));
    }
    let mut predicate = String::new();
    let mut variables = serde_json::Map::new();
    for (i, comparison) in given.iter().enumerate() {
        if comparison.path.is_empty() || comparison.path.len() > MAX_PATH_KEYS {
            return Err(invalid(
                FIELD,
                format!("a path has 1 to {MAX_PATH_KEYS} keys"),
            ));
        }
        if comparison
            .path
            .iter()
            .any(|key| key.is_empty() || key.len() > MAX_PATH_KEY_BYTES || key.contains('\0'))
        {
            return Err(invalid(
                FIELD,
                format!("a path key has 1 to {MAX_PATH_KEY_BYTES} bytes and no NUL"),
            ));
        }
        let operator = match ComparisonOperator::try_from(comparison.operator) {
            Ok(ComparisonOperator::Equal) => "==",
            Ok(ComparisonOperator::NotEqual) => "!=",
            Ok(ComparisonOperator::Less) => "<",
            Ok(ComparisonOperator::LessOrEqual) => "<=",
            Ok(ComparisonOperator::Greater) => ">",
            Ok(ComparisonOperator::GreaterOrEqual) => ">=",
            Ok(ComparisonOperator::Unspecified) | Err(_) => {
                return Err(invalid(FIELD, "an operator is required"));
            }
        };
        if comparison.value_json.len() > MAX_VALUE_BYTES {
            return Err(invalid(
                FIELD,
                format!("a value has at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
        let value: Value = serde_json::from_str(&comparison.value_json)
            .map_err(|err| invalid(FIELD, format!("a value is not JSON: {err}")))?;
        if value.is_object() || value.is_array() || has_nul(&value) {
            return Err(invalid(
                FIELD,
                "a value is a JSON number, string, boolean or null (without NUL)",
            ));
        }
        if i > 0 {
            predicate.push_str(" && ");
        }
        predicate.push('$');
        for key in &comparison.path {
            predicate.push('.');
            // A JSON string literal is a valid path key literal: quotes,
            // backslashes and control characters come escaped.
            predicate.push_str(&Value::String(key.clone()).to_string());
        }
        predicate.push_str(&format!(" {operator} $v{i}"));
        variables.insert(format!("v{i}"), value);
    }
    Ok((Some(predicate), Some(canonical(&Value::Object(variables)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(path: &[&str], operator: ComparisonOperator, value: &str) -> PayloadComparison {
        PayloadComparison {
            path: path.iter().map(|k| k.to_string()).collect(),
            operator: operator as i32,
            value_json: value.into(),
        }
    }

    #[test]
    fn an_absent_or_empty_filter_matches_everything() {
        assert_eq!(Filter::parse(None).unwrap(), Filter::everything());
        let empty = SubscriptionFilter::default();
        assert_eq!(Filter::parse(Some(&empty)).unwrap(), Filter::everything());
    }

    #[test]
    fn lists_are_sorted_and_the_digest_ignores_their_order() {
        let a = SubscriptionFilter {
            kinds: vec!["withdrawal".into(), "deposit".into(), "deposit".into()],
            ..Default::default()
        };
        let b = SubscriptionFilter {
            kinds: vec!["deposit".into(), "withdrawal".into()],
            ..Default::default()
        };
        let (a, b) = (
            Filter::parse(Some(&a)).unwrap(),
            Filter::parse(Some(&b)).unwrap(),
        );
        assert_eq!(a.kinds, Some(vec!["deposit".into(), "withdrawal".into()]));
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), Filter::everything().digest());
    }

    #[test]
    fn containment_is_canonical_and_must_be_an_object() {
        let parse = |json: &str| {
            Filter::parse(Some(&SubscriptionFilter {
                payload_contains_json: json.into(),
                ..Default::default()
            }))
        };
        let a = parse(r#"{"b": 1, "a": {"y": 2, "x": "é"}}"#).unwrap();
        let b = parse(r#"{"a":{"x":"é","y":2},"b":1}"#).unwrap();
        assert_eq!(
            a.contains.as_deref(),
            Some(r#"{"a":{"x":"é","y":2},"b":1}"#)
        );
        assert_eq!(a.digest(), b.digest());
        for bad in ["[1]", "3", "{", r#"{"a":"\u0000"}"#] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.field(), "filter.payload_contains_json", "{bad}");
        }
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_CONTAINS_BYTES));
        assert!(parse(&big).is_err());
    }

    #[test]
    fn comparisons_quote_keys_and_pass_values_as_variables() {
        let filter = Filter::parse(Some(&SubscriptionFilter {
            payload_comparisons: vec![
                comparison(&["amount"], ComparisonOperator::Greater, "100"),
                comparison(
                    &["a\" || true || \"", "b"],
                    ComparisonOperator::Equal,
                    r#""EUR""#,
                ),
            ],
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            filter.path_predicate.as_deref(),
            Some(r#"$."amount" > $v0 && $."a\" || true || \""."b" == $v1"#)
        );
        assert_eq!(
            filter.path_variables.as_deref(),
            Some(r#"{"v0":100,"v1":"EUR"}"#)
        );
    }

    #[test]
    fn bad_comparisons_are_refused() {
        let bad = [
            comparison(&[], ComparisonOperator::Equal, "1"),
            comparison(&["a"], ComparisonOperator::Unspecified, "1"),
            comparison(&["a"], ComparisonOperator::Equal, "{}"),
            comparison(&["a"], ComparisonOperator::Equal, "[1]"),
            comparison(&["a"], ComparisonOperator::Equal, "nope"),
            comparison(&[""], ComparisonOperator::Equal, "1"),
        ];
        for comparison in bad {
            let err = Filter::parse(Some(&SubscriptionFilter {
                payload_comparisons: vec![comparison.clone()],
                ..Default::default()
            }))
            .unwrap_err();
            assert_eq!(err.reason(), "INVALID_FILTER", "{comparison:?}");
        }
        let too_many =
            vec![comparison(&["a"], ComparisonOperator::Equal, "1"); MAX_COMPARISONS + 1];
        assert!(Filter::parse(Some(&SubscriptionFilter {
            payload_comparisons: too_many,
            ..Default::default()
        }))
        .is_err());
    }

    #[test]
    fn names_are_checked() {
        let err = Filter::parse(Some(&SubscriptionFilter {
            kinds: vec!["not a kind!".into()],
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err.field(), "filter.kinds");
        let err = Filter::parse(Some(&SubscriptionFilter {
            user_ids: vec!["u\0".into()],
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err.field(), "filter.user_ids");
        let err = Filter::parse(Some(&SubscriptionFilter {
            user_ids: vec!["u".into(); MAX_FILTER_USERS + 1],
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err.field(), "filter.user_ids");
    }
}
