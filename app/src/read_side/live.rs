//! The live stream's messages: what the account read model just learned, told to the browsers
//! the moment it learns it (the pages poll only while the stream is down).

use eventstore::change_feed::{ChangeFeed, Changes};
use eventstore::{Aggregate, CheckpointWatch};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::account_store::Account;
use crate::contract::LiveProgress;
use crate::read_side::account_summary::PROJECTION_NAME;

/// Follows the account summary's checkpoint — the read model the pages show — and reports the
/// accounts each move changed.
pub fn spawn_account_feed(
    pool: PgPool,
    checkpoints: &CheckpointWatch,
    shutdown: CancellationToken,
) -> (ChangeFeed, JoinHandle<()>) {
    ChangeFeed::spawn(pool, checkpoints, PROJECTION_NAME, Account::STREAM_TYPE, shutdown)
}

/// A feed message as the browser reads it.
pub fn progress(changes: &Changes) -> LiveProgress {
    match &changes.streams {
        Some(streams) => LiveProgress {
            position: changes.position,
            accounts: streams.iter().map(|stream| stream.stream_id).collect(),
            opened: streams.iter().filter(|stream| stream.first_version == 1).map(|stream| stream.stream_id).collect(),
            everything: false,
        },
        None => LiveProgress { position: changes.position, accounts: Vec::new(), opened: Vec::new(), everything: true },
    }
}
