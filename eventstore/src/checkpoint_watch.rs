//! Every projection's checkpoint as this process knows it, for queries that wait for the read
//! model to pass a position.
//!
//! A waiter holds no connection and sends no query while it waits: it watches an in-process
//! value, fed by the batches this process commits and, through `NOTIFY` after their commit, by
//! the batches of every other process. The listener reads every checkpoint again after each
//! (re)connection, since notifications sent while it was away are lost, and — only while
//! someone waits — once a second, so that a lost notification delays a waiter but never
//! strands it until its deadline. The number of waiters is capped. Only those reads may move
//! a checkpoint back (see [`CheckpointWatch::read_all`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Position;
use crate::projection::Partition;
use crate::relay;

/// The channel checkpoint advances are announced on.
pub const CHANNEL: &str = "eventstore_checkpoint";

/// How often the listener reads the checkpoints itself while someone waits.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct CheckpointWatch {
    positions: Arc<watch::Sender<HashMap<String, Position>>>,
    /// Asks the relay to announce this process's checkpoints to the others.
    publish: Arc<Notify>,
    waiters: Arc<Semaphore>,
    max_waiters: usize,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Reached,
    TimedOut,
    /// As many queries as allowed are already waiting; this one did not.
    TooManyWaiters,
}

impl CheckpointWatch {
    /// At most `max_waiters` waits at once; more are answered [`Waited::TooManyWaiters`] at once.
    pub fn new(max_waiters: usize) -> CheckpointWatch {
        CheckpointWatch {
            positions: Arc::new(watch::Sender::new(HashMap::new())),
            publish: Arc::new(Notify::new()),
            waiters: Arc::new(Semaphore::new(max_waiters)),
            max_waiters,
        }
    }

    /// A batch of this process moved `projection`'s checkpoint to `position` (committed).
    pub fn advanced(&self, projection: &str, position: Position) {
        self.observe(projection, position);
        self.publish.notify_one();
    }

    /// Records a checkpoint seen anywhere; checkpoints only move forward, so an older sighting
    /// changes nothing. A partition's checkpoint also moves its projection's, which is the
    /// least of its partitions' once each has been seen.
    fn observe(&self, projection: &str, position: Position) {
        self.positions.send_if_modified(|positions| {
            let moved = move_forward(positions, projection, position);
            let whole = Partition::parse_checkpoint_name(projection).and_then(|(whole, partition)| {
                let least = Partition::all(partition.count)
                    .map(|each| positions.get(&each.checkpoint_name(whole)).copied())
                    .collect::<Option<Vec<_>>>()?
                    .into_iter()
                    .min()?;
                Some((whole, least))
            });
            match whole {
                Some((whole, least)) => move_forward(positions, whole, least) || moved,
                None => moved,
            }
        });
    }

    /// Every projection's checkpoint as seen here, marked changed whenever one moves.
    pub fn subscribe(&self) -> watch::Receiver<HashMap<String, Position>> {
        self.positions.subscribe()
    }

    /// The checkpoint of `projection` as last seen here.
    pub fn position(&self, projection: &str) -> Option<Position> {
        self.positions.borrow().get(projection).copied()
    }

    /// Waits until `projection`'s checkpoint is at or past `target`, or `deadline`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it holds no connection, only a place among the waiters, given back when
    /// dropped.
    pub async fn wait_for(&self, projection: &str, target: Position, deadline: tokio::time::Instant) -> Waited {
        let Ok(_permit) = self.waiters.try_acquire() else {
            return Waited::TooManyWaiters;
        };
        let mut positions = self.positions.subscribe();
        loop {
            if positions.borrow_and_update().get(projection).is_some_and(|at| *at >= target) {
                return Waited::Reached;
            }
            tokio::select! {
                changed = positions.changed() => if changed.is_err() { return Waited::TimedOut },
                _ = tokio::time::sleep_until(deadline) => return Waited::TimedOut,
            }
        }
    }

    fn someone_waits(&self) -> bool {
        self.waiters.available_permits() < self.max_waiters
    }

