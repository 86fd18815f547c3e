//! Waking readers when events are appended, in this process and in every other one.
//!
//! A commit that appended events calls [`Appends::committed`]: readers in this process wake at
//! once, and a relay task sends one `NOTIFY` to the other processes — after the commit, never
//! inside it (a `NOTIFY` in the appending transaction would serialise all commits on Postgres's
//! notification queue lock), and debounced: commits that happen while a `NOTIFY` is in flight
//! share the next one. Another task `LISTEN`s and wakes the local readers for other processes'
//! commits, and after every (re)connection, since notifications sent while it was disconnected
//! are lost. Readers still poll slowly, so a lost wake-up delays them but never stalls them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the relay notifies and listens on.
pub const CHANNEL: &str = "eventstore_appended";

#[derive(Clone)]
pub struct Appends {
    /// A counter bumped on every wake-up; each reader holds a receiver and never misses a bump.
    wake: watch::Sender<u64>,
    /// Asks the relay for one NOTIFY.
    publish: Arc<Notify>,
    /// Tells this process's own notifications apart from others'.
    instance: Uuid,
}

impl Default for Appends {
    fn default() -> Self {
        Appends { wake: watch::Sender::new(0), publish: Arc::new(Notify::new()), instance: Uuid::new_v4() }
    }
}

impl Appends {
    pub fn new() -> Appends {
        Appends::default()
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
        vec![
            tokio::spawn(self.clone().notify_others(pool.clone(), shutdown.clone())),
            tokio::spawn(self.clone().listen_to_others(pool, shutdown)),
        ]
    }

    async fn notify_others(self, pool: PgPool, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.publish.notified() => {}
            }
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(self.instance.to_string())
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "cannot notify other processes of appended events; they will poll");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn listen_to_others(self, pool: PgPool, shutdown: CancellationToken) {
        let own = self.instance.to_string();
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                _ = shutdown.cancelled() => return,
                connected = connected => match connected {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for appended events; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            // Whatever was notified before this connection existed is lost: catch up.
            self.wake_readers();
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) if notification.payload() == own => {}
                    Ok(Some(_)) => self.wake_readers(),
                    // The connection dropped; the next try_recv reconnects. Catch up now.
                    Ok(None) => self.wake_readers(),
                    Err(error) => {
                        tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
