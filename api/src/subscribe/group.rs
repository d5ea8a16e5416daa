//! Consumer groups: the group's definition, its members' liveness, the
//! buckets' leases and their acknowledged positions, all in the primary
//! (`migrations/store/0010_stream_groups.sql`). The member's loop that
//! uses them is `service/group.rs`.
//!
//! Every member of a process renews, once a second, its heartbeat and the
//! leases of its buckets; all members compute the same assignment from
//! the live members (bucket `b` goes to the `b % n`-th member in id
//! order). A member lets go of a bucket assigned elsewhere (after storing
//! what was acknowledged in it) and claims a bucket assigned to it once
//! the bucket is free or its lease has lapsed (its holder died). A claim
//! raises the bucket's generation, and acknowledgements are stored only
//! under the generation they were delivered in: a member that lost a
//! bucket (a pause longer than its lease) cannot move it any more.

use std::time::Duration;

use sha2::{Digest, Sha256};
use strata_proto::v1::GroupJoin;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::filter::Filter;
use super::position::{Position, RowKey};
use crate::error::InvalidArgument;
use crate::pool::PreparedStatements;
use crate::read_error::{db, decode, ReadError};

/// Longest group name.
pub const MAX_GROUP_NAME: usize = 128;
/// Buckets of a group whose join does not say.
pub const DEFAULT_BUCKETS: u32 = 16;
/// Most buckets of a group.
pub const MAX_BUCKETS: u32 = 1024;
/// Unacknowledged events of a member whose join does not say.
pub const DEFAULT_MAX_UNACKNOWLEDGED: u32 = 1000;
/// Most unacknowledged events a member may ask for.
pub const MAX_UNACKNOWLEDGED: u32 = 10_000;

/// A group as a member joins it.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// The group's name.
    pub name: String,
    /// Which events.
    pub filter: Filter,
    /// The partition key's payload path; `None`: the user id.
    pub key_path: Option<Vec<String>>,
    /// How many buckets.
    pub buckets: i32,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidArgument {
    InvalidArgument::Group {
        field,
        problem: problem.into(),
    }
}

impl GroupSpec {
    /// Checks a join's group, filter, key and bucket count; with the
    /// member's unacknowledged-events limit.
    pub fn parse(join: &GroupJoin) -> Result<(Self, usize), InvalidArgument> {
        let name = &join.group;
        if name.is_empty()
            || name.len() > MAX_GROUP_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "join.group",
                format!("1 to {MAX_GROUP_NAME} characters of A-Z a-z 0-9 . _ -"),
            ));
        }
        let filter = Filter::parse(join.filter.as_ref())?;
        let key_path = if join.key_path.is_empty() {
            None
        } else {
            use super::filter::{MAX_PATH_KEYS, MAX_PATH_KEY_BYTES};
            if join.key_path.len() > MAX_PATH_KEYS
                || join.key_path.iter().any(|key| {
                    key.is_empty() || key.len() > MAX_PATH_KEY_BYTES || key.contains('\0')
                })
            {
                return Err(invalid(
                    "join.key_path",
                    format!("1 to {MAX_PATH_KEYS} keys of 1 to {MAX_PATH_KEY_BYTES} bytes, no NUL"),
                ));
            }
            Some(join.key_path.clone())
        };
        let buckets = match join.buckets {
            0 => DEFAULT_BUCKETS,
            n if n <= MAX_BUCKETS => n,
            _ => {
                return Err(invalid(
                    "join.buckets",
                    format!("0 (16) or 1 to {MAX_BUCKETS}"),
                ))
            }
        };
        let max_unacked = match join.max_unacknowledged {
            0 => DEFAULT_MAX_UNACKNOWLEDGED,
            n if n <= MAX_UNACKNOWLEDGED => n,
            _ => {
                return Err(invalid(
                    "join.max_unacknowledged",
                    format!("0 (1,000) or 1 to {MAX_UNACKNOWLEDGED}"),
                ))
            }
        };
        Ok((
            Self {
                name: name.clone(),
                filter,
                key_path,
                // At most MAX_BUCKETS: fits.
                buckets: i32::try_from(buckets).unwrap_or(i32::MAX),
            },
            usize::try_from(max_unacked).unwrap_or(usize::MAX),
        ))
    }

    /// What members must agree on: filter, key and bucket count.
    pub fn definition(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"strata.v1.JoinGroup\0");
        hasher.update(self.filter.digest());
        match &self.key_path {
            None => hasher.update(b"user_id"),
            Some(path) => {
                hasher.update((path.len() as u64).to_be_bytes());
                for key in path {
                    hasher.update((key.len() as u64).to_be_bytes());
                    hasher.update(key.as_bytes());
                }
            }
        }
        hasher.update(self.buckets.to_be_bytes());
        hasher.finalize().into()
    }
}

