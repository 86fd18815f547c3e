use std::collections::HashMap;
use std::fmt::Write;

use app::api::{AccountView, ApiError};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bank::contract::Statement;
use eventstore::Position;
use time::format_description::well_known::Rfc3339;
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
    let account_id = account_id_param(&account_id)?;
    let after = after_param(&params)?;
    let lookup = state.services.read_model.account(account_id, after).await?;
    Ok(Json(app::api::queries::account_response(lookup, account_id, &caller)?))
}

/// `GET /api/queries/accounts/{id}/statement.csv?from=YYYY-MM-DD&to=YYYY-MM-DD[&after=<token>]`:
/// the statement as a spreadsheet, downloaded by the account page's link.
pub async fn get_statement_csv(
    State(state): State<AppState>,
    Extension(caller): Extension<backend::identity::Caller>,
    Path(account_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let account_id = account_id_param(&account_id)?;
    let param = |name: &str| {
        params.get(name).map(String::as_str).ok_or_else(|| ApiError::invalid_request(format!("{name} is missing")))
    };
    let after = after_param(&params)?;
    let statement =
        app::api::queries::statement(&state.services, &caller, account_id, (param("from")?, param("to")?), after)
            .await?;
    let file_name = format!("statement-{account_id}-{}-{}.csv", statement.period.from, statement.period.to);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file_name}\"")),
        ],
        statement_csv(&statement),
    )
        .into_response())
}

/// One line per movement between the opening and the closing balance (RFC 4180, no field
/// needs quoting: the fields are dates, kinds, numbers and an id):
///
/// ```text
/// date,description,version,amount,balance
/// 2026-12-01,opening balance,,,100.00
/// 2026-12-01T10:00:00Z,deposit,2,50.00,150.00
/// 2026-12-31,closing balance,,,150.00
/// ```
fn statement_csv(statement: &Statement) -> String {
    let mut csv = String::from("date,description,version,amount,balance\r\n");
    let _ = write!(csv, "{},opening balance,,,{:.2}\r\n", statement.period.from, statement.opening_balance);
    for entry in &statement.entries {
        let at = entry.recorded_at.format(&Rfc3339).unwrap_or_default();
        let kind = entry.kind.in_words();
        let _ =
            write!(csv, "{at},{kind},{},{:.2},{:.2}\r\n", entry.version, entry.signed_amount(), entry.balance_after);
    }
    let _ = write!(csv, "{},closing balance,,,{:.2}\r\n", statement.period.to, statement.closing_balance);
    csv
}

/// The account id in the path: a UUID, else 400.
fn account_id_param(account_id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(account_id)
        .map_err(|_| ApiError::invalid_request(format!("{account_id:?} is not an account id (a UUID)")))
}

fn after_param(params: &HashMap<String, String>) -> Result<Option<Position>, ApiError> {
    params
        .get("after")
        .map(|token| token.parse::<Position>())
        .transpose()
        .map_err(|error| ApiError::invalid_request(format!("after: {error}")))
}
