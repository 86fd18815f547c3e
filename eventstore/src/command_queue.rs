//! The commands waiting for a stream in this process, taken in arrival order by one worker per
//! stream, as many at a time as are waiting (see [`crate::commands`]).
//!
//! The stream's advisory lock already makes its writers take turns in Postgres, but each of
//! them would wait there holding a pooled connection: a few dozen commands on one hot stream
//! would hold the whole pool, and every other stream would wait for a connection. Queued here
//! instead, one worker per stream and process holds a connection; the advisory lock still
//! orders writers of different processes. And the worker takes every command waiting at once,
//! so a hot stream pays one commit for many commands rather than one each.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;

/// Each stream's waiting commands. A stream is in the map while its worker runs: the first
/// command to arrive at a stream without one starts it, and the worker ends when it finds the
/// queue empty, under the same lock, so no command is ever left waiting with no worker.
pub struct CommandQueues<T> {
    streams: Mutex<HashMap<Uuid, VecDeque<(Ticket, T)>>>,
    next_ticket: AtomicU64,
}

/// A waiting command's place in its queue, to withdraw it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Whether the command that joined the queue must start the stream's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    StartWorker,
    WorkerRunning,
}

#[derive(Debug, thiserror::Error)]
#[error("stream {stream} is too busy: no turn within {waited:?}")]
pub struct TooBusy {
    pub stream: Uuid,
    pub waited: Duration,
}

impl<T> Default for CommandQueues<T> {
    fn default() -> Self {
        CommandQueues { streams: Mutex::new(HashMap::new()), next_ticket: AtomicU64::new(0) }
    }
}

impl<T> CommandQueues<T> {
    pub fn new() -> CommandQueues<T> {
        CommandQueues::default()
    }

    /// Puts a command at the end of its stream's queue.
    pub fn join(&self, stream: Uuid, command: T) -> (Ticket, Joined) {
        let ticket = Ticket(self.next_ticket.fetch_add(1, Ordering::Relaxed));
        let mut streams = self.streams();
        let joined = match streams.get_mut(&stream) {
            Some(queue) => {
                queue.push_back((ticket, command));
                Joined::WorkerRunning
            }
            None => {
                streams.insert(stream, VecDeque::from([(ticket, command)]));
                Joined::StartWorker
            }
        };
        (ticket, joined)
    }

    /// The worker's next commands: up to `at_most` from the front of the queue. An empty list
    /// means the worker is done: the stream left the map, and the next command starts a new
    /// worker.
    pub fn take(&self, stream: Uuid, at_most: usize) -> Vec<T> {
        let mut streams = self.streams();
        let Some(queue) = streams.get_mut(&stream) else {
            return Vec::new();
        };
        if queue.is_empty() {
            streams.remove(&stream);
            return Vec::new();
        }
        let count = queue.len().min(at_most);
        queue.drain(..count).map(|(_, command)| command).collect()
    }

    /// Takes a command out of the queue if no worker took it yet.
    pub fn withdraw(&self, stream: Uuid, ticket: Ticket) -> Option<T> {
        let mut streams = self.streams();
        let queue = streams.get_mut(&stream)?;
        let at = queue.iter().position(|(waiting, _)| *waiting == ticket)?;
        queue.remove(at).map(|(_, command)| command)
    }

    /// The stream's worker stopped before its queue was empty (it panicked, or the runtime is
    /// shutting down): the waiting commands are dropped, which tells each of their callers.
    pub fn abandon(&self, stream: Uuid) {
        self.streams().remove(&stream);
    }

    /// How many commands wait for the stream, not yet taken by its worker (for tests).
    pub fn waiting(&self, stream: Uuid) -> usize {
        self.streams().get(&stream).map_or(0, VecDeque::len)
    }

    /// Streams with a worker in this process (for tests and metrics).
    pub fn busy_streams(&self) -> usize {
        self.streams().len()
    }

    /// The map, even if a holder panicked: each call changes it whole, so it is still valid.
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, VecDeque<(Ticket, T)>>> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_command_starts_the_worker_which_takes_all_that_wait_in_order() {
        let queues = CommandQueues::new();
        let (hot, cold) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(queues.join(hot, "first").1, Joined::StartWorker);
        assert_eq!(queues.join(hot, "second").1, Joined::WorkerRunning);
        assert_eq!(queues.join(hot, "third").1, Joined::WorkerRunning);
        assert_eq!(queues.join(cold, "other").1, Joined::StartWorker, "another stream has a worker of its own");

        assert_eq!(queues.take(hot, 2), ["first", "second"]);
        assert_eq!(queues.take(hot, 2), ["third"]);
        assert_eq!(queues.busy_streams(), 2, "the worker runs until it finds the queue empty");
        assert!(queues.take(hot, 2).is_empty());
        assert_eq!(queues.busy_streams(), 1, "a finished stream is forgotten");
        assert_eq!(queues.join(hot, "later").1, Joined::StartWorker, "the next command starts a new worker");
    }

    #[test]
    fn a_command_is_withdrawn_only_while_it_waits() {
        let queues = CommandQueues::new();
        let stream = Uuid::new_v4();
        queues.join(stream, 1);
        let (ticket, _) = queues.join(stream, 2);
        queues.join(stream, 3);
        assert_eq!(queues.withdraw(stream, ticket), Some(2));
        assert_eq!(queues.take(stream, 10), [1, 3]);
        let (taken, _) = queues.join(stream, 4);
        assert_eq!(queues.take(stream, 10), [4]);
        assert_eq!(queues.withdraw(stream, taken), None, "the worker has it");
    }

    #[test]
    fn an_abandoned_queue_drops_its_commands_and_the_next_command_starts_a_worker() {
        let queues = CommandQueues::new();
        let stream = Uuid::new_v4();
        let (answer, answered) = std::sync::mpsc::channel::<()>();
        queues.join(stream, answer);
        queues.abandon(stream);
        assert!(answered.recv().is_err(), "the waiting command's sender is dropped");
        let (other, _) = std::sync::mpsc::channel::<()>();
        assert_eq!(queues.join(stream, other).1, Joined::StartWorker);
    }
}
