//! The physical limit of this machine for our kind of write: Postgres's own load generator,
//! `pgbench`, committing single `events` rows of the shape the command handler writes (a deposit
//! with its metadata), one per transaction, from many clients. pgbench is written in C and keeps
//! its statements prepared, so it spends far less CPU per commit than any Rust client on the same
//! cores: what is left between it and us is what our code and our round trips cost.
//!
//! Measured once per run (at 32 clients, as B1 and B2), on the benchmark database, and shared:
//! every write figure is printed against it as well as against the sqlx baseline.
//!
//! Its rows go to a table made `LIKE events INCLUDING ALL` (the same columns, defaults,
//! constraints and indexes, so each insert costs what an append's does), dropped after: in
//! `events` itself they would be deposits into accounts never opened, which a projection
//! running beside it (B2's server) would stop at.

use std::process::Stdio;
use std::time::Duration;

use crate::{Context, PGBENCH_32, database, report};

/// Clients, as B1's headline figure and B2's connections.
pub const CLIENTS: usize = 32;

/// One transaction: one event row, as `eventstore::append` writes a deposit (a new stream each
/// time, so the unique (stream, version) index is maintained as for any first event).
const SCRIPT: &str = r#"INSERT INTO pgbench_events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data, metadata) VALUES (gen_random_uuid(), 'account', gen_random_uuid(), 1, 'MoneyDeposited', 2, '{"amount": "1.00"}', jsonb_build_object('commandId', gen_random_uuid(), 'correlationId', gen_random_uuid(), 'causationId', gen_random_uuid(), 'issuedAt', '2026-01-01T12:00:00.123456789Z'));
"#;

/// What pgbench measured: commits per second and their mean latency.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub rate: f64,
    pub mean_latency_ms: f64,
}

/// The run's pgbench figure at [`CLIENTS`] clients: measured now if no scenario has yet.
/// `None` (with a note saying why) where pgbench is not installed or fails.
pub async fn limit(context: &Context) -> Option<f64> {
    if let Some(rate) = context.shared.get(PGBENCH_32) {
        return Some(rate);
    }
    let duration = context.size.pick(Duration::from_secs(1), Duration::from_secs(10));
    let created = sqlx::query("CREATE TABLE IF NOT EXISTS pgbench_events (LIKE events INCLUDING ALL)")
        .execute(&context.pool)
        .await;
    if let Err(error) = created {
        report::note(&format!("no pgbench baseline: cannot create its table: {error}"));
        return None;
    }
    let clients = crate::database::connections(CLIENTS as u32) as usize;
    let measured = measure(clients, duration).await;
    if let Err(error) = sqlx::query("DROP TABLE pgbench_events").execute(&context.pool).await {
        report::note(&format!("pgbench_events was not dropped: {error}"));
    }
    match measured {
        Ok(limit) => {
            report::figure(&format!("pgbench, single-row commits, {clients} clients"), limit.rate, "events/s");
            report::note(&format!("  pgbench mean latency {:.2} ms", limit.mean_latency_ms));
            context.shared.set(PGBENCH_32, limit.rate);
            Some(limit.rate)
        }
        Err(error) => {
            report::note(&format!("no pgbench baseline: {error}"));
            None
        }
    }
}

/// Runs pgbench against the benchmark database for `duration` (whole seconds, at least one).
pub async fn measure(clients: usize, duration: Duration) -> Result<Limit, Box<dyn std::error::Error>> {
    let program = find_pgbench().ok_or("pgbench is not installed (Debian: apt-get install postgresql-client)")?;
    let script = std::env::temp_dir().join(format!("cqrs-bank-pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, SCRIPT)?;
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let url = with_database(&url, database::DATABASE);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(clients);
    // pgbench stops by itself after `--time`.
    let (pgbench, script_path) = (program.clone(), script.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&pgbench)
            .args(["--no-vacuum", "--protocol=prepared"])
            .arg(format!("--client={clients}"))
            .arg(format!("--jobs={threads}"))
            .arg(format!("--time={}", duration.as_secs().max(1)))
            .arg(format!("--file={}", script_path.display()))
            .arg(&url)
            .stdin(Stdio::null())
            .output()
    })
    .await?;
    let _ = std::fs::remove_file(&script);
    let output = output.map_err(|error| format!("cannot run {program}: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr).trim()).into());
    }
    parse(&stdout).ok_or_else(|| format!("cannot read pgbench's output: {stdout}").into())
}

/// `tps = 17123.4 (without initial connection time)` and `latency average = 1.86 ms`.
fn parse(output: &str) -> Option<Limit> {
    let number_after = |prefix: &str| {
        output.lines().find_map(|line| line.trim().strip_prefix(prefix)?.split_whitespace().next()?.parse::<f64>().ok())
    };
    Some(Limit { rate: number_after("tps = ")?, mean_latency_ms: number_after("latency average = ")? })
}

/// pgbench on the PATH, else in Debian's versioned folders (the newest).
fn find_pgbench() -> Option<String> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|path| path.is_file());
    if let Some(path) = on_path {
        return Some(path.display().to_string());
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("bin/pgbench"))
        .filter(|path| path.is_file())
        .collect();
    versions.sort();
    versions.pop().map(|path| path.display().to_string())
}

/// `url` with its database (the path) replaced by `database`, its query kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, with_database};

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "b"), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u@h:5432", "b"), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u:p@h/x?sslmode=disable", "b"), "postgres://u:p@h/b?sslmode=disable");
    }

    #[test]
    fn pgbench_output_is_read() {
        let output = "number of transactions actually processed: 171234\nlatency average = 1.868 ms\n\
                      initial connection time = 12.3 ms\ntps = 17123.456789 (without initial connection time)\n";
        let limit = parse(output).unwrap();
        assert_eq!(limit.rate, 17123.456789);
        assert_eq!(limit.mean_latency_ms, 1.868);
        assert!(parse("nothing").is_none());
    }
}
