//! Identity and access: who may call what, sessions and tokens, limits, idempotency per caller.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};

use crate::helpers::{PASSWORD, TestApp, error_code, session_cookie, spawn_app, spawn_app_with};

/// What one route is asked in the table below.
struct Call {
    method: &'static str,
    path: String,
    body: Value,
    /// Writes an event when it succeeds.
    writes: bool,
}

fn post(path: &str, body: Value, writes: bool) -> Call {
    Call { method: "POST", path: path.to_owned(), body, writes }
}

fn get(path: String) -> Call {
    Call { method: "GET", path, body: Value::Null, writes: false }
}

async fn send(app: &TestApp, client: &Client, call: &Call) -> StatusCode {
    let url = format!("{}{}", app.address, call.path);
    let request = if call.method == "POST" { client.post(url).json(&call.body) } else { client.get(url) };
    request.send().await.unwrap().status()
}

/// Every route × {anonymous, another customer, the owner, an operator}: the status, and that
/// nothing was written where it was refused.
#[sqlx::test(migrations = false)]
async fn every_route_answers_each_kind_of_caller_as_it_should(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let account = app.account_id("alice", 100.0).await;
    app.wait_for_projection().await;
    let mallory = app.sign_up("mallory").await;
    let operator = app.operator_client().await;
    let id = account.as_str();

    use StatusCode as S;
    const OK: S = S::OK;
    let (unauth, not_found, forbidden) = (S::UNAUTHORIZED, S::NOT_FOUND, S::FORBIDDEN);
    // (call, anonymous, another customer, owner, operator)
    let table: Vec<(Call, S, S, S, S)> = vec![
        (post("/api/commands/deposit", json!({"accountId": id, "amount": 1}), true), unauth, not_found, OK, not_found),
        (post("/api/commands/withdraw", json!({"accountId": id, "amount": 1}), true), unauth, not_found, OK, not_found),
        (
            post("/api/commands/create-account", json!({"ownerId": "alice", "initialBalance": 1}), true),
            unauth,
            forbidden,
            OK,
            forbidden,
        ),
        (get(format!("/api/queries/accounts/{id}")), unauth, not_found, OK, OK),
        (post("/api/queries/account", json!({"accountId": id}), false), unauth, not_found, OK, OK),
        (post("/api/queries/account-history", json!({"accountId": id}), false), unauth, not_found, OK, OK),
        (post("/api/queries/account-at", json!({"accountId": id, "version": 1}), false), unauth, not_found, OK, OK),
        (post("/api/queries/account-ledger", json!({"accountId": id}), false), unauth, not_found, OK, OK),
        (post("/api/queries/accounts", json!({}), false), unauth, OK, OK, OK),
        (post("/api/queries/high-value-accounts", json!({"minBalance": 0}), false), unauth, OK, OK, OK),
        (post("/api/operations/projections", json!({}), false), unauth, forbidden, forbidden, OK),
        (
            post("/api/operations/retry-projection", json!({"reason": "a test", "name": "account_summary"}), false),
            unauth,
            forbidden,
            forbidden,
            S::CONFLICT,
        ),
        (
            post(
                "/api/operations/rebuild-projection",
                json!({"reason": "a test", "name": "no_such_projection"}),
                false,
            ),
            unauth,
            forbidden,
            forbidden,
            not_found,
        ),
        (get("/metrics".to_owned()), unauth, forbidden, forbidden, OK),
        (get(format!("/api/live?accounts={id}")), unauth, OK, OK, OK),
        (get("/health".to_owned()), OK, OK, OK, OK),
    ];
    let callers: [(&str, &Client); 4] = [
        ("anonymous", &app.anonymous),
        ("another customer", &mallory.client),
        ("owner", &app.client),
        ("operator", &operator),
    ];
    for (call, anonymous, other, owner, as_operator) in &table {
        for ((who, client), expected) in callers.iter().zip([anonymous, other, owner, as_operator]) {
            let events = app.event_count().await;
            let status = send(&app, client, call).await;
            assert_eq!(status, *expected, "{} {} as {who}", call.method, call.path);
            let written = app.event_count().await - events;
            let should_write = call.writes && status == OK;
            assert_eq!(written > 0, should_write, "{} {} as {who} wrote {written} events", call.method, call.path);
        }
    }
    // Another customer's refusals read exactly like an unknown account's.
    let deposit_by_mallory = |account: String| {
        let request = mallory
            .client
            .post(format!("{}/api/commands/deposit", app.address))
            .json(&json!({"accountId": account, "amount": 1}));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let theirs = deposit_by_mallory(id.to_owned()).await;
    let unknown = uuid::Uuid::new_v4();
    let none = deposit_by_mallory(unknown.to_string()).await;
    assert_eq!(theirs["error"]["code"], none["error"]["code"]);
    assert_eq!(
        theirs["error"]["message"].as_str().unwrap().replace(id, "X"),
        none["error"]["message"].as_str().unwrap().replace(&unknown.to_string(), "X")
    );
}

#[sqlx::test(migrations = false)]
async fn sign_in_starts_a_new_session_and_sign_out_ends_it_on_the_server(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let first = app.sign_in("alice").await.cookie;
    // Signing in again from the same browser (sending its cookie) ends that session and starts
    // another: the id changes, the old one opens nothing.
    let again = app
        .anonymous
        .post(format!("{}/api/auth/sign-in", app.address))
        .header("cookie", &first)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let second = session_cookie(&again);
    assert_ne!(first, second);
    let me = |cookie: String| {
        let request =
            app.anonymous.post(format!("{}/api/auth/me", app.address)).header("cookie", cookie).json(&json!({}));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(me(first.clone()).await, Value::Null);
    assert_eq!(me(second.clone()).await["username"], "alice");

    // Sign-out deletes the session: the cookie, replayed, is worth nothing.
    let out = app
        .anonymous
        .post(format!("{}/api/auth/sign-out", app.address))
        .header("cookie", &second)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(me(second.clone()).await, Value::Null);
    let replayed = app
        .anonymous
        .post(format!("{}/api/queries/accounts", app.address))
        .header("cookie", &second)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(replayed, StatusCode::UNAUTHORIZED).await, "unauthenticated");

    // The cookie is HttpOnly and SameSite=Lax; wrong passwords and unknown names read alike.
    let signed_in = app
        .anonymous
        .post(format!("{}/api/auth/sign-in", app.address))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let set_cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let mut messages = Vec::new();
    for (username, password) in [("alice", "not the password"), ("nobody-here", PASSWORD)] {
        let response = app
            .anonymous
            .post(format!("{}/api/auth/sign-in", app.address))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none());
        let body: Value = response.json().await.unwrap();
        messages.push(body["error"].clone());
    }
    assert_eq!(messages[0], messages[1]);
    assert_eq!(messages[0]["code"], "unauthenticated");
}

