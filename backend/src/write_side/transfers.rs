//! Transfers on the write side: a customer's request starts a transfer's stream; the transfer
//! process then takes its steps (debit the source, credit the target, or refund the source),
//! each an account command, and records each outcome in the transfer's stream.
//!
//! The process is woken two ways, and either may wake it for a transfer more than once:
//! - by the events in the log, as a projection (`transfer_process`): one instance leads it at
//!   a time, and its checkpoint moves (compare-and-set, fenced by the leader's epoch) only after
//!   every transfer of a batch has been taken as far as it goes;
//! - by the clock: the leader looks every second for transfers past their deadline and takes
//!   them on, which the accounts then refuse as too late (and the source is refunded). It
//!   reads the process's own record of the transfers it has begun (`transfer_process_open`),
//!   never the transfers read model, which may lag or be rebuilding.
//!
//! Exactly once: every step's command id is made of the transfer's id and the step's name, so
//! a step taken again (a crash between a step and its record, a paused leader waking up, the
//! deadline racing the log) is answered by the account from its first outcome, and the
//! transfer's stream records each outcome once. Command ids are forgotten after their
//! retention, so three more rules keep that true for a step that comes back later still:
//! the purge spares the step ids of a transfer not yet finished ([`step_ids_to_keep`]); the
//! account judges a step late by when it arrives, not by when it was planned; and a refund is
//! given only to a transfer still where the refused step found it.

use std::sync::Arc;
use std::time::Duration;

use eventstore::projection::{
    CompareAndSet, ExternalBatch, ExternalError, ExternalProjection, LogPlace, StoredCheckpoint,
};
use eventstore::{Appends, CommandEnvelope, LATEST, Position};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CommandError, CommandHandler, WriteOptions};
use crate::event_codec::DecodeError;
use crate::transfer_store::Transfer;
use bank::contract::TransferAccepted;
use bank::domain::transfer::{AfterStep, REFUND_STEP, StepKind, TransferStep, next_step};
use bank::domain::{
    CommandBy, DomainError, TransferCommand, TransferEvent, TransferRefusal, TransferState, TransferTerms,
};

/// Why a transfer command was not applied.
pub type TransferCommandError = eventstore::CommandError<TransferRefusal, DecodeError>;

/// The projection name of the transfer process: its checkpoint, leader and status.
pub const PROCESS_NAME: &str = "transfer_process";

/// Starts transfers: a customer's request becomes a transfer's first event.
#[derive(Clone)]
pub struct TransferRequests {
    transfers: eventstore::CommandHandler<Transfer>,
    /// How long a transfer has to complete before it is undone.
    deadline: Duration,
}

impl TransferRequests {
    pub fn new(pool: PgPool, appends: Appends, options: WriteOptions, deadline: Duration) -> TransferRequests {
        // Every request opens a new stream: keeping its state would only fill memory.
        let options = WriteOptions { warm_streams: 0, ..options };
        TransferRequests { transfers: eventstore::CommandHandler::new(pool, appends, options), deadline }
    }

    /// Requests the transfer `envelope.command` names, with its deadline from now; the
    /// caller has checked that the requester owns the source. The transfer's id is
    /// `envelope.stream_id`, or the first request's when the request is a retry.
    pub async fn request(
        &self,
        envelope: CommandEnvelope<TransferTermsWithoutDeadline>,
    ) -> Result<TransferAccepted, TransferCommandError> {
        let deadline = OffsetDateTime::now_utc() + self.deadline;
        let TransferTermsWithoutDeadline { from, to, amount, requested_by } = envelope.command.clone();
        let terms = TransferTerms { from, to, amount, requested_by, deadline };
        // Every event of the transfer, on all three streams, carries its id as correlation; the
        // one the request came with is kept beside it.
        let mut metadata = envelope.metadata;
        metadata.insert("correlationIdFromClient".into(), false.into());
        metadata.insert("requestCorrelationId".into(), envelope.correlation_id.to_string().into());
        let envelope = CommandEnvelope {
            command_id: envelope.command_id,
            correlation_id: envelope.stream_id,
            stream_id: envelope.stream_id,
            command: TransferCommand::Request(terms),
            causation_id: envelope.causation_id,
            metadata,
        };
        let accepted = self.transfers.handle(envelope).await?;
        Ok(TransferAccepted { transfer_id: accepted.stream_id, version: accepted.version, position: accepted.position })
    }
}

