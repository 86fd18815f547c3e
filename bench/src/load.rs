//! Generic load drivers: a closed loop (N clients, each sending its next operation when the
//! previous one is answered: the maximum throughput at that concurrency) and an open loop
//! (operations started at a fixed rate whatever the answers do, each timed from when it was
//! due, so that a stall shows in the percentiles instead of silently slowing the sender down:
//! no coordinated omission).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::report::{self, Latencies};

/// What a load run did.
pub struct Run {
    /// Operations that succeeded within the measured window.
    pub ok: usize,
    /// Operations that failed within the measured window, and the first failure's message.
    pub errors: usize,
    pub first_error: Option<String>,
    /// The measured window (warm-up excluded).
    pub elapsed: Duration,
    /// Closed loop: from send to answer. Open loop: from when the operation was due.
    pub latencies: Option<Latencies>,
    /// Open loop only: from when the operation actually started, which is later than it was
    /// due when the sender fell behind, or by the timer's granularity (up to 1 ms in tokio).
    pub service: Option<Latencies>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        report::per_second(self.ok, self.elapsed)
    }

    /// Prints the failures, if any.
    pub fn report_errors(&self, what: &str) {
        if self.errors > 0 {
            report::note(&format!(
                "{} of {} {what} failed; first: {}",
                self.errors,
                self.errors + self.ok,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
}

/// `concurrency` clients, client `c` running `op(c, 0)`, `op(c, 1)`, … back to back for
/// `warmup + duration`; only operations started after the warm-up count.
pub async fn closed_loop<F, Fut>(concurrency: usize, warmup: Duration, duration: Duration, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let clients = (0..concurrency).map(|client| {
        let op = op.clone();
        tokio::spawn(async move {
            let (mut samples, mut errors, mut first_error) = (Vec::new(), 0, None);
            let mut i = 0;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let result = op(client, i).await;
                i += 1;
                if began < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => samples.push(began.elapsed()),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (samples, errors, first_error)
        })
    });
    let results = futures::future::join_all(clients).await;
    collect(results.into_iter().map(|r| r.expect("a load client panicked")), duration)
}

/// Starts `op(i)` for i = 0, 1, … at `rate` per second for `duration`, each in a task of its
/// own, and times each from the moment it was due. Waits for all of them to finish.
///
/// The pacing runs on a thread of its own with the OS's sleep, not tokio's timer, whose 1 ms
/// granularity would make every operation up to 1 ms late and count that as latency.
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now();
    let pacer = tokio::task::spawn_blocking(move || {
        let due = |i: usize| start + Duration::from_secs_f64(i as f64 / rate);
        let mut tasks = Vec::with_capacity(total);
        for next in 0..total {
            let due = due(next);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let operation = op(next);
            tasks.push(runtime.spawn(async move {
                let started = Instant::now();
                let result = operation.await;
                (due.elapsed(), started.elapsed(), result)
            }));
        }
        tasks
    });
    let tasks = pacer.await.expect("the pacer panicked");
    let elapsed = start.elapsed();
    let mut results = Vec::with_capacity(total);
    for task in tasks {
        results.push(task.await.expect("an operation panicked"));
    }
    let (mut samples, mut service, mut errors, mut first_error) = (Vec::new(), Vec::new(), 0, None);
    for (latency, served_in, result) in results {
        match result {
            Ok(()) => {
                samples.push(latency);
                service.push(served_in);
            }
            Err(error) => {
                errors += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    let mut run = collect([(samples, errors, first_error)].into_iter(), elapsed.max(duration));
    run.service = Latencies::of(&mut service);
    run
}

fn collect(results: impl Iterator<Item = (Vec<Duration>, usize, Option<String>)>, elapsed: Duration) -> Run {
    let (mut samples, mut errors, mut first_error) = (Vec::new(), 0, None);
    for (client_samples, client_errors, client_first_error) in results {
        samples.extend(client_samples);
        errors += client_errors;
        if first_error.is_none() {
            first_error = client_first_error;
        }
    }
    Run { ok: samples.len(), errors, first_error, elapsed, latencies: Latencies::of(&mut samples), service: None }
}

/// Runs `op(i)` for i in 0..count, `concurrency` at a time; the first error stops it.
pub async fn in_parallel<F, Fut, T>(count: usize, concurrency: usize, op: F) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    use futures::stream::{self, StreamExt, TryStreamExt};
    stream::iter(0..count).map(op).buffered(concurrency).try_collect().await
}