#[sqlx::test(migrations = false)]
async fn sign_up_refuses_taken_names_and_weak_passwords(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for (body, status, code) in [
        (json!({"username": "Alice", "password": PASSWORD}), StatusCode::CONFLICT, "conflict"),
        (json!({"username": "bob", "password": "short"}), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"username": "b", "password": PASSWORD}), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"username": "bob smith", "password": PASSWORD}), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"username": "bob"}), StatusCode::BAD_REQUEST, "invalid_request"),
    ] {
        let response =
            app.anonymous.post(format!("{}/api/auth/sign-up", app.address)).json(&body).send().await.unwrap();
        assert_eq!(error_code(response, status).await, code, "{body}");
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap();
    assert_eq!(users, 1, "only alice");
}

#[sqlx::test(migrations = false)]
async fn wrong_passwords_are_limited_and_the_right_one_works_later(_: PgPoolOptions, db: PgConnectOptions) {
    // The documented default: 10 sign-ins a minute per address.
    let app = spawn_app_with(db, |settings| {
        settings.rate_limits.sign_in = server::routes::rate_limits::Rate::per_minute(10);
    })
    .await;
    let attempt = |password: &'static str| {
        let request = app
            .anonymous
            .post(format!("{}/api/auth/sign-in", app.address))
            .json(&json!({"username": "alice", "password": password}));
        async move { request.send().await.unwrap() }
    };
    let mut limited_at = None;
    let mut retry_after = 0;
    for n in 1..=20 {
        let response = attempt("guess").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
            assert_eq!(error_code(response, StatusCode::TOO_MANY_REQUESTS).await, "too_many_requests");
            limited_at = Some(n);
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited_at = limited_at.expect("limited within 20 attempts");
    assert!(limited_at < 20, "429 before the 20th, at {limited_at}");
    assert!((1..=6).contains(&retry_after), "Retry-After {retry_after}");
    // The limiter's own clock under test: after the Retry-After it named, and any later, it lets
    // the next attempt in. A wrong one takes it, so the one after is a whole refill (6 s) away.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(attempt("guess").await.status(), StatusCode::UNAUTHORIZED);
    // Even the right password waits its turn, then works.
    let refused = attempt(PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = refused.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(attempt(PASSWORD).await.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn commands_are_limited_per_user(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| {
        // Five, then one every twelve minutes: however slowly the test goes, the sixth waits.
        settings.rate_limits.commands = server::routes::rate_limits::Rate::per_hour(5);
    })
    .await;
    let created = app.create_account("alice", 100.0).await;
    let (account, token) = (created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap());
    let bob = app.sign_up("bob").await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(app.deposit(account, 1).await.status());
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // Another user has a budget of their own; queries are not commands (read once the read
    // model has the account: without `after` a busy projection could still answer 404).
    assert_eq!(app.create_account_as(&bob, 1.0).await["version"], 1);
    app.account_after(account, token).await;
}

#[sqlx::test(migrations = false)]
async fn every_route_that_writes_carries_the_per_user_limit(_: PgPoolOptions, db: PgConnectOptions) {
    // Given a budget of two writes an hour, one spent making bob's token and one on a request
    // that was refused as malformed (the limit is checked before the body is read),
    let app = spawn_app_with(db, |settings| {
        settings.rate_limits.commands = server::routes::rate_limits::Rate::per_hour(2);
    })
    .await;
    let bob = app.sign_up("bob").await;
    let bearer = format!("Bearer {}", bob.token);
    let other_writes = [
        "/api/tokens/create",
        "/api/tokens/revoke",
        "/api/operations/retry-projection",
        "/api/operations/skip-failed-event",
        "/api/operations/rebuild-projection",
    ];
    let command_routes: Vec<&str> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, _)| path)
        .filter(|path| path.starts_with("/api/commands/") || other_writes.contains(path))
        .collect();
    assert!(command_routes.len() >= 12, "the routes that write are registered: {command_routes:?}");
    let send = |path: &str| {
        Client::new().post(format!("{}{path}", app.address)).header("authorization", &bearer).json(&json!({})).send()
    };
    assert_eq!(send(command_routes[0]).await.unwrap().status(), StatusCode::BAD_REQUEST);
    // when every route that writes is called, each is refused by the same budget: none escapes it.
    for path in &command_routes {
        assert_eq!(send(path).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS, "{path} is limited");
    }
}

