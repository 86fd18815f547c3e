//! Queries over the read model, as Leptos server functions. `GET /api/queries/accounts/{id}`,
//! which needs a path parameter, is a plain axum route in the server calling the same code.
//!
//! Customers see their own accounts only: anyone else's answers exactly as an unknown account
//! does (404), so that account ids reveal nothing. Operators see every account.

use eventstore::Position;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use uuid::Uuid;

use super::error::ApiError;
use bank::contract::exact_number::ExactNumber;
use bank::contract::{
    AccountList, AccountView, HistoricalAccount, HistoryPage, Ledger, PageCursor, ReadModelLag, Statement,
    TransferList, TransferRecipient,
};

/// One account; with `after`, waits (bounded) until the read model has passed that position.
#[server(prefix = "/api", endpoint = "queries/account", input = Json)]
pub async fn get_account(
    #[server(rename = "accountId")] account_id: Uuid,
    after: Option<Position>,
) -> Result<AccountView, ApiError> {
    let caller = super::signed_in()?;
    let lookup = super::services()?.read_model.account(account_id, after).await?;
    account_response(lookup, account_id, &caller)
}

/// The answer to an account query: a read model that has not reached the position asked for
/// and does not know the account yet says so (503, retry), instead of calling it unknown.
#[cfg(feature = "ssr")]
pub fn account_response(
    lookup: backend::read_side::AccountLookup,
    account_id: Uuid,
    caller: &backend::identity::Caller,
) -> Result<AccountView, ApiError> {
    use backend::read_side::AccountLookup;
    match lookup {
        AccountLookup::Found(view) if caller.may_see(&view.owner_id) => Ok(view),
        AccountLookup::Found(_) | AccountLookup::Unknown => Err(ApiError::account_not_found(account_id)),
        AccountLookup::NotYet { after, as_of } => Err(ApiError::new(
            super::ErrorCode::ServiceUnavailable,
            format!("the read model has not reached {after} yet (it is at {as_of}); please retry shortly"),
        )),
    }
}

/// The newest accounts (at most 100 a page), optionally only those of one owner. A customer's
/// list holds their own accounts only (another owner's name gives an empty list). A full page
/// names where the next starts (`nextPage`), to pass back as `before`. With `after`, waits
/// (bounded) until the read model has passed that position; `asOf` says how far it got.
#[server(prefix = "/api", endpoint = "queries/accounts", input = Json)]
pub async fn list_accounts(
    #[server(rename = "ownerId")] owner_id: Option<String>,
    before: Option<PageCursor>,
    after: Option<Position>,
) -> Result<AccountList, ApiError> {
    let caller = super::signed_in()?;
    // An empty filter is no filter; any other goes through the rules every owner follows, so that
    // text no owner can have (a NUL, which Postgres refuses) is refused here with a 400.
    let owner_id = owner_id
        .filter(|owner| !owner.trim().is_empty())
        .map(|owner| bank::domain::OwnerId::parse(&owner))
        .transpose()?;
    let read_model = &super::services()?.read_model;
    match (caller.visible_owner(), &owner_id) {
        (Some(own), Some(asked)) if asked.as_str() != own => {
            let mut none = read_model.accounts(Some(own), None, after).await?;
            none.accounts.clear();
            none.next_page = None;
            Ok(none)
        }
        (Some(own), _) => Ok(read_model.accounts(Some(own), before, after).await?),
        (None, asked) => Ok(read_model.accounts(asked.as_ref().map(|owner| owner.as_str()), before, after).await?),
    }
}

/// Accounts holding at least `minBalance`, highest balance first, at most 100: across all
/// owners for operators, the caller's own for customers. With `after`, as the list above.
#[server(prefix = "/api", endpoint = "queries/high-value-accounts", input = Json)]
pub async fn high_value_accounts(
    #[server(rename = "minBalance")] min_balance: ExactNumber,
    after: Option<Position>,
) -> Result<AccountList, ApiError> {
    let caller = super::signed_in()?;
    let min_balance = bank::domain::Money::try_from(min_balance.0)?;
    Ok(super::services()?.read_model.high_value_accounts(min_balance.value(), caller.visible_owner(), after).await?)
}

