//! The read model compared with a replay of the event store: what "exactly once" means.

use std::collections::BTreeMap;

use bank::domain::{AccountEvent, AccountStatus, Movement};
use rust_decimal::Decimal;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// One account as the read tables should show it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Summary {
    pub account_id: Uuid,
    pub owner_id: String,
    pub current_balance: Decimal,
    pub total_deposits: Decimal,
    pub total_withdrawals: Decimal,
    pub transaction_count: i64,
    pub last_transaction: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub version: i64,
    pub status: String,
}

/// `account_summary` and `account_ledger` as a fresh fold of every event would make them.
pub async fn replay(pool: &PgPool) -> (BTreeMap<Uuid, Summary>, BTreeMap<(Uuid, i64), Decimal>) {
    let events = eventstore::read_all_after(pool, eventstore::Position::START, i64::MAX).await.unwrap();
    crate::helpers::load_keys(pool, &events).await;
    let mut summaries: BTreeMap<Uuid, Summary> = BTreeMap::new();
    let mut ledger = BTreeMap::new();
    let mut statuses: BTreeMap<Uuid, AccountStatus> = BTreeMap::new();
    // The account read models read account events only; another aggregate's are not theirs.
    for event in events.iter().filter(|event| AccountEvent::TYPES.contains(&event.event_type.as_str())) {
        let id = event.stream_id;
        match backend::event_codec::decode(event).unwrap() {
            AccountEvent::AccountCreated { owner_id, initial_balance } => {
                let balance = initial_balance.value();
                summaries.insert(
                    id,
                    Summary {
                        account_id: id,
                        owner_id: owner_id.to_string(),
                        current_balance: balance,
                        total_deposits: balance,
                        total_withdrawals: Decimal::ZERO,
                        transaction_count: 1,
                        last_transaction: event.recorded_at,
                        created_at: event.recorded_at,
                        version: event.stream_version,
                        status: AccountStatus::Active.as_str().to_owned(),
                    },
                );
                statuses.insert(id, AccountStatus::Active);
            }
            moved => {
                let summary = summaries.get_mut(&id).expect("created before it moves money");
                match moved.movement() {
                    Some(Movement::In(amount)) => {
                        summary.current_balance += amount.value();
                        summary.total_deposits += amount.value();
                    }
                    Some(Movement::Out(amount)) => {
                        summary.current_balance -= amount.value();
                        summary.total_withdrawals += amount.value();
                    }
                    Some(Movement::Opening(_)) => panic!("account {id} opened twice"),
                    None => {}
                }
                let status = statuses.get_mut(&id).expect("created before its status changes");
                if let Some(after) = moved.status_after(status) {
                    *status = after;
                }
                summary.status = status.as_str().to_owned();
                summary.transaction_count += 1;
                summary.last_transaction = event.recorded_at;
                summary.version = event.stream_version;
                if moved.movement().is_none() {
                    continue;
                }
            }
        }
        ledger.insert((id, event.stream_version), summaries[&id].current_balance);
    }
    (summaries, ledger)
}

/// Asserts that both read tables equal the replay, row for row, once every projection has
/// applied every event in the store.
pub async fn assert_read_model_equals_replay(pool: &PgPool) {
    crate::helpers::wait_for_projections(pool).await;
    let (expected, expected_ledger) = replay(pool).await;
    let rows: Vec<Summary> = sqlx::query_as(
        "SELECT account_id, owner_id, current_balance, total_deposits, total_withdrawals, transaction_count,
                last_transaction, created_at, version, status
         FROM account_summary ORDER BY account_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let actual: BTreeMap<Uuid, Summary> = rows.into_iter().map(|row| (row.account_id, row)).collect();
    assert_eq!(actual.len(), expected.len(), "account_summary has a different number of accounts");
    for (id, summary) in &expected {
        assert_eq!(actual.get(id), Some(summary), "account_summary differs for {id}");
    }
    let ledger: Vec<(Uuid, i64, Decimal)> =
        sqlx::query_as("SELECT account_id, version, balance_after FROM account_ledger").fetch_all(pool).await.unwrap();
    let actual_ledger: BTreeMap<(Uuid, i64), Decimal> = ledger.into_iter().map(|(a, v, b)| ((a, v), b)).collect();
    assert_eq!(actual_ledger, expected_ledger, "account_ledger differs from the replay");
}
