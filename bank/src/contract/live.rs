//! The live stream's messages (`GET /api/live`) and how far the read model is behind.

use eventstore::Position;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One message of the live stream (`GET /api/live`, server-sent events named `progress`): the
/// account read model moved to `position`, and these accounts changed on the way (`opened`:
/// those among them that are new). With `everything`, too much changed to name (or a message
/// was lost): refetch whatever is shown. The message's SSE id is the position, so a reconnecting
/// client's `Last-Event-ID` resumes right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveProgress {
    pub position: Position,
    pub accounts: Vec<Uuid>,
    pub opened: Vec<Uuid>,
    pub everything: bool,
}

impl LiveProgress {
    /// "Refetch whatever is shown", as the browser tells its pages on (re)connecting.
    pub fn everything() -> LiveProgress {
        LiveProgress { position: Position::START, accounts: Vec::new(), opened: Vec::new(), everything: true }
    }

    /// Whether a page showing `account` should read it again.
    pub fn concerns(&self, account: Uuid) -> bool {
        self.everything || self.accounts.contains(&account)
    }
}

/// How far the accounts' read model is behind the event store: what every signed-in user may
/// know of the read side (operators see the whole status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadModelLag {
    pub lag_events: i64,
    pub lag_seconds: f64,
}