/// The buckets of `buckets` that member `me` should hold when `members`
/// (any order) are alive: bucket `b` goes to the `b % n`-th in id order.
pub fn assigned(members: &[Uuid], me: Uuid, buckets: i32) -> Vec<i32> {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(index) = sorted.iter().position(|member| *member == me) else {
        return Vec::new();
    };
    let n = sorted.len();
    (0..buckets)
        .filter(|bucket| usize::try_from(*bucket).is_ok_and(|b| b % n == index))
        .collect()
}

/// A bucket a member claimed: its generation and where its
/// acknowledgements stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The bucket.
    pub bucket: i32,
    /// The claim's generation.
    pub generation: i64,
    /// Everything of the bucket up to here was acknowledged.
    pub acked: Position,
}

/// A bucket's acknowledged position to store under `generation`.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The bucket.
    pub bucket: i32,
    /// The generation of the member's claim.
    pub generation: i64,
    /// The new position.
    pub position: Position,
}

const CONTEXT: &str = "a consumer group statement";

/// Whether a group exists with `spec`'s definition, with another, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// It exists, defined as `spec`.
    Same,
    /// It exists with another filter, key or bucket count.
    Other,
    /// No such group.
    Missing,
    /// Not created: the hot store holds [`MAX_GROUPS`] groups.
    Full,
}

/// Most groups one hot store holds.
pub const MAX_GROUPS: i64 = 1000;

/// How `spec`'s group stands.
pub async fn look_up(
    client: &mut impl PreparedStatements,
    spec: &GroupSpec,
) -> Result<Existing, ReadError> {
    const SQL: &str = "SELECT definition FROM strata.stream_groups WHERE name = $1";
    const TYPES: [Type; 1] = [Type::TEXT];
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group's lookup"))?;
    let row = client
        .client()
        .query_opt(&statement, &[&spec.name])
        .await
        .map_err(db("look up the group"))?;
    match row {
        None => Ok(Existing::Missing),
        Some(row) => compare(&row, spec),
    }
}

fn compare(row: &tokio_postgres::Row, spec: &GroupSpec) -> Result<Existing, ReadError> {
    let stored: Vec<u8> = row.try_get(0).map_err(decode(CONTEXT))?;
    Ok(if stored == spec.definition() {
        Existing::Same
    } else {
        Existing::Other
    })
}

