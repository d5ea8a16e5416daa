//! The closure rule and the days waiting for it: a day may be sealed once
//! it has ended (and settled, for the continuous archiver) and no source's
//! outbox holds an unshipped event of that day. Unshipped events of earlier
//! days do not hold it: those of archived days become late rows.
//!
//! The decisions are pure functions of plain values ([`ended_and_settled`],
//! [`unshipped`], [`pending`]); the `Archiver` methods here read the clock,
//! the catalog and the outboxes and apply them.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use strata_core::config::DatabaseUrl;

use crate::archive::{Archiver, Closure};
use crate::catalog::{self, DayState};
use crate::day::day_end;
use crate::error::ArchiveError;
use crate::pg::connect;

/// Which part of the closure rule holds a day back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotYet {
    /// The day has not ended.
    Ending {
        /// When it ends.
        end: DateTime<Utc>,
    },
    /// The day has ended but not settled (continuous archiver only).
    Settling {
        /// When it will have settled.
        until: DateTime<Utc>,
    },
    /// A source's outbox still holds events of the day.
    Unshipped {
        /// The source's name in the configuration.
        source_name: String,
        /// When the oldest of them occurred.
        oldest: DateTime<Utc>,
    },
}

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotYet::Ending { end } => write!(f, "it has not ended yet (ends {end})"),
            NotYet::Settling { until } => write!(f, "it settles until {until}"),
            NotYet::Unshipped {
                source_name,
                oldest,
            } => write!(
                f,
                "source {source_name:?} still holds unshipped events (oldest occurred at {oldest})"
            ),
        }
    }
}

/// `archiver.settle` as a calendar duration (an out-of-range one never
/// settles).
pub(crate) fn settle_delta(settle: Duration) -> TimeDelta {
    TimeDelta::from_std(settle).unwrap_or(TimeDelta::MAX)
}

/// Whether `day` has settled at `now`: `settle` has passed since its end.
fn settled(day: NaiveDate, now: DateTime<Utc>, settle: TimeDelta) -> bool {
    day_end(day)
        .checked_add_signed(settle)
        .is_some_and(|until| until <= now)
}

/// The time part of the closure rule at `now`: the day has ended, and, for
/// [`Closure::Settled`], settled.
pub(crate) fn ended_and_settled(
    day: NaiveDate,
    now: DateTime<Utc>,
    settle: TimeDelta,
    closure: Closure,
) -> Result<(), NotYet> {
    let end = day_end(day);
    if now < end {
        return Err(NotYet::Ending { end });
    }
    if closure == Closure::Settled && !settled(day, now, settle) {
        let until = end
            .checked_add_signed(settle)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        return Err(NotYet::Settling { until });
    }
    Ok(())
}

/// The outbox part of the closure rule for one source, given the oldest
/// unshipped event of the day it holds.
pub(crate) fn unshipped(source_name: &str, oldest: Option<DateTime<Utc>>) -> Result<(), NotYet> {
    match oldest {
        None => Ok(()),
        Some(oldest) => Err(NotYet::Unshipped {
            source_name: source_name.to_string(),
            oldest,
        }),
    }
}

/// Days a continuous archiver should archive at `now`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Ended and settled days not committed yet.
    pub days: Vec<NaiveDate>,
    /// The end of the oldest ended day not committed yet, settled or not
    /// (for the lag metric).
    pub oldest_end: Option<DateTime<Utc>>,
}

/// The pending days: days with a hot partition or a sealed catalog entry,
/// not committed, that have ended; `days` keeps those also settled. Late
/// rows of committed days are not pending days: the late pass takes them.
pub(crate) fn pending(
    catalog_days: &[(NaiveDate, DayState)],
    partition_days: &[NaiveDate],
    now: DateTime<Utc>,
    settle: TimeDelta,
) -> Pending {
    let committed = |day: &NaiveDate| {
        catalog_days
            .iter()
            .any(|(d, state)| d == day && *state == DayState::Committed)
    };
    let sealed = catalog_days
        .iter()
        .filter(|(_, state)| *state == DayState::Sealed)
        .map(|(day, _)| *day);
    let mut days: Vec<NaiveDate> = partition_days
        .iter()
        .copied()
        .chain(sealed)
        .filter(|day| !committed(day))
        .filter(|day| day_end(*day) <= now)
        .collect();
    days.sort();
    days.dedup();
    let oldest_end = days.first().map(|day| day_end(*day));
    days.retain(|day| settled(*day, now, settle));
    Pending { days, oldest_end }
}

