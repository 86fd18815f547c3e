//! What the API's server functions call, in one place.

use std::sync::Arc;

/// What the server functions need, provided as Leptos context by the server, behind an `Arc`:
/// the context is provided to every request and read by every server function, and cloning the
/// fields themselves (handlers, pools, caches) for each would cost more than the work.
pub struct Services {
    pub commands: crate::write_side::CommandHandler,
    pub transfers: crate::write_side::TransferRequests,
    pub read_model: crate::read_side::ReadModel,
    pub history: crate::read_side::AccountHistory,
    /// Every projection's status, read at most once a second however many ask.
    pub projection_status: Arc<eventstore::projection::StatusCache>,
    pub pool: sqlx::PgPool,
    pub passwords: crate::identity::Passwords,
    /// Who each session or token belongs to, remembered for a moment.
    pub callers: crate::identity::CallerCache,
    /// Session cookies are marked `Secure` (sent over https only).
    pub secure_cookies: bool,
    /// What seals personal data; `None`: it is written in clear, and nobody can be forgotten.
    pub master_keys: Option<crate::personal::MasterKeys>,
    /// How long a forgotten person's username stays refused at sign-up.
    pub username_cooling_off: std::time::Duration,
    /// Wakes the projections when something outside the command handlers appends (an erasure).
    pub appends: eventstore::AppendNotifier,
}

impl Services {
    /// The master key new data keys are wrapped with, if there is one.
    pub fn master_key(&self) -> Option<&crate::personal::MasterKey> {
        self.master_keys.as_ref().map(|keys| &keys.current)
    }
}
