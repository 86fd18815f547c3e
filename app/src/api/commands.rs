//! Commands, as Leptos server functions at the contract's routes (`POST /api/commands/...`).
//!
//! Thin on purpose: parse the arguments into domain types, hand the command to the write side.
//! JSON keys are the argument names, renamed to the contract's camelCase.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use uuid::Uuid;

use super::dto::CommandAccepted;
use super::error::ApiError;
use super::exact_number::ExactNumber;

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
    // A new account is a new stream; its id is made here, once.
    let account_id = Uuid::new_v4();
    Ok(super::services()?.commands.handle(account_id, command, command_id).await?)
}

#[server(prefix = "/api", endpoint = "commands/deposit", input = Json)]
pub async fn deposit(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Amount};
    let command = AccountCommand::Deposit { amount: Amount::try_from(amount.0)? };
    Ok(super::services()?.commands.handle(account_id, command, command_id).await?)
}

#[server(prefix = "/api", endpoint = "commands/withdraw", input = Json)]
pub async fn withdraw(
    #[server(rename = "accountId")] account_id: Uuid,
    amount: ExactNumber,
    #[server(rename = "commandId")] command_id: Option<Uuid>,
) -> Result<CommandAccepted, ApiError> {
    use crate::domain::{AccountCommand, Amount};
    let command = AccountCommand::Withdraw { amount: Amount::try_from(amount.0)? };
    Ok(super::services()?.commands.handle(account_id, command, command_id).await?)
}
