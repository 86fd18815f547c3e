//! B9: from a command's HTTP answer to a live-stream subscriber hearing that its account
//! changed (`GET /api/live?accounts=<its account>`, as an account page listens), under B3's
//! background load (deposits paced at half of B2's maximum): first with only the samplers'
//! streams open, then with 1,000 more held open by pages of accounts nobody moves, then with 100
//! overview pages instead (which hear of every change).
//!
//! Baselines, same run: B3's `GET ?after` figure (if B3 ran), and the background commands' own
//! latency without the idle subscribers, against which the same latency with them is compared.

use std::time::{Duration, Instant};

use eventstore::Position;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::Outcome;
use super::b2_http_commands::{self, CONNECTIONS, prepare_accounts};
use crate::http;
use crate::load;
use crate::report::{self, Latencies};
use crate::server::Server;
use crate::{B3_QUERY_P99, Context};

/// Samplers, each with an account and a stream of its own.
const SAMPLERS: usize = 2;
const PAUSE: Duration = Duration::from_millis(5);

pub async fn run(context: Context) -> Outcome {
    report::heading("b9_live", "command answer → heard on the live stream, at half of B2's load");
    let idle_streams = context.size.pick(100, 1000);
    let server = Server::start_with(|settings| {
        settings.max_live_streams_per_client = idle_streams + SAMPLERS + 10;
    })
    .await?;
    let measured = measure(&context, &server, idle_streams).await;
    server.stop().await;
    measured
}

