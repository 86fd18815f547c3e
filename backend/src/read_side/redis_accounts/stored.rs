//! An account's hash and the checkpoint as the store writes them, and read back.

use std::str::FromStr;

use eventstore::Position;
use eventstore::projection::{LogPlace, StoredCheckpoint};
use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::RedisReadError;
use super::scripts::FIELDS;
use crate::read_side::account_summary::{Change, NewRow};
use bank::contract::{AccountStatusView, AccountView, ServedBy};
use bank::domain::{AccountStatus, FORGOTTEN, Reason};

/// One account's hash, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StoredAccount {
    pub(super) owner_id: String,
    pub(super) balance: Decimal,
    deposits: Decimal,
    withdrawals: Decimal,
    count: i64,
    last_transaction: OffsetDateTime,
    created_at: OffsetDateTime,
    version: i64,
    position: i64,
    status: AccountStatus,
}

impl StoredAccount {
    pub(super) fn opened(row: &NewRow) -> StoredAccount {
        StoredAccount {
            owner_id: row.owner_id.clone(),
            balance: row.balance,
            deposits: row.deposits,
            withdrawals: row.withdrawals,
            count: row.count,
            last_transaction: row.last_transaction,
            created_at: row.created_at,
            version: row.version,
            position: row.position,
            status: row.status.clone(),
        }
    }

    pub(super) fn changed(&self, change: &Change) -> StoredAccount {
        StoredAccount {
            owner_id: if change.owner_forgotten { FORGOTTEN.to_owned() } else { self.owner_id.clone() },
            balance: self.balance + change.deposits - change.withdrawals,
            deposits: self.deposits + change.deposits,
            withdrawals: self.withdrawals + change.withdrawals,
            count: self.count + change.count,
            last_transaction: change.last_transaction,
            created_at: self.created_at,
            version: change.version,
            position: change.position,
            status: change.status_after(self.status.clone()),
        }
    }

    pub(super) fn values(&self) -> Result<[String; 11], time::error::Format> {
        Ok([
            self.owner_id.clone(),
            self.balance.to_string(),
            self.deposits.to_string(),
            self.withdrawals.to_string(),
            self.count.to_string(),
            self.last_transaction.format(&Rfc3339)?,
            self.created_at.format(&Rfc3339)?,
            self.version.to_string(),
            self.position.to_string(),
            self.status.as_str().to_owned(),
            self.status.reason().map(|reason| reason.to_string()).unwrap_or_default(),
        ])
    }

    /// `None` for a hash that does not exist (every field missing).
    pub(super) fn parse(values: &[Option<String>]) -> Result<Option<StoredAccount>, RedisReadError> {
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let field = |index: usize| -> Result<&str, RedisReadError> {
            values
                .get(index)
                .and_then(Option::as_deref)
                .ok_or_else(|| RedisReadError::Unreadable(format!("an account without {}", FIELDS[index])))
        };
        fn parsed<T: FromStr>(text: &str, name: &str) -> Result<T, RedisReadError> {
            text.parse().map_err(|_| RedisReadError::Unreadable(format!("{name} {text:?}")))
        }
        let time = |index: usize| -> Result<OffsetDateTime, RedisReadError> {
            let text = field(index)?;
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| RedisReadError::Unreadable(format!("{} {text:?}", FIELDS[index])))
        };
        Ok(Some(StoredAccount {
            owner_id: field(0)?.to_owned(),
            balance: parsed(field(1)?, FIELDS[1])?,
            deposits: parsed(field(2)?, FIELDS[2])?,
            withdrawals: parsed(field(3)?, FIELDS[3])?,
            count: parsed(field(4)?, FIELDS[4])?,
            last_transaction: time(5)?,
            created_at: time(6)?,
            version: parsed(field(7)?, FIELDS[7])?,
            position: parsed(field(8)?, FIELDS[8])?,
            status: Self::parse_status(values)?,
        }))
    }

    fn parse_status(values: &[Option<String>]) -> Result<AccountStatus, RedisReadError> {
        let optional = |index: usize| values.get(index).and_then(Option::as_deref);
        match optional(9).unwrap_or("active") {
            "active" => Ok(AccountStatus::Active),
            "closed" => Ok(AccountStatus::Closed),
            "frozen" => {
                let reason = optional(10).unwrap_or_default();
                Reason::parse(reason)
                    .map(|reason| AccountStatus::Frozen { reason })
                    .map_err(|_| RedisReadError::Unreadable(format!("status_reason {reason:?}")))
            }
            other => Err(RedisReadError::Unreadable(format!("status {other:?}"))),
        }
    }

    pub(super) fn into_view(self, account_id: Uuid, as_of: Position) -> AccountView {
        AccountView {
            account_id,
            owner_id: self.owner_id,
            current_balance: self.balance,
            total_deposits: self.deposits,
            total_withdrawals: self.withdrawals,
            transaction_count: self.count,
            last_transaction: self.last_transaction,
            created_at: self.created_at,
            version: self.version,
            as_of,
            stale: false,
            served_by: ServedBy::Redis,
            status: AccountStatusView::parse(self.status.as_str()).unwrap_or_default(),
            status_reason: self.status.reason().map(|reason| reason.to_string()),
        }
    }
}

/// The sorted sets' member for an account: see the module's documentation. `None` for a
/// balance the sets cannot order (negative, or finer than a cent), which no event can make.
pub(super) fn balance_member(balance: Decimal, account_id: Uuid) -> Option<String> {
    Some(format!("{}:{}:{account_id}", sortable_cents(balance)?, inverted(account_id)))
}

