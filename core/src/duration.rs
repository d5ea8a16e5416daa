//! Human-readable durations in configuration (`"250ms"`, `"30s"`, `"5m"`).

use std::time::Duration;

/// Parses `"<integer><unit>"` where unit is one of `ms`, `s`, `m`, `h`, `d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // Zero is zero in any unit (`--api-for 0`).
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
    let seconds = |per: u64| {
        value
            .checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {text:?} is too large"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        other => Err(format!(
            "duration {text:?} has unknown unit {other:?} (use ms, s, m, h or d)"
        )),
    }
}

/// Formats a duration the way [`parse`] reads it.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms > 0 && ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// serde adapter: `#[serde(with = "strata_core::duration::serde_text")]`.
pub mod serde_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialises as `"30s"` / `"250ms"`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*value))
    }

    /// Accepts `"30s"`-style text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse("30").is_err());
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse("00").is_err());
        assert!(parse("s").is_err());
        assert_eq!(parse("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert!(parse("3w").is_err());
        assert!(parse("99999999999999999d").is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in [Duration::from_millis(5), Duration::from_secs(30)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
