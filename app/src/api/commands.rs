//! Commands, as Leptos server functions at the contract's routes (`POST /api/commands/...`).
//!
//! Thin on purpose: parse the arguments into domain types, hand the command to the write side.
//! JSON keys are the argument names, renamed to the contract's camelCase. `commandId` is the
//! idempotency key: the browser makes one per submission; a client that sends none gets one
//! made here (and no protection against its own retries).

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use uuid::Uuid;

use super::error::ApiError;
use bank::contract::exact_number::ExactNumber;
use bank::contract::{CommandAccepted, TransferAccepted};

#[server(prefix = "/api", endpoint = "commands/create-account", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn create_account(
    #[server(rename = "ownerId")] owner_id: String,
    #[server(rename = "initialBalance")] initial_balance: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use bank::domain::{AccountCommand, Money, OwnerId};
    let caller = super::signed_in()?;
    let owner_id = OwnerId::parse(&owner_id)?;
    // The contract keeps `ownerId`; it can only be the caller's own name.
    if owner_id.as_str() != caller.username.as_str() {
        return Err(ApiError::new(
            super::ErrorCode::Forbidden,
            format!("ownerId must be your own username ({}): you open accounts for yourself only", caller.username),
        ));
    }
    let command = AccountCommand::CreateAccount { owner_id, initial_balance: Money::try_from(initial_balance.0)? };
    // A new account is a new stream; its id is made here, once per request.
    server::handle(caller, Uuid::new_v4(), command, command_id).await
}

#[server(prefix = "/api", endpoint = "commands/deposit", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn deposit(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use bank::domain::{AccountCommand, Amount};
    let caller = super::signed_in()?;
    let command = AccountCommand::Deposit { amount: Amount::try_from(amount.0)? };
    server::handle(caller, account_id, command, command_id).await
}

#[server(prefix = "/api", endpoint = "commands/withdraw", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn withdraw(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use bank::domain::{AccountCommand, Amount};
    let caller = super::signed_in()?;
    let command = AccountCommand::Withdraw { amount: Amount::try_from(amount.0)? };
    server::handle(caller, account_id, command, command_id).await
}

/// Moves `amount` from one of the caller's accounts to any account. Answered once the transfer
/// is requested: the transfer process then debits the source and credits the target, or undoes
/// the transfer (see the transfer's state in `queries/account-transfers`).
#[server(prefix = "/api", endpoint = "commands/transfer", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn transfer(
    #[server(rename = "fromAccountId")] from_account_id: Uuid,
    #[server(rename = "toAccountId")] to_account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<TransferAccepted, ApiError> {
    use bank::domain::Amount;
    let caller = super::signed_in()?;
    let amount = Amount::try_from(amount.0)?;
    server::request_transfer(caller, from_account_id, to_account_id, amount, command_id).await
}

/// Freezes an account (operators only): no money moves in or out until it is unfrozen.
#[server(prefix = "/api", endpoint = "commands/freeze-account", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn freeze_account(
    #[server(rename = "accountId")] account_id: Uuid,
    reason: String,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use bank::domain::{AccountCommand, Reason};
    let caller = super::operator()?;
    let command = AccountCommand::Freeze { reason: Reason::parse(&reason)? };
    server::freeze_as_operator(caller, account_id, command, command_id).await
}

/// Unfreezes a frozen account (operators only).
#[server(prefix = "/api", endpoint = "commands/unfreeze-account", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn unfreeze_account(
    #[server(rename = "accountId")] account_id: Uuid,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use bank::domain::AccountCommand;
    let caller = super::operator()?;
    server::handle_as_operator(caller, account_id, AccountCommand::Unfreeze, command_id).await
}

/// Closes one of the caller's accounts; its balance must be zero. A closed account takes
/// nothing more (but money of a transfer it sent that comes back).
#[server(prefix = "/api", endpoint = "commands/close-account", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn close_account(
    #[server(rename = "accountId")] account_id: Uuid,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use bank::domain::AccountCommand;
    let caller = super::signed_in()?;
    server::handle(caller, account_id, AccountCommand::Close, command_id).await
}

#[cfg(feature = "ssr")]
mod server {
    use axum::http::HeaderMap;
    use serde_json::json;
    use uuid::Uuid;

    use crate::api::{ApiError, CommandAccepted};
    use backend::identity::Caller;
    use backend::write_side::CommandEnvelope;
    use backend::write_side::transfers::TransferTermsWithoutDeadline;
    use bank::contract::TransferAccepted;
    use bank::domain::{AccountCommand, Amount, CommandBy, OwnerId, Sender};

    /// The header a client may send to tie its commands together in the audit trail.
    const CORRELATION_HEADER: &str = "x-correlation-id";
    /// The id the server gives every request (see the server's request-id layer).
    const REQUEST_ID_HEADER: &str = "x-request-id";

    /// A customer's command to one of their accounts.
    pub async fn handle(
        caller: Caller,
        account_id: Uuid,
        command: AccountCommand,
        client_command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        let sender = Sender::Customer(OwnerId::parse(caller.username.as_str())?);
        handle_as(sender, caller, account_id, command, client_command_id).await
    }

    /// An operator's command to any account.
    pub async fn handle_as_operator(
        caller: Caller,
        account_id: Uuid,
        command: AccountCommand,
        client_command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        let sender = Sender::Operator(OwnerId::parse(caller.username.as_str())?);
        handle_as(sender, caller, account_id, command, client_command_id).await
    }