    /// Starts the tasks that announce this process's checkpoints and listen for the others'.
    pub fn spawn_postgres_relay(&self, pool: PgPool, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let positions = self.positions.clone();
        let payload = move || encode(&positions.borrow());
        vec![
            tokio::spawn(relay::announce(pool.clone(), CHANNEL, self.publish.clone(), payload, shutdown.clone())),
            tokio::spawn(relay::listen(pool, CHANNEL, FALLBACK_POLL, shutdown, self.clone())),
        ]
    }

    /// Reads every checkpoint from the database. One found behind what this process knew
    /// before the read began has moved back — a rebuild began, the partition count changed, a
    /// failover or a restore gave the log another history — and is followed back: waits for
    /// positions past it wait again, and the live stream says everything may have changed.
    /// (Behind only what was learned during the read, it is an older sighting: a batch that
    /// committed meanwhile.)
    async fn read_all(&self, pool: &PgPool) {
        let before = self.positions.borrow().clone();
        match crate::projection::checkpoints(pool).await {
            Ok(checkpoints) => self.read(&before, checkpoints),
            Err(error) => tracing::warn!(%error, "cannot read the checkpoints"),
        }
    }

    /// What [`Self::read_all`] read, against what was known `before` it began.
    fn read(&self, before: &HashMap<String, Position>, checkpoints: Vec<(String, Position)>) {
        for (projection, position) in checkpoints {
            if before.get(&projection).is_some_and(|known| position < *known) {
                self.moved_back(&projection, position);
            } else {
                self.observe(&projection, position);
            }
        }
    }

    /// `projection`'s checkpoint is now `position`, behind what was known of it (and so is its
    /// projection's, for a partition, if that is now the least).
    fn moved_back(&self, projection: &str, position: Position) {
        tracing::info!(projection, %position, "a checkpoint moved back: following it");
        self.positions.send_modify(|positions| {
            positions.insert(projection.to_owned(), position);
            if let Some((whole, _)) = Partition::parse_checkpoint_name(projection)
                && positions.get(whole).is_some_and(|known| position < *known)
            {
                positions.insert(whole.to_owned(), position);
            }
        });
    }
}

impl relay::Listener for CheckpointWatch {
    async fn catch_up(&self, pool: &PgPool) {
        self.read_all(pool).await;
    }

    fn received(&self, payload: &str) {
        for (projection, position) in decode(payload) {
            self.observe(&projection, position);
        }
    }

    /// Only while someone waits: a lost notification must not strand a waiter until its deadline.
    async fn tick(&self, pool: &PgPool) {
        if self.someone_waits() {
            self.read_all(pool).await;
        }
    }
}

/// Moves `projection`'s known checkpoint forward to `position`; whether it moved.
fn move_forward(positions: &mut HashMap<String, Position>, projection: &str, position: Position) -> bool {
    match positions.get_mut(projection) {
        Some(known) if *known >= position => false,
        Some(known) => {
            *known = position;
            true
        }
        None => {
            positions.insert(projection.to_owned(), position);
            true
        }
    }
}

/// A `NOTIFY` payload must stay under 8,000 bytes.
const MAX_PAYLOAD: usize = 7_900;

/// `name=transaction:position` pairs separated by spaces (projection names have no spaces);
/// empty if they would not fit in one notification, and then the listeners' own reads, once a
/// second while someone waits, carry the news instead.
fn encode(positions: &HashMap<String, Position>) -> String {
    let payload = positions.iter().map(|(name, position)| format!("{name}={position}")).collect::<Vec<_>>().join(" ");
    if payload.len() > MAX_PAYLOAD { String::new() } else { payload }
}

