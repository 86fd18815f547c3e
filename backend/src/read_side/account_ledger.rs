//! The `account_ledger` projection: one row per money movement, the opening balance included,
//! with the balance it left — what the history view and the balance chart read.
//!
//! A batch is folded in memory ([`fold`], pure) from the balances its accounts had before it,
//! which one statement reads, and written with one statement.

use std::collections::{HashMap, HashSet};

use eventstore::{ApplyError, Projection, RecordedEvent, Target};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::account_summary::{NeverCreated, decode, key_error, load_keys};
use bank::contract::MovementKind;
use bank::domain::{AccountEvent, Movement};

pub const PROJECTION_NAME: &str = "account_ledger";

#[derive(Debug, Clone, Copy)]
pub struct AccountLedgerProjection;

impl Projection for AccountLedgerProjection {
    const NAME: &'static str = PROJECTION_NAME;
    const TABLES: &'static [&'static str] = &["account_ledger"];
    const EVENT_TYPES: &'static [&'static str] = AccountEvent::TYPES;
    /// Partitionable: an account's entries and balance, from that account's events alone.
    const PARTITIONABLE: bool = true;

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
        let table = target.table("account_ledger");
        // Nothing personal is kept here, but every event is decoded, its sealed fields too.
        load_keys(&mut *conn, events).await.map_err(key_error)?;
        let decoded = events.iter().map(|event| Ok((event, decode(event)?))).collect::<Result<Vec<_>, ApplyError>>()?;
        let balances = balances_before(conn, &table, &opened_before(&decoded)).await?;
        write(conn, &fold(&decoded, balances)?, &table).await
    }
}

/// The accounts the batch moves money of without opening them: their balance before the batch
/// is in the table already.
pub fn opened_before(decoded: &[(&RecordedEvent, AccountEvent)]) -> Vec<Uuid> {
    let mut opened_here = HashSet::new();
    let mut earlier = Vec::new();
    for (event, decoded) in decoded {
        if matches!(decoded, AccountEvent::AccountCreated { .. }) {
            opened_here.insert(event.stream_id);
        } else if kind_of(decoded).is_some() && !opened_here.contains(&event.stream_id) {
            earlier.push(event.stream_id);
        }
    }
    earlier.sort_unstable();
    earlier.dedup();
    earlier
}

/// Each account's newest balance, by a backward step on the primary key: reading all of their
/// rows would cost as much as their history.
async fn balances_before(
    conn: &mut PgConnection,
    table: &str,
    accounts: &[Uuid],
) -> Result<HashMap<Uuid, Decimal>, ApplyError> {
    if accounts.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Decimal)> = sqlx::query_as(&format!(
        "SELECT a.account_id, last.balance_after
         FROM UNNEST($1::uuid[]) AS a(account_id)
         CROSS JOIN LATERAL (SELECT balance_after FROM {table} l
             WHERE l.account_id = a.account_id ORDER BY l.version DESC LIMIT 1) last"
    ))
    .bind(accounts)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The ledger's kind of a movement; `None` for an event that moves no money (a status change).
pub fn kind_of(event: &AccountEvent) -> Option<MovementKind> {
    Some(match event {
        AccountEvent::AccountCreated { .. } => MovementKind::Opening,
        AccountEvent::MoneyDeposited { .. } => MovementKind::Deposit,
        AccountEvent::MoneyWithdrawn { .. } => MovementKind::Withdrawal,
        AccountEvent::TransferDebited { .. } => MovementKind::TransferOut,
        AccountEvent::TransferCredited { .. } => MovementKind::TransferIn,
        AccountEvent::TransferRefunded { .. } => MovementKind::Refund,
        AccountEvent::AccountFrozen { .. }
        | AccountEvent::AccountUnfrozen
        | AccountEvent::AccountClosed
        | AccountEvent::OwnerForgotten => return None,
    })
}

/// The batch's rows, from the balances its accounts had before it: pure.
pub fn fold(
    decoded: &[(&RecordedEvent, AccountEvent)],
    mut balances: HashMap<Uuid, Decimal>,
) -> Result<LedgerRows, ApplyError> {
    let mut rows = LedgerRows::default();
    for (event, decoded) in decoded {
        let id = event.stream_id;
        let (Some(kind), Some(movement)) = (kind_of(decoded), decoded.movement()) else {
            continue;
        };
        let (amount, balance) = match movement {
            Movement::Opening(initial_balance) => (initial_balance.value(), initial_balance.value()),
            Movement::In(amount) | Movement::Out(amount) => {
                let Some(&before) = balances.get(&id) else {
                    let reason = NeverCreated { account_id: id, table: "account_ledger" };
                    return Err(ApplyError::Event { position: event.position(), reason: Box::new(reason) });
                };
                if matches!(movement, Movement::In(_)) {
                    (amount.value(), before + amount.value())
                } else {
                    (amount.value(), before - amount.value())
                }
            }
        };
        balances.insert(id, balance);
        rows.push(event, kind, amount, balance);
    }
    Ok(rows)
}