async fn measure(context: &Context, server: &Server, idle_streams: usize) -> Outcome {
    // 30 s a phase: the idle streams are held that long under load.
    let (warmup, duration) = context
        .size
        .pick((Duration::from_millis(300), Duration::from_secs(1)), (Duration::from_secs(2), Duration::from_secs(30)));
    let overview_streams = context.size.pick(10, 100);
    let mut accounts = prepare_accounts(context, CONNECTIONS * 32 + SAMPLERS + idle_streams).await?;
    let idle_accounts: Vec<Uuid> = accounts.split_off(CONNECTIONS * 32 + SAMPLERS);
    let own: Vec<Uuid> = accounts.split_off(CONNECTIONS * 32);
    let max = b2_http_commands::max_rate_of_this_run(context, server, &accounts).await?;
    let rate = (max / 2.0).max(10.0);
    report::note(&format!("background: {rate:.0} cmd/s = half of B2's {max:.0}"));

    // Without and with the idle streams, half the time each, in the order without, with, with,
    // without: what changes steadily over the run (the tables growing, autovacuum, the VM) weighs
    // on both alike. (Measured without-then-with twice, every phase came out worse than the one
    // before it, and the streams were blamed for the drift: BENCHMARKS.md, issue 31.)
    let half = duration / 2;
    let idle_paths: Vec<String> = idle_accounts.iter().map(|account| format!("/api/live?accounts={account}")).collect();
    let mut quiet_runs = Vec::new();
    let mut crowded_runs = Vec::new();
    let (mut rss_before, mut rss_after) = (None, None);
    for crowded in [false, true, true, false] {
        if !crowded {
            quiet_runs.push(phase(server, &accounts, &own, rate, warmup, half).await?);
            continue;
        }
        // Pages open on accounts nobody is moving: their streams carry keep-alives only.
        // The memory they take, the first time (the second reuses what the first freed).
        let first = rss_before.is_none();
        if first {
            rss_before = resident_kib();
        }
        let idle = hold_streams(server, idle_paths.iter().cloned()).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if first {
            rss_after = resident_kib();
        }
        crowded_runs.push(phase(server, &accounts, &own, rate, warmup, half).await?);
        release(idle)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Overview pages: every change reaches every one of them.
    let overviews = hold_streams(server, (0..overview_streams).map(|_| "/api/live".to_owned())).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watching_all = phase(server, &accounts, &own, rate, warmup, half).await?;
    release(overviews)?;

    report_figures(
        context,
        &Measured {
            quiet_runs,
            crowded_runs,
            watching_all,
            rss: (rss_before, rss_after),
            idle_streams,
            overview_streams,
        },
    );
    Ok(())
}

/// What [`measure`] measured: the phases without and with idle streams (in turn), the one with
/// overview pages open, and the server's memory before and after the idle streams opened.
struct Measured {
    quiet_runs: Vec<Phase>,
    crowded_runs: Vec<Phase>,
    watching_all: Phase,
    rss: (Option<u64>, Option<u64>),
    idle_streams: usize,
    overview_streams: usize,
}

fn report_figures(context: &Context, measured: &Measured) {
    let Measured {
        quiet_runs,
        crowded_runs,
        watching_all,
        rss: (rss_before, rss_after),
        idle_streams,
        overview_streams,
    } = measured;
    let (quiet, crowded) = (&quiet_runs[0], &crowded_runs[0]);
    report::latencies_against("heard on the stream", quiet.heard.as_ref(), "command", quiet.commands.as_ref());
    if let Some(b3) = context.shared.get(B3_QUERY_P99) {
        report::note(&format!("B3's GET ?after=<token> p99 in this run: {b3:.1} ms"));
    }
    report::latencies_against(
        &format!("heard, {idle_streams} idle account pages open"),
        crowded.heard.as_ref(),
        "command",
        crowded.commands.as_ref(),
    );
    report::latencies_against(
        &format!("heard, {overview_streams} overview pages open"),
        watching_all.heard.as_ref(),
        "command",
        watching_all.commands.as_ref(),
    );
    report::latencies("  background commands, no other streams (1st phase)", quiet.background.as_ref());
    report::latencies(
        &format!("  background commands, {idle_streams} idle account pages (2nd phase)"),
        crowded.background.as_ref(),
    );
    report::latencies(
        &format!("  background commands, {overview_streams} overview pages"),
        watching_all.background.as_ref(),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let growth = after.saturating_sub(*before);
        report::figure(
            &format!("memory for {idle_streams} streams (server and its clients: one process)"),
            growth as f64 / 1024.0,
            &format!("MiB ({:.1} KiB a stream)", growth as f64 / *idle_streams as f64),
        );
    }
    if let (Some(quiet), Some(all)) = (&quiet.background, &watching_all.background) {
        let ratio = report::millis(all.p99) / report::millis(quiet.p99);
        report::note(&format!("command p99 with {overview_streams} overview pages: {ratio:.2}× without (no target)"));
    }
    if let Some(heard) = &quiet.heard {
        let p99 = report::millis(heard.p99);
        report::target("B9: p99 < 25 ms, command answer → heard on the stream", p99 < 25.0, &format!("{p99:.1} ms"));
    }
    let p99s = |runs: &[Phase]| -> Option<Vec<f64>> {
        runs.iter().map(|run| run.background.as_ref().map(|latencies| report::millis(latencies.p99))).collect()
    };
    if let (Some(quiet), Some(crowded)) = (p99s(quiet_runs), p99s(crowded_runs)) {
        let ratios: Vec<f64> = quiet.iter().zip(&crowded).map(|(quiet, crowded)| crowded / quiet).collect();
        let mean = crowded.iter().sum::<f64>() / quiet.iter().sum::<f64>();
        report::note(&format!(
            "background command p99 without / with {idle_streams} idle streams, in the order without, with, with, without: {:.1}, {:.1}, {:.1}, {:.1} ms",
            quiet[0], crowded[0], crowded[1], quiet[1]
        ));
        report::target(
            &format!("B9: command p99 with {idle_streams} idle streams ≤ 1.2× without (all four phases together)"),
            mean <= 1.2,
            &format!("{mean:.2}× ({:.2}× in phases 1–2, {:.2}× in 3–4)", ratios[0], ratios[1]),
        );
    }
}

/// Opens a stream at each path and reads (and drops) everything on it, as an open page does;
/// returns once every one is open (at most 60 s), so that a phase measures streams held, not
/// streams being opened (a thousand sign-ins and look-ups, which took longer than the second
/// the phase used to wait for them).
async fn hold_streams(
    server: &Server,
    paths: impl Iterator<Item = String>,
) -> Result<Vec<JoinHandle<Result<(), String>>>, String> {
    // One client for all, as one load generator would be (each a connection of its own).
    let client = stream_client();
    let (opened, mut open) = tokio::sync::mpsc::unbounded_channel::<()>();
    let streams: Vec<_> = paths
        .map(|path| {
            let (base, client, opened) = (server.base.clone(), client.clone(), opened.clone());
            tokio::spawn(async move {
                let mut stream = LiveStream::open(&client, &base, &path).await?;
                let _ = opened.send(());
                while stream.next_block().await.is_some() {}
                Ok(())
            })
        })
        .collect();
    drop(opened);
    let all_open = async {
        for _ in 0..streams.len() {
            open.recv().await.ok_or("a stream to hold could not be opened")?;
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(60), all_open)
        .await
        .map_err(|_| "the streams to hold were not all open within 60 s".to_owned())??;
    Ok(streams)
}

/// Closes streams opened by [`hold_streams`], which must all have lasted until now.
fn release(streams: Vec<JoinHandle<Result<(), String>>>) -> Result<(), String> {
    if streams.iter().any(JoinHandle::is_finished) {
        return Err("a held live stream ended early".into());
    }
    for stream in streams {
        stream.abort();
    }
    Ok(())
}

struct Phase {
    commands: Option<Latencies>,
    heard: Option<Latencies>,
    background: Option<Latencies>,
}

async fn phase(
    server: &Server,
    accounts: &[Uuid],
    own: &[Uuid],
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> Result<Phase, Box<dyn std::error::Error>> {
    let background = {
        let (client, base, accounts) = (http::client(), server.base.clone(), accounts.to_vec());
        tokio::spawn(load::open_loop(rate, warmup + duration, move |i| {
            http::send(client.clone(), base.clone(), http::Kind::Deposit, accounts[i % accounts.len()])
        }))
    };
    tokio::time::sleep(warmup).await;
    let deadline = Instant::now() + duration;
    let samplers = own.iter().map(|&account| {
        let base = server.base.clone();
        tokio::spawn(async move { sample(&base, account, deadline).await })
    });
    let results = futures::future::join_all(samplers).await;
    let background = background.await?;
    background.report_errors("background deposits");
    let (mut commands, mut heard) = (Vec::new(), Vec::new());
    for result in results {
        for (command, visible) in result?? {
            commands.push(command);
            heard.push(visible);
        }
    }
    Ok(Phase {
        commands: Latencies::of(&mut commands),
        heard: Latencies::of(&mut heard),
        background: background.latencies,
    })
}

/// Until `deadline`: deposit into `account`, then read the stream until a message names the
/// account at or past the deposit's position. Returns (command latency, answer → heard).
async fn sample(base: &str, account: Uuid, deadline: Instant) -> Result<Vec<(Duration, Duration)>, String> {
    let client = http::client();
    let mut stream = LiveStream::open(&stream_client(), base, &format!("/api/live?accounts={account}")).await?;
    let account_text = account.to_string();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let token = http::deposit(&client, base, account).await?;
        let answered = Instant::now();
        loop {
            let block = tokio::time::timeout(Duration::from_secs(30), stream.next_block())
                .await
                .map_err(|_| format!("deposit {token} not heard within 30 s"))?
                .ok_or("the live stream ended")?;
            if block.lines().any(|line| line.trim() == "event: resync") {
                return Err("the sampler's stream fell behind and was told to resync".into());
            }
            let Some(position) = progress_position(&block) else { continue };
            let everything = block.contains(r#""everything":true"#);
            if position >= token && (everything || block.contains(&account_text)) {
                break;
            }
        }
        samples.push((answered - sent, answered.elapsed()));
        tokio::time::sleep(PAUSE).await;
    }
    Ok(samples)
}

/// The id of a `progress` message (its position).
fn progress_position(block: &str) -> Option<Position> {
    if !block.lines().any(|line| line.trim() == "event: progress") {
        return None;
    }
    block.lines().find_map(|line| line.strip_prefix("id:")).and_then(|id| id.trim().parse().ok())
}

/// A client for streams, which last longer than any request: no overall timeout.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(crate::http::authorization())
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds")
}

/// A live stream read as raw server-sent event blocks.
struct LiveStream {
    response: reqwest::Response,
    buffer: String,
}

impl LiveStream {
    async fn open(client: &reqwest::Client, base: &str, path: &str) -> Result<LiveStream, String> {
        let response = client.get(format!("{base}{path}")).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("live stream refused: {}", response.status()));
        }
        Ok(LiveStream { response, buffer: String::new() })
    }

    async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                return Some(self.buffer.drain(..end + 2).collect());
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// This process's resident memory (the server runs in it), in KiB.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}
