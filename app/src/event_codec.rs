//! How account events are stored: their `event_type`, `schema_version` and JSON `data`.
//!
//! The stored shape is a contract with the past: every version ever written must stay readable.
//! Amounts are stored as decimal strings (`"100.50"`) so that JSON never rounds them.

use eventstore::{NewEvent, RecordedEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{AccountEvent, Amount, Money, OwnerId};

/// The schema version written for every event type today.
pub const SCHEMA_VERSION: i32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountCreatedV1 {
    owner_id: OwnerId,
    initial_balance: Money,
}

#[derive(Serialize, Deserialize)]
struct MoneyMovedV1 {
    amount: Amount,
}

#[derive(Debug, thiserror::Error)]
#[error("event {event_type} v{schema_version} cannot be read: {reason}")]
pub struct DecodeError {
    pub event_type: String,
    pub schema_version: i32,
    pub reason: String,
}

pub fn encode(event: &AccountEvent, metadata: &serde_json::Value) -> NewEvent {
    let data = match event {
        AccountEvent::AccountCreated { owner_id, initial_balance } => serde_json::to_value(AccountCreatedV1 {
            owner_id: owner_id.clone(),
            initial_balance: *initial_balance,
        }),
        AccountEvent::MoneyDeposited { amount } | AccountEvent::MoneyWithdrawn { amount } => {
            serde_json::to_value(MoneyMovedV1 { amount: *amount })
        }
    }
    .expect("account events always serialise to JSON");
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event.event_type().to_owned(),
        schema_version: SCHEMA_VERSION,
        data,
        metadata: metadata.clone(),
    }
}

pub fn decode(event: &RecordedEvent) -> Result<AccountEvent, DecodeError> {
    let fail = |reason: String| DecodeError {
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        reason,
    };
    let data = event.data.clone();
    match (event.event_type.as_str(), event.schema_version) {
        ("AccountCreated", 1) => {
            let v1: AccountCreatedV1 = serde_json::from_value(data).map_err(|e| fail(e.to_string()))?;
            Ok(AccountEvent::AccountCreated { owner_id: v1.owner_id, initial_balance: v1.initial_balance })
        }
        ("MoneyDeposited", 1) => {
            let v1: MoneyMovedV1 = serde_json::from_value(data).map_err(|e| fail(e.to_string()))?;
            Ok(AccountEvent::MoneyDeposited { amount: v1.amount })
        }
        ("MoneyWithdrawn", 1) => {
            let v1: MoneyMovedV1 = serde_json::from_value(data).map_err(|e| fail(e.to_string()))?;
            Ok(AccountEvent::MoneyWithdrawn { amount: v1.amount })
        }
        _ => Err(fail("unknown event type or schema version".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(new: NewEvent) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            transaction_id: 1,
            event_id: new.event_id,
            stream_id: Uuid::new_v4(),
            stream_version: 1,
            event_type: new.event_type,
            schema_version: new.schema_version,
            data: new.data,
            metadata: new.metadata,
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn every_event_round_trips() {
        let events = [
            AccountEvent::AccountCreated {
                owner_id: OwnerId::parse("alice").unwrap(),
                initial_balance: Money::parse("100.10").unwrap(),
            },
            AccountEvent::MoneyDeposited { amount: Amount::parse("0.29").unwrap() },
            AccountEvent::MoneyWithdrawn { amount: Amount::parse("12").unwrap() },
        ];
        for event in events {
            let stored = encode(&event, &serde_json::json!({}));
            assert_eq!(decode(&recorded(stored)).unwrap(), event);
        }
    }

    #[test]
    fn amounts_are_stored_as_exact_strings() {
        let stored = encode(&AccountEvent::MoneyDeposited { amount: Amount::parse("0.29").unwrap() }, &serde_json::json!({}));
        assert_eq!(stored.data, serde_json::json!({"amount": "0.29"}));
    }

    #[test]
    fn unknown_types_and_invalid_payloads_are_errors_not_panics() {
        let mut stored = encode(&AccountEvent::MoneyDeposited { amount: Amount::parse("1").unwrap() }, &serde_json::json!({}));
        stored.data = serde_json::json!({"amount": "-1"});
        assert!(decode(&recorded(stored.clone())).is_err());
        stored.event_type = "AccountRenamed".into();
        assert!(decode(&recorded(stored)).is_err());
    }
}