impl Archiver {
    /// Applies the closure rule to `day` now: [`ArchiveError::NotArchivable`]
    /// says which part holds it, [`ArchiveError::SourceUnchecked`] that a
    /// source could not be checked.
    pub(crate) async fn check_closed(
        &self,
        day: NaiveDate,
        closure: Closure,
    ) -> Result<(), ArchiveError> {
        let now = catalog::db_now(&self.hot).await?;
        let settle = settle_delta(self.options.archiver.settle);
        ended_and_settled(day, now, settle, closure)
            .map_err(|reason| ArchiveError::NotArchivable { day, reason })?;
        for (name, url) in &self.options.sources {
            let oldest = oldest_unshipped(url, day, self.timeout())
                .await
                .map_err(|err| ArchiveError::SourceUnchecked {
                    day,
                    source_name: name.clone(),
                    error: Box::new(err),
                })?;
            unshipped(name, oldest)
                .map_err(|reason| ArchiveError::NotArchivable { day, reason })?;
        }
        Ok(())
    }

    /// Days a continuous archiver should archive now, oldest first, and the
    /// oldest unarchived day's end (for the lag metric).
    pub async fn pending_days(
        &self,
    ) -> Result<(Vec<NaiveDate>, Option<DateTime<Utc>>), ArchiveError> {
        let now = catalog::db_now(&self.hot).await?;
        let settle = settle_delta(self.options.archiver.settle);
        let catalog_days: Vec<(NaiveDate, DayState)> = catalog::all_days(&self.hot)
            .await?
            .iter()
            .map(|status| (status.day, status.state))
            .collect();
        let partition_days = catalog::partition_days(&self.hot).await?;
        let Pending { days, oldest_end } = pending(&catalog_days, &partition_days, now, settle);
        Ok((days, oldest_end))
    }
}

