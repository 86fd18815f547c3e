//! Forgetting a person in an immutable log (crypto-shredding), end to end against a real server
//! process, Postgres and Redis: afterwards nothing the server can reach holds their name, the
//! money is unchanged to the cent, and a rebuild brings none of it back.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};

use crate::helpers::{Arrival, PASSWORD, User, ensure_operator, error_code, signed_in_user, wait_for_projections};
use crate::processes::{OPERATOR, ServerProcess, spawn_server_with};
use crate::redis_store::RedisSpace;

/// A server process sealing personal data with a key file of the test's own, over a Redis
/// read store of the test's own.
fn sealing_server(db: &PgConnectOptions, redis: &RedisSpace, key_file: &std::path::Path) -> ServerProcess {
    let env = [
        ("MASTER_KEY_FILE", key_file.display().to_string()),
        ("REDIS_URL", redis.url.clone()),
        ("REDIS_KEY_PREFIX", redis.prefix.clone()),
    ];
    spawn_server_with(db, "forgetting", &env)
}

/// A sealing server process, its operator, the test's own pool and Redis space.
struct Sealing {
    server: ServerProcess,
    operator: User,
    pool: PgPool,
    redis: RedisSpace,
    _key: tempfile_path::Path,
}

impl Sealing {
    async fn start(pool_options: PgPoolOptions, db: &PgConnectOptions) -> Sealing {
        let redis = RedisSpace::shared();
        let key = key_file();
        let server = sealing_server(db, &redis, &key);
        ensure_operator(db, OPERATOR).await;
        let operator = signed_in_user(&server.address, Arrival::SignIn, OPERATOR, PASSWORD).await;
        let pool = pool_options.connect_with(db.clone()).await.unwrap();
        Sealing { server, operator, pool, redis, _key: key }
    }
}

fn key_file() -> tempfile_path::Path {
    tempfile_path::Path::new(&backend::personal::MasterKey::generate())
}

/// A file removed when dropped (the tests' master key).
mod tempfile_path {
    pub struct Path(std::path::PathBuf);
    impl Path {
        pub fn new(contents: &str) -> Path {
            let path = std::env::temp_dir().join(format!("cqrs-bank-test-key-{}", uuid::Uuid::new_v4()));
            std::fs::write(&path, contents).expect("the key file is written");
            Path(path)
        }
    }
    impl std::ops::Deref for Path {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn post(client: &reqwest::Client, server: &ServerProcess, path: &str, body: Value) -> reqwest::Response {
    client.post(format!("{}{path}", server.address)).json(&body).send().await.expect("the request is answered")
}

async fn ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A session-only client of `user` (forgetting oneself is done from a browser).
fn browser(user: &User) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, user.cookie.parse().unwrap());
    crate::helpers::http_client().default_headers(headers).build().unwrap()
}

/// Every row of every table of the database, as text, that contains `needle`.
async fn rows_containing(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for table in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM {table} t WHERE strpos(lower(t::text), lower($1)) > 0"))
                .bind(needle)
                .fetch_all(pool)
                .await
                .unwrap();
        found.extend(rows.into_iter().map(|row| format!("{table}: {row}")));
    }
    found
}

/// Every key of the test's Redis space whose name or value contains `needle`.
fn redis_keys_containing(redis: &RedisSpace, needle: &str) -> Vec<String> {
    let mut connection = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", redis.prefix)).query(&mut connection).unwrap();
    let mut found = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut connection).unwrap();
        let values: Vec<String> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut connection).unwrap(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(&mut connection).unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut connection).unwrap(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(&mut connection).unwrap(),
            "string" => vec![redis::cmd("GET").arg(&key).query(&mut connection).unwrap()],
            _ => vec![],
        };
        if std::iter::once(&key).chain(&values).any(|text| text.to_lowercase().contains(&needle.to_lowercase())) {
            found.push(format!("{key} ({kind}): {values:?}"));
        }
    }
    found
}

/// Every projection's status, as operators read it.
async fn projections(operator: &reqwest::Client, server: &ServerProcess) -> Vec<Value> {
    let status = ok(post(operator, server, "/api/operations/projections", json!({})).await).await;
    status.as_array().cloned().unwrap_or_default()
}

/// Every projection rebuilt from the first event, and running again.
async fn rebuild_everything(operator: &reqwest::Client, server: &ServerProcess) {
    let names: Vec<String> = projections(operator, server)
        .await
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .filter(|name| name != "transfer_process")
        .collect();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        ok(post(
            operator,
            server,
            "/api/operations/rebuild-projection",
            json!({"name": name, "reason": "erasure test"}),
        )
        .await)
        .await;
    }
    eventually("every projection rebuilt and caught up", PATIENCE, || async {
        let all = projections(operator, server).await;
        let done = all.iter().filter(|p| names.iter().any(|n| p["name"] == n.as_str())).all(|p| {
            p["state"] == "running" && p["rebuild"].is_null() && p["lagEvents"] == 0 && p["lastError"].is_null()
        });
        when((done, all), |(done, _)| *done)
    })
    .await;
}