/// A transfer's next step, as its stream was when the step was planned.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub transfer_id: Uuid,
    pub step: TransferStep,
    /// The transfer's latest event when the step was planned.
    pub cause: Option<Uuid>,
}

/// A transfer as a customer asks for it: its deadline is set when the request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferTermsWithoutDeadline {
    pub from: Uuid,
    pub to: Uuid,
    pub amount: bank::domain::Amount,
    pub requested_by: bank::domain::OwnerId,
}

/// Why a transfer could not be taken further now; it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("transfer {transfer_id}: {source}")]
    Account { transfer_id: Uuid, source: CommandError },
    #[error("transfer {transfer_id}: {source}")]
    Transfer { transfer_id: Uuid, source: TransferCommandError },
    /// The source refused its own money back (its balance would pass the limit, say): the
    /// transfer waits, debited, for an operator.
    #[error("transfer {transfer_id}: the refund was refused: {refusal}")]
    RefundRefused { transfer_id: Uuid, refusal: DomainError },
    #[error("transfer {transfer_id} cannot be read: {source}")]
    Unreadable { transfer_id: Uuid, source: DecodeError },
    #[error("transfer {transfer_id}: its step panicked")]
    Panicked { transfer_id: Uuid },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether a command's failure lasts until something is fixed: an unreadable stream or outcome,
/// or a command id taken by another command.
fn lasting<R, D>(error: &eventstore::CommandError<R, D>) -> bool {
    use eventstore::CommandError as E;
    matches!(error, E::Unreadable(_) | E::UnreadableOutcome { .. } | E::CommandIdReused { .. })
}

impl ProcessError {
    /// Whether trying again at once cannot help (until something is fixed or deployed): an
    /// unreadable stream or outcome (written by newer code, say), a command id taken by another
    /// command, a refund refused, a panic. Such a transfer is parked, so that it does not hold
    /// up every transfer after it, and tried again now and then.
    fn is_permanent(&self) -> bool {
        match self {
            // A panic that happens once happens every time: parked, it holds up nothing else.
            ProcessError::Unreadable { .. } | ProcessError::RefundRefused { .. } | ProcessError::Panicked { .. } => {
                true
            }
            ProcessError::Account { source, .. } => lasting(source),
            ProcessError::Transfer { source, .. } => lasting(source),
            ProcessError::Database(_) => false,
        }
    }
}

/// Takes transfers through their steps. Cheap to clone.
#[derive(Clone)]
pub struct TransferProcess {
    inner: Arc<ProcessParts>,
}

struct ProcessParts {
    pool: PgPool,
    accounts: CommandHandler,
    transfers: eventstore::CommandHandler<Transfer>,
    /// Transfers taken on at once in this process, by the log and the deadlines together: each
    /// holds a pooled connection while it steps, and requests need the rest.
    permits: Arc<tokio::sync::Semaphore>,
}

/// The most transfers this process takes on at once.
const CONCURRENT_TRANSFERS: usize = 8;
/// How often a transfer parked by a lasting error is tried again.
pub const PARKED_RETRY: Duration = Duration::from_secs(60);
/// How often a transfer parked by an error that may pass by itself (its stream held busy, a
/// connection lost) is tried again.
pub const PARKED_RETRY_SOON: Duration = Duration::from_secs(5);
/// The waits before each further try of a transfer whose step failed in a way that may pass by
/// itself; once they are spent it is parked, so that it holds up no transfer behind it.
const RETRY_AFTER: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
/// The longest deadline a transfer can be given; command ids are remembered at least this long
/// plus [`DEADLINE_MARGIN`], so that a step is answered from memory until it would be late anyway.
pub const LONGEST_DEADLINE: Duration = Duration::from_secs(3600);
/// See [`LONGEST_DEADLINE`].
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3600);

