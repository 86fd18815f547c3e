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
    let command = AccountCommand::CreateAccount {
        owner_id: OwnerId::parse(&owner_id)?,
        initial_balance: Money::try_from(initial_balance.0)?,
    };
    // A new account is a new stream; its id is made here, once per request.
    server::handle(Uuid::new_v4(), command, command_id).await
}

#[server(prefix = "/api", endpoint = "commands/deposit", input = Json)]
pub async fn deposit(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Amount};
    let command = AccountCommand::Deposit { amount: Amount::try_from(amount.0)? };
    server::handle(account_id, command, command_id).await
}

#[server(prefix = "/api", endpoint = "commands/withdraw", input = Json)]
pub async fn withdraw(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Amount};
    let command = AccountCommand::Withdraw { amount: Amount::try_from(amount.0)? };
    server::handle(account_id, command, command_id).await
}

#[cfg(feature = "ssr")]
mod server {
    use axum::http::HeaderMap;
    use uuid::Uuid;

    use crate::api::{ApiError, CommandAccepted};
    use crate::domain::AccountCommand;
    use crate::write_side::CommandEnvelope;

    /// The header a client may send to tie its commands together in the audit trail.
    const CORRELATION_HEADER: &str = "x-correlation-id";

    pub async fn handle(
        account_id: Uuid,
        command: AccountCommand,
        command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, ApiError> {
        let command_id = command_id.unwrap_or_else(Uuid::new_v4);
        let correlation_id = correlation_id().await?.unwrap_or(command_id);
        let envelope = CommandEnvelope { command_id, correlation_id, stream_id: account_id, command };
        Ok(crate::api::services()?.commands.handle(envelope).await?)
    }

    async fn correlation_id() -> Result<Option<Uuid>, ApiError> {
        let headers: HeaderMap = leptos_axum::extract().await.unwrap_or_default();
        let Some(value) = headers.get(CORRELATION_HEADER) else {
            return Ok(None);
        };
        let value = value.to_str().unwrap_or_default();
        Uuid::parse_str(value)
            .map(Some)
            .map_err(|_| ApiError::invalid_request(format!("{CORRELATION_HEADER}: {value:?} is not a UUID")))
    }
}
