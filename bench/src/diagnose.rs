//! `--diagnose`: while a phase runs, where the time goes. Samples `pg_stat_activity` of the
//! benchmark database every 20 ms (what each backend of a client is doing: on CPU, waiting on
//! a lock, on WAL, or idle in a transaction waiting for the client's next statement) and
//! splits the machine's CPU between this process, Postgres and everything else (wrk, other
//! users of the machine) from `/proc`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Context, database};

pub struct Probe {
    inner: Option<Inner>,
}

struct Inner {
    label: String,
    stop: CancellationToken,
    sampler: JoinHandle<(HashMap<String, usize>, usize)>,
    cpu: Cpu,
    started: Instant,
}

impl Probe {
    /// Starts sampling if `--diagnose` was given; otherwise does nothing.
    pub fn start(context: &Context, label: &str) -> Probe {
        if !context.diagnose {
            return Probe { inner: None };
        }
        let stop = CancellationToken::new();
        let sampler = tokio::spawn(sample(stop.clone()));
        Probe {
            inner: Some(Inner { label: label.to_owned(), stop, sampler, cpu: Cpu::now(), started: Instant::now() }),
        }
    }

    /// Stops sampling and prints what it saw.
    pub async fn finish(self) {
        let Some(inner) = self.inner else { return };
        let elapsed = inner.started.elapsed();
        let cpu = Cpu::now().since(&inner.cpu, elapsed);
        inner.stop.cancel();
        let (waits, samples) = inner.sampler.await.unwrap_or_default();
        println!("  [diagnose {}] {cpu}", inner.label);
        let total: usize = waits.values().sum();
        if samples > 0 && total > 0 {
            let mut waits: Vec<_> = waits.into_iter().collect();
            waits.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            let top: Vec<String> = waits
                .iter()
                .take(8)
                .map(|(what, n)| format!("{what} {:.0}%", 100.0 * *n as f64 / total as f64))
                .collect();
            println!(
                "  [diagnose {}] backends busy on average {:.1}; of their samples: {}",
                inner.label,
                total as f64 / samples as f64,
                top.join(", ")
            );
        }
    }
}

async fn sample(stop: CancellationToken) -> (HashMap<String, usize>, usize) {
    let mut waits = HashMap::new();
    let mut samples = 0;
    let Ok(options) = database::options() else { return (waits, 0) };
    let Ok(mut conn) = PgConnection::connect_with(&options).await else { return (waits, 0) };
    while !stop.is_cancelled() {
        let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(
            "SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
                         ELSE 'idle in transaction (waiting for the client)' END, count(*)
             FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')
               AND query NOT LIKE 'LISTEN%'
             GROUP BY 1",
        )
        .fetch_all(&mut conn)
        .await;
        if let Ok(rows) = rows {
            samples += 1;
            for (what, n) in rows {
                *waits.entry(what).or_insert(0) += n as usize;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let _ = conn.close().await;
    (waits, samples)
}

/// CPU time so far, in clock ticks (1/100 s on Linux).
struct Cpu {
    this_process: u64,
    postgres: u64,
    machine_busy: u64,
}

const TICKS_PER_SECOND: f64 = 100.0;

impl Cpu {
    fn now() -> Cpu {
        let this_process = process_ticks("/proc/self/stat").map_or(0, |(_, ticks)| ticks);
        let mut postgres = 0;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                if let Some((comm, ticks)) = process_ticks(&format!("/proc/{}/stat", name.to_string_lossy()))
                    && comm == "postgres"
                {
                    postgres += ticks;
                }
            }
        }
        let machine_busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().next()?.to_owned();
                let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal
                Some(fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum())
            })
            .unwrap_or(0);
        Cpu { this_process, postgres, machine_busy }
    }

    fn since(&self, earlier: &Cpu, elapsed: Duration) -> String {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / elapsed.as_secs_f64();
        let bench = cores(self.this_process.saturating_sub(earlier.this_process));
        let postgres = cores(self.postgres.saturating_sub(earlier.postgres));
        let busy = cores(self.machine_busy.saturating_sub(earlier.machine_busy));
        let available = std::thread::available_parallelism().map_or(0, |n| n.get());
        format!(
            "CPU in cores over {:.1} s: this process {bench:.2}, postgres {postgres:.2}, everything else {:.2} (wrk, other users), idle {:.2} of {available}",
            elapsed.as_secs_f64(),
            (busy - bench - postgres).max(0.0),
            (available as f64 - busy).max(0.0)
        )
    }
}

/// A process's command name and its user + system CPU ticks.
fn process_ticks(path: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the command: state (0), …, utime (11), stime (12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}