impl TransferProcess {
    pub fn new(pool: PgPool, accounts: CommandHandler, appends: Appends, options: WriteOptions) -> TransferProcess {
        let transfers = eventstore::CommandHandler::new(pool.clone(), appends, options);
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_TRANSFERS));
        TransferProcess { inner: Arc::new(ProcessParts { pool, accounts, transfers, permits }) }
    }

    /// Takes the transfer's next steps until it needs none (finished, or not requested).
    /// Safe to call any number of times, at once too: see the module's documentation.
    pub async fn advance(&self, transfer_id: Uuid) -> Result<(), ProcessError> {
        // A transfer needs at most three account steps (debit, credit, refund) in two turns;
        // a third turn finds nothing left. Bounded, so that no fault can make this spin.
        for _ in 0..3 {
            if !self.take_next_step(transfer_id).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Takes the transfer's next step (and records its outcome), if it needs one; false if it
    /// needs none.
    pub async fn take_next_step(&self, transfer_id: Uuid) -> Result<bool, ProcessError> {
        match self.plan(transfer_id).await? {
            Some(planned) => self.take_planned(planned).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// The transfer's next step as of now, read from its stream, if it needs one. A transfer
    /// that needs one is noted as under way; one that is finished, as finished.
    pub async fn plan(&self, transfer_id: Uuid) -> Result<Option<PlannedStep>, ProcessError> {
        let (state, latest_event) = self.load(transfer_id).await?;
        let TransferState::Known { terms, .. } = &state else {
            return Ok(None);
        };
        match next_step(transfer_id, &state, OffsetDateTime::now_utc()) {
            Some(step) => {
                self.open(transfer_id, terms.deadline).await?;
                Ok(Some(PlannedStep { transfer_id, step, cause: latest_event }))
            }
            None => {
                self.close(transfer_id).await?;
                Ok(None)
            }
        }
    }

    /// Takes a planned step and records its outcome. The plan may be old (its process paused
    /// in between): see the module's documentation for why that is safe.
    pub async fn take_planned(&self, planned: PlannedStep) -> Result<(), ProcessError> {
        self.take(planned.transfer_id, planned.step, planned.cause).await
    }

    /// Notes that the transfer is under way (before its first step), with its deadline.
    async fn open(&self, transfer_id: Uuid, deadline: OffsetDateTime) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO transfer_process_open (transfer_id, deadline) VALUES ($1, $2)
             ON CONFLICT (transfer_id) DO NOTHING",
        )
        .bind(transfer_id)
        .bind(deadline)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Notes that the transfer is finished: the deadline watch and the purge let it go.
    async fn close(&self, transfer_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM transfer_process_open WHERE transfer_id = $1")
            .bind(transfer_id)
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// The id of the transfer's latest event, read afresh.
    async fn latest_event(&self, transfer_id: Uuid) -> Result<Option<Uuid>, ProcessError> {
        Ok(self.load(transfer_id).await?.1)
    }

    /// The transfer's state and latest event, from its stream.
    async fn load(&self, transfer_id: Uuid) -> Result<(TransferState, Option<Uuid>), ProcessError> {
        let mut conn = self.inner.pool.acquire().await?;
        let loaded = eventstore::aggregate::load::<Transfer>(&mut conn, transfer_id, LATEST).await.map_err(
            |error| match error {
                eventstore::LoadError::Unreadable(source) => ProcessError::Unreadable { transfer_id, source },
                eventstore::LoadError::Database(error) => ProcessError::Database(error),
            },
        )?;
        Ok((loaded.state, loaded.events.last().map(|(event, _)| event.event_id)))
    }

    /// One account step and the record of its outcome (with the refund, if the target refused).
    async fn take(&self, transfer_id: Uuid, step: TransferStep, cause: Option<Uuid>) -> Result<(), ProcessError> {
        let account = |source| ProcessError::Account { transfer_id, source };
        let answer = match self.account_step(transfer_id, step.kind.name(), step.account_id, &step.command, cause).await
        {
            Ok(()) => Ok(()),
            Err(CommandError::Rejected(refusal)) => Err(refusal),
            Err(error) => return Err(account(error)),
        };
        let record = match step.after(transfer_id, answer.as_ref().map(|_| ())) {
            AfterStep::Record(record) => record,
            AfterStep::Refund { account_id, command, then } => {
                // The credit was refused. If the transfer moved on since this step was planned
                // (a paused leader waking up to a transfer another finished), the refusal is
                // that of a late repeat, not the transfer's answer: a refund now would make
                // money once the refund's id is forgotten. The next turn reads where it is.
                if self.latest_event(transfer_id).await? != cause {
                    return Ok(());
                }
                match self.account_step(transfer_id, REFUND_STEP, account_id, &command, cause).await {
                    Ok(()) => then,
                    Err(CommandError::Rejected(refusal)) => {
                        return Err(ProcessError::RefundRefused { transfer_id, refusal });
                    }
                    Err(error) => return Err(account(error)),
                }
            }
        };
        let envelope = CommandEnvelope {
            command_id: step_command_id(transfer_id, step.kind.outcome_name()),
            correlation_id: transfer_id,
            stream_id: transfer_id,
            command: record,
            causation_id: cause,
            metadata: Default::default(),
        };
        match self.inner.transfers.handle(envelope).await {
            // Out of step: the transfer moved on meanwhile (another leader recorded it): the next
            // turn reads where it is.
            Ok(_) | Err(eventstore::CommandError::Rejected(TransferRefusal::OutOfStep { .. })) => Ok(()),
            Err(source) => Err(ProcessError::Transfer { transfer_id, source }),
        }
    }

    async fn account_step(
        &self,
        transfer_id: Uuid,
        step: &str,
        account_id: Uuid,
        command: &CommandBy,
        cause: Option<Uuid>,
    ) -> Result<(), CommandError> {
        let envelope = CommandEnvelope {
            command_id: step_command_id(transfer_id, step),
            correlation_id: transfer_id,
            stream_id: account_id,
            command: command.clone(),
            causation_id: cause,
            metadata: Default::default(),
        };
        self.inner.accounts.handle(envelope).await.map(|_| ())
    }

    /// Advances every transfer in `transfer_ids`, a few at once. A transfer that cannot go on —
    /// a lasting error (see [`ProcessError::is_permanent`]; a panic too), or one that may pass
    /// but outlasted [`RETRY_AFTER`] — is parked: logged, and kept in `transfer_process_parked`
    /// with its error, and the others go on; a parked transfer that goes through later leaves
    /// the table. Only a transfer that could not even be parked fails the call (after the others
    /// have had their turn).
    pub async fn advance_all(&self, transfer_ids: Vec<Uuid>) -> Result<(), ProcessError> {
        self.advance_each(transfer_ids, false).await
    }

    /// [`Self::advance_all`]; `parked`: the transfers were parked, and leave the table once they
    /// go through.
    async fn advance_each(&self, transfer_ids: Vec<Uuid>, parked: bool) -> Result<(), ProcessError> {
        let mut running = tokio::task::JoinSet::new();
        let mut tasks = std::collections::HashMap::new();
        for transfer_id in transfer_ids {
            let process = self.clone();
            let task = running.spawn(async move {
                let _permit = process.inner.permits.clone().acquire_owned().await;
                let mut waits = RETRY_AFTER.iter();
                loop {
                    match process.advance(transfer_id).await {
                        Err(error) if !error.is_permanent() => match waits.next() {
                            Some(wait) => {
                                tracing::debug!(%transfer_id, %error, "a transfer's step failed: trying again");
                                tokio::time::sleep(*wait).await;
                            }
                            None => return Err(error),
                        },
                        outcome => return outcome,
                    }
                }
            });
            tasks.insert(task.id(), transfer_id);
        }
        let mut first_failure = None;
        while let Some(done) = running.join_next_with_id().await {
            let (transfer_id, outcome) = match done {
                Ok((task, outcome)) => (tasks.get(&task).copied().unwrap_or_default(), outcome),
                Err(panic) => {
                    let transfer_id = tasks.get(&panic.id()).copied().unwrap_or_default();
                    tracing::error!(%transfer_id, %panic, "a transfer's step panicked");
                    (transfer_id, Err(ProcessError::Panicked { transfer_id }))
                }
            };
            let noted = match outcome {
                Ok(()) if parked => self.unpark(transfer_id).await,
                Ok(()) => Ok(()),
                Err(error) => self.park(transfer_id, &error).await,
            };
            if let Err(error) = noted {
                // Not even parked (the database is out of reach): the batch is tried again.
                first_failure.get_or_insert(ProcessError::Database(error));
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Sets a transfer aside that cannot go on now: it waits where it stopped, and is tried
    /// again every [`PARKED_RETRY`] (a fix deployed meanwhile lets it go on by itself).
    async fn park(&self, transfer_id: Uuid, error: &ProcessError) -> Result<(), sqlx::Error> {
        let lasting = error.is_permanent();
        tracing::error!(%transfer_id, %error, lasting, "a transfer cannot go on: parked");
        sqlx::query(
            "INSERT INTO transfer_process_parked (transfer_id, error, lasting) VALUES ($1, $2, $3)
             ON CONFLICT (transfer_id) DO UPDATE SET error = $2, lasting = $3, parked_at = clock_timestamp()",
        )
        .bind(transfer_id)
        .bind(error.to_string())
        .bind(lasting)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    async fn unpark(&self, transfer_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM transfer_process_parked WHERE transfer_id = $1")
            .bind(transfer_id)
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// Parked transfers whose last try is older than [`PARKED_RETRY`] (or
    /// [`PARKED_RETRY_SOON`], for an error that may pass by itself).
    async fn parked_due(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT transfer_id FROM transfer_process_parked
             WHERE parked_at < clock_timestamp() - make_interval(secs => CASE WHEN lasting THEN $1 ELSE $2 END)
             ORDER BY parked_at LIMIT $3",
        )
        .bind(PARKED_RETRY.as_secs_f64())
        .bind(PARKED_RETRY_SOON.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.inner.pool)
        .await
    }

    /// Transfers the process has begun, not finished, and past their deadline (parked ones
    /// have their own turn).
    async fn overdue(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT transfer_id FROM transfer_process_open o
             WHERE deadline < clock_timestamp()
               AND NOT EXISTS (SELECT 1 FROM transfer_process_parked p WHERE p.transfer_id = o.transfer_id)
             ORDER BY deadline LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.inner.pool)
        .await
    }

    /// While this instance leads the transfer process, takes on overdue transfers every
    /// second, until `shutdown`. A step the deadline makes is refused by the account as too
    /// late, so the transfer is undone; one that raced it and won stands.
    pub async fn run_deadlines(self, instance: String, shutdown: CancellationToken) {
        const EVERY: Duration = Duration::from_secs(1);
        while !shutdown.is_cancelled() {
            if let Err(error) = self.fire_due_deadlines(&instance).await {
                tracing::warn!(%error, "transfer deadlines: will look again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// One look at the deadlines and at the parked transfers due another try, if this
    /// instance leads the process; how many were overdue. Each part runs whatever the other
    /// met.
    pub async fn fire_due_deadlines(&self, instance: &str) -> Result<usize, ProcessError> {
        if !eventstore::projection::led_by(&self.inner.pool, PROCESS_NAME, instance).await? {
            return Ok(0);
        }
        let deadlines = async {
            let overdue = self.overdue(100).await?;
            let count = overdue.len();
            if count > 0 {
                tracing::info!(count, "transfers past their deadline: undoing them");
            }
            self.advance_all(overdue).await.map(|()| count)
        };
        let parked = async {
            let parked = self.parked_due(10).await?;
            if !parked.is_empty() {
                tracing::info!(count = parked.len(), "trying parked transfers again");
            }
            self.advance_each(parked, true).await
        };
        let (deadlines, parked) = tokio::join!(deadlines, parked);
        let count = deadlines?;
        parked?;
        Ok(count)
    }
}

/// The command id of a transfer's step: the same step of the same transfer, however often it is
/// taken, is one command.
pub fn step_command_id(transfer_id: Uuid, step: &str) -> Uuid {
    Uuid::new_v5(&transfer_id, step.as_bytes())
}

/// The command ids of every step of the transfers begun more than `age` ago and not finished:
/// the purge must not forget them, or a step taken again would be decided again.
pub async fn step_ids_to_keep(pool: &PgPool, age: Duration) -> Result<Vec<Uuid>, sqlx::Error> {
    let transfers: Vec<Uuid> = sqlx::query_scalar(
        "SELECT transfer_id FROM transfer_process_open WHERE opened_at < clock_timestamp() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let steps = [StepKind::Debit, StepKind::Credit]
        .into_iter()
        .flat_map(|kind| [kind.name(), kind.outcome_name()])
        .chain([REFUND_STEP]);
    let steps: Vec<&str> = steps.collect();
    Ok(transfers
        .iter()
        .flat_map(|&transfer_id| steps.iter().map(move |step| step_command_id(transfer_id, step)))
        .collect())
}

/// The transfer process as a projection of the log: the events that wake it are a transfer's
/// request and its debit; its checkpoint is a row of its own, moved by compare-and-set.
impl ExternalProjection for TransferProcess {
    fn name(&self) -> &'static str {
        PROCESS_NAME
    }

    fn event_types(&self) -> &'static [&'static str] {
        // A transfer's request is all that wakes it: the checkpoint passes the request only once
        // the transfer went as far as it could, so a transfer cut short (a crash, an error) is
        // woken again by its request. Its later events need no wake-up of their own.
        &TransferEvent::TYPES[..1]
    }

    async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, ExternalError> {
        let row: Option<(String, i64, i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT log, transaction_id, global_position, event FROM transfer_process_checkpoint WHERE log IS NOT NULL",
        )
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(row.map(|(log, transaction_id, global_position, event)| StoredCheckpoint {
            log,
            at: LogPlace { position: Position { transaction_id, global_position }, event },
        }))
    }

    async fn apply(&self, batch: &ExternalBatch<'_>) -> Result<CompareAndSet, ExternalError> {
        let mut transfers: Vec<Uuid> = batch.events.iter().map(|event| event.stream_id).collect();
        transfers.sort_unstable();
        transfers.dedup();
        self.advance_all(transfers).await.map_err(store_error)?;
        // Every transfer of the batch went as far as it can: the checkpoint may pass them.
        let from = batch.from.unwrap_or(LogPlace::START).position;
        let moved = sqlx::query(
            "INSERT INTO transfer_process_checkpoint AS c (singleton, log, transaction_id, global_position, event, fence)
             VALUES (true, $1, $4, $5, $8, $6)
             ON CONFLICT (singleton) DO UPDATE
                 SET log = $1, transaction_id = $4, global_position = $5, event = $8, fence = GREATEST(c.fence, $6)
                 WHERE c.fence <= $6 AND (($7 AND c.log IS NULL)
                     OR (c.log = $1 AND c.transaction_id = $2 AND c.global_position = $3))",
        )
        .bind(batch.log)
        .bind(from.transaction_id)
        .bind(from.global_position)
        .bind(batch.to.position.transaction_id)
        .bind(batch.to.position.global_position)
        .bind(batch.epoch)
        .bind(batch.from.is_none())
        .bind(batch.to.event)
        .execute(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(if moved.rows_affected() == 1 { CompareAndSet::Applied } else { CompareAndSet::CheckpointMoved })
    }

    /// Starting over means waking every transfer again from the first event: finished ones
    /// need nothing, so they cost a read each.
    async fn clear(&self, epoch: i64, _log: &str) -> Result<(), ExternalError> {
        // The checkpoint lives in the same database as the log: its fence goes with the history.
        let refused: Option<i64> = sqlx::query_scalar(
            "WITH cleared AS (
                 UPDATE transfer_process_checkpoint SET log = NULL, transaction_id = 0, global_position = 0,
                     event = NULL, fence = GREATEST(fence, $1)
                 WHERE fence <= $1 RETURNING 1)
             SELECT fence FROM transfer_process_checkpoint WHERE NOT EXISTS (SELECT 1 FROM cleared)",
        )
        .bind(epoch)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        match refused {
            Some(fence) => Err(ExternalError::Store(
                format!("the checkpoint's fence ({fence}) refuses epoch {epoch}: a later leader has written").into(),
            )),
            None => Ok(()),
        }
    }
}

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> ExternalError {
    ExternalError::Store(Box::new(error))
}
