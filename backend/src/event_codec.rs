//! How account events are stored: their `event_type`, `schema_version` and JSON `data`.
//!
//! The stored shape is a contract with the past: every version ever written stays readable.
//! Reading upcasts old shapes to the current one, step by step, before decoding; history is
//! never rewritten in place (the events table refuses updates anyway).
//!
//! - v1: the design document's shapes, as its Go sketch writes them: snake_case keys and
//!   amounts as JSON numbers (`{"owner_id": "alice", "initial_balance": 100.5}`).
//! - v2 (current): camelCase keys and amounts as decimal strings (`{"amount": "100.50"}`), so
//!   that no JSON reader can round them. The transfer events and the account's transfer and
//!   status events were born at v2.
//!
//! Personal fields (an owner's name, a requester's, an operator's reason, the actor's name in
//! the metadata) are sealed with the writer's key ([`crate::personal::sealed`]); a field sealed
//! with a destroyed key reads as [`bank::domain::FORGOTTEN`]. Fields written in clear before
//! sealing existed read as written (`OwnerForgotten` re-states them). Sealing changes no shape:
//! a personal field is a text or a sealed object at every version.

use eventstore::{NewEvent, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use time::OffsetDateTime;

use crate::personal::sealed::{self, Opened, Unopened};
use bank::domain::{AccountEvent, Amount, Money, OwnerId, Reason, TransferEvent, TransferTerms};

/// The schema version written today.
pub const SCHEMA_VERSION: i32 = 2;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccountCreatedV2 {
    /// Personal: sealed.
    owner_id: Value,
    initial_balance: Money,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyMovedV2 {
    amount: Amount,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferDebitedV2 {
    transfer_id: Uuid,
    to: Uuid,
    amount: Amount,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferCreditedV2 {
    transfer_id: Uuid,
    from: Uuid,
    amount: Amount,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferRefundedV2 {
    transfer_id: Uuid,
    amount: Amount,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrozenV2 {
    /// Personal (the operator's words about the owner): sealed with the owner's key.
    reason: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NothingV2 {}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferRequestedV2 {
    from: Uuid,
    to: Uuid,
    amount: Amount,
    /// Personal: sealed.
    requested_by: Value,
    #[serde(with = "time::serde::rfc3339")]
    deadline: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhyV2 {
    reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserForgottenV2 {
    /// `self` or `operator`.
    by: String,
    /// The operator's reason. Personal (the operator's words): sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
#[error("event {event_type} v{schema_version} cannot be read: {reason}")]
pub struct DecodeError {
    pub event_type: String,
    pub schema_version: i32,
    pub reason: String,
    /// A data key to load before reading it again (see [`crate::personal::keys::load`]).
    pub missing_key: Option<Uuid>,
}

/// The stream type of a user's own events (only `UserForgotten` so far).
pub const USER_STREAM_TYPE: &str = "user";

/// A personal field read back as text, [`bank::domain::FORGOTTEN`] if its key was destroyed.
fn opened(field: &Value) -> Result<Option<String>, Unopened> {
    Ok(match sealed::open(field)? {
        Opened::Text(text) => Some(text),
        Opened::Forgotten => None,
    })
}

fn owner_from(field: &Value) -> Result<OwnerId, String> {
    match opened(field).map_err(|unopened| unopened.to_string())? {
        Some(text) => OwnerId::parse(&text).map_err(|error| error.to_string()),
        None => Ok(OwnerId::forgotten()),
    }
}

fn reason_from(field: &Value) -> Result<Reason, String> {
    match opened(field).map_err(|unopened| unopened.to_string())? {
        Some(text) => Reason::parse(&text).map_err(|error| error.to_string()),
        None => Ok(Reason::forgotten()),
    }
}

/// The first personal field of a stored event whose key is not loaded, if any.
fn missing_key(event: &RecordedEvent) -> Option<Uuid> {
    let fields = [event.data.get("ownerId"), event.data.get("reason"), event.data.get("requestedBy")];
    let actor = event.metadata.pointer("/actor/username");
    fields.into_iter().chain([actor]).flatten().find_map(|field| sealed::open(field).err()?.missing_key())
}

pub fn encode(event: &AccountEvent, metadata: &Value) -> NewEvent {
    let writer = sealed::writer(metadata);
    let data = match event {
        AccountEvent::AccountCreated { owner_id, initial_balance } => serde_json::to_value(AccountCreatedV2 {
            owner_id: sealed::seal(writer, owner_id.as_str()),
            initial_balance: *initial_balance,
        }),
        AccountEvent::MoneyDeposited { amount } | AccountEvent::MoneyWithdrawn { amount } => {
            serde_json::to_value(MoneyMovedV2 { amount: *amount })
        }
        AccountEvent::TransferDebited { transfer_id, to, amount } => {
            serde_json::to_value(TransferDebitedV2 { transfer_id: *transfer_id, to: *to, amount: *amount })
        }
        AccountEvent::TransferCredited { transfer_id, from, amount } => {
            serde_json::to_value(TransferCreditedV2 { transfer_id: *transfer_id, from: *from, amount: *amount })
        }
        AccountEvent::TransferRefunded { transfer_id, amount } => {
            serde_json::to_value(TransferRefundedV2 { transfer_id: *transfer_id, amount: *amount })
        }
        AccountEvent::AccountFrozen { reason } => {
            // About the owner: sealed with their key, so that forgetting them forgets it.
            let about = sealed::subject(metadata).or(writer);
            serde_json::to_value(FrozenV2 { reason: sealed::seal(about, reason.as_str()) })
        }
        AccountEvent::AccountUnfrozen | AccountEvent::AccountClosed | AccountEvent::OwnerForgotten => {
            serde_json::to_value(NothingV2 {})
        }
    }
    .expect("account events always serialise to JSON");
    new_event(event.event_type(), data, metadata)
}

fn new_event(event_type: &str, data: Value, metadata: &Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        schema_version: SCHEMA_VERSION,
        data,
        metadata: sealed::seal_metadata(metadata),
    }
}

/// A user's `UserForgotten`, on their own stream: `by` is `self` or `operator` (with their
/// reason, sealed with the operator's key).
pub fn encode_user_forgotten(by: &str, reason: Option<&Reason>, metadata: &Value) -> NewEvent {
    let writer = sealed::writer(metadata);
    let data =
        UserForgottenV2 { by: by.to_owned(), reason: reason.map(|reason| sealed::seal(writer, reason.as_str())) };
    new_event("UserForgotten", serde_json::to_value(data).expect("a UserForgotten serialises to JSON"), metadata)
}

/// A transfer's event as stored.
pub fn encode_transfer(event: &TransferEvent, metadata: &Value) -> NewEvent {
    let writer = sealed::writer(metadata);
    let data = match event {
        TransferEvent::TransferRequested(terms) => serde_json::to_value(TransferRequestedV2 {
            from: terms.from,
            to: terms.to,
            amount: terms.amount,
            requested_by: sealed::seal(writer, terms.requested_by.as_str()),
            deadline: terms.deadline,
        }),
        TransferEvent::SourceDebited | TransferEvent::TargetCredited | TransferEvent::TransferCompleted => {
            serde_json::to_value(NothingV2 {})
        }
        TransferEvent::SourceRefunded { reason } | TransferEvent::TransferFailed { reason } => {
            serde_json::to_value(WhyV2 { reason: reason.clone() })
        }
    }
    .expect("transfer events always serialise to JSON");
    new_event(event.event_type(), data, metadata)
}

/// A stored transfer event, read back.
pub fn decode_transfer(event: &RecordedEvent) -> Result<TransferEvent, DecodeError> {
    let fail = |reason: String| DecodeError {
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        reason,
        missing_key: missing_key(event),
    };
    if event.schema_version != SCHEMA_VERSION {
        return Err(fail(format!("transfer events are v{SCHEMA_VERSION}")));
    }
    let invalid = |e: serde_json::Error| fail(e.to_string());
    let data = event.data.clone();
    let nothing = |data: Value| serde_json::from_value::<NothingV2>(data).map_err(invalid);
    let why = |data: Value| serde_json::from_value::<WhyV2>(data).map(|why| why.reason).map_err(invalid);
    Ok(match event.event_type.as_str() {
        "TransferRequested" => {
            let v2: TransferRequestedV2 = serde_json::from_value(data).map_err(invalid)?;
            TransferEvent::TransferRequested(TransferTerms {
                from: v2.from,
                to: v2.to,
                amount: v2.amount,
                requested_by: owner_from(&v2.requested_by).map_err(fail)?,
                deadline: v2.deadline,
            })
        }
        "SourceDebited" => nothing(data).map(|_| TransferEvent::SourceDebited)?,
        "TargetCredited" => nothing(data).map(|_| TransferEvent::TargetCredited)?,
        "TransferCompleted" => nothing(data).map(|_| TransferEvent::TransferCompleted)?,
        "SourceRefunded" => TransferEvent::SourceRefunded { reason: why(data)? },
        "TransferFailed" => TransferEvent::TransferFailed { reason: why(data)? },
        other => return Err(fail(format!("unknown event type {other}"))),
    })
}

pub fn decode(event: &RecordedEvent) -> Result<AccountEvent, DecodeError> {
    let fail = |reason: String| DecodeError {
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        reason,
        missing_key: missing_key(event),
    };
    let data = upcast(&event.event_type, event.schema_version, event.data.clone()).map_err(fail)?;
    let invalid = |e: serde_json::Error| fail(e.to_string());
    match event.event_type.as_str() {
        "AccountCreated" => {
            let v2: AccountCreatedV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::AccountCreated {
                owner_id: owner_from(&v2.owner_id).map_err(fail)?,
                initial_balance: v2.initial_balance,
            })
        }
        "MoneyDeposited" => {
            let v2: MoneyMovedV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::MoneyDeposited { amount: v2.amount })
        }
        "MoneyWithdrawn" => {
            let v2: MoneyMovedV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::MoneyWithdrawn { amount: v2.amount })
        }
        "TransferDebited" => {
            let v2: TransferDebitedV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::TransferDebited { transfer_id: v2.transfer_id, to: v2.to, amount: v2.amount })
        }
        "TransferCredited" => {
            let v2: TransferCreditedV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::TransferCredited { transfer_id: v2.transfer_id, from: v2.from, amount: v2.amount })
        }
        "TransferRefunded" => {
            let v2: TransferRefundedV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::TransferRefunded { transfer_id: v2.transfer_id, amount: v2.amount })
        }
        "AccountFrozen" => {
            let v2: FrozenV2 = serde_json::from_value(data).map_err(invalid)?;
            Ok(AccountEvent::AccountFrozen { reason: reason_from(&v2.reason).map_err(fail)? })
        }
        "AccountUnfrozen" => {
            serde_json::from_value::<NothingV2>(data).map_err(invalid).map(|_| AccountEvent::AccountUnfrozen)
        }
        "AccountClosed" => {
            serde_json::from_value::<NothingV2>(data).map_err(invalid).map(|_| AccountEvent::AccountClosed)
        }
        "OwnerForgotten" => {
            serde_json::from_value::<NothingV2>(data).map_err(invalid).map(|_| AccountEvent::OwnerForgotten)
        }
        other => Err(fail(format!("unknown event type {other}"))),
    }
}

/// Brings `data` written at `schema_version` to the current shape.
fn upcast(event_type: &str, schema_version: i32, data: Value) -> Result<Value, String> {
    match schema_version {
        1 => upcast(event_type, 2, v1_to_v2(event_type, data)?),
        SCHEMA_VERSION => Ok(data),
        other => Err(format!("schema version {other} is newer than this code knows")),
    }
}

/// v1 → v2: keep only the fields the event means (v1 repeated its envelope inside the data),
/// rename them, and turn number amounts into decimal strings.
fn v1_to_v2(event_type: &str, data: Value) -> Result<Value, String> {
    let Value::Object(v1) = data else {
        return Err("v1 data is not an object".into());
    };
    let field = |name: &str| v1.get(name).cloned().ok_or_else(|| format!("v1 data has no {name}"));
    let mut v2 = Map::new();
    match event_type {
        "AccountCreated" => {
            v2.insert("ownerId".into(), field("owner_id")?);
            v2.insert("initialBalance".into(), decimal_string(field("initial_balance")?)?);
        }
        "MoneyDeposited" | "MoneyWithdrawn" => {
            v2.insert("amount".into(), decimal_string(field("amount")?)?);
        }
        other => return Err(format!("unknown event type {other}")),
    }
    Ok(Value::Object(v2))
}

/// A v1 amount was a JSON number written from a float; its shortest decimal text is the amount
/// that was meant (exact for every sum of at most 15 significant digits).
fn decimal_string(amount: Value) -> Result<Value, String> {
    match amount {
        Value::Number(number) => Ok(Value::String(number.to_string())),
        other => Err(format!("a v1 amount must be a number, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded(event_type: &str, schema_version: i32, data: Value) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            transaction_id: 1,
            event_id: Uuid::new_v4(),
            stream_type: "account".into(),
            stream_id: Uuid::new_v4(),
            stream_version: 1,
            event_type: event_type.into(),
            schema_version,
            data,
            metadata: json!({}),
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn stored(event: &AccountEvent) -> RecordedEvent {
        let new = encode(event, &json!({}));
        recorded(&new.event_type, new.schema_version, new.data)
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
            assert_eq!(decode(&stored(&event)).unwrap(), event);
        }
    }

    #[test]
    fn amounts_are_stored_as_exact_strings() {
        let new = encode(&AccountEvent::MoneyDeposited { amount: Amount::parse("0.29").unwrap() }, &json!({}));
        assert_eq!(new.schema_version, 2);
        assert_eq!(new.data, json!({"amount": "0.29"}));
    }

    #[test]
    fn v1_events_in_the_design_documents_shape_are_upcast() {
        let created = recorded(
            "AccountCreated",
            1,
            json!({"aggregate_id": "x", "event_type": "AccountCreated", "version": 1,
                   "account_id": "x", "owner_id": "alice", "initial_balance": 100.1}),
        );
        assert_eq!(
            decode(&created).unwrap(),
            AccountEvent::AccountCreated {
                owner_id: OwnerId::parse("alice").unwrap(),
                initial_balance: Money::parse("100.10").unwrap()
            }
        );
        let deposited = recorded("MoneyDeposited", 1, json!({"aggregate_id": "x", "amount": 0.29}));
        assert_eq!(
            decode(&deposited).unwrap(),
            AccountEvent::MoneyDeposited { amount: Amount::parse("0.29").unwrap() }
        );
        let withdrawn = recorded("MoneyWithdrawn", 1, json!({"amount": 50}));
        assert_eq!(decode(&withdrawn).unwrap(), AccountEvent::MoneyWithdrawn { amount: Amount::parse("50").unwrap() });
    }

    #[test]
    fn unreadable_events_are_errors_not_panics() {
        for event in [
            recorded("MoneyDeposited", 2, json!({"amount": "-1"})),
            recorded("MoneyDeposited", 2, json!({"amount": "1", "extra": true})),
            recorded("MoneyDeposited", 1, json!({"amount": "1"})),
            recorded("MoneyDeposited", 3, json!({"amount": "1"})),
            recorded("AccountRenamed", 2, json!({})),
        ] {
            assert!(decode(&event).is_err(), "{event:?}");
        }
    }
}