/// The account exactly as it was at a version (`version`) or a moment (`at`, RFC 3339), folded
/// from the event store. A version beyond the newest gives the newest.
#[server(prefix = "/api", endpoint = "queries/account-at", input = Json)]
pub async fn account_at(
    #[server(rename = "accountId")] account_id: Uuid,
    version: Option<i64>,
    at: Option<String>,
) -> Result<HistoricalAccount, ApiError> {
    let caller = super::signed_in()?;
    visible_account(&caller, account_id).await?;
    let history = &super::services()?.history;
    let found = match (version, at) {
        (Some(version), None) if version >= 1 => history.at_version(account_id, version).await?,
        (None, Some(at)) => history.before(account_id, end_of_moment(&at)?).await?,
        _ => return Err(ApiError::invalid_request("give either a version (1 or more) or a time (at)")),
    };
    found.ok_or_else(|| ApiError::account_not_found(account_id))
}

/// 404 unless the caller may see the account: the owner as its creation event names it (the
/// event store, not a read model that may lag), or an operator.
#[cfg(feature = "ssr")]
async fn visible_account(caller: &backend::identity::Caller, account_id: Uuid) -> Result<(), ApiError> {
    if caller.is_operator() {
        return Ok(());
    }
    let owner = super::services()?.history.owner(account_id).await?;
    match owner {
        Some(owner) if caller.may_see(&owner) => Ok(()),
        _ => Err(ApiError::account_not_found(account_id)),
    }
}

/// The instant just after the moment `at` (RFC 3339) names, in UTC: the account "as of `at`" is
/// made of the events recorded before it.
///
/// The pages show times to the second while events are recorded to the microsecond, so a moment
/// given to the whole second means the end of that second: travelling to the time an event is
/// shown at then includes that event. A moment with a fraction is exact: everything recorded at
/// or before it, to the microsecond the store keeps. Beyond the last representable time (year
/// 9999 in UTC) everything is included.
#[cfg(feature = "ssr")]
fn end_of_moment(at: &str) -> Result<time::OffsetDateTime, ApiError> {
    use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};

    let moment = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid_request(format!("at: {at:?} is not an RFC 3339 time")))?;
    let end_of_last = PrimitiveDateTime::MAX.assume_utc();
    let Some(moment) = moment.checked_to_offset(UtcOffset::UTC) else {
        return Ok(end_of_last);
    };
    // The fraction, if any, is the only '.' an RFC 3339 time can have.
    let (start, length) = if at.contains('.') {
        (moment.replace_microsecond(moment.microsecond()), Duration::MICROSECOND)
    } else {
        (moment.replace_nanosecond(0), Duration::SECOND)
    };
    Ok(start.ok().and_then(|start| start.checked_add(length)).unwrap_or(end_of_last))
}

/// The account's audit trail, newest first: `limit` (1–100, default 20) events older than
/// `beforeVersion`, each with its amount, the balance it left and its metadata.
#[server(prefix = "/api", endpoint = "queries/account-history", input = Json)]
pub async fn account_history(
    #[server(rename = "accountId")] account_id: Uuid,
    #[server(rename = "beforeVersion")] before_version: Option<i64>,
    limit: Option<i64>,
) -> Result<HistoryPage, ApiError> {
    let caller = super::signed_in()?;
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_request("limit must be between 1 and 100"));
    }
    // Versions start at 1, so a page before version 1 is empty and one before 0 means nothing.
    if before_version.is_some_and(|before| before < 1) {
        return Err(ApiError::invalid_request("beforeVersion must be 1 or more"));
    }
    visible_account(&caller, account_id).await?;
    super::services()?
        .history
        .page(account_id, before_version, limit)
        .await?
        .ok_or_else(|| ApiError::account_not_found(account_id))
}

/// The account's latest money movements from the ledger read model (at most `limit`, 1–500,
/// default 200), oldest first: what the balance chart draws. With `after`, waits (bounded) until
/// the ledger has passed that position; `asOf` says how far it got.
#[server(prefix = "/api", endpoint = "queries/account-ledger", input = Json)]
pub async fn account_ledger(
    #[server(rename = "accountId")] account_id: Uuid,
    limit: Option<i64>,
    after: Option<Position>,
) -> Result<Ledger, ApiError> {
    let caller = super::signed_in()?;
    let limit = limit.unwrap_or(200);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_request("limit must be between 1 and 500"));
    }
    visible_account(&caller, account_id).await?;
    Ok(super::services()?.read_model.ledger(account_id, limit, after).await?)
}

