//! Telling other processes something through Postgres `NOTIFY`, and hearing them: the plumbing
//! that [`crate::AppendNotifier`] and [`crate::CheckpointWatch`] share, open to an application's
//! own channels.
//!
//! [`announce`] sends notifications after the fact, never inside the transaction they announce,
//! and debounced: whatever is asked for while one is in flight shares the next. (A `NOTIFY`
//! inside a transaction is sent when it commits, if it does: an application may do that too.) Notifications sent
//! while a listener was disconnected are lost, so a listener catches up after every
//! (re)connection — and should not rely on notifications alone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a listening process does with what it hears.
pub trait Listener: Send + Sync {
    /// Notifications may have been missed (a new connection, a dropped one): catch up.
    fn catch_up(&self, pool: &PgPool) -> impl Future<Output = ()> + Send;
    /// A notification's payload.
    fn received(&self, payload: &str);
    /// Called every `tick` while connected.
    fn tick(&self, _pool: &PgPool) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Sends `pg_notify(channel, payload())` each time `publish` is notified, until `shutdown`.
pub async fn announce(
    pool: PgPool,
    channel: &'static str,
    publish: Arc<Notify>,
    payload: impl Fn() -> String + Send,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = publish.notified() => {}
        }
        let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload()).execute(&pool).await;
        if let Err(error) = sent {
            tracing::warn!(%error, channel, "cannot notify other processes; they will poll");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// `LISTEN`s on `channel` until `shutdown`, reconnecting after any failure.
///
/// On a connection of its own, not one of `pool`'s: a listener holds its connection for good,
/// and the pool's are for requests (a pool of 3 would otherwise serve them with 1).
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    tick: Duration,
    shutdown: CancellationToken,
    listener: impl Listener,
) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    loop {
        let connected = async {
            let mut connection = PgListener::connect_with(&own).await?;
            connection.listen(channel).await?;
            Ok::<_, sqlx::Error>(connection)
        };
        let mut connection = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, channel, "cannot listen; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        // Whatever was notified before this connection existed is lost.
        listener.catch_up(&pool).await;
        let mut ticks = tokio::time::interval(tick);
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    listener.tick(&pool).await;
                    continue;
                }
                received = connection.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => listener.received(notification.payload()),
                // The connection dropped. Listen again on a new one first, then catch up: a
                // catch-up before the new connection listens would miss whatever is notified
                // in between (sqlx's own reconnection gives no moment to catch up after it).
                Ok(None) => {
                    tracing::info!(channel, "the LISTEN connection dropped; listening again");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, channel, "lost the LISTEN connection; reconnecting");
                    break;
                }
            }
        }
    }
}