/// Balances and owners of the accounts, as the Postgres read model has them.
async fn summary(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT account_id::text, owner_id, current_balance::text FROM account_summary ORDER BY account_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_forgotten_customer_leaves_no_readable_trace_and_a_rebuild_brings_none_back(
    pool_options: PgPoolOptions,
    db: PgConnectOptions,
) {
    let Sealing { server, operator, pool, redis, _key } = Sealing::start(pool_options, &db).await;

    // Given zoe, a customer who opened an account, moved money to bob's, and closed it; her
    // account was frozen once by an operator, with a reason that names her.
    let name = format!("zoe-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let zoe = signed_in_user(&server.address, Arrival::SignUp, &name, PASSWORD).await;
    let bob = signed_in_user(&server.address, Arrival::SignUp, "bob", PASSWORD).await;
    let opened = ok(post(
        &zoe.client,
        &server,
        "/api/commands/create-account",
        json!({"ownerId": name, "initialBalance": "100.10"}),
    )
    .await)
    .await;
    let account = opened["accountId"].as_str().unwrap().to_owned();
    let bobs = ok(post(
        &bob.client,
        &server,
        "/api/commands/create-account",
        json!({"ownerId": "bob", "initialBalance": "1"}),
    )
    .await)
    .await;
    let bobs = bobs["accountId"].as_str().unwrap().to_owned();
    let reason = format!("checking {name}'s papers");
    ok(post(
        &operator.client,
        &server,
        "/api/commands/freeze-account",
        json!({"accountId": account, "reason": reason}),
    )
    .await)
    .await;
    // Refused while frozen: the refusal quotes the reason to her, and is remembered.
    let refused =
        post(&zoe.client, &server, "/api/commands/deposit", json!({"accountId": account, "amount": "1"})).await;
    assert_eq!(error_code(refused, StatusCode::UNPROCESSABLE_ENTITY).await, "account_frozen");
    ok(post(&operator.client, &server, "/api/commands/unfreeze-account", json!({"accountId": account})).await).await;
    ok(post(
        &zoe.client,
        &server,
        "/api/commands/transfer",
        json!({"fromAccountId": account, "toAccountId": bobs, "amount": "60.10"}),
    )
    .await)
    .await;
    ok(post(&zoe.client, &server, "/api/commands/withdraw", json!({"accountId": account, "amount": "40"})).await).await;
    // The transfer runs in the background: her balance reaches 0 once it has.
    eventually("the transfer done and the account empty", PATIENCE, || async {
        let response = post(&zoe.client, &server, "/api/commands/close-account", json!({"accountId": account})).await;
        when(response.status(), |status| *status == StatusCode::OK)
    })
    .await;

    // Her name is sealed in the log from the start: no event holds it in clear.
    let in_clear: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE strpos(data::text || metadata::text, $1) > 0")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(in_clear, 0, "personal data is sealed when written");

    // A customer with an open account is refused, and nothing is written (the transfer's last
    // steps may still be appended meanwhile: only the forgetting's own events are counted).
    let forgettings = "SELECT count(*) FROM events WHERE event_type IN ('OwnerForgotten', 'UserForgotten')";
    let refused = post(&browser(&bob), &server, "/api/auth/forget-me", json!({"password": PASSWORD})).await;
    assert_eq!(error_code(refused, StatusCode::CONFLICT).await, "conflict");
    let wrong_password =
        post(&browser(&zoe), &server, "/api/auth/forget-me", json!({"password": "not her password"})).await;
    assert_eq!(wrong_password.status(), StatusCode::FORBIDDEN);
    let with_a_token = post(&zoe.client, &server, "/api/auth/forget-me", json!({"password": PASSWORD})).await;
    assert_eq!(with_a_token.status(), StatusCode::FORBIDDEN, "a token cannot forget its user");
    assert_eq!(sqlx::query_scalar::<_, i64>(forgettings).fetch_one(&pool).await.unwrap(), 0);
    wait_for_projections(&pool).await;
    let money_before: Vec<_> = summary(&pool).await.into_iter().map(|(id, _, balance)| (id, balance)).collect();

    // When she asks to be forgotten.
    let forgotten = ok(post(&browser(&zoe), &server, "/api/auth/forget-me", json!({"password": PASSWORD})).await).await;
    assert_eq!(forgotten["accounts"], json!([account]));

    // Then she is signed out everywhere, her token ends, and her name cannot be taken yet.
    let session = post(&browser(&zoe), &server, "/api/queries/accounts", json!({})).await;
    assert_eq!(session.status(), StatusCode::UNAUTHORIZED);
    let token = post(&zoe.client, &server, "/api/queries/accounts", json!({})).await;
    assert_eq!(token.status(), StatusCode::UNAUTHORIZED);
    let again = crate::helpers::http_client()
        .build()
        .unwrap()
        .post(format!("{}/api/auth/sign-up", server.address))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "conflict");

    // And once the read models have followed, nothing the server can reach holds her name:
    // not the log, not a table, not Redis, not the server's own log; the operator's reason,
    // about her, was sealed with her key and is forgotten with her.
    wait_for_projections(&pool).await;
    eventually("the Redis store forgot her", PATIENCE, || async {
        when(redis_keys_containing(&redis, &name), Vec::is_empty)
    })
    .await;
    assert_eq!(rows_containing(&pool, &name).await, Vec::<String>::new());
    let view = ok(post(&operator.client, &server, "/api/queries/account", json!({"accountId": account})).await).await;
    assert_eq!(view["ownerId"], "(forgotten)", "{view}");
    let at_first =
        ok(post(&operator.client, &server, "/api/queries/account-at", json!({"accountId": account, "version": 1}))
            .await)
        .await;
    assert_eq!(at_first["ownerId"], "(forgotten)", "time travel: {at_first}");
    let trail =
        ok(post(&operator.client, &server, "/api/queries/account-history", json!({"accountId": account})).await).await;
    let entries = trail["entries"].as_array().unwrap();
    // Her own commands name her as forgotten; the transfer's steps name nobody; the operator's
    // name the operator.
    let actors: Vec<&Value> = entries.iter().map(|e| &e["actor"]).collect();
    assert!(actors.iter().all(|a| a.is_null() || *a == "(forgotten)" || *a == OPERATOR), "{trail}");
    assert_eq!(actors.iter().filter(|a| **a == "(forgotten)").count(), 4, "{trail}");
    assert!(entries.iter().any(|e| e["eventType"] == "AccountFrozen" && e["reason"] == "(forgotten)"), "{trail}");
    assert!(entries.iter().all(|e| e["reason"] != reason.as_str()), "{trail}");
    assert!(server.log_lines().iter().all(|line| !line.contains(&name)), "the server's log names her");
    let status = ok(post(&operator.client, &server, "/api/operations/personal-data", json!({})).await).await;
    assert_eq!((status["sealed"].clone(), status["forgotten"].clone()), (json!(true), json!(1)), "{status}");

    // And a rebuild of every projection from the log brings none of it back, and the money is
    // the same to the cent.
    rebuild_everything(&operator.client, &server).await;
    wait_for_projections(&pool).await;
    assert_eq!(rows_containing(&pool, &name).await, Vec::<String>::new());
    assert_eq!(redis_keys_containing(&redis, &name), Vec::<String>::new());
    let after = summary(&pool).await;
    let money_after: Vec<_> = after.iter().map(|(id, _, balance)| (id.clone(), balance.clone())).collect();
    assert_eq!(money_after, money_before);
    assert!(after.iter().any(|(id, owner, _)| *id == account && owner == "(forgotten)"), "{after:?}");
    assert!(after.iter().any(|(id, owner, _)| *id == bobs && owner == "bob"), "{after:?}");
}

#[sqlx::test(migrations = false)]
async fn an_operator_forgets_a_customer_with_a_reason_the_log_keeps_sealed(
    pool_options: PgPoolOptions,
    db: PgConnectOptions,
) {
    let Sealing { server, operator, pool, redis: _, _key } = Sealing::start(pool_options, &db).await;
    let name = format!("carl-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let carl = signed_in_user(&server.address, Arrival::SignUp, &name, PASSWORD).await;
    let opened = ok(post(
        &carl.client,
        &server,
        "/api/commands/create-account",
        json!({"ownerId": name, "initialBalance": "0"}),
    )
    .await)
    .await;
    let account = opened["accountId"].as_str().unwrap().to_owned();

    // Refused while his account is open; an operator is not forgotten through this lever; a
    // reason is required; an unknown name is 404.
    let open = post(
        &operator.client,
        &server,
        "/api/operations/forget-user",
        json!({"username": name, "reason": "asked by letter"}),
    )
    .await;
    assert_eq!(error_code(open, StatusCode::CONFLICT).await, "conflict");
    let no_reason =
        post(&operator.client, &server, "/api/operations/forget-user", json!({"username": name, "reason": " "})).await;
    assert_eq!(no_reason.status(), StatusCode::BAD_REQUEST);
    let unknown = post(
        &operator.client,
        &server,
        "/api/operations/forget-user",
        json!({"username": "nobody-here", "reason": "x"}),
    )
    .await;
    assert_eq!(error_code(unknown, StatusCode::NOT_FOUND).await, "not_found");
    let an_operator =
        post(&operator.client, &server, "/api/operations/forget-user", json!({"username": OPERATOR, "reason": "x"}))
            .await;
    assert_eq!(error_code(an_operator, StatusCode::CONFLICT).await, "conflict");
    let by_a_customer =
        post(&carl.client, &server, "/api/operations/forget-user", json!({"username": name, "reason": "x"})).await;
    assert_eq!(by_a_customer.status(), StatusCode::FORBIDDEN);

    ok(post(&carl.client, &server, "/api/commands/close-account", json!({"accountId": account})).await).await;
    let reason = "erasure request 4711 received by letter";
    let forgotten =
        ok(post(&operator.client, &server, "/api/operations/forget-user", json!({"username": name, "reason": reason}))
            .await)
        .await;
    assert_eq!(forgotten["accounts"], json!([account]));

    // The log records who asked and why, the reason sealed with the operator's key.
    let (by, sealed_reason): (String, Value) =
        sqlx::query_as("SELECT data ->> 'by', data -> 'reason' FROM events WHERE event_type = 'UserForgotten'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(by, "operator");
    assert!(sealed_reason["ciphertext"].is_string() && !sealed_reason.to_string().contains("4711"), "{sealed_reason}");
    let carls = post(&carl.client, &server, "/api/queries/accounts", json!({})).await;
    assert_eq!(carls.status(), StatusCode::UNAUTHORIZED);
    eventually("the read model forgot him", PATIENCE, || async {
        when(rows_containing(&pool, &name).await, Vec::is_empty)
    })
    .await;
    // Forgetting twice finds nobody.
    let twice =
        post(&operator.client, &server, "/api/operations/forget-user", json!({"username": name, "reason": reason}))
            .await;
    assert_eq!(error_code(twice, StatusCode::NOT_FOUND).await, "not_found");
}

#[sqlx::test(migrations = false)]
async fn names_written_in_clear_before_sealing_are_re_stated_as_forgotten_not_rewritten(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given an account opened on a server without a master key: its owner's name is in clear.
    let before = crate::helpers::spawn_app_with(db.clone(), |settings| settings.master_keys = None).await;
    let name = format!("early-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let early = before.sign_up(&name).await;
    let opened = early
        .client
        .post(format!("{}/api/commands/create-account", before.address))
        .json(&json!({"ownerId": name, "initialBalance": "0"}))
        .send()
        .await
        .unwrap();
    let account = ok(opened).await["accountId"].as_str().unwrap().to_owned();
    let forget = post_to(&before.address, &browser(&early), "/api/auth/forget-me", json!({"password": PASSWORD})).await;
    assert_eq!(error_code(forget, StatusCode::CONFLICT).await, "conflict", "no master key, no erasure");
    let closed = early
        .client
        .post(format!("{}/api/commands/close-account", before.address))
        .json(&json!({"accountId": account}))
        .send()
        .await
        .unwrap();
    ok(closed).await;
    before.stop();

    // When, on a server that seals, they ask to be forgotten.
    let after = crate::helpers::spawn_app(db).await;
    let forgotten =
        post_to(&after.address, &browser(&early), "/api/auth/forget-me", json!({"password": PASSWORD})).await;
    assert_eq!(ok(forgotten).await["accounts"], json!([account]));

    // Then the log still holds the name as it was written (events are never changed), but
    // every read of it says forgotten: the read model, time travel, the audit trail.
    let in_clear: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE strpos(data::text, $1) > 0")
        .bind(&name)
        .fetch_one(&after.pool)
        .await
        .unwrap();
    assert_eq!(in_clear, 1, "the creation event, as written");
    wait_for_projections(&after.pool).await;
    let operator = after.operator_client().await;
    let view =
        ok(post_to(&after.address, &operator, "/api/queries/account", json!({"accountId": account})).await).await;
    assert_eq!(view["ownerId"], "(forgotten)");
    let at_first =
        post_to(&after.address, &operator, "/api/queries/account-at", json!({"accountId": account, "version": 1}))
            .await;
    assert_eq!(ok(at_first).await["ownerId"], "(forgotten)");
    let trail = post_to(&after.address, &operator, "/api/queries/account-history", json!({"accountId": account})).await;
    let trail = ok(trail).await;
    assert!(trail["entries"].as_array().unwrap().iter().all(|e| e["actor"] == "(forgotten)"), "{trail}");
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT owner_id FROM account_summary").fetch_all(&after.pool).await.unwrap();
    assert_eq!(owners, ["(forgotten)"]);
}

async fn post_to(address: &str, client: &reqwest::Client, path: &str, body: Value) -> reqwest::Response {
    client.post(format!("{address}{path}")).json(&body).send().await.expect("the request is answered")
}
