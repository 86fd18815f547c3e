//! The wire types: what commands and queries answer, as the HTTP contract spells them. Shared
//! by the server and the browser, and by the layers inside the server (the write side and the
//! read side build them; the API sends them), so that no inner layer imports the API.

pub mod exact_number;

mod accounts;
mod identity;
mod ledger;
mod live;
mod paging;
mod transfers;

pub use accounts::{
    AccountList, AccountStatusView, AccountView, CommandAccepted, HistoricalAccount, ReplicaStatus, ServedBy,
};
pub use identity::{
    ApiTokenInfo, ForgetResponse, NewApiToken, PersonalDataStatus, Role, SessionInfo, SignedIn, TokenScope,
};
pub use ledger::{
    HistoryEntry, HistoryPage, Ledger, LedgerEntry, MovementKind, STATEMENT_MAX_DAYS, STATEMENT_MAX_ENTRIES, Statement,
    StatementPeriod,
};
pub use live::{LiveProgress, ReadModelLag};
pub use paging::PageCursor;
pub use transfers::{TransferAccepted, TransferList, TransferRecipient, TransferStateView, TransferView};
