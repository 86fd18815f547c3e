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
use crate::contract::CommandAccepted;
use crate::contract::exact_number::ExactNumber;

#[server(prefix = "/api", endpoint = "commands/create-account", input = Json)]
pub async fn create_account(
    #[server(rename = "ownerId")] owner_id: String,
    #[server(rename = "initialBalance")] initial_balance: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Money, OwnerId};
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
pub async fn deposit(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Amount};
    let caller = super::signed_in()?;
    let command = AccountCommand::Deposit { amount: Amount::try_from(amount.0)? };
    server::handle(caller, account_id, command, command_id).await
}

#[server(prefix = "/api", endpoint = "commands/withdraw", input = Json)]
pub async fn withdraw(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Amount};
    let caller = super::signed_in()?;
    let command = AccountCommand::Withdraw { amount: Amount::try_from(amount.0)? };
    server::handle(caller, account_id, command, command_id).await
}

#[cfg(feature = "ssr")]
mod server {
    use axum::http::HeaderMap;
    use serde_json::json;
    use uuid::Uuid;

    use crate::api::{ApiError, CommandAccepted};
    use crate::domain::{AccountCommand, CommandBy, OwnerId};
    use crate::identity::Caller;
    use crate::write_side::CommandEnvelope;

    /// The header a client may send to tie its commands together in the audit trail.
    const CORRELATION_HEADER: &str = "x-correlation-id";
    /// The id the server gives every request (see the server's request-id layer).
    const REQUEST_ID_HEADER: &str = "x-request-id";

    pub async fn handle(
        caller: Caller,
        account_id: Uuid,
        command: AccountCommand,
        client_command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        let client_command_id = client_command_id.unwrap_or_else(Uuid::new_v4);
        // Idempotency per caller: the same id from two users names two commands, and nobody can
        // replay (or block) another user's command by guessing its id.
        let command_id = Uuid::new_v5(&caller.user_id, client_command_id.as_bytes());
        let headers = super::super::request_parts().map(|parts| parts.headers).unwrap_or_default();
        let client_correlation = correlation_id(&headers)?;
        let correlation_id = client_correlation.unwrap_or(command_id);
        let owner = OwnerId::parse(caller.username.as_str())?;
        let mut metadata = serde_json::Map::new();
        metadata.insert("actor".into(), json!({ "userId": caller.user_id, "username": caller.username.as_str() }));
        metadata.insert("clientCommandId".into(), json!(client_command_id));
        // The correlation id is the client's word, kept as such; the request id is ours.
        metadata.insert("correlationIdFromClient".into(), json!(client_correlation.is_some()));
        if let Some(request_id) = headers.get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()) {
            metadata.insert("requestId".into(), json!(request_id));
        }
        let envelope = CommandEnvelope {
            command_id,
            correlation_id,
            stream_id: account_id,
            command: CommandBy { by: owner, command },
            metadata,
        };
        Ok(crate::api::services()?.commands.handle(envelope).await?)
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
