use std::collections::HashMap;

use app::api::{AccountView, ApiError};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use eventstore::Position;
use uuid::Uuid;

use crate::startup::AppState;

/// `GET /api/queries/accounts/{id}[?after=<token>]`: the contract's account query. A plain
/// route because server functions take no path parameters; it calls the same read model.
pub async fn get_account(
    State(state): State<AppState>,
    Extension(caller): Extension<backend::identity::Caller>,
    Path(account_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<AccountView>, ApiError> {
    let account_id = Uuid::parse_str(&account_id)
        .map_err(|_| ApiError::invalid_request(format!("{account_id:?} is not an account id (a UUID)")))?;
    let after = params
        .get("after")
        .map(|token| token.parse::<Position>())
        .transpose()
        .map_err(|error| ApiError::invalid_request(format!("after: {error}")))?;
    let lookup = state.services.read_model.account(account_id, after).await?;
    Ok(Json(app::api::queries::account_response(lookup, account_id, &caller)?))
}
