//! HTTP load against the in-process server: `wrk` when it is installed (a separate process in
//! C: the cheapest closed-loop generator there is), else a built-in reqwest generator with
//! keep-alive connections. Paced (open-loop) runs always use the built-in one, since wrk
//! cannot pace and wrk2 is not packaged by Debian.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use eventstore::Position;
use serde_json::Value;
use uuid::Uuid;

use crate::load::{self, Run};
use crate::report::Latencies;

/// What a request does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /api/commands/deposit` of 1.00 (no `commandId`: the server makes one).
    Deposit,
    /// `GET /api/queries/accounts/{id}`.
    AccountQuery,
    /// `POST /api/queries/high-value-accounts` for balances of at least [`HIGH_VALUE_MIN`]:
    /// the 100 highest of the bench user's accounts.
    HighValueQuery,
}

/// The `minBalance` of [`Kind::HighValueQuery`]: below the 1,000.00 the bench accounts open with.
pub const HIGH_VALUE_MIN: &str = "900";

/// The requests of a run: one kind, over these accounts. Each client walks the accounts
/// round-robin, starting at a different one, so that no two requests in flight address the
/// same account.
#[derive(Clone)]
pub struct Requests {
    pub kind: Kind,
    pub accounts: Arc<Vec<Uuid>>,
}

impl Requests {
    pub fn new(kind: Kind, accounts: &[Uuid]) -> Requests {
        Requests { kind, accounts: Arc::new(accounts.to_vec()) }
    }
}

/// `wrk` on the `PATH`, unless `BENCH_NO_WRK` is set (to try the built-in generator).
pub fn wrk() -> Option<PathBuf> {
    if std::env::var_os("BENCH_NO_WRK").is_some() {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("wrk")).find(|candidate| candidate.is_file())
}

/// The API token every request sends (the bench user's; see `server::Server::start`).
static BEARER_TOKEN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

pub fn set_bearer_token(token: String) {
    *BEARER_TOKEN.lock().expect("the token is never poisoned") = Some(token);
}

/// `Authorization: Bearer <token>` of the bench user, once a server has started.
pub fn authorization() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = BEARER_TOKEN.lock().expect("the token is never poisoned").as_ref()
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    headers
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(authorization())
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client builds")
}

/// Which generator [`closed_loop`] used.
pub fn generator_name() -> &'static str {
    if wrk().is_some() { "wrk" } else { "built-in" }
}