/// The account's statement for the days `from` to `to` (`YYYY-MM-DD`, UTC, both included, at
/// most 366 days): the balance before, every movement with the balance it left, the balance
/// after, from the ledger read model. With `after`, as the ledger. (Also as CSV:
/// `GET /api/queries/accounts/{id}/statement.csv?from=&to=`.)
#[server(prefix = "/api", endpoint = "queries/account-statement", input = Json)]
pub async fn account_statement(
    #[server(rename = "accountId")] account_id: Uuid,
    from: String,
    to: String,
    after: Option<Position>,
) -> Result<Statement, ApiError> {
    let caller = super::signed_in()?;
    let services = super::services()?;
    statement(&services, &caller, account_id, (&from, &to), after).await
}

/// A statement for the caller, of an account they may see (404 otherwise, as for an unknown one).
#[cfg(feature = "ssr")]
pub async fn statement(
    services: &backend::Services,
    caller: &backend::identity::Caller,
    account_id: Uuid,
    (from, to): (&str, &str),
    after: Option<Position>,
) -> Result<Statement, ApiError> {
    let period = bank::contract::StatementPeriod::parse(from, to).map_err(ApiError::invalid_request)?;
    match services.history.owner(account_id).await? {
        Some(owner) if caller.may_see(&owner) => {}
        _ => return Err(ApiError::account_not_found(account_id)),
    }
    services.read_model.statement(account_id, period, after).await?.ok_or_else(|| {
        ApiError::invalid_request(format!(
            "the period has more than {} movements; ask for fewer days",
            bank::contract::STATEMENT_MAX_ENTRIES
        ))
    })
}

/// The account's transfers, sent and received, newest first (at most `limit`, 1–100, default
/// 20, a page), each with its state and the time of each step, from the transfers read model.
/// A full page names where the next (older) starts (`nextPage`), to pass back as `before`.
#[server(prefix = "/api", endpoint = "queries/account-transfers", input = Json)]
pub async fn account_transfers(
    #[server(rename = "accountId")] account_id: Uuid,
    limit: Option<i64>,
    before: Option<PageCursor>,
) -> Result<TransferList, ApiError> {
    let caller = super::signed_in()?;
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_request("limit must be between 1 and 100"));
    }
    visible_account(&caller, account_id).await?;
    Ok(super::services()?.read_model.transfers(account_id, limit, before).await?)
}

/// Whose account `accountId` is, for a sender to check before a transfer: the owner's name only
/// (an account number is a random UUID: knowing one means having been given it). 404 for no
/// such account. Limited as commands are, per user and address.
#[server(prefix = "/api", endpoint = "queries/transfer-recipient", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn check_recipient(#[server(rename = "accountId")] account_id: Uuid) -> Result<TransferRecipient, ApiError> {
    super::signed_in()?;
    match super::services()?.history.owner(account_id).await? {
        Some(owner_id) => Ok(TransferRecipient { account_id, owner_id: owner_id.to_string() }),
        None => Err(ApiError::account_not_found(account_id)),
    }
}

/// How far the accounts' read model is behind (events and seconds), from the shared status
/// reading (at most a second old): the figure an account page shows beside its sync badge.
#[server(prefix = "/api", endpoint = "status/read-model-lag", input = Json)]
pub async fn accounts_read_model_lag() -> Result<ReadModelLag, ApiError> {
    super::signed_in()?;
    let status = super::services()?.projection_status.get().await?;
    // Split into partitions, the read model is as far behind as its slowest partition.
    let name = backend::read_side::account_summary::PROJECTION_NAME;
    let summary = status.iter().filter(|p| {
        p.name == name
            || eventstore::projection::Partition::parse_checkpoint_name(&p.name).is_some_and(|(of, _)| of == name)
    });
    Ok(summary.fold(ReadModelLag { lag_events: 0, lag_seconds: 0.0 }, |lag, p| ReadModelLag {
        lag_events: lag.lag_events.max(p.lag_events),
        lag_seconds: lag.lag_seconds.max(p.lag_seconds),
    }))
}