/// The balance in whole cents, as 21 digits (the largest balance has 20).
pub(super) fn sortable_cents(balance: Decimal) -> Option<String> {
    let cents = balance.checked_mul(Decimal::ONE_HUNDRED)?;
    if cents < Decimal::ZERO || !cents.fract().is_zero() {
        return None;
    }
    let digits = cents.trunc().normalize().to_string();
    (digits.len() <= 21).then(|| format!("{digits:0>21}"))
}

/// The id's hex digits, each replaced by 15 minus it: sorting these downwards sorts ids upwards.
fn inverted(account_id: Uuid) -> String {
    account_id
        .simple()
        .to_string()
        .chars()
        .map(|digit| {
            let value = digit.to_digit(16).expect("a uuid's simple form is hex");
            char::from_digit(15 - value, 16).expect("0..=15 is a hex digit")
        })
        .collect()
}

/// `<log>@<transaction>:<position>@<event>` (`-` for no event).
pub(super) fn checkpoint_text(log: &str, at: LogPlace) -> String {
    let event = at.event.map_or_else(|| "-".to_owned(), |event| event.to_string());
    format!("{log}@{}@{event}", at.position)
}

/// A checkpoint as [`checkpoint_text`] writes it. One written by older code, without an event,
/// reads as of its history with none: that history is not this one's, and the store is rebuilt.
pub(super) fn parse_checkpoint(text: &str) -> Option<StoredCheckpoint> {
    let (log, rest) = text.split_once('@')?;
    let (position, event) = match rest.split_once('@') {
        Some((position, "-")) => (position, None),
        Some((position, event)) => (position, Some(event.parse().ok()?)),
        None => (rest, None),
    };
    Some(StoredCheckpoint { log: log.to_owned(), at: LogPlace { position: position.parse().ok()?, event } })
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::super::scripts::CLEARING;
    use super::*;

    #[test]
    fn members_sort_by_balance_then_by_id_as_postgres_orders_them() {
        let low = Uuid::parse_str("00000000-0000-0000-0000-000000000001").unwrap();
        let high = Uuid::parse_str("ffffffff-0000-0000-0000-000000000000").unwrap();
        let mut members = [
            balance_member(dec!(10.5), high).unwrap(),
            balance_member(dec!(999999999999999999.99), high).unwrap(),
            balance_member(dec!(10.50), low).unwrap(),
            balance_member(dec!(9.99), low).unwrap(),
            balance_member(dec!(0), low).unwrap(),
            balance_member(dec!(100), low).unwrap(),
        ];
        // Highest first, as ZREVRANGEBYLEX reads them.
        members.sort_by(|a, b| b.cmp(a));
        let order: Vec<(String, Uuid)> =
            members.iter().map(|m| (m[..21].to_owned(), Uuid::parse_str(&m[m.len() - 36..]).unwrap())).collect();
        assert_eq!(
            order,
            vec![
                ("099999999999999999999".to_owned(), high),
                ("000000000000000010000".to_owned(), low),
                ("000000000000000001050".to_owned(), low),
                ("000000000000000001050".to_owned(), high),
                ("000000000000000000999".to_owned(), low),
                ("000000000000000000000".to_owned(), low),
            ]
        );
    }

    #[test]
    fn checkpoints_round_trip_and_an_older_one_reads_as_of_its_history_with_no_event() {
        let at = LogPlace {
            position: Position { transaction_id: 812, global_position: 3 },
            event: Some(Uuid::from_u128(9)),
        };
        let text = checkpoint_text("7.1.16384.00000000-0000-0000-0000-000000000001", at);
        assert_eq!(
            parse_checkpoint(&text),
            Some(StoredCheckpoint { log: "7.1.16384.00000000-0000-0000-0000-000000000001".into(), at })
        );
        let older = parse_checkpoint("00000000-0000-0000-0000-000000000001@812:3").unwrap();
        assert_eq!((older.log.as_str(), older.at.event), ("00000000-0000-0000-0000-000000000001", None));
        assert_eq!(parse_checkpoint(&CLEARING).unwrap().log, eventstore::projection::CLEARING_LOG);
    }

    #[test]
    fn a_change_that_forgets_the_owner_names_no_one() {
        let at = time::macros::datetime!(2026-12-07 12:00 UTC);
        let row = NewRow {
            account_id: Uuid::new_v4(),
            owner_id: "alice".into(),
            balance: dec!(10),
            deposits: dec!(10),
            withdrawals: dec!(0),
            count: 1,
            last_transaction: at,
            created_at: at,
            version: 1,
            position: 1,
            status: AccountStatus::Active,
        };
        let change = |owner_forgotten| Change {
            account_id: row.account_id,
            first_event: Position { transaction_id: 2, global_position: 2 },
            deposits: dec!(0),
            withdrawals: dec!(0),
            count: 1,
            last_transaction: at,
            version: 2,
            position: 2,
            status: None,
            reopen_if_closed: false,
            owner_forgotten,
        };
        let stored = StoredAccount::opened(&row);
        assert_eq!(stored.changed(&change(false)).owner_id, "alice");
        let forgotten = stored.changed(&change(true));
        assert_eq!(forgotten.owner_id, FORGOTTEN);
        assert!(!forgotten.values().unwrap().iter().any(|value| value.contains("alice")));
    }

    #[test]
    fn balances_finer_than_a_cent_or_negative_cannot_be_ranked() {
        assert_eq!(sortable_cents(dec!(0.001)), None);
        assert_eq!(sortable_cents(dec!(-1)), None);
        assert_eq!(sortable_cents(dec!(1.000)).as_deref(), Some("000000000000000000100"));
    }
}