/// Oldest `occurred_at` among a source's unshipped outbox rows of `day`,
/// on a connection of its own.
async fn oldest_unshipped(
    url: &DatabaseUrl,
    day: NaiveDate,
    timeout: Duration,
) -> Result<Option<DateTime<Utc>>, ArchiveError> {
    let client = connect(url, timeout).await?;
    catalog::oldest_unshipped(&client, day, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, date};

    const TEN_MINUTES: TimeDelta = TimeDelta::minutes(10);

    #[test]
    fn a_day_that_has_not_ended_is_not_closed() {
        let day = date("2025-03-04");
        for now in ["2025-03-04T12:00:00Z", "2025-03-04T23:59:59.999999Z"] {
            for closure in [Closure::Settled, Closure::Now] {
                assert_eq!(
                    ended_and_settled(day, at(now), TEN_MINUTES, closure),
                    Err(NotYet::Ending {
                        end: at("2025-03-05T00:00:00Z")
                    }),
                    "{now}"
                );
            }
        }
    }

    #[test]
    fn the_continuous_archiver_waits_for_the_settle_time_and_the_cli_does_not() {
        let day = date("2025-03-04");
        let now = at("2025-03-05T00:09:59Z");
        assert_eq!(
            ended_and_settled(day, now, TEN_MINUTES, Closure::Settled),
            Err(NotYet::Settling {
                until: at("2025-03-05T00:10:00Z")
            })
        );
        assert_eq!(
            ended_and_settled(day, now, TEN_MINUTES, Closure::Now),
            Ok(())
        );
        let settled_now = at("2025-03-05T00:10:00Z");
        assert_eq!(
            ended_and_settled(day, settled_now, TEN_MINUTES, Closure::Settled),
            Ok(())
        );
        // The instant the day ends it is closed, with no settle time.
        assert_eq!(
            ended_and_settled(
                day,
                at("2025-03-05T00:00:00Z"),
                TimeDelta::zero(),
                Closure::Settled
            ),
            Ok(())
        );
    }

    #[test]
    fn a_settle_time_too_long_to_represent_never_settles() {
        let day = date("2025-03-04");
        let settle = settle_delta(Duration::MAX);
        let result = ended_and_settled(day, at("2125-01-01T00:00:00Z"), settle, Closure::Settled);
        assert!(matches!(result, Err(NotYet::Settling { .. })), "{result:?}");
        assert!(pending(&[], &[day], at("2125-01-01T00:00:00Z"), settle)
            .days
            .is_empty());
    }

    #[test]
    fn an_unshipped_event_of_the_day_holds_it() {
        assert_eq!(unshipped("main", None), Ok(()));
        let oldest = at("2025-03-04T23:59:59Z");
        let held = unshipped("main", Some(oldest));
        assert_eq!(
            held,
            Err(NotYet::Unshipped {
                source_name: "main".into(),
                oldest
            })
        );
    }

    #[test]
    fn reasons_read_as_before() {
        let reason = |r: Result<(), NotYet>| r.expect_err("held").to_string();
        let day = date("2025-03-04");
        assert_eq!(
            reason(ended_and_settled(
                day,
                at("2025-03-04T01:00:00Z"),
                TEN_MINUTES,
                Closure::Now
            )),
            "it has not ended yet (ends 2025-03-05 00:00:00 UTC)"
        );
        assert_eq!(
            reason(ended_and_settled(
                day,
                at("2025-03-05T00:01:00Z"),
                TEN_MINUTES,
                Closure::Settled
            )),
            "it settles until 2025-03-05 00:10:00 UTC"
        );
        assert_eq!(
            reason(unshipped("main", Some(at("2025-03-04T10:00:00Z")))),
            r#"source "main" still holds unshipped events (oldest occurred at 2025-03-04 10:00:00 UTC)"#
        );
        let err = ArchiveError::NotArchivable {
            day,
            reason: NotYet::Ending {
                end: at("2025-03-05T00:00:00Z"),
            },
        };
        assert_eq!(
            err.to_string(),
            "day 2025-03-04 cannot be archived: it has not ended yet (ends 2025-03-05 00:00:00 UTC)"
        );
    }

    #[test]
    fn pending_days_are_ended_settled_and_not_committed() {
        let (d1, d2, d3, d4, today) = (
            date("2025-03-01"),
            date("2025-03-02"),
            date("2025-03-03"),
            date("2025-03-04"),
            date("2025-03-05"),
        );
        let now = at("2025-03-05T00:05:00Z");
        let catalog_days = [
            (d1, DayState::Committed),
            // Sealed without a partition (nothing in the hot store yet).
            (d2, DayState::Sealed),
            (d3, DayState::Sealed),
        ];
        let partitions = [d1, d3, d4, today];
        let found = pending(&catalog_days, &partitions, now, TEN_MINUTES);
        // d1 is committed (its late rows, if any, are the late pass's);
        // d4 ended five minutes ago and has not settled; today has not ended.
        assert_eq!(found.days, vec![d2, d3]);
        assert_eq!(found.oldest_end, Some(day_end(d2)));
    }

    #[test]
    fn the_oldest_end_counts_a_day_still_settling() {
        let d4 = date("2025-03-04");
        let now = at("2025-03-05T00:05:00Z");
        let found = pending(&[], &[d4], now, TEN_MINUTES);
        assert!(found.days.is_empty());
        assert_eq!(found.oldest_end, Some(day_end(d4)));
        let later = pending(&[], &[d4], at("2025-03-05T00:10:00Z"), TEN_MINUTES);
        assert_eq!(later.days, vec![d4]);
    }

    #[test]
    fn nothing_pending_when_every_day_is_committed() {
        let d1 = date("2025-03-01");
        let found = pending(
            &[(d1, DayState::Committed)],
            &[d1],
            at("2025-03-10T00:00:00Z"),
            TEN_MINUTES,
        );
        assert_eq!(
            found,
            Pending {
                days: vec![],
                oldest_end: None
            }
        );
    }

    #[test]
    fn a_day_both_sealed_and_partitioned_is_pending_once() {
        let d1 = date("2025-03-01");
        let found = pending(
            &[(d1, DayState::Sealed)],
            &[d1],
            at("2025-03-10T00:00:00Z"),
            TEN_MINUTES,
        );
        assert_eq!(found.days, vec![d1]);
    }
}
