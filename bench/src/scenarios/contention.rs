//! Many writers on one account: serialised by the per-stream lock, or optimistic with retries.
//! Baseline: the same writers, each on an account of its own (no contention at all).

use std::time::Instant;

use backend::write_side::{CommandEnvelope, CommandError, CommandHandler, WriteOptions};
use bank::domain::{AccountCommand, Amount, CommandBy, Money, OwnerId, Sender};
use eventstore::AppendNotifier;
use futures::future::join_all;
use uuid::Uuid;

use super::Outcome;
use crate::{Context, report};

pub async fn run(context: Context) -> Outcome {
    let pool = context.pool;
    let (writers, per_writer) = context.size.pick((4, 3), (32, 50));
    report::heading("contention", &format!("{writers} writers × {per_writer} deposits"));
    let mut results = Vec::new();
    for (label, serialize_writers) in [("per-stream lock", true), ("optimistic + retries", false)] {
        let options =
            WriteOptions { serialize_writers, max_attempts: 200, snapshot_interval: 100, ..WriteOptions::default() };
        let handler = CommandHandler::new(pool.clone(), AppendNotifier::new(), options);
        let shared = create_account(&handler).await?;
        let (rate, failures) = deposits(&handler, &vec![shared; writers], per_writer).await;
        let mut own = Vec::new();
        for _ in 0..writers {
            own.push(create_account(&handler).await?);
        }
        let (baseline, _) = deposits(&handler, &own, per_writer).await;
        report::against(&format!("{label}, one account"), rate, "one account each", baseline, "cmd/s");
        if failures > 0 {
            println!("  {failures} commands failed with a conflict after 200 attempts");
        }
        if serialize_writers {
            report::target(
                "one hot account ≥ 1,500 cmd/s (per-stream lock)",
                rate >= 1500.0,
                &format!("{rate:.0} cmd/s"),
            );
        }
        results.push(rate);
    }
    report::against("per-stream lock vs optimistic", results[0], "optimistic", results[1], "cmd/s");
    Ok(())
}

async fn create_account(handler: &CommandHandler) -> Result<Uuid, CommandError> {
    let account_id = Uuid::new_v4();
    let command = AccountCommand::CreateAccount {
        owner_id: OwnerId::parse(crate::server::BENCH_OWNER).expect("a valid owner"),
        initial_balance: Money::ZERO,
    };
    handler.handle(envelope(account_id, command)).await?;
    Ok(account_id)
}

fn envelope(account_id: Uuid, command: AccountCommand) -> CommandEnvelope {
    let command_id = Uuid::new_v4();
    CommandEnvelope {
        command_id,
        correlation_id: command_id,
        stream_id: account_id,
        command: CommandBy {
            by: Sender::Customer(OwnerId::parse(crate::server::BENCH_OWNER).expect("a valid owner")),
            command,
        },
        causation_id: None,
        metadata: Default::default(),
    }
}

/// Each writer deposits `per_writer` times, one after the other, into its account; all
/// writers at once. Returns deposits per second and how many failed.
async fn deposits(handler: &CommandHandler, accounts: &[Uuid], per_writer: usize) -> (f64, usize) {
    let amount = Amount::parse("1").expect("a valid amount");
    let started = Instant::now();
    let failures = join_all(accounts.iter().map(|&account_id| async move {
        let mut failed = 0;
        for _ in 0..per_writer {
            if handler.handle(envelope(account_id, AccountCommand::Deposit { amount })).await.is_err() {
                failed += 1;
            }
        }
        failed
    }))
    .await;
    let elapsed = started.elapsed();
    (report::per_second(accounts.len() * per_writer, elapsed), failures.iter().sum())
}