/// `connections` keep-alive connections sending `requests` back to back: the maximum
/// throughput at that concurrency.
pub async fn closed_loop(
    base: &str,
    requests: &Requests,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Run, String> {
    match wrk() {
        Some(wrk) => {
            if warmup >= Duration::from_secs(1) {
                run_wrk(&wrk, base, requests, connections, warmup).await?;
            }
            run_wrk(&wrk, base, requests, connections, duration).await
        }
        None => {
            let client = client();
            let base = base.to_owned();
            let Requests { kind, accounts } = requests.clone();
            Ok(load::closed_loop(connections, warmup, duration, move |c, i| {
                let account = accounts[(c + i * connections) % accounts.len()];
                send(client.clone(), base.clone(), kind, account)
            })
            .await)
        }
    }
}

/// One request of `kind` for `account`; `Err` unless answered 2xx.
pub async fn send(client: reqwest::Client, base: String, kind: Kind, account: Uuid) -> Result<(), String> {
    let response = match kind {
        Kind::Deposit => {
            client
                .post(format!("{base}/api/commands/deposit"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"accountId":"{account}","amount":"1.00"}}"#))
                .send()
                .await
        }
        Kind::AccountQuery => client.get(format!("{base}/api/queries/accounts/{account}")).send().await,
        Kind::HighValueQuery => {
            client
                .post(format!("{base}/api/queries/high-value-accounts"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"minBalance":"{HIGH_VALUE_MIN}"}}"#))
                .send()
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() { Ok(()) } else { Err(format!("{status}: {}", String::from_utf8_lossy(&body))) }
}

/// The JSON body of a 2xx answer; any other answer is an error with its status and body.
async fn success_json(response: reqwest::Response) -> Result<Value, String> {
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status.is_success() { Ok(body) } else { Err(format!("{status}: {body}")) }
}

/// Deposits 1.00 into `account` and returns the consistency token of the answer.
pub async fn deposit(client: &reqwest::Client, base: &str, account: Uuid) -> Result<Position, String> {
    let response = client
        .post(format!("{base}/api/commands/deposit"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"accountId":"{account}","amount":"1.00"}}"#))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body = success_json(response).await?;
    body["position"].as_str().ok_or_else(|| format!("no position in {body}"))?.parse().map_err(|e| format!("{e}"))
}

/// `GET /api/queries/accounts/{id}?after=<token>`: whether the answer is still stale, and the
/// checkpoint it is current as of.
pub async fn account_after(
    client: &reqwest::Client,
    base: &str,
    account: Uuid,
    token: Position,
) -> Result<(bool, Position), String> {
    let response = client
        .get(format!("{base}/api/queries/accounts/{account}?after={token}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body = success_json(response).await?;
    let stale = body["stale"].as_bool().ok_or_else(|| format!("no stale in {body}"))?;
    let as_of =
        body["asOf"].as_str().ok_or_else(|| format!("no asOf in {body}"))?.parse().map_err(|e| format!("{e}"))?;
    Ok((stale, as_of))
}

/// Runs wrk once with a Lua script that walks the accounts and prints the figures we need
/// (wrk's own `--latency` output stops at p99).
async fn run_wrk(
    wrk: &PathBuf,
    base: &str,
    requests: &Requests,
    connections: usize,
    duration: Duration,
) -> Result<Run, String> {
    let threads = connections.clamp(1, std::thread::available_parallelism().map_or(2, |n| n.get()));
    let script = std::env::temp_dir().join(format!("cqrs-bank-bench-{}.lua", std::process::id()));
    std::fs::write(&script, lua_script(requests, threads)).map_err(|e| format!("cannot write the wrk script: {e}"))?;
    let command = std::process::Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        // wrk takes whole seconds.
        .arg(format!("-d{}s", duration.as_secs_f64().ceil().max(1.0)))
        .arg("--timeout")
        .arg("30s")
        .arg("-s")
        .arg(&script)
        .arg(base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let output = match command {
        Ok(child) => tokio::task::spawn_blocking(move || child.wait_with_output()).await.map_err(|e| e.to_string())?,
        Err(error) => Err(error),
    }
    .map_err(|e| format!("cannot run wrk: {e}"))?;
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("BENCH "))
        .ok_or_else(|| format!("wrk printed no figures: {stdout}{}", String::from_utf8_lossy(&output.stderr)))?;
    let field = |name: &str| -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("wrk printed no {name}: {line}"))
    };
    let micros = |name: &str| field(name).map(Duration::from_micros);
    let requests_done = field("requests")? as usize;
    let status_errors = field("status_errors")? as usize;
    let other_errors = field("socket_errors")? as usize;
    let ok = requests_done.saturating_sub(status_errors);
    Ok(Run {
        ok,
        errors: status_errors + other_errors,
        first_error: (status_errors + other_errors > 0)
            .then(|| format!("{status_errors} non-2xx answers, {other_errors} socket errors or timeouts")),
        elapsed: micros("duration_us")?,
        latencies: Some(Latencies {
            p50: micros("p50")?,
            p99: micros("p99")?,
            p999: micros("p999")?,
            max: micros("max")?,
            count: requests_done,
        }),
        service: None,
    })
}

fn lua_script(requests: &Requests, threads: usize) -> String {
    let accounts = &requests.accounts;
    let list = accounts.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",\n");
    let request = match requests.kind {
        Kind::Deposit => {
            r#"wrk.format("POST", "/api/commands/deposit", headers, '{"accountId":"' .. id .. '","amount":"1.00"}')"#
                .to_owned()
        }
        Kind::AccountQuery => r#"wrk.format("GET", "/api/queries/accounts/" .. id, headers, nil)"#.to_owned(),
        Kind::HighValueQuery => format!(
            r#"wrk.format("POST", "/api/queries/high-value-accounts", headers, '{{"minBalance":"{HIGH_VALUE_MIN}"}}')"#
        ),
    };
    let authorization = authorization()
        .get(reqwest::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    format!(
        r#"local accounts = {{
{list}
}}
local n = #accounts
local headers = {{ ["Content-Type"] = "application/json", ["Authorization"] = "{authorization}" }}
local next_thread = 0
local counter = 0

function setup(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  counter = tid
end

request = function()
  local id = accounts[(counter % n) + 1]
  counter = counter + {threads}
  return {request}
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d status_errors=%d socket_errors=%d p50=%d p99=%d p999=%d max=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"#
    )
}
