//! Projections into a store outside Postgres (Redis, in the bank), led and steered like the
//! others.
//!
//! No transaction spans Postgres and the outside store, so the outside store keeps its own
//! checkpoint, and a batch's writes and its checkpoint's move are one atomic step *there*,
//! taken only if that checkpoint is still where the batch started from (a compare-and-set). A
//! batch applied twice — a crash after the store applied it, a paused leader waking after its
//! replacement applied it — finds the checkpoint moved and changes nothing: exactly once,
//! without asking the projection to be idempotent.
//!
//! The projection's Postgres checkpoint row keeps the leadership, state and levers as for any
//! projection, and follows the outside checkpoint (after it, never ahead): it is what the status
//! shows, and how a store that lost its data is noticed — its checkpoint is missing, or older
//! than one it had reached. The store is then cleared and rebuilt from the first event, marked
//! as rebuilding (queries should not read it) until it is back where it was.
//!
//! The outside checkpoint also names the history of the log it belongs to and the event at it
//! ([`crate::history`]). A store of another history — the database was restored, or recovered
//! to a point in time, or a standby that missed the last commits took over — is rebuilt the
//! same way: it would otherwise go on from a position the log now gives to other events. The
//! status says why it rebuilds.
//!
//! A projection whose events touch nothing but their own stream's data may be split into
//! partitions ([`ExternalProjection::PARTITIONABLE`], [`crate::projection::run_external_partitioned`]):
//! each is a store of its own to the runner — its own checkpoint there, Postgres row, leader and
//! rebuild — so that the store can put each partition where it likes (a Redis Cluster slot).

mod runner;

pub use runner::ExternalProjectionRunner;

use std::future::Future;

use uuid::Uuid;

use crate::projection::Partition;
use crate::{Position, RecordedEvent};

/// The checkpoint of a store that is being cleared: of no history ([`ExternalProjection::clear`]).
pub const CLEARING_LOG: &str = "clearing";

/// A read model kept in a store outside Postgres, with its own checkpoint there.
pub trait ExternalProjection: Send + Sync + 'static {
    /// Names the Postgres checkpoint row (status, leadership, levers).
    const NAME: &'static str;

    /// The event types the projection reads.
    const EVENT_TYPES: &'static [&'static str];

    /// Whether it may be split into partitions by stream (as [`crate::Projection::PARTITIONABLE`]):
    /// each partition then keeps a checkpoint of its own, and the calls below name it. The store
    /// must keep the partitions of each count apart (a count in its keys, say): a new count starts
    /// every partition from the first event, and a partition of it must find nothing of the old.
    const PARTITIONABLE: bool = false;

    /// Where the store has applied `partition`'s events up to, and of which log; `None` when it
    /// holds no checkpoint (never built, or its data is gone).
    fn checkpoint(
        &self,
        partition: Partition,
    ) -> impl Future<Output = Result<Option<StoredCheckpoint>, ExternalError>> + Send;

    /// Applies the batch's events and moves the store's checkpoint from `batch.from` to
    /// `batch.to` (of `batch.log`), atomically, only if the checkpoint is still `batch.from`. An
    /// event that cannot be applied is refused before anything is written
    /// ([`ExternalError::Event`]).
    fn apply(&self, batch: &ExternalBatch<'_>) -> impl Future<Output = Result<CompareAndSet, ExternalError>> + Send;

    /// Empties the store (of `partition`) for a rebuild, fenced by the leader's `epoch` within the history `log`:
    /// refused ([`ExternalError::Store`]) if a later leader of that history has written. While
    /// it clears, the store must answer [`Self::checkpoint`] with one of [`CLEARING_LOG`] (a
    /// clear cut short is then done again), and no batch may apply. Stops, leaving the rest, if
    /// someone else finished the clear and began to build meanwhile.
    fn clear(
        &self,
        partition: Partition,
        epoch: i64,
        log: &str,
    ) -> impl Future<Output = Result<(), ExternalError>> + Send;

    /// Empties what the store holds for the partitions of a count no longer in force
    /// (`partitions` of them): the new count's partitions were built from the first event. A
    /// partition built in the history `current` (that count, adopted again since) is left, and
    /// so is one that begins to be built meanwhile.
    fn retire(&self, partitions: u32, current: Option<&str>) -> impl Future<Output = Result<(), ExternalError>> + Send {
        let _ = (partitions, current);
        async { Ok(()) }
    }

    /// Why the store, though it applies batches, should not be read (shown on the status while
    /// it holds): a setting that lets it drop data, say.
    fn warning(&self) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }
}

/// A place in the log: a position and the event there (none at the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPlace {
    pub position: Position,
    pub event: Option<Uuid>,
}

impl LogPlace {
    pub const START: LogPlace = LogPlace { position: Position::START, event: None };
}

/// An outside store's checkpoint: a place in one history of one event store's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The history ([`crate::LogIdentity`], as text; whatever the store holds, so that a store
    /// written by older code reads as of another history).
    pub log: String,
    pub at: LogPlace,
}

/// One batch for the outside store.
#[derive(Debug, Clone, Copy)]
pub struct ExternalBatch<'a> {
    /// The partition whose streams the events are of (whole, unless the projection is split).
    pub partition: Partition,
    /// The history the events come from ([`crate::LogIdentity`], as text).
    pub log: &'a str,
    /// The checkpoint the batch starts from; `None`: the store must hold none.
    pub from: Option<LogPlace>,
    pub to: LogPlace,
    /// The events after `from`, up to `to`, of the projection's types, in order; maybe none.
    pub events: &'a [RecordedEvent],
    /// A rebuild has not yet brought the store back to where it was: queries should not read it.
    pub rebuilding: bool,
    /// The epoch of the leadership applying it (0 without one): the store refuses a batch from
    /// an epoch below one that has written, so a former leader waking up changes nothing even
    /// if the checkpoint came back to where it had left it (after a rebuild).
    pub epoch: i64,
}

/// What an [`ExternalProjection::apply`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareAndSet {
    Applied,
    /// The checkpoint was not where the batch started from: nothing was written.
    CheckpointMoved,
}

#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// An event the projection cannot apply: the projection stops at it.
    #[error("event at {position} cannot be applied: {reason}")]
    Event { position: Position, reason: Box<dyn std::error::Error + Send + Sync> },
    /// The store cannot be reached, or answered with an error: the batch is tried again.
    #[error("{0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The store lost what its checkpoint says it holds (a key evicted, say): it is rebuilt.
    #[error("the read store lost data: {0}")]
    Lost(String),
}

/// Why a step of an outside projection did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ExternalStepError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the read store: {0}")]
    Store(ExternalError),
    /// A rebuild met an event it cannot apply.
    #[error("rebuild stopped: {0}")]
    RebuildStopped(String),
    /// The store lost what its checkpoint says it holds: it is rebuilt.
    #[error("the read store lost data: {0}")]
    Lost(String),
}