fn decode(payload: &str) -> impl Iterator<Item = (String, Position)> + '_ {
    payload.split(' ').filter_map(|pair| {
        let (name, position) = pair.split_once('=')?;
        Some((name.to_owned(), position.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Listener;

    fn at(global_position: i64) -> Position {
        Position { transaction_id: 1, global_position }
    }

    #[test]
    fn announcements_too_large_for_one_notification_are_left_to_the_listeners_reads() {
        let many: HashMap<String, Position> = (0..500)
            .map(|n| (format!("projection_number_{n}"), Position { transaction_id: n, global_position: n }))
            .collect();
        assert_eq!(encode(&many), "");
        assert_eq!(decode("").count(), 0);
    }

    #[test]
    fn announcements_round_trip() {
        let positions = HashMap::from([
            ("a".to_owned(), Position { transaction_id: 7, global_position: 3 }),
            ("b".to_owned(), Position::START),
        ]);
        let decoded: HashMap<String, Position> = decode(&encode(&positions)).collect();
        assert_eq!(decoded, positions);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_checkpoint_passes_its_target() {
        let watch = CheckpointWatch::new(2);
        let target = Position { transaction_id: 5, global_position: 9 };
        let waiting = {
            let watch = watch.clone();
            tokio::spawn(async move {
                watch.wait_for("p", target, tokio::time::Instant::now() + Duration::from_secs(5)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        watch.advanced("p", Position { transaction_id: 5, global_position: 8 });
        watch.advanced("p", target);
        assert_eq!(waiting.await.unwrap(), Waited::Reached);
        // Checkpoints never move back.
        watch.observe("p", Position::START);
        assert_eq!(watch.position("p"), Some(target));
    }

    #[test]
    fn a_partitioned_projection_is_as_far_as_its_slowest_partition() {
        let watch = CheckpointWatch::new(1);
        watch.advanced("p/0-of-2", at(9));
        assert_eq!(watch.position("p"), None, "one partition not seen yet");
        watch.advanced("p/1-of-2", at(4));
        assert_eq!(watch.position("p"), Some(at(4)));
        watch.advanced("p/1-of-2", at(12));
        assert_eq!(watch.position("p"), Some(at(9)));
        watch.advanced("p/0-of-2", at(20));
        assert_eq!(watch.position("p"), Some(at(12)));
    }

    #[test]
    fn a_checkpoint_read_behind_what_was_known_before_the_read_moves_back() {
        let watch = CheckpointWatch::new(10);
        watch.advanced("p", at(10));
        watch.advanced("q", at(10));
        let before = watch.positions.borrow().clone();
        // While the read ran, a batch committed "q" further: the read's older sighting of it
        // changes nothing.
        watch.advanced("q", at(12));
        watch.read(&before, vec![("p".into(), at(3)), ("q".into(), at(10))]);
        assert_eq!(watch.position("p"), Some(at(3)), "a rebuild began: followed back");
        assert_eq!(watch.position("q"), Some(at(12)));
        // A notification never moves one back.
        watch.received(&encode(&HashMap::from([("p".to_owned(), at(1))])));
        assert_eq!(watch.position("p"), Some(at(3)));
    }

    #[test]
    fn a_partition_that_moved_back_moves_its_projection_back() {
        let watch = CheckpointWatch::new(10);
        watch.advanced("p/0-of-2", at(8));
        watch.advanced("p/1-of-2", at(9));
        assert_eq!(watch.position("p"), Some(at(8)));
        let before = watch.positions.borrow().clone();
        watch.read(&before, vec![("p/1-of-2".into(), at(2))]);
        assert_eq!(watch.position("p"), Some(at(2)));
    }

    // Paused time: the first waiter is registered before the clock moves past its 20 ms, on a
    // busy machine too (the runtime runs every ready task before it advances the clock).
    #[tokio::test(start_paused = true)]
    async fn waiters_are_capped_and_bounded() {
        let watch = CheckpointWatch::new(1);
        let far = Position { transaction_id: 1 << 40, global_position: 0 };
        let first = {
            let watch = watch.clone();
            tokio::spawn(async move {
                watch.wait_for("p", far, tokio::time::Instant::now() + Duration::from_millis(200)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let soon = tokio::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(watch.wait_for("p", far, soon).await, Waited::TooManyWaiters);
        assert_eq!(first.await.unwrap(), Waited::TimedOut);
    }
}
