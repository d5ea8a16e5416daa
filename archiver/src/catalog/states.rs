//! The catalog's enumerated text columns, typed: a day's state
//! (`strata.archive_days.state`) and a file's origin
//! (`strata.archive_files.origin`). The columns stay text; values are
//! converted here, at the catalog boundary, and an unknown value read from
//! the database is an error, never a panic.

use std::fmt;
use std::str::FromStr;

/// A text value read from the catalog that is none of its column's known
/// values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {column} {value:?}")]
pub struct UnknownValue {
    /// Which column ("day state", "file origin").
    pub column: &'static str,
    /// The value found.
    pub value: String,
}

/// Where a day stands in the catalog (`strata.archive_days.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayState {
    /// Sealed: its partition captures later inserts as late rows; no
    /// archive committed yet.
    Sealed,
    /// Committed: its archive files are the day's data.
    Committed,
}

impl DayState {
    /// Every state.
    pub const ALL: [DayState; 2] = [DayState::Sealed, DayState::Committed];

    /// The catalog's text for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            DayState::Sealed => "sealed",
            DayState::Committed => "committed",
        }
    }
}

impl FromStr for DayState {
    type Err = UnknownValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DayState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownValue {
                column: "day state",
                value: text.to_string(),
            })
    }
}

impl fmt::Display for DayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What produced an archive file (`strata.archive_files.origin`); also
/// the `origin` label of `strata_archiver_commits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOrigin {
    /// The day's export, when the day was committed.
    Day,
    /// Rows that reached an archived day later, as one more file.
    Late,
}

impl FileOrigin {
    /// Every origin.
    pub const ALL: [FileOrigin; 2] = [FileOrigin::Day, FileOrigin::Late];

    /// The catalog's text for this origin (and its metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            FileOrigin::Day => "day",
            FileOrigin::Late => "late",
        }
    }
}

impl FromStr for FileOrigin {
    type Err = UnknownValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FileOrigin::ALL
            .into_iter()
            .find(|origin| origin.as_str() == text)
            .ok_or_else(|| UnknownValue {
                column: "file origin",
                value: text.to_string(),
            })
    }
}

impl fmt::Display for FileOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In the manifest, an origin is its catalog text.
impl serde::Serialize for FileOrigin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_states_round_trip_through_their_text() {
        for state in DayState::ALL {
            assert_eq!(state.as_str().parse::<DayState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(DayState::Sealed.as_str(), "sealed");
        assert_eq!(DayState::Committed.as_str(), "committed");
    }

    #[test]
    fn file_origins_round_trip_through_their_text() {
        for origin in FileOrigin::ALL {
            assert_eq!(origin.as_str().parse::<FileOrigin>(), Ok(origin));
            assert_eq!(origin.to_string(), origin.as_str());
        }
        // These are also the metric's label values.
        assert_eq!(FileOrigin::Day.as_str(), "day");
        assert_eq!(FileOrigin::Late.as_str(), "late");
    }

    #[test]
    fn unknown_text_is_an_error_not_a_panic() {
        for text in [
            "",
            "Sealed",
            "COMMITTED",
            "published",
            " sealed",
            "committed ",
        ] {
            let err = text.parse::<DayState>().expect_err(text);
            assert_eq!(err.column, "day state");
            assert_eq!(err.value, text);
        }
        for text in ["", "Day", "LATE", "manual", "day "] {
            let err = text.parse::<FileOrigin>().expect_err(text);
            assert_eq!(err.column, "file origin");
            assert_eq!(err.value, text);
        }
        let err = "archived".parse::<DayState>().expect_err("unknown");
        assert_eq!(err.to_string(), r#"unknown day state "archived""#);
    }

    #[test]
    fn an_origin_serializes_as_its_text() {
        let json = serde_json::to_string(&[FileOrigin::Day, FileOrigin::Late]).expect("json");
        assert_eq!(json, r#"["day","late"]"#);
    }
}