    /// An operator's freeze: its reason is about the account's owner, so it is sealed with the
    /// owner's key (forgetting them forgets it), not the operator's.
    pub async fn freeze_as_operator(
        caller: Caller,
        account_id: Uuid,
        command: AccountCommand,
        client_command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        let services = crate::api::services()?;
        let mut subject = None;
        if let Some(master) = services.master_key() {
            let mut conn = services.pool.acquire().await?;
            subject = backend::account_store::owner_user_id(&mut conn, account_id).await?;
            drop(conn);
            if let Some(owner) = subject {
                backend::personal::keys::load_for_writing(&services.pool, master, owner)
                    .await
                    .map_err(crate::api::identity::server::key_error)?;
            }
        }
        let sender = Sender::Operator(OwnerId::parse(caller.username.as_str())?);
        handle_as_about(sender, caller, account_id, command, client_command_id, subject).await
    }

    async fn handle_as(
        sender: Sender,
        caller: Caller,
        account_id: Uuid,
        command: AccountCommand,
        client_command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        handle_as_about(sender, caller, account_id, command, client_command_id, None).await
    }

    /// `subject`: whom the command's words are about, whose key seals them (else the sender's).
    async fn handle_as_about(
        sender: Sender,
        caller: Caller,
        account_id: Uuid,
        command: AccountCommand,
        client_command_id: Option<Uuid>,
        subject: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        let mut sent = Sent::new(&caller, client_command_id)?;
        if let Some(subject) = subject {
            sent.metadata.insert("subject".into(), json!({ "userId": subject }));
        }
        load_writer_key(&caller).await?;
        let envelope = CommandEnvelope {
            command_id: sent.command_id,
            correlation_id: sent.correlation_id,
            stream_id: account_id,
            command: CommandBy { by: sender, command },
            causation_id: None,
            metadata: sent.metadata,
        };
        Ok(crate::api::services()?.commands.handle(envelope).await?)
    }

    /// Starts a transfer from one of the caller's accounts to an existing account.
    pub async fn request_transfer(
        caller: Caller,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        client_command_id: Option<Uuid>,
    ) -> Result<TransferAccepted, ApiError> {
        let services = crate::api::services()?;
        // The owner as the creation event names it (not a read model that may lag): another
        // customer's account answers as an unknown one. The debit checks it again.
        if services.history.owner(from).await?.as_deref() != Some(caller.username.as_str()) {
            return Err(ApiError::account_not_found(from));
        }
        if from != to && services.history.owner(to).await?.is_none() {
            return Err(ApiError::account_not_found(to));
        }
        let sent = Sent::new(&caller, client_command_id)?;
        load_writer_key(&caller).await?;
        let requested_by = OwnerId::parse(caller.username.as_str())?;
        let envelope = eventstore::CommandEnvelope {
            command_id: sent.command_id,
            correlation_id: sent.correlation_id,
            // A new transfer is a new stream; its id is made here, once per request.
            stream_id: Uuid::new_v4(),
            command: TransferTermsWithoutDeadline { from, to, amount, requested_by },
            causation_id: None,
            metadata: sent.metadata,
        };
        Ok(services.transfers.request(envelope).await?)
    }

    /// The caller's data key, loaded (made on their first write), so that the codec seals
    /// their name and words with it; nothing to load on a server without a master key.
    async fn load_writer_key(caller: &Caller) -> Result<(), ApiError> {
        let services = crate::api::services()?;
        let Some(master) = services.master_key() else { return Ok(()) };
        backend::personal::keys::load_for_writing(&services.pool, master, caller.user_id)
            .await
            .map_err(crate::api::identity::server::key_error)
    }

    /// What every command a caller sends carries: its stored id, its correlation id and the
    /// metadata its events keep.
    struct Sent {
        command_id: Uuid,
        correlation_id: Uuid,
        metadata: serde_json::Map<String, serde_json::Value>,
    }

    impl Sent {
        fn new(caller: &Caller, client_command_id: Option<Uuid>) -> Result<Sent, ApiError> {
            let client_command_id = client_command_id.unwrap_or_else(Uuid::new_v4);
            // Idempotency per caller: the same id from two users names two commands, and nobody
            // can replay (or block) another user's command by guessing its id.
            let command_id = Uuid::new_v5(&caller.user_id, client_command_id.as_bytes());
            let headers = super::super::request_parts().map(|parts| parts.headers).unwrap_or_default();
            let client_correlation = correlation_id(&headers)?;
            let correlation_id = client_correlation.unwrap_or(command_id);
            let mut metadata = serde_json::Map::new();
            metadata.insert("actor".into(), json!({ "userId": caller.user_id, "username": caller.username.as_str() }));
            metadata.insert("clientCommandId".into(), json!(client_command_id));
            // The correlation id is the client's word, kept as such; the request id is ours.
            metadata.insert("correlationIdFromClient".into(), json!(client_correlation.is_some()));
            if let Some(request_id) = headers.get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()) {
                metadata.insert("requestId".into(), json!(request_id));
            }
            Ok(Sent { command_id, correlation_id, metadata })
        }
    }

    fn correlation_id(headers: &HeaderMap) -> Result<Option<Uuid>, ApiError> {
        let Some(value) = headers.get(CORRELATION_HEADER) else {
            return Ok(None);
        };
        let value = value.to_str().unwrap_or_default();
        Uuid::parse_str(value)
            .map(Some)
            .map_err(|_| ApiError::invalid_request(format!("{CORRELATION_HEADER}: {value:?} is not a UUID")))
    }
}