/// Creates the group (its buckets at `start`) unless it exists (or the
/// store holds [`MAX_GROUPS`]); then how it stands. Two first members
/// joining at once: the second waits for the first's row and compares
/// with it (`DO UPDATE` returns the row that won, `DO NOTHING` would
/// return nothing and an older snapshot would not see it).
pub async fn create(
    client: &mut impl PreparedStatements,
    spec: &GroupSpec,
    start: i64,
) -> Result<Existing, ReadError> {
    const SQL: &str = "WITH created AS (
        INSERT INTO strata.stream_groups (name, definition, key_path, buckets)
        SELECT $1, $2, $3, $4
         WHERE (SELECT count(*) FROM strata.stream_groups) < $6
            OR EXISTS (SELECT 1 FROM strata.stream_groups WHERE name = $1)
        ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
        RETURNING definition, buckets, xmax = 0 AS inserted),
    buckets AS (
        INSERT INTO strata.stream_group_buckets (group_name, bucket, acked_seq)
        SELECT $1, b, $5 FROM created c, generate_series(0, c.buckets - 1) AS b
         WHERE c.inserted)
    SELECT definition FROM created";
    const TYPES: [Type; 6] = [
        Type::TEXT,
        Type::BYTEA,
        Type::TEXT_ARRAY,
        Type::INT4,
        Type::INT8,
        Type::INT8,
    ];
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group's creation"))?;
    let definition = spec.definition();
    let row = client
        .client()
        .query_opt(
            &statement,
            &[
                &spec.name,
                &definition.as_slice(),
                &spec.key_path,
                &spec.buckets,
                &start,
                &MAX_GROUPS,
            ],
        )
        .await
        .map_err(db("create the group"))?;
    match row {
        None => Ok(Existing::Full),
        Some(row) => compare(&row, spec),
    }
}

/// Records that `member` is alive, forgets members silent for longer
/// than `timeout`, and returns the live members.
pub async fn heartbeat(
    client: &mut impl PreparedStatements,
    group: &str,
    member: Uuid,
    timeout: Duration,
) -> Result<Vec<Uuid>, ReadError> {
    const SQL: &str = "WITH beat AS (
        INSERT INTO strata.stream_group_members (group_name, member, heartbeat_at)
        VALUES ($1, $2, now())
        ON CONFLICT (group_name, member) DO UPDATE SET heartbeat_at = now()),
    dead AS (
        DELETE FROM strata.stream_group_members
         WHERE group_name = $1 AND member <> $2
           AND heartbeat_at < now() - $3::int8 * interval '1 millisecond'
        RETURNING member)
    SELECT member FROM strata.stream_group_members
     WHERE group_name = $1 AND member <> $2
       AND heartbeat_at >= now() - $3::int8 * interval '1 millisecond'";
    const TYPES: [Type; 3] = [Type::TEXT, Type::UUID, Type::INT8];
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group heartbeat"))?;
    let rows = client
        .client()
        .query(&statement, &[&group, &member, &millis(timeout)])
        .await
        .map_err(db("the group heartbeat"))?;
    let mut members = vec![member];
    for row in &rows {
        members.push(row.try_get(0).map_err(decode(CONTEXT))?);
    }
    Ok(members)
}

/// Stores acknowledged positions; returns the buckets stored (the others
/// are no longer `member`'s under that generation).
pub async fn store_acks(
    client: &mut impl PreparedStatements,
    group: &str,
    member: Uuid,
    acks: &[Ack],
) -> Result<Vec<i32>, ReadError> {
    const SQL: &str = "UPDATE strata.stream_group_buckets b
          SET acked_seq = u.seq, acked_user = u.user_id, acked_at = u.at,
              acked_event = u.event, acked_time = now()
         FROM unnest($3::int4[], $4::int8[], $5::int8[], $6::text[], $7::int8[], $8::uuid[])
              AS u(bucket, generation, seq, user_id, at, event)
        WHERE b.group_name = $1 AND b.bucket = u.bucket AND b.owner = $2
          AND b.generation = u.generation
        RETURNING b.bucket";
    const TYPES: [Type; 8] = [
        Type::TEXT,
        Type::UUID,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT8_ARRAY,
        Type::UUID_ARRAY,
    ];
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group acknowledgements"))?;
    let buckets: Vec<i32> = acks.iter().map(|ack| ack.bucket).collect();
    let generations: Vec<i64> = acks.iter().map(|ack| ack.generation).collect();
    let seqs: Vec<i64> = acks.iter().map(|ack| ack.position.seq).collect();
    let key = |ack: &Ack| ack.position.key.clone();
    let users: Vec<Option<String>> = acks.iter().map(|a| key(a).map(|k| k.user_id)).collect();
    let ats: Vec<Option<i64>> = acks.iter().map(|a| key(a).map(|k| k.occurred_at)).collect();
    let events: Vec<Option<Uuid>> = acks.iter().map(|a| key(a).map(|k| k.event_id)).collect();
    let rows = client
        .client()
        .query(
            &statement,
            &[
                &group,
                &member,
                &buckets,
                &generations,
                &seqs,
                &users,
                &ats,
                &events,
            ],
        )
        .await
        .map_err(db("store group acknowledgements"))?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(decode(CONTEXT)))
        .collect()
}

