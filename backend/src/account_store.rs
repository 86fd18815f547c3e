//! The account as the event store keeps it: its stream type, how its events and snapshots are
//! stored, and what identifies a command. The store runs the command loop and loads accounts
//! (from the latest snapshot plus the events after it) with these parts; the rules themselves
//! are `domain`'s.

use eventstore::{Aggregate, NewEvent, RecordedEvent, SnapshotVersion};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event_codec::{self, DecodeError};
use bank::domain::{self, AccountCommand, AccountEvent, AccountState, CommandBy, DomainError};

/// The shape of a stored [`AccountState`]; snapshots of another shape are ignored (and new ones
/// written as the account moves on). 2: with the deposit and withdrawal totals; 3: with the
/// status (an older server would read a 3 without it, and lose a freeze).
pub const SNAPSHOT_SCHEMA_VERSION: i32 = 3;

/// The meaning of the events as the fold reads them. Bump it whenever `evolve` or an upcaster in
/// `event_codec` changes what a stored event does to the state, even if the state's shape stays:
/// snapshots made before would otherwise go on carrying the old reading. Snapshots of another
/// fold version are ignored, and new ones written as accounts move on.
/// 2: a deposit or withdrawal that does not fit the balance is ignored whole (1 counted it in the
/// totals).
pub const FOLD_VERSION: i32 = 2;

/// The account aggregate: the domain's pure rules, stored through `event_codec`.
pub struct Account;

impl Aggregate for Account {
    const STREAM_TYPE: &'static str = "account";
    const SNAPSHOT_VERSION: SnapshotVersion = SnapshotVersion { schema: SNAPSHOT_SCHEMA_VERSION, fold: FOLD_VERSION };

    type State = AccountState;
    type Command = CommandBy;
    type Event = AccountEvent;
    type Refusal = DomainError;
    type DecodeError = DecodeError;

    fn decide(state: &AccountState, command: &CommandBy) -> Result<Vec<AccountEvent>, DomainError> {
        domain::decide_for(state, command)
    }

    fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
        domain::evolve(state, event)
    }

    fn encode(event: &AccountEvent, metadata: &Value) -> NewEvent {
        event_codec::encode(event, metadata)
    }

    fn decode(event: &RecordedEvent) -> Result<AccountEvent, DecodeError> {
        event_codec::decode(event)
    }

    /// A new account's id is made per request, so it is left out: a retried creation is the
    /// same request.
    /// Who sent it is left out too: command ids are already scoped to their sender (the API
    /// derives the stored id from the user and the client's id).
    fn request(account_id: Uuid, sent: &CommandBy) -> Value {
        match &sent.command {
            AccountCommand::CreateAccount { owner_id, initial_balance } => {
                json!({ "type": "CreateAccount", "ownerId": owner_id, "initialBalance": initial_balance })
            }
            AccountCommand::Deposit { amount } => {
                json!({ "type": "Deposit", "accountId": account_id, "amount": amount })
            }
            AccountCommand::Withdraw { amount } => {
                json!({ "type": "Withdraw", "accountId": account_id, "amount": amount })
            }
            // When a transfer's step runs is left out: the same step taken again later (after a
            // crash, or by the deadline) is the same command, answered as the first time. That
            // is what makes the account the arbiter of whether a credit or its refusal happened.
            AccountCommand::DebitForTransfer { transfer_id, to, amount, at: _, deadline } => json!({
                "type": "DebitForTransfer", "accountId": account_id, "transferId": transfer_id, "to": to,
                "amount": amount, "deadline": deadline.unix_timestamp_nanos().to_string(),
            }),
            AccountCommand::CreditForTransfer { transfer_id, from, amount, at: _, deadline } => json!({
                "type": "CreditForTransfer", "accountId": account_id, "transferId": transfer_id, "from": from,
                "amount": amount, "deadline": deadline.unix_timestamp_nanos().to_string(),
            }),
            AccountCommand::RefundTransfer { transfer_id, amount } => json!({
                "type": "RefundTransfer", "accountId": account_id, "transferId": transfer_id, "amount": amount,
            }),
            // The reason is personal (about the owner): only its digest is remembered in clear.
            AccountCommand::Freeze { reason } => {
                json!({ "type": "Freeze", "accountId": account_id, "reasonSha256": sha256_hex(reason.as_str()) })
            }
            AccountCommand::Unfreeze => json!({ "type": "Unfreeze", "accountId": account_id }),
            AccountCommand::Close => json!({ "type": "Close", "accountId": account_id }),
        }
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

pub use eventstore::LATEST;

pub type LoadedAccount = eventstore::Loaded<Account>;
pub type LoadError = eventstore::LoadError<DecodeError>;

/// The account as it was at `up_to_version` ([`LATEST`] for now).
pub async fn load(conn: &mut PgConnection, account_id: Uuid, up_to_version: i64) -> Result<LoadedAccount, LoadError> {
    eventstore::aggregate::load::<Account>(conn, account_id, up_to_version).await
}

/// Who owns the account, as its creation event (version 1, which never changes) says; `None`
/// if it does not exist.
pub async fn owner(conn: &mut PgConnection, account_id: Uuid) -> Result<Option<bank::domain::OwnerId>, LoadError> {
    Ok(load(conn, account_id, 1).await?.state.owner_id().cloned())
}

/// The user id of the account's owner, whose key seals what is written about them: the key
/// their name was sealed with, or the user of that name if it was written in clear. `None` for
/// no such account, or an owner who is no user (forgotten, or from before users existed).
pub async fn owner_user_id(conn: &mut PgConnection, account_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    let owner: Option<Value> = sqlx::query_scalar(
        "SELECT coalesce(data -> 'ownerId', data -> 'owner_id') FROM events
         WHERE stream_id = $1 AND stream_version = 1 AND event_type = 'AccountCreated'",
    )
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    match owner {
        Some(Value::String(name)) => {
            sqlx::query_scalar("SELECT user_id FROM users WHERE username = $1").bind(name).fetch_optional(conn).await
        }
        Some(sealed) => Ok(sealed.get("keyId").and_then(Value::as_str).and_then(|id| id.parse().ok())),
        None => Ok(None),
    }
}

/// Stores the account's state at `version` as a snapshot, as the command loop does when one is due.
pub async fn save(
    conn: &mut PgConnection,
    account_id: Uuid,
    version: i64,
    state: &AccountState,
) -> Result<(), sqlx::Error> {
    eventstore::aggregate::save::<Account>(conn, account_id, version, state).await
}
