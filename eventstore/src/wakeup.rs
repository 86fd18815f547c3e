//! Waking readers when events are appended, in this process and in every other one.
//!
//! A commit that appended events calls [`AppendNotifier::committed`]: readers in this process wake at
//! once, and a relay task sends one `NOTIFY` to the other processes — after the commit, never
//! inside it (a `NOTIFY` in the appending transaction would serialise all commits on Postgres's
//! notification queue lock), and debounced: commits that happen while a `NOTIFY` is in flight
//! share the next one. Another task `LISTEN`s and wakes the local readers for other processes'
//! commits, and after every (re)connection, since notifications sent while it was disconnected
//! are lost. Readers still poll slowly, so a lost wake-up delays them but never stalls them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::relay;

/// The channel the relay notifies and listens on.
pub const CHANNEL: &str = "eventstore_appended";

#[derive(Clone)]
pub struct AppendNotifier {
    /// A counter bumped on every wake-up; each reader holds a receiver and never misses a bump.
    wake: watch::Sender<u64>,
    /// Asks the relay for one NOTIFY.
    publish: Arc<Notify>,
    /// Tells this process's own notifications apart from others'.
    instance: Uuid,
}

impl Default for AppendNotifier {
    fn default() -> Self {
        AppendNotifier { wake: watch::Sender::new(0), publish: Arc::new(Notify::new()), instance: Uuid::new_v4() }
    }
}

impl AppendNotifier {
    pub fn new() -> AppendNotifier {
        AppendNotifier::default()
    }

    /// Call after committing a transaction that appended events.
    pub fn committed(&self) {
        self.wake_readers();
        self.publish.notify_one();
    }

    /// Wakes this process's readers without telling other processes.
    pub fn wake_readers(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Starts the NOTIFY and LISTEN tasks; they stop when `shutdown` is cancelled.
    pub fn spawn_postgres_relay(&self, pool: PgPool, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let own = self.instance.to_string();
        let payload = own.clone();
        let listener = WakeReaders { appends: self.clone(), own };
        vec![
            tokio::spawn(relay::announce(
                pool.clone(),
                CHANNEL,
                self.publish.clone(),
                move || payload.clone(),
                shutdown.clone(),
            )),
            // Readers poll slowly on their own; the listener needs no ticks of its own.
            tokio::spawn(relay::listen(pool, CHANNEL, Duration::from_secs(3600), shutdown, listener)),
        ]
    }
}

/// This process's readers, woken by other processes' appends.
struct WakeReaders {
    appends: AppendNotifier,
    own: String,
}

impl relay::Listener for WakeReaders {
    async fn catch_up(&self, _pool: &PgPool) {
        self.appends.wake_readers();
    }

    fn received(&self, payload: &str) {
        if payload != self.own {
            self.appends.wake_readers();
        }
    }
}
