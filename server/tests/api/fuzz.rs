//! Type-confused and extreme values sent to every JSON route: a bounded fuzz that runs the same
//! way every time (a fixed seed). Whatever arrives, the server answers every request, never with
//! a 5xx, and every 4xx is the contract's JSON error.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_app_with;

const SEED: u64 = 0x00C0_FFEE_0B0E_5EED;
const RANDOM_BODIES: usize = 500;
const CONCURRENCY: usize = 8;

/// A route's fields, each with a valid value (or `None`: left out).
type Fields = Vec<(&'static str, Option<String>)>;

/// Every JSON route with its fields, so that a field can be tried alone while the others get
/// past their own checks.
fn routes(account_id: &str) -> Vec<(&'static str, Fields)> {
    let account = Some(format!("\"{account_id}\""));
    let projection = || {
        vec![
            ("name", Some("\"account_summary\"".to_owned())),
            ("position", None),
            ("reason", Some("\"fuzzing\"".to_owned())),
        ]
    };
    vec![
        (
            "/api/commands/create-account",
            vec![
                ("ownerId", Some("\"olga\"".to_owned())),
                ("initialBalance", Some("1".to_owned())),
                ("commandId", None),
            ],
        ),
        (
            "/api/commands/deposit",
            vec![("accountId", account.clone()), ("amount", Some("1".to_owned())), ("commandId", None)],
        ),
        (
            "/api/commands/withdraw",
            vec![("accountId", account.clone()), ("amount", Some("1".to_owned())), ("commandId", None)],
        ),
        ("/api/queries/account", vec![("accountId", account.clone()), ("after", None)]),
        ("/api/queries/accounts", vec![("ownerId", None)]),
        ("/api/queries/high-value-accounts", vec![("minBalance", Some("0".to_owned()))]),
        ("/api/queries/account-at", vec![("accountId", account.clone()), ("version", None), ("at", None)]),
        (
            "/api/queries/account-history",
            vec![("accountId", account.clone()), ("beforeVersion", None), ("limit", None)],
        ),
        ("/api/queries/account-ledger", vec![("accountId", account), ("limit", None)]),
        ("/api/operations/projections", vec![]),
        ("/api/operations/retry-projection", projection()),
        ("/api/operations/skip-failed-event", projection()),
        ("/api/operations/rebuild-projection", projection()),
    ]
}

/// The values tried in every field, as JSON text (so that numbers no `f64` holds can be sent).
fn values(account_id: &str) -> Vec<String> {
    let plain = [
        "null",
        "true",
        "false",
        "0",
        "-0",
        "-1",
        "1",
        "0.01",
        "10.555",
        "1e308",
        "-1e308",
        "1e-30",
        "1e999",
        "1.00000000000000000000000000001",
        r#""1.00000000000000000000000000001""#,
        r#""""#,
        r#"" ""#,
        r#""\u0000""#,
        r#""a\u0000b""#,
        r#""\ud800""#,
        r#""NaN""#,
        r#""Infinity""#,
        r#""-Infinity""#,
        r#""1e3""#,
        "[]",
        "[1]",
        "{}",
        r#"{"a":1}"#,
        r#""-1:-1""#,
        r#""0:0""#,
        r#""9223372036854775807:9223372036854775807""#,
        r#""2026-01-01T00:00:00Z""#,
        r#""2026-01-01T00:00:00.5Z""#,
        r#""9999-12-31T23:59:59-23:59""#,
        r#""0000-01-01T00:00:00+23:59""#,
        r#""account_summary""#,
        r#""00000000-0000-0000-0000-000000000000""#,
        r#""3f2b8a6e-1c4d-4e0f-9a7b-5d6c8e9f0a1b""#,
    ];
    let mut values: Vec<String> = plain.iter().map(|value| (*value).to_owned()).collect();
    values.extend([i64::MIN.to_string(), i64::MAX.to_string(), u64::MAX.to_string()]);
    values.push(format!("\"{account_id}\""));
    values.push(format!("\"{}\"", "x".repeat(10_000)));
    values.push(format!("{}{}", "[".repeat(100), "]".repeat(100)));
    values.push(format!("{}{}", "[".repeat(1000), "]".repeat(1000)));
    values
}

fn object(fields: &[(&str, &str)]) -> String {
    let members: Vec<String> = fields.iter().map(|(key, value)| format!("\"{key}\": {value}")).collect();
    format!("{{{}}}", members.join(", "))
}

enum Request {
    Post { path: &'static str, body: String },
    Get { path: String },
}

impl Request {
    fn describe(&self) -> String {
        let shorten = |text: &str| text.chars().take(200).collect::<String>();
        match self {
            Request::Post { path, body } => format!("POST {path} {}", shorten(body)),
            Request::Get { path } => format!("GET {}", shorten(path)),
        }
    }
}

/// Every field with every value (the other fields valid), bodies that are no object at all,
/// then random mixes of values, valid values and left-out fields.
fn post_requests(account_id: &str) -> Vec<Request> {
    let routes = routes(account_id);
    let values = values(account_id);
    let mut requests = Vec::new();
    for (path, fields) in &routes {
        for (field, _) in fields {
            for value in &values {
                let body: Vec<(&str, &str)> = fields
                    .iter()
                    .filter_map(|(name, valid)| {
                        if name == field { Some(value.as_str()) } else { valid.as_deref() }.map(|v| (*name, v))
                    })
                    .collect();
                requests.push(Request::Post { path, body: object(&body) });
            }
        }
        for body in ["", "null", "[]", "\"x\"", "1", "{", "{\"accountId\":", "[[[[[[[[[[]]]]]]]]]]"] {
            requests.push(Request::Post { path, body: body.to_owned() });
        }
    }
    let mut rng = fastrand::Rng::with_seed(SEED);
    for _ in 0..RANDOM_BODIES {
        let (path, fields) = &routes[rng.usize(..routes.len())];
        let mut body: Vec<(&str, &str)> = Vec::new();
        for (name, valid) in fields {
            match rng.u8(..4) {
                0 => {}
                1 => body.extend(valid.as_deref().map(|v| (*name, v))),
                _ => body.push((name, &values[rng.usize(..values.len())])),
            }
        }
        if rng.u8(..8) == 0 {
            body.push(("unexpected", &values[rng.usize(..values.len())]));
        }
        rng.shuffle(&mut body);
        requests.push(Request::Post { path, body: object(&body) });
    }
    requests
}

/// `GET /api/queries/accounts/{id}?after=…` with odd ids and tokens, percent-encoded.
fn get_requests(account_id: &str) -> Vec<Request> {
    let long = "x".repeat(10_000);
    let ids = [account_id, "00000000-0000-0000-0000-000000000000", "not-a-uuid", "%00", "a%00b", "-1", "%FF", &long];
    let tokens = [
        None,
        Some(""),
        Some("%00"),
        Some("a%00b"),
        Some("%FF"),
        Some("-1:-1"),
        Some("0:0"),
        Some("1:2:3"),
        Some("9223372036854775807:9223372036854775807"),
        Some("99999999999999999999999999:1"),
        Some("-9223372036854775808:-9223372036854775808"),
    ];
    let mut requests = Vec::new();
    for id in ids {
        for token in tokens {
            let path = match token {
                Some(token) => format!("/api/queries/accounts/{id}?after={token}"),
                None => format!("/api/queries/accounts/{id}"),
            };
            requests.push(Request::Get { path });
        }
    }
    requests
}

/// What is wrong with the answer to `request`, if anything.
async fn check(client: &reqwest::Client, address: &str, request: &Request) -> Option<String> {
    let sent = match request {
        Request::Post { path, body } => {
            client.post(format!("{address}{path}")).header("content-type", "application/json").body(body.clone()).send()
        }
        Request::Get { path } => client.get(format!("{address}{path}")).send(),
    };
    let response = match sent.await {
        Ok(response) => response,
        Err(error) => return Some(format!("{}: no answer ({error})", request.describe())),
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let body = match response.text().await {
        Ok(body) => body,
        Err(error) => return Some(format!("{}: {status}, the body was cut off ({error})", request.describe())),
    };
    let answer = || format!("{}: {status} {}", request.describe(), body.chars().take(300).collect::<String>());
    if status.is_success() {
        return None;
    }
    if !status.is_client_error() {
        return Some(answer());
    }
    let error: Option<Value> = serde_json::from_str(&body).ok();
    let has_shape = error.as_ref().is_some_and(|error| {
        error["error"]["code"].as_str().is_some_and(|code| !code.is_empty())
            && error["error"]["message"].as_str().is_some_and(|message| !message.is_empty())
    });
    (!is_json || !has_shape).then(|| format!("{} (not the JSON error shape)", answer()))
}

#[sqlx::test(migrations = false)]
async fn no_input_gets_a_5xx_or_an_unshaped_error(_: PgPoolOptions, db: PgConnectOptions) {
    // A token ahead of the read model waits this long, not the default 2 s.
    let app = spawn_app_with(db, |settings| settings.catch_up_bound = Duration::from_millis(100)).await;
    // As an operator who owns the account: every route, levers included, gets past the caller
    // checks to the parsing of its fields.
    let operator = app.operator_user().await;
    let account_id = app.create_account_as(operator, 1_000_000.0).await["accountId"].as_str().unwrap().to_owned();
    let mut requests = post_requests(&account_id);
    requests.extend(get_requests(&account_id));
    assert!(requests.len() <= 2_500, "{} requests: more than the bound", requests.len());

    let mut authorization = reqwest::header::HeaderMap::new();
    authorization.insert("authorization", format!("Bearer {}", operator.token).parse().unwrap());
    let client =
        reqwest::Client::builder().default_headers(authorization).timeout(Duration::from_secs(30)).build().unwrap();
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(&requests)
        .map(|request| check(&client, &app.address, request))
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    let elapsed = started.elapsed();
    println!("{} requests in {elapsed:?}", requests.len());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, among them:\n{}",
        failures.len(),
        requests.len(),
        failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    // The account the fuzz could touch is still consistent: every request was answered.
    assert_eq!(app.get_as_operator(&format!("/api/queries/accounts/{account_id}")).await.status(), StatusCode::OK);
}
