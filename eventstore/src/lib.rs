//! A Postgres event store and projection runner that know nothing about bank accounts.
//!
//! - [`aggregate`]: what an aggregate supplies (its pure parts), and loading one from its latest
//!   snapshot.
//! - [`commands`]: the command loop for any aggregate: a queue per stream, stream lock,
//!   idempotency, decide, append, retry, snapshot.
//! - [`command_queue`]: the commands waiting for a stream in this process, taken by one worker.
//! - [`group_commit`]: the groups of commands several streams' workers decided, in one commit.
//! - [`store`]: append events to a stream at an expected version (optimistic concurrency), read
//!   a stream back, and read the global log in a gap-safe order.
//! - [`projection`]: run a named projection over the global log, applying each batch and
//!   advancing its checkpoint in one transaction.
//! - [`wakeup`]: wake readers after appends, in this process and others (NOTIFY/LISTEN).
//! - [`checkpoint_watch`]: every projection's checkpoint, watched in-process, for queries that
//!   wait for the read model.
//! - [`change_feed`]: the streams each checkpoint move changed, broadcast to live subscribers.
//! - [`snapshots`]: a stream's state every so many events.
//! - [`processed_commands`]: remembered commands, for idempotent retries.
//! - [`warm_streams`]: the latest state of streams this process wrote, so commands skip the load.
//! - [`guard`]: refuse a cluster whose transaction ids would sort new events before stored ones.
//! - [`schema`]: the store's tables, in this crate's `migrations/` folder.
//!
//! Without the default `postgres`
//! feature only [`Position`] remains, for code compiled to WebAssembly.

pub mod position;
pub mod status;
pub use position::{ParsePositionError, Position};
pub use status::{LeverPulled, ProjectionState, ProjectionStatus, RebuildProgress};

#[cfg(feature = "postgres")]
pub mod aggregate;
#[cfg(feature = "postgres")]
pub mod change_feed;
#[cfg(feature = "postgres")]
pub mod checkpoint_watch;
#[cfg(feature = "postgres")]
pub mod command_queue;
#[cfg(feature = "postgres")]
pub mod commands;
#[cfg(feature = "postgres")]
pub mod event;
#[cfg(feature = "postgres")]
pub mod group_commit;
#[cfg(feature = "postgres")]
pub mod guard;
#[cfg(feature = "postgres")]
pub mod history;
#[cfg(feature = "postgres")]
pub mod processed_commands;
#[cfg(feature = "postgres")]
pub mod projection;
#[cfg(feature = "postgres")]
pub mod relay;
#[cfg(feature = "postgres")]
pub mod schema;
#[cfg(feature = "postgres")]
pub mod snapshots;
#[cfg(feature = "postgres")]
pub mod store;
#[cfg(feature = "postgres")]
pub mod wakeup;
#[cfg(feature = "postgres")]
pub mod warm_streams;

#[cfg(feature = "postgres")]
pub use aggregate::{Aggregate, LATEST, LoadError, Loaded};
#[cfg(feature = "postgres")]
pub use checkpoint_watch::{CheckpointWatch, Waited};
#[cfg(feature = "postgres")]
pub use commands::{Accepted, CommandEnvelope, CommandError, CommandHandler, WriteOptions};
#[cfg(feature = "postgres")]
pub use event::{NewEvent, RecordedEvent};
#[cfg(feature = "postgres")]
pub use guard::{ClusterMoveError, check_transaction_ids};
#[cfg(feature = "postgres")]
pub use history::{LogIdentity, event_at, log_identity, server_started_at};
#[cfg(feature = "postgres")]
pub use projection::{ApplyError, Progress, Projection, ProjectionError, ProjectionRunner, Target, is_transient};
#[cfg(feature = "postgres")]
pub use snapshots::SnapshotVersion;
#[cfg(feature = "postgres")]
pub use store::{
    AppendAndRecordError, AppendError, Appended, CommandRecord, LogBatch, append, append_and_record,
    begin_with_stream_lock, head, latest_version, read_all_after, read_batch, read_partition_batch, read_stream,
    read_stream_from_snapshot, read_stream_until, stream_lock_key,
};
#[cfg(feature = "postgres")]
pub use wakeup::AppendNotifier;