/// Extends the leases of the buckets `member` holds (`held`: bucket and
/// generation) and frees any other it owns (a claim whose answer was
/// lost); returns those still its own under the same generation.
pub async fn renew(
    client: &mut impl PreparedStatements,
    group: &str,
    member: Uuid,
    held: &[(i32, i64)],
    lease: Duration,
) -> Result<Vec<(i32, i64)>, ReadError> {
    const SQL: &str = "WITH stray AS (
        UPDATE strata.stream_group_buckets b
           SET owner = NULL, lease_until = NULL
         WHERE b.group_name = $1 AND b.owner = $2
           AND (b.bucket, b.generation) NOT IN
               (SELECT * FROM unnest($3::int4[], $4::int8[])))
    UPDATE strata.stream_group_buckets b
       SET lease_until = now() + $5::int8 * interval '1 millisecond'
      FROM unnest($3::int4[], $4::int8[]) AS u(bucket, generation)
     WHERE b.group_name = $1 AND b.bucket = u.bucket AND b.owner = $2
       AND b.generation = u.generation
    RETURNING b.bucket, b.generation";
    const TYPES: [Type; 5] = [
        Type::TEXT,
        Type::UUID,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::INT8,
    ];
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group lease renewal"))?;
    let numbers: Vec<i32> = held.iter().map(|(bucket, _)| *bucket).collect();
    let generations: Vec<i64> = held.iter().map(|(_, generation)| *generation).collect();
    let rows = client
        .client()
        .query(
            &statement,
            &[&group, &member, &numbers, &generations, &millis(lease)],
        )
        .await
        .map_err(db("renew the group leases"))?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0).map_err(decode(CONTEXT))?,
                row.try_get(1).map_err(decode(CONTEXT))?,
            ))
        })
        .collect()
}

/// Frees `buckets` held by `member` under their generations.
pub async fn release(
    client: &mut impl PreparedStatements,
    group: &str,
    member: Uuid,
    buckets: &[(i32, i64)],
) -> Result<(), ReadError> {
    const SQL: &str = "UPDATE strata.stream_group_buckets b
          SET owner = NULL, lease_until = NULL
         FROM unnest($3::int4[], $4::int8[]) AS u(bucket, generation)
        WHERE b.group_name = $1 AND b.bucket = u.bucket AND b.owner = $2
          AND b.generation = u.generation";
    const TYPES: [Type; 4] = [Type::TEXT, Type::UUID, Type::INT4_ARRAY, Type::INT8_ARRAY];
    if buckets.is_empty() {
        return Ok(());
    }
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group release"))?;
    let numbers: Vec<i32> = buckets.iter().map(|(bucket, _)| *bucket).collect();
    let generations: Vec<i64> = buckets.iter().map(|(_, generation)| *generation).collect();
    client
        .client()
        .execute(&statement, &[&group, &member, &numbers, &generations])
        .await
        .map_err(db("release group buckets"))?;
    Ok(())
}

