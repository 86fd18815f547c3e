//! The groups of commands that streams' workers decided on warm states, committed together:
//! one statement and one commit for every stream that has some ready at the same time.
//!
//! A commit costs Postgres the same whether it carries one command or fifty (a WAL record, a
//! flush, the statement's start), and under load many streams have a group ready at once. The
//! first worker to arrive while no statement runs sends its group and everything that arrived
//! meanwhile, and keeps sending what arrives until nothing waits; the others wait for their
//! answer. A group that cannot be written as decided is left out without failing the others.

use std::sync::{Arc, Mutex};

use sqlx::{PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::Appended;
use crate::store::{EVENTS_UNIQUE, PROCESSED_COMMANDS_KEY, StreamGroup, append_streams_and_record, constraint};

/// At most this many events go in one statement; the rest wait for the next.
const MOST_EVENTS: usize = 1024;

pub struct GroupCommit {
    pool: PgPool,
    stream_type: &'static str,
    version_at: &'static [&'static str],
    position_at: &'static [&'static str],
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    groups: Vec<(StreamGroup, oneshot::Sender<Option<Vec<Appended>>>)>,
    /// Whether a worker is sending statements (and will send the groups waiting here).
    sending: bool,
}

impl GroupCommit {
    /// For one aggregate's streams: their type, and where in an accepted outcome the version
    /// and the position go (see [`crate::CommandRecord`]).
    pub fn new(
        pool: PgPool,
        stream_type: &'static str,
        version_at: &'static [&'static str],
        position_at: &'static [&'static str],
    ) -> GroupCommit {
        GroupCommit { pool, stream_type, version_at, position_at, pending: Mutex::default() }
    }

    /// Appends the group and records its commands, together with the groups of other streams
    /// that are ready at the same time. `None` when nothing of the group was written (its
    /// stream moved on, a command id was recorded before, the database failed): its commands
    /// are then the caller's to handle one by one, where their cases are told apart — a retry
    /// is answered from its record even if the statement did commit after all.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the group may or may not be written (its commands' ids tell). The statements
    /// are sent by a task of their own, whose end, however it ends, hands the sending on.
    pub async fn append(self: &Arc<Self>, group: StreamGroup) -> Option<Vec<Appended>> {
        let (answer, answered) = oneshot::channel();
        let send = {
            let mut pending = self.pending();
            pending.groups.push((group, answer));
            !std::mem::replace(&mut pending.sending, true)
        };
        if send {
            // A task of its own: a stream's worker that sent for the others would keep its own
            // stream waiting for as long as groups keep coming. The guard is made before the
            // task, so that a task dropped unpolled still hands the sending on.
            let sending = Sending { commit: self.clone(), done: false };
            tokio::spawn(sending.send_all());
        }
        answered.await.ok().flatten()
    }

    /// How many groups wait for a statement (for tests).
    pub fn waiting(&self) -> usize {
        self.pending().groups.len()
    }

    /// One statement for the groups. A writer elsewhere that appended to one of the streams, or
    /// recorded one of the command ids, meanwhile fails it whole; sent again, the statement
    /// finds that stream moved on, or that command recorded, and leaves only its group out.
    async fn write(
        &self,
        conn: &mut PgConnection,
        groups: &[StreamGroup],
    ) -> Result<Vec<Option<Vec<Appended>>>, sqlx::Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match append_streams_and_record(&mut *conn, self.stream_type, self.version_at, self.position_at, groups)
                .await
            {
                Err(error)
                    if attempts < 3 && matches!(constraint(&error), Some(EVENTS_UNIQUE | PROCESSED_COMMANDS_KEY)) =>
                {
                    continue;
                }
                written => return written,
            }
        }
    }

    /// The groups, even if a holder panicked: each change is whole, so they are still valid.
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The task that sends statements until no group waits. Dropped before that (a panic, a
/// runtime shutting down), it hands the sending on: the groups waiting are dropped (their
/// workers see `None`), and the next group starts a new task.
struct Sending {
    commit: Arc<GroupCommit>,
    done: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.done {
            let mut pending = self.commit.pending();
            pending.sending = false;
            pending.groups.clear();
        }
    }
}

impl Sending {
    async fn send_all(mut self) {
        let commit = self.commit.clone();
        loop {
            // The connection first: the groups that arrive while it is awaited go along.
            let conn = commit.pool.acquire().await;
            let batch = {
                let mut pending = commit.pending();
                if pending.groups.is_empty() {
                    // In the same critical section as the check: a group arriving after it
                    // finds no sender and starts one.
                    pending.sending = false;
                    self.done = true;
                    return;
                }
                let mut events = 0;
                let count = pending
                    .groups
                    .iter()
                    .take_while(|(group, _)| {
                        events += group.events.len();
                        events <= MOST_EVENTS
                    })
                    .count()
                    .max(1);
                pending.groups.drain(..count).collect::<Vec<_>>()
            };
            let (groups, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let written = match conn {
                Ok(mut conn) => commit.write(&mut conn, &groups).await,
                Err(error) => Err(error),
            };
            match written {
                Ok(written) => {
                    for (answer, appended) in answers.into_iter().zip(written) {
                        let _ = answer.send(appended);
                    }
                }
                Err(error) => {
                    tracing::info!(%error, groups = groups.len(), "a group commit failed; its commands go one by one");
                    for answer in answers {
                        let _ = answer.send(None);
                    }
                }
            }
        }
    }
}
