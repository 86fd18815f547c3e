//! The `account_ledger` projection: one row per money movement, the opening balance included,
//! with the balance it left — what the history view and the balance chart read.

use std::collections::HashMap;

use eventstore::{ApplyError, Projection, RecordedEvent, Target};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::account_summary::decode;
use crate::domain::AccountEvent;

pub const PROJECTION_NAME: &str = "account_ledger";

pub struct AccountLedgerProjection;

impl Projection for AccountLedgerProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["account_ledger"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
        let table = target.table("account_ledger");
        let decoded = events.iter().map(|event| Ok((event, decode(event)?))).collect::<Result<Vec<_>, ApplyError>>()?;

        // The balance each account had before this batch, for those it did not open.
        let mut balances: HashMap<Uuid, Decimal> = HashMap::new();
        let mut opened_here = std::collections::HashSet::new();
        let mut earlier = Vec::new();
        for (event, decoded) in &decoded {
            if matches!(decoded, AccountEvent::AccountCreated { .. }) {
                opened_here.insert(event.stream_id);
            } else if !opened_here.contains(&event.stream_id) {
                earlier.push(event.stream_id);
            }
        }
        if !earlier.is_empty() {
            earlier.sort_unstable();
            earlier.dedup();
            // Each account's newest row, by a backward step on the primary key: reading all
            // of their rows would cost as much as their history.
            let rows: Vec<(Uuid, Decimal)> = sqlx::query_as(&format!(
                "SELECT a.account_id, last.balance_after
                 FROM UNNEST($1::uuid[]) AS a(account_id)
                 CROSS JOIN LATERAL (SELECT balance_after FROM {table} l
                     WHERE l.account_id = a.account_id ORDER BY l.version DESC LIMIT 1) last"
            ))
            .bind(&earlier)
            .fetch_all(&mut *conn)
            .await?;
            balances.extend(rows);
        }

        let mut rows = LedgerRows::default();
        for (event, decoded) in decoded {
            let id = event.stream_id;
            let (kind, amount, balance) = match decoded {
                AccountEvent::AccountCreated { initial_balance, .. } => {
                    ("opening", initial_balance.value(), initial_balance.value())
                }
                AccountEvent::MoneyDeposited { amount } | AccountEvent::MoneyWithdrawn { amount } => {
                    let Some(&before) = balances.get(&id) else {
                        return Err(ApplyError::Event {
                            position: event.position(),
                            reason: format!("account {id} has no ledger: it was never created"),
                        });
                    };
                    if matches!(decoded, AccountEvent::MoneyDeposited { .. }) {
                        ("deposit", amount.value(), before + amount.value())
                    } else {
                        ("withdrawal", amount.value(), before - amount.value())
                    }
                }
            };
            balances.insert(id, balance);
            rows.push(event, kind, amount, balance);
        }
        sqlx::query(&format!(
            "INSERT INTO {table} (account_id, version, kind, amount, balance_after, recorded_at, global_position)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::numeric[], $5::numeric[],
                 $6::timestamptz[], $7::bigint[])"
        ))
        .bind(rows.account_id)
        .bind(rows.version)
        .bind(rows.kind)
        .bind(rows.amount)
        .bind(rows.balance_after)
        .bind(rows.recorded_at)
        .bind(rows.global_position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The batch's rows, column by column, for one `UNNEST` insert.
#[derive(Default)]
struct LedgerRows {
    account_id: Vec<Uuid>,
    version: Vec<i64>,
    kind: Vec<&'static str>,
    amount: Vec<Decimal>,
    balance_after: Vec<Decimal>,
    recorded_at: Vec<time::OffsetDateTime>,
    global_position: Vec<i64>,
}

impl LedgerRows {
    fn push(&mut self, event: &RecordedEvent, kind: &'static str, amount: Decimal, balance_after: Decimal) {
        self.account_id.push(event.stream_id);
        self.version.push(event.stream_version);
        self.kind.push(kind);
        self.amount.push(amount);
        self.balance_after.push(balance_after);
        self.recorded_at.push(event.recorded_at);
        self.global_position.push(event.global_position);
    }
}
