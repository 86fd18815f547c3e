//! What the store's integration tests share.

use sqlx::PgPool;
use testkit::{PATIENCE, eventually, when};

/// Returns once a session of the test's database waits for a lock (another session's, in
/// Postgres): the positive sign that a writer is held where the test wants it.
pub async fn someone_waits_for_a_lock(pool: &PgPool) {
    eventually("a session waiting for a lock", PATIENCE, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        when(waiting, |&waiting| waiting > 0)
    })
    .await;
}