/// Claims those of `buckets` that are free or whose lease lapsed.
pub async fn claim(
    client: &mut impl PreparedStatements,
    group: &str,
    member: Uuid,
    buckets: &[i32],
    lease: Duration,
) -> Result<Vec<Claimed>, ReadError> {
    const SQL: &str = "UPDATE strata.stream_group_buckets
          SET owner = $2, generation = generation + 1,
              lease_until = now() + $4::int8 * interval '1 millisecond'
        WHERE group_name = $1 AND bucket = ANY ($3::int4[])
          AND (owner IS NULL OR lease_until IS NULL OR lease_until < now())
        RETURNING bucket, generation, acked_seq, acked_user, acked_at, acked_event";
    const TYPES: [Type; 4] = [Type::TEXT, Type::UUID, Type::INT4_ARRAY, Type::INT8];
    if buckets.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group claim"))?;
    let rows = client
        .client()
        .query(&statement, &[&group, &member, &buckets, &millis(lease)])
        .await
        .map_err(db("claim group buckets"))?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let user: Option<String> = row.try_get(3).map_err(decode(CONTEXT))?;
        let at: Option<i64> = row.try_get(4).map_err(decode(CONTEXT))?;
        let event: Option<Uuid> = row.try_get(5).map_err(decode(CONTEXT))?;
        let key = match (user, at, event) {
            (Some(user_id), Some(occurred_at), Some(event_id)) => Some(RowKey {
                user_id,
                occurred_at,
                event_id,
            }),
            _ => None,
        };
        claimed.push(Claimed {
            bucket: row.try_get(0).map_err(decode(CONTEXT))?,
            generation: row.try_get(1).map_err(decode(CONTEXT))?,
            acked: Position {
                seq: row.try_get(2).map_err(decode(CONTEXT))?,
                key,
            },
        });
    }
    claimed.sort_by_key(|claimed| claimed.bucket);
    Ok(claimed)
}

/// Forgets `member` (it left).
pub async fn leave(
    client: &mut impl PreparedStatements,
    group: &str,
    member: Uuid,
) -> Result<(), ReadError> {
    const SQL: &str =
        "DELETE FROM strata.stream_group_members WHERE group_name = $1 AND member = $2";
    const TYPES: [Type; 2] = [Type::TEXT, Type::UUID];
    let statement = client
        .prepared(SQL, &TYPES)
        .await
        .map_err(db("prepare the group leave"))?;
    client
        .client()
        .execute(&statement, &[&group, &member])
        .await
        .map_err(db("leave the group"))?;
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bucket_has_one_member_and_shares_differ_by_at_most_one() {
        let members: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        for member in &members {
            let mine = assigned(&members, *member, 16);
            sizes.push(mine.len());
            seen.extend(mine);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        assert_eq!(sizes, vec![6, 5, 5]);
        assert!(assigned(&members, Uuid::from_u128(9), 16).is_empty());
    }

    #[test]
    fn joins_are_checked() {
        let join = |group: &str, buckets: u32, path: Vec<String>| GroupJoin {
            group: group.into(),
            buckets,
            key_path: path,
            ..Default::default()
        };
        assert!(GroupSpec::parse(&join("fraud-scoring.v1", 0, vec![])).is_ok());
        for bad in [
            join("", 0, vec![]),
            join("a b", 0, vec![]),
            join(&"g".repeat(129), 0, vec![]),
            join("g", 1025, vec![]),
            join("g", 0, vec![String::new()]),
        ] {
            let err = GroupSpec::parse(&bad).expect_err("refused");
            assert_eq!(err.reason(), "INVALID_GROUP", "{err}");
        }
        let (a, _) = GroupSpec::parse(&join("g", 0, vec![])).unwrap();
        let (b, _) = GroupSpec::parse(&join("g", 0, vec!["account".into()])).unwrap();
        let (c, _) = GroupSpec::parse(&join("g", 8, vec![])).unwrap();
        assert_ne!(a.definition(), b.definition());
        assert_ne!(a.definition(), c.definition());
    }
}
