//! Which history of the log this is, so that a read store outside Postgres never serves a
//! history the database no longer has.
//!
//! A database's log can be replaced under a store that outlives it: a dump restored into a new
//! database, a cluster restored from a base backup, a point-in-time recovery, an asynchronous
//! standby promoted after it missed the last commits. Transaction ids, and so positions, are
//! then reused by other events, and a store's checkpoint that is ahead of the new log looks like
//! one that is merely ahead of the Postgres read model. So an outside store's checkpoint names
//! the history it was built from ([`LogIdentity`]) and the event at its checkpoint, which must
//! still be there ([`event_at`]).

use std::fmt;
use std::str::FromStr;

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Position;

/// One history of one database's log.
///
/// The cluster (its system identifier: a cluster made anew and loaded from a dump has another),
/// its timeline (a point-in-time recovery or a standby's promotion starts a new one), the
/// database (its oid: a database dropped and restored is another) and the log's first event. A
/// cluster restored from a base backup keeps all four: there, only the event at a store's
/// checkpoint tells the histories apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogIdentity {
    pub system: String,
    pub timeline: i64,
    pub database: i64,
    pub first_event: Uuid,
}

impl fmt::Display for LogIdentity {
    /// `<system>.<timeline>.<database>.<first event>`: how stores write it down.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}.{}", self.system, self.timeline, self.database, self.first_event)
    }
}

impl FromStr for LogIdentity {
    type Err = String;

    fn from_str(text: &str) -> Result<LogIdentity, String> {
        let unreadable = || format!("{text:?} names no history of a log");
        let mut parts = text.splitn(4, '.');
        let mut next = || parts.next().ok_or_else(unreadable);
        let system = next()?;
        if system.is_empty() || !system.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unreadable());
        }
        Ok(LogIdentity {
            system: system.to_owned(),
            timeline: next()?.parse().map_err(|_| unreadable())?,
            database: next()?.parse().map_err(|_| unreadable())?,
            first_event: next()?.parse().map_err(|_| unreadable())?,
        })
    }
}

/// This database's history now; `None` while the log is empty (nothing to build a store from).
///
/// Read on the primary: the timeline is its write-ahead log's (a standby has none of its own).
/// The first event counts once it is committed and no earlier one can still appear.
pub async fn log_identity(executor: impl PgExecutor<'_>) -> Result<Option<LogIdentity>, sqlx::Error> {
    let row: (String, i64, i64, Option<Uuid>) = sqlx::query_as(
        "SELECT (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
                ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))
                    ::bit(32)::bigint,
                (SELECT oid::bigint FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()),
                (SELECT event_id FROM events
                 WHERE transaction_id < pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
                 ORDER BY transaction_id, global_position LIMIT 1)",
    )
    .fetch_one(executor)
    .await?;
    let (system, timeline, database, first_event) = row;
    Ok(first_event.map(|first_event| LogIdentity { system, timeline, database, first_event }))
}

/// The id of the event at `position`, if the log has one there ([`Position::START`] has none).
pub async fn event_at(executor: impl PgExecutor<'_>, position: Position) -> Result<Option<Uuid>, sqlx::Error> {
    if position == Position::START {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT event_id FROM events WHERE global_position = $2 AND transaction_id = $1::text::xid8")
        .bind(position.transaction_id.to_string())
        .bind(position.global_position)
        .fetch_optional(executor)
        .await
}

/// When the database server last started: a restart may have brought another history (a
/// restore in place), so what was checked against the old one is checked again.
pub async fn server_started_at(executor: impl PgExecutor<'_>) -> Result<time::OffsetDateTime, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_catalog.pg_postmaster_start_time()").fetch_one(executor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips_and_nothing_else_reads_as_one() {
        let identity = LogIdentity {
            system: "7715414759852177559".into(),
            timeline: 2,
            database: 16384,
            first_event: Uuid::from_u128(42),
        };
        assert_eq!(identity.to_string().parse::<LogIdentity>(), Ok(identity.clone()));
        for text in ["", "00000000-0000-0000-0000-000000000000", "1.2.3", "x.1.2.00000000-0000-0000-0000-000000000000"]
        {
            assert!(text.parse::<LogIdentity>().is_err(), "{text}");
        }
    }
}
