//! Queries over the read model, as Leptos server functions. `GET /api/queries/accounts/{id}`,
//! which needs a path parameter, is a plain axum route in the server calling the same code.

use eventstore::Position;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use uuid::Uuid;

use super::dto::{AccountList, AccountView};
use super::error::ApiError;
use super::exact_number::ExactNumber;

/// One account; with `after`, waits (bounded) until the read model has passed that position.
#[server(prefix = "/api", endpoint = "queries/account", input = Json)]
pub async fn get_account(
    #[server(rename = "accountId")] account_id: Uuid,
    after: Option<Position>,
) -> Result<AccountView, ApiError> {
    super::services()?
        .read_model
        .account(account_id, after)
        .await?
        .ok_or_else(|| ApiError::account_not_found(account_id))
}

/// The newest accounts (at most 100), optionally only those of one owner.
#[server(prefix = "/api", endpoint = "queries/accounts", input = Json)]
pub async fn list_accounts(#[server(rename = "ownerId")] owner_id: Option<String>) -> Result<AccountList, ApiError> {
    let owner_id = owner_id.as_deref().map(str::trim).filter(|owner| !owner.is_empty());
    Ok(super::services()?.read_model.accounts(owner_id).await?)
}

/// Accounts holding at least `minBalance`, highest balance first, at most 100.
#[server(prefix = "/api", endpoint = "queries/high-value-accounts", input = Json)]
pub async fn high_value_accounts(
    #[server(rename = "minBalance")] min_balance: ExactNumber,
) -> Result<AccountList, ApiError> {
    let min_balance = crate::domain::Money::try_from(min_balance.0)?;
    Ok(super::services()?.read_model.high_value_accounts(min_balance.value()).await?)
}
