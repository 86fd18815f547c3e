//! What the process keeps in tables of its own, never in a read model (which may lag or be
//! rebuilding): the transfers it has begun and not finished, with their deadlines (which its
//! deadline watch reads and the command-id purge spares), and the transfers it parked.

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::process::{PARKED_RETRY, PARKED_RETRY_SOON, ProcessError, TransferProcess};
use bank::domain::transfer::{REFUND_STEP, StepKind};

/// Gives the server's role (quoted) what the process needs of its tables.
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    for statement in [
        format!("GRANT SELECT, INSERT, UPDATE ON transfer_process_checkpoint TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON transfer_process_parked, transfer_process_open TO {role}"),
    ] {
        sqlx::query(&statement).execute(pool).await?;
    }
    Ok(())
}

impl TransferProcess {
    /// Notes that the transfer is under way (before its first step), with its deadline.
    pub(super) async fn open(&self, transfer_id: Uuid, deadline: OffsetDateTime) -> Result<(), sqlx::Error> {
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
    pub(super) async fn close(&self, transfer_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM transfer_process_open WHERE transfer_id = $1")
            .bind(transfer_id)
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// Sets a transfer aside that cannot go on now: it waits where it stopped, and is tried
    /// again every [`PARKED_RETRY`] (a fix deployed meanwhile lets it go on by itself).
    pub(super) async fn park(&self, transfer_id: Uuid, error: &ProcessError) -> Result<(), sqlx::Error> {
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

    pub(super) async fn unpark(&self, transfer_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM transfer_process_parked WHERE transfer_id = $1")
            .bind(transfer_id)
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// Parked transfers whose last try is older than [`PARKED_RETRY`] (or
    /// [`PARKED_RETRY_SOON`], for an error that may pass by itself).
    pub(super) async fn parked_due(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
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
    pub(super) async fn overdue(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
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