async fn write(conn: &mut PgConnection, rows: &LedgerRows, table: &str) -> Result<(), ApplyError> {
    sqlx::query(&format!(
        "INSERT INTO {table} (account_id, version, kind, amount, balance_after, recorded_at, global_position)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::numeric[], $5::numeric[],
             $6::timestamptz[], $7::bigint[])"
    ))
    .bind(&rows.account_id)
    .bind(&rows.version)
    .bind(rows.kind.iter().map(|kind| kind.as_str()).collect::<Vec<_>>())
    .bind(&rows.amount)
    .bind(&rows.balance_after)
    .bind(&rows.recorded_at)
    .bind(&rows.global_position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The batch's rows, column by column, for one `UNNEST` insert.
#[derive(Debug, Default, PartialEq)]
pub struct LedgerRows {
    pub account_id: Vec<Uuid>,
    pub version: Vec<i64>,
    pub kind: Vec<MovementKind>,
    pub amount: Vec<Decimal>,
    pub balance_after: Vec<Decimal>,
    pub recorded_at: Vec<time::OffsetDateTime>,
    pub global_position: Vec<i64>,
}

impl LedgerRows {
    fn push(&mut self, event: &RecordedEvent, kind: MovementKind, amount: Decimal, balance_after: Decimal) {
        self.account_id.push(event.stream_id);
        self.version.push(event.stream_version);
        self.kind.push(kind);
        self.amount.push(amount);
        self.balance_after.push(balance_after);
        self.recorded_at.push(event.recorded_at);
        self.global_position.push(event.global_position);
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::event_codec;
    use bank::domain::{Amount, Money, OwnerId};

    fn recorded(stream_id: Uuid, version: i64, n: i64, event: &AccountEvent) -> (RecordedEvent, AccountEvent) {
        let new = event_codec::encode(event, &json!({}));
        let recorded = RecordedEvent {
            global_position: n,
            transaction_id: 100 + n,
            event_id: new.event_id,
            stream_type: "account".into(),
            stream_id,
            stream_version: version,
            event_type: new.event_type,
            schema_version: new.schema_version,
            data: new.data,
            metadata: new.metadata,
            recorded_at: datetime!(2026-11-30 12:00 UTC),
        };
        (recorded, event.clone())
    }

    #[test]
    fn each_movement_leaves_the_balance_after_it() {
        let (opened, earlier) = (Uuid::new_v4(), Uuid::new_v4());
        let created = AccountEvent::AccountCreated {
            owner_id: OwnerId::parse("alice").unwrap(),
            initial_balance: Money::try_from(dec!(10)).unwrap(),
        };
        let deposit = AccountEvent::MoneyDeposited { amount: Amount::try_from(dec!(5)).unwrap() };
        let withdrawal = AccountEvent::MoneyWithdrawn { amount: Amount::try_from(dec!(3)).unwrap() };
        let events =
            [recorded(opened, 1, 1, &created), recorded(earlier, 8, 2, &withdrawal), recorded(opened, 2, 3, &deposit)];
        let decoded: Vec<(&RecordedEvent, AccountEvent)> = events.iter().map(|(r, e)| (r, e.clone())).collect();
        assert_eq!(opened_before(&decoded), vec![earlier]);

        let rows = fold(&decoded, HashMap::from([(earlier, dec!(100))])).unwrap();
        assert_eq!(rows.kind, vec![MovementKind::Opening, MovementKind::Withdrawal, MovementKind::Deposit]);
        assert_eq!(rows.balance_after, vec![dec!(10), dec!(97), dec!(15)]);
        assert_eq!(rows.version, vec![1, 8, 2]);

        // Without the earlier account's balance, its movement cannot be placed: the batch stops there.
        let error = fold(&decoded, HashMap::new()).unwrap_err();
        assert!(matches!(error, ApplyError::Event { position, .. } if position == events[1].0.position()), "{error}");
    }
}