#[sqlx::test(migrations = false)]
async fn a_bearer_token_drives_the_contract_routes_until_revoked(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    let bearer = format!("Bearer {}", bob.token);
    let plain = Client::new();
    // The design document's routes and JSON, unchanged, plus the header.
    let created: Value = plain
        .post(format!("{}/api/commands/create-account", app.address))
        .header("authorization", &bearer)
        .json(&json!({"ownerId": "bob", "initialBalance": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = created["accountId"].as_str().unwrap().to_owned();
    let deposited = plain
        .post(format!("{}/api/commands/deposit", app.address))
        .header("authorization", &bearer)
        // A token carries no ambient credential: the cross-site checks do not apply to it.
        .header("content-type", "application/json")
        .body(json!({"accountId": account, "amount": 5}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(deposited.status(), StatusCode::OK);
    app.wait_for_projection().await;
    let read = plain
        .get(format!("{}/api/queries/accounts/{account}", app.address))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);

    // Its use is noted; a token cannot make more tokens.
    let listed: Value = bob
        .client
        .post(format!("{}/api/tokens/list", app.address))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed[0]["lastUsedAt"].is_string(), "{listed}");
    assert!(listed[0].get("token").is_none(), "the secret is never listed: {listed}");
    let minted = bob
        .client
        .post(format!("{}/api/tokens/create", app.address))
        .json(&json!({"name": "more", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(minted, StatusCode::FORBIDDEN).await, "forbidden");

    // Someone else cannot revoke it; its owner can, and then it is refused.
    let token_id = listed[0]["tokenId"].clone();
    let by_alice = app.post("/api/tokens/revoke", &json!({"tokenId": token_id})).await;
    assert_eq!(error_code(by_alice, StatusCode::NOT_FOUND).await, "not_found");
    let revoked = bob
        .client
        .post(format!("{}/api/tokens/revoke", app.address))
        .json(&json!({"tokenId": token_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let after = plain
        .get(format!("{}/api/queries/accounts/{account}", app.address))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(after, StatusCode::UNAUTHORIZED).await, "unauthenticated");
    let garbage = plain
        .get(format!("{}/api/queries/accounts/{account}", app.address))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(garbage, StatusCode::UNAUTHORIZED).await, "unauthenticated");
}

#[sqlx::test(migrations = false)]
async fn command_ids_are_per_caller_and_forgotten_after_the_retention(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    let command_id = uuid::Uuid::new_v4();
    let alices = app.create_account("alice", 1.0).await["accountId"].as_str().unwrap().to_owned();
    let bobs = app.create_account_as(&bob, 1.0).await["accountId"].as_str().unwrap().to_owned();
    // The same id from two users: two commands, each applied.
    let by_alice =
        app.post("/api/commands/deposit", &json!({"accountId": alices, "amount": 1, "commandId": command_id})).await;
    assert_eq!(by_alice.status(), StatusCode::OK);
    let by_bob = bob
        .client
        .post(format!("{}/api/commands/deposit", app.address))
        .json(&json!({"accountId": bobs, "amount": 1, "commandId": command_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_bob.status(), StatusCode::OK, "bob's id is his own");
    // Alice's retry is answered from the first outcome.
    let events = app.event_count().await;
    let retried =
        app.post("/api/commands/deposit", &json!({"accountId": alices, "amount": 1, "commandId": command_id})).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(app.event_count().await, events);

    // Past the retention the id is forgotten (the purge keeps younger ones).
    sqlx::query("UPDATE processed_commands SET processed_at = processed_at - interval '8 days' WHERE request->>'accountId' = $1")
        .bind(&alices)
        .execute(&app.pool)
        .await
        .unwrap();
    let purged = eventstore::processed_commands::purge_older_than(&app.pool, Duration::from_secs(7 * 24 * 3600), &[])
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let remembered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_commands").fetch_one(&app.pool).await.unwrap();
    assert!(remembered >= 3, "the others are kept: {remembered}");
}

#[sqlx::test(migrations = false)]
async fn only_allowed_host_names_are_served(_: PgPoolOptions, db: PgConnectOptions) {
    let app =
        spawn_app_with(db, |settings| settings.allowed_hosts = vec!["127.0.0.1".into(), "bank.example".into()]).await;
    assert_eq!(app.anonymous.get(format!("{}/health", app.address)).send().await.unwrap().status(), StatusCode::OK);
    let forged =
        app.anonymous.get(format!("{}/health", app.address)).header("host", "evil.example").send().await.unwrap();
    assert_eq!(error_code(forged, StatusCode::BAD_REQUEST).await, "invalid_request");
    let named =
        app.anonymous.get(format!("{}/health", app.address)).header("host", "bank.example:443").send().await.unwrap();
    assert_eq!(named.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn credentials_that_name_nobody_are_limited_per_address(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (mut statuses, started) = (Vec::new(), std::time::Instant::now());
    for _ in 0..70 {
        // Well formed, so each costs a look-up: what a guesser would send.
        let forged = format!("cqb_{}", "A".repeat(43));
        let response = app
            .anonymous
            .get(format!("{}/api/queries/accounts/{}", app.address, uuid::Uuid::new_v4()))
            .header("authorization", format!("Bearer {forged}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    // 60 a minute: 60 at once, then one a second, for however long the guesses took.
    let allowed = 60 + 1 + started.elapsed().as_secs() as usize;
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let answered = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    assert!(answered <= allowed, "{answered} guesses answered, {allowed} allowed: {statuses:?}");
}

#[sqlx::test(migrations = false)]
async fn a_flood_of_bad_tokens_locks_no_valid_caller_of_the_same_address_out(_: PgPoolOptions, db: PgConnectOptions) {
    // Given a signed-up user with a token, and a flood of made-up tokens from the same address
    // (a proxy or a NAT shares one) past the bad-credentials limit,
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    let forged = format!("Bearer cqb_{}", "A".repeat(43));
    let send = |path: &str, authorization: &str| {
        let request = app.anonymous.post(format!("{}{path}", app.address)).json(&json!({}));
        request.header("authorization", authorization.to_owned()).send()
    };
    let mut refused = false;
    for _ in 0..70 {
        refused |= send("/api/auth/me", &forged).await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(refused, "the guesses are limited");
    // when the valid token, a signed-out page and /health are asked for from that address,
    // then each is served.
    let me = send("/api/auth/me", &format!("Bearer {}", bob.token)).await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(app.anonymous.get(format!("{}/health", app.address)).send().await.unwrap().status(), StatusCode::OK);
    let page = app.anonymous.get(format!("{}/sign-in", app.address)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // and a malformed token costs no look-up, so it is answered 401, not counted.
    let malformed = send("/api/auth/me", "Bearer not-a-token").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = false)]
async fn owners_of_accounts_from_before_sign_in_are_reserved(_: PgPoolOptions, db: PgConnectOptions) {
    // A database whose accounts were opened before users existed: the store's tables and two
    // accounts (today's event shape and the design document's), then the app's migrations.
    let pool = sqlx::PgPool::connect_with(db.clone()).await.unwrap();
    eventstore::schema::migrate(&pool).await.unwrap();
    for (version, data) in [
        (2, json!({"ownerId": "dora", "initialBalance": "5.00"})),
        (1, json!({"owner_id": "emil", "initial_balance": 5})),
    ] {
        sqlx::query(
            "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
             VALUES ($1, 'account', $2, 1, 'AccountCreated', $3, $4)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(uuid::Uuid::new_v4())
        .bind(version)
        .bind(data)
        .execute(&pool)
        .await
        .unwrap();
    }
    let app = spawn_app(db).await;
    for owner in ["dora", "emil"] {
        let taken = app
            .anonymous
            .post(format!("{}/api/auth/sign-up", app.address))
            .json(&json!({"username": owner, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(taken, StatusCode::CONFLICT).await, "conflict", "{owner}'s name is kept for them");
        let guessed = app
            .anonymous
            .post(format!("{}/api/auth/sign-in", app.address))
            .json(&json!({"username": owner, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(guessed, StatusCode::UNAUTHORIZED).await, "unauthenticated");
    }
}

#[sqlx::test(migrations = false)]
async fn over_https_the_session_cookie_is_the_hosts_own(_: PgPoolOptions, db: PgConnectOptions) {
    // Given a server whose cookies are `Secure` (it is served over https),
    let app = spawn_app_with(db, |settings| settings.secure_cookies = true).await;
    // when alice signs in, her cookie is `__Host-` prefixed: the browser takes it from a secure
    // origin only, for this host only (no Domain), so no subdomain or http page can plant it;
    let alice = app.sign_in(crate::helpers::CUSTOMER).await;
    assert!(alice.cookie.starts_with("__Host-bank_session="), "{}", alice.cookie);
    let me = |cookie: String| {
        let url = format!("{}/api/auth/me", app.address);
        async move {
            let me = Client::new().post(url).header("cookie", cookie).json(&json!({})).send().await.unwrap();
            assert_eq!(me.status(), StatusCode::OK);
            me.json::<Value>().await.unwrap()["username"].clone()
        }
    };
    assert_eq!(me(alice.cookie.clone()).await, json!("alice"));
    // and the same id under the plain name (what a planted cookie would be) names nobody.
    let plain = alice.cookie.replacen("__Host-", "", 1);
    assert_eq!(me(plain).await, Value::Null);
}

#[sqlx::test(migrations = false)]
async fn a_cookie_that_names_nobody_is_removed_from_the_browser(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    // Given a browser whose session ended on the server (expired, or signed out elsewhere),
    let alice = app.sign_in(crate::helpers::CUSTOMER).await;
    sqlx::query("DELETE FROM sessions").execute(&app.pool).await.unwrap();
    let send = |path: &str, body: Value| {
        Client::new().post(format!("{}{path}", app.address)).header("cookie", &alice.cookie).json(&body).send()
    };
    // when it loads a page (once the server no longer remembers the session: nothing told it),
    // the answer removes its cookie, so that it stops sending it;
    let no_redirects = http_client_without_redirects();
    eventually("the dead cookie removed", PATIENCE, || async {
        let page = no_redirects.get(format!("{}/", app.address)).header("cookie", &alice.cookie).send().await.unwrap();
        let set: Vec<_> = page.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        when(set, |set| set.iter().any(|c| c.starts_with("bank_session=;") && c.contains("Max-Age=0")))
    })
    .await;
    // (an API answer does not: one sent before a sign-in and answered after it would remove the
    // new cookie)
    let me = send("/api/auth/me", json!({})).await.unwrap();
    assert!(me.headers().get("set-cookie").is_none());
    // but a sign-in from that browser keeps the new session it sets.
    let signed_in =
        send("/api/auth/sign-in", json!({"username": "alice", "password": crate::helpers::PASSWORD})).await.unwrap();
    let set: Vec<_> =
        signed_in.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(!set[0].starts_with("bank_session=;"), "{set:?}");
}

fn http_client_without_redirects() -> Client {
    crate::helpers::http_client().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A sign-in as `username` with `password`, from the client a proxy names; the answer's status.
async fn sign_in_from(app: &TestApp, client: &str, username: &str, password: &str) -> StatusCode {
    Client::new()
        .post(format!("{}/api/auth/sign-in", app.address))
        .header("x-forwarded-for", client)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[sqlx::test(migrations = false)]
async fn behind_a_trusted_proxy_each_client_has_its_own_sign_in_budget(_: PgPoolOptions, db: PgConnectOptions) {
    use server::routes::client_address::TrustedProxies;
    use server::routes::rate_limits::Rate;
    // Given a server behind a proxy at the tests' own address, three sign-ins an hour per client,
    let app = spawn_app_with(db.clone(), |settings| {
        settings.trusted_proxies = TrustedProxies::new(vec!["127.0.0.1".parse().unwrap()]);
        settings.rate_limits.sign_in = Rate::per_hour(3);
    })
    .await;
    // when one client spends its budget,
    for _ in 0..3 {
        assert_eq!(sign_in_from(&app, "203.0.113.1", "alice", "not her password").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sign_in_from(&app, "203.0.113.1", "alice", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    // then another client behind the same proxy is served still.
    assert_eq!(sign_in_from(&app, "203.0.113.2", "alice", PASSWORD).await, StatusCode::OK);

    // A server that trusts no proxy believes no client's header: they are all one address. Were
    // the header believed, each of three clients would have a budget of three to itself; the
    // one address's is partly spent already (the test's own sign-in of alice, her token).
    let direct = spawn_app_with(db, |settings| settings.rate_limits.sign_in = Rate::per_hour(3)).await;
    let mut statuses = Vec::new();
    for n in 1..=3 {
        statuses.push(sign_in_from(&direct, &format!("198.51.100.{n}"), "alice", "not her password").await);
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[sqlx::test(migrations = false)]
async fn failed_sign_ins_slow_a_username_down_but_never_its_owner_at_home(_: PgPoolOptions, db: PgConnectOptions) {
    use server::routes::client_address::TrustedProxies;
    use server::routes::rate_limits::Rate;
    let app = spawn_app_with(db, |settings| {
        settings.trusted_proxies = TrustedProxies::new(vec!["127.0.0.1".parse().unwrap()]);
        settings.rate_limits.sign_in_failures = Rate::per_hour(3);
    })
    .await;
    app.sign_up("bob").await;
    // Given alice signed in from home once,
    assert_eq!(sign_in_from(&app, "192.0.2.1", "alice", PASSWORD).await, StatusCode::OK);
    // when guessers at three addresses fail at her name,
    for n in 1..=3 {
        let guess = sign_in_from(&app, &format!("198.51.100.{n}"), "alice", "a guess").await;
        assert_eq!(guess, StatusCode::UNAUTHORIZED);
    }
    // then a fourth address is told to wait, even with her password (no guess is checked),
    assert_eq!(sign_in_from(&app, "198.51.100.4", "alice", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    // while alice at home signs in, and other names are untouched.
    assert_eq!(sign_in_from(&app, "192.0.2.1", "alice", PASSWORD).await, StatusCode::OK);
    assert_eq!(sign_in_from(&app, "198.51.100.4", "bob", PASSWORD).await, StatusCode::OK);
}
