//! The groups of commands that streams' workers decided on warm states, committed together:
//! one statement and one commit for every stream that has some ready at the same time.
//!
//! A commit costs Postgres the same whether it carries one command or fifty (a WAL record, a
//! flush, the statement's start), and under load many streams have a group ready at once. A
//! group that finds fewer than [`SENDERS`] statements on their way starts a sender, which sends
//! everything waiting and keeps sending what arrives until nothing waits; the workers wait for
//! their answer. Two senders, not one: a hot stream's large group must not make every other
//! stream's group wait for it. A group that cannot be written as decided is left out without
//! failing the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::Appended;
use crate::store::{
    EVENTS_UNIQUE, PROCESSED_COMMANDS_KEY, StreamGroup, StreamKind, append_streams_and_record, constraint,
};

/// At most this many events go in one statement; the rest wait for the next.
const MOST_EVENTS: usize = 1024;

/// At most this many statements on their way at once, each on a connection of its own. Their
/// streams differ (a stream's worker waits for its group), and each locks its rows in stream
/// and command order, so they never wait for each other in a circle.
const SENDERS: usize = 2;

pub struct GroupCommit {
    /// Where statements go: a connection per sender, with a bounded lock wait (see
    /// [`GroupCommit::new`]).
    pool: PgPool,
    kind: StreamKind,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    groups: Vec<(StreamGroup, oneshot::Sender<Option<Vec<Appended>>>)>,
    /// How many senders are at work (and will send the groups waiting here).
    senders: usize,
}

impl GroupCommit {
    /// For one aggregate's streams. Statements go on connections of their own ([`SENDERS`]),
    /// on which a lock waits at most as long as a writer's transaction does
    /// ([`crate::store::WRITER_TIMEOUTS`]): another session's row that one stream's group waits
    /// for must not hold every stream's for longer.
    pub fn new(pool: &PgPool, kind: StreamKind) -> GroupCommit {
        let options = pool.connect_options().as_ref().clone().options([("lock_timeout", "3s")]);
        let own = PgPoolOptions::new()
            .max_connections(SENDERS as u32)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        GroupCommit::on(own, kind)
    }

    /// As [`GroupCommit::new`], on the connections of `pool` as they are (a test's pool of one
    /// connection, held to gather groups).
    pub fn on(pool: PgPool, kind: StreamKind) -> GroupCommit {
        GroupCommit { pool, kind, pending: Mutex::default() }
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
            let send = pending.senders < SENDERS;
            pending.senders += usize::from(send);
            send
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
            match append_streams_and_record(&mut *conn, self.kind, groups).await {
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

/// A task that sends statements until no group waits. Dropped before that (a panic, a runtime
/// shutting down), it hands the sending on: if it was the last sender, the groups waiting are
/// dropped (their workers see `None`); the next group starts a new one.
struct Sending {
    commit: Arc<GroupCommit>,
    done: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.done {
            let mut pending = self.commit.pending();
            pending.senders -= 1;
            if pending.senders == 0 {
                pending.groups.clear();
            }
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
                    // finds a sender fewer and starts one.
                    pending.senders -= 1;
                    self.done = true;
                    return;
                }
                next_batch(&mut pending.groups)
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

/// The groups of the next statement, taken from the front of `waiting`: at most
/// [`MOST_EVENTS`] events (one group at least), and no stream and no command id twice — a
/// command sent to two streams at once (a client's doing) would fail the statement for all the
/// others on the command's key. What does not go waits, in order, for the next. Sorted by
/// stream: two instances' statements then wait for each other's rows in the same order, never
/// in a circle.
fn next_batch<T>(waiting: &mut Vec<(StreamGroup, T)>) -> Vec<(StreamGroup, T)> {
    let (mut streams, mut command_ids, mut events) = (HashSet::new(), HashSet::new(), 0);
    let mut batch = Vec::new();
    let mut later = Vec::new();
    for (group, answer) in waiting.drain(..) {
        let fits = batch.is_empty() || events + group.events.len() <= MOST_EVENTS;
        let repeats = streams.contains(&group.stream_id)
            || group.commands.iter().any(|command| command_ids.contains(&command.command_id));
        if !fits || repeats {
            later.push((group, answer));
            continue;
        }
        streams.insert(group.stream_id);
        command_ids.extend(group.commands.iter().map(|command| command.command_id));
        events += group.events.len();
        batch.push((group, answer));
    }
    *waiting = later;
    batch.sort_by_key(|(group, _)| group.stream_id);
    batch
}
