//! Credentials that end: a password reset or a role change ends every session, token and live
//! stream a user had, on every instance at once and whatever was in flight; `create-operator`
//! gives the role to nobody by surprise; a create/revoke loop cannot grow the tokens table.

use std::time::Duration;

use backend::identity::tokens::{self, TokenError, TokenRequest};
use backend::identity::{AdminError, Password, Passwords, Username, sessions, users};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::configuration::Settings;
use server::startup::{UserCommandError, create_operator, reset_password};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};

use crate::helpers::{Arrival, CUSTOMER, PASSWORD, TestApp, http_client, signed_in_user, spawn_app, spawn_app_with};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// Who the session cookie names (`auth/me`): a username, or `null`.
async fn signed_in_as(app: &TestApp, cookie: &str) -> Value {
    let me = http_client().build().unwrap().post(format!("{}/api/auth/me", app.address)).header("cookie", cookie);
    let me: Value = me.json(&json!({})).send().await.unwrap().json().await.unwrap();
    me["username"].clone()
}

/// How a query with this bearer token is answered.
async fn token_status(app: &TestApp, token: &str) -> StatusCode {
    let query = http_client().build().unwrap().post(format!("{}/api/queries/accounts", app.address));
    query.bearer_auth(token).json(&json!({})).send().await.unwrap().status()
}

/// Opens a live stream with the session cookie and reads its `ready` event.
async fn open_live_stream(app: &TestApp, cookie: &str) -> reqwest::Response {
    let mut response = http_client()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
        .get(format!("{}/api/live", app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let first = tokio::time::timeout(PATIENCE, response.chunk()).await.expect("the stream says something");
    let first = String::from_utf8(first.unwrap().expect("the stream starts").to_vec()).unwrap();
    assert!(first.contains("event: ready") || first.contains("event:ready"), "{first}");
    response
}

/// Whether the stream ends (the server closes it) within [`PATIENCE`], keep-alives aside.
async fn stream_ends(mut stream: reqwest::Response) -> bool {
    let read_to_end = async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            assert!(!String::from_utf8_lossy(&chunk).contains("event: progress"), "nothing moved meanwhile");
        }
    };
    tokio::time::timeout(PATIENCE, read_to_end).await.is_ok()
}

/// Instances that trust what they looked up for an hour and check their streams hourly: only a
/// notification can make them let go of a credential sooner.
fn remembering_for_an_hour(settings: &mut Settings) {
    settings.callers_remembered_for = Duration::from_secs(3600);
    settings.live_recheck = Duration::from_secs(3600);
}

#[sqlx::test(migrations = false)]
async fn a_password_reset_ends_every_session_token_and_stream_on_every_instance(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given two instances that remember callers for an hour,
    let first = spawn_app_with(db.clone(), remembering_for_an_hour).await;
    let second = spawn_app_with(db.clone(), remembering_for_an_hour).await;
    // and alice signed in, her session and token remembered by both, her live stream open,
    let alice = signed_in_user(&second.address, Arrival::SignIn, CUSTOMER, PASSWORD).await;
    for app in [&first, &second] {
        assert_eq!(signed_in_as(app, &alice.cookie).await, json!(CUSTOMER));
        assert_eq!(token_status(app, &alice.token).await, StatusCode::OK);
    }
    let stream = open_live_stream(&first, &alice.cookie).await;

    // when an administrator resets her password from the command line (reaching no instance),
    reset_password(&db, None, CUSTOMER, NEW_PASSWORD).await.expect("the password is reset");

    // then both instances refuse her old session and token, long before they would forget them,
    eventually("the old credentials refused on both instances", PATIENCE, || async {
        let mut answers = Vec::new();
        for app in [&first, &second] {
            answers.push((signed_in_as(app, &alice.cookie).await, token_status(app, &alice.token).await));
        }
        when(answers, |answers| answers.iter().all(|answer| *answer == (Value::Null, StatusCode::UNAUTHORIZED)))
    })
    .await;
    // her live stream ends,
    assert!(stream_ends(stream).await, "the stream opened with the old session ends");
    // and only the new password signs in.
    let sign_in = |password: &'static str| {
        let url = format!("{}/api/auth/sign-in", first.address);
        async move {
            let body = json!({"username": CUSTOMER, "password": password});
            http_client().build().unwrap().post(url).json(&body).send().await.unwrap().status()
        }
    };
    assert_eq!(sign_in(PASSWORD).await, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(NEW_PASSWORD).await, StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn a_sign_in_or_a_token_begun_before_a_reset_is_refused_after_it(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db.clone()).await;
    let (passwords, alice) = (Passwords::new(), Username::parse(CUSTOMER).unwrap());
    // Given a sign-in that has checked alice's old password and not yet started its session,
    let checked = users::check_password(&app.pool, &passwords, &alice, PASSWORD).await.unwrap().expect("her password");
    // and her caller as an instance remembers it (a thief's session, say),
    let thief = app.sign_in(CUSTOMER).await;
    let session = sessions::from_cookie_header(&thief.cookie, false).expect("a session cookie");
    let remembered = sessions::find(&app.pool, &session).await.unwrap().expect("the session names her");
    // (a session signed out, which another instance may still remember, makes no token either)
    let signed_out = app.sign_in(CUSTOMER).await;
    let signed_out = sessions::from_cookie_header(&signed_out.cookie, false).expect("a session cookie");
    let remembered_then_ended = sessions::find(&app.pool, &signed_out).await.unwrap().expect("her session");
    sessions::end(&app.pool, &signed_out).await.unwrap();
    let minted =
        tokens::create(&app.pool, &remembered_then_ended, &signed_out, &TokenRequest::full("after sign-out")).await;
    assert!(matches!(minted, Err(TokenError::CredentialsChanged)), "{minted:?}");
    // when her password is reset,
    users::reset_password(&app.pool, &passwords, &alice, &Password::parse(NEW_PASSWORD).unwrap()).await.unwrap();
    // then that sign-in starts no session, and the remembered caller makes no token.
    assert!(sessions::start(&app.pool, &checked, "a browser").await.unwrap().is_none(), "no session after the reset");
    let minted = tokens::create(&app.pool, &remembered, &session, &TokenRequest::full("kept by the thief")).await;
    assert!(matches!(minted, Err(TokenError::CredentialsChanged)), "{minted:?}");

    // And over HTTP, two sign-ins with the old password racing a reset: whichever way they
    // interleave, no session either of them got works once the reset is done.
    let sign_in = || {
        let url = format!("{}/api/auth/sign-in", app.address);
        tokio::spawn(async move {
            let body = json!({"username": CUSTOMER, "password": NEW_PASSWORD});
            let response = http_client().build().unwrap().post(url).json(&body).send().await.unwrap();
            (response.status() == StatusCode::OK).then(|| crate::helpers::session_cookie(&response))
        })
    };
    let in_flight = [sign_in(), sign_in()];
    reset_password(&db, None, CUSTOMER, "yet another passphrase").await.unwrap();
    for sign_in in in_flight {
        if let Some(cookie) = sign_in.await.unwrap() {
            eventually("a racing sign-in's session refused", PATIENCE, || async {
                when(signed_in_as(&app, &cookie).await, Value::is_null)
            })
            .await;
        }
    }
}

#[sqlx::test(migrations = false)]
async fn create_operator_promotes_an_existing_customer_only_when_told_to(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db.clone()).await;
    // Given a customer who registered the name an administrator meant for a new operator,
    let mallory = app.sign_up("mallory1").await;
    // when the administrator runs create-operator with that name, it is refused, and nothing
    // about the customer changes;
    let refused = create_operator(&db, None, "mallory1", "an operator's password", false).await;
    assert!(matches!(refused, Err(UserCommandError::Refused(AdminError::IsCustomer(_)))), "{refused:?}");
    let me: Value = as_browser(&app, &mallory.cookie, "/api/auth/me", json!({})).await.json().await.unwrap();
    assert_eq!(me["role"], "customer");
    // told to promote, they become an operator whose old session and token are worth nothing.
    create_operator(&db, None, "mallory1", "an operator's password", true).await.expect("promoted");
    eventually("the customer's credentials ended", PATIENCE, || async {
        when((signed_in_as(&app, &mallory.cookie).await, token_status(&app, &mallory.token).await), |answer| {
            *answer == (Value::Null, StatusCode::UNAUTHORIZED)
        })
    })
    .await;
    // An operator is never changed by create-operator, and an unknown name has no password to reset.
    let again = create_operator(&db, None, "mallory1", "another password", true).await;
    assert!(matches!(again, Err(UserCommandError::Refused(AdminError::AlreadyOperator(_)))), "{again:?}");
    let unknown = reset_password(&db, None, "nobody", "a password of theirs").await;
    assert!(matches!(unknown, Err(UserCommandError::Refused(AdminError::Unknown(_)))), "{unknown:?}");
}

#[sqlx::test(migrations = false)]
async fn a_create_and_revoke_loop_keeps_the_tokens_table_bounded(_: PgPoolOptions, db: PgConnectOptions) {
    // (A burst of requests waits for the test's two connections as long as it takes.)
    let app = spawn_app_with(db, |settings| settings.acquire_timeout = PATIENCE).await;
    let alice = app.sign_in(CUSTOMER).await;
    let session = http_client().build().unwrap();
    let call = |path: &str, body: Value| {
        session.post(format!("{}/api/tokens/{path}", app.address)).header("cookie", &alice.cookie).json(&body).send()
    };
    // Given alice making and revoking tokens, over and over,
    for round in 0..(tokens::MAX_ACTIVE_PER_USER + tokens::KEPT_REVOKED_PER_USER + 10) {
        let body = json!({"name": format!("loop {round}"), "password": PASSWORD});
        let made: Value = call("create", body).await.unwrap().json().await.unwrap();
        let revoked = call("revoke", json!({"tokenId": made["tokenId"]})).await.unwrap();
        assert_eq!(revoked.status(), StatusCode::OK);
    }
    // then her rows stay bounded: the newest revoked ones are kept for her tokens page.
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens JOIN users USING (user_id) WHERE username = $1")
            .bind(CUSTOMER)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(rows <= tokens::MAX_ACTIVE_PER_USER + tokens::KEPT_REVOKED_PER_USER, "{rows} rows");

    // And concurrent requests cannot pass the cap on active tokens together.
    let active_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens JOIN users USING (user_id) WHERE username = $1 AND revoked_at IS NULL",
    )
    .bind(CUSTOMER)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let made = futures_util::future::join_all((0..tokens::MAX_ACTIVE_PER_USER + 5).map(|round| {
        let request = call("create", json!({"name": format!("burst {round}"), "password": PASSWORD}));
        async move { request.await.unwrap().status() }
    }))
    .await;
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens JOIN users USING (user_id) WHERE username = $1 AND revoked_at IS NULL",
    )
    .bind(CUSTOMER)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // (Each checks her password, two at a time: on a busy machine some may find no turn, 503,
    // and make nothing.)
    let answers = [StatusCode::OK, StatusCode::CONFLICT, StatusCode::SERVICE_UNAVAILABLE];
    assert!(made.iter().all(|status| answers.contains(status)), "{made:?}");
    let made_now = made.iter().filter(|status| **status == StatusCode::OK).count() as i64;
    assert!(active <= tokens::MAX_ACTIVE_PER_USER, "{active} active: {made:?}");
    assert_eq!(active, active_before + made_now, "every token answered as made exists: {made:?}");

    // Revoked tokens past their keeping are purged.
    sqlx::query("UPDATE api_tokens SET revoked_at = now() - interval '31 days' WHERE revoked_at IS NOT NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(tokens::purge_revoked(&app.pool).await.unwrap() > 0);
    let revoked: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(revoked, 0);
}

/// `POST path` with the session cookie and a `User-Agent`; the answer.
async fn as_browser(app: &TestApp, cookie: &str, path: &str, body: Value) -> reqwest::Response {
    http_client()
        .user_agent("a test browser")
        .build()
        .unwrap()
        .post(format!("{}{path}", app.address))
        .header("cookie", cookie)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn changing_ones_password_signs_every_other_browser_out(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    // Given alice signed in in two browsers, with an API token,
    let (here, there) = (app.sign_in(CUSTOMER).await, app.sign_in(CUSTOMER).await);
    // a wrong current password changes nothing, nor can a token change it;
    let body = |current: &str| json!({"currentPassword": current, "newPassword": NEW_PASSWORD});
    let wrong = as_browser(&app, &here.cookie, "/api/auth/change-password", body("not mine")).await;
    assert_eq!(crate::helpers::error_code(wrong, StatusCode::FORBIDDEN).await, "forbidden");
    let weak = json!({"currentPassword": PASSWORD, "newPassword": "short"});
    let weak = as_browser(&app, &here.cookie, "/api/auth/change-password", weak).await;
    assert_eq!(crate::helpers::error_code(weak, StatusCode::BAD_REQUEST).await, "invalid_request");
    assert_eq!(signed_in_as(&app, &there.cookie).await, json!(CUSTOMER), "a refused change ends nothing");
    let with_token = here.client.post(format!("{}/api/auth/change-password", app.address)).json(&body(PASSWORD));
    assert_eq!(with_token.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    // when she changes it in one,
    let changed = as_browser(&app, &here.cookie, "/api/auth/change-password", body(PASSWORD)).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let renewed = crate::helpers::session_cookie(&changed);
    // then that browser goes on with a new session, the other is signed out, her token still works,
    eventually("the other browser signed out", PATIENCE, || async {
        let answers = (signed_in_as(&app, &renewed).await, signed_in_as(&app, &there.cookie).await);
        when(answers, |answers| *answers == (json!(CUSTOMER), Value::Null))
    })
    .await;
    assert_eq!(signed_in_as(&app, &here.cookie).await, Value::Null, "the old session ended too");
    assert_eq!(token_status(&app, &here.token).await, StatusCode::OK, "tokens kept unless asked");
    // and asked to, a change ends her tokens as well.
    let body = json!({"currentPassword": NEW_PASSWORD, "newPassword": PASSWORD, "endTokens": true});
    assert_eq!(as_browser(&app, &renewed, "/api/auth/change-password", body).await.status(), StatusCode::OK);
    eventually("her token refused", PATIENCE, || async {
        when(token_status(&app, &here.token).await, |status| *status == StatusCode::UNAUTHORIZED)
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_user_sees_their_sessions_ends_one_and_signs_out_everywhere(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    // Given alice signed in in two browsers,
    let (here, there) = (app.sign_in(CUSTOMER).await, app.sign_in(CUSTOMER).await);
    let listed = |cookie: String| {
        let app = &app;
        async move { as_browser(app, &cookie, "/api/auth/sessions", json!({})).await.json::<Value>().await.unwrap() }
    };
    // when she lists her sessions, she sees both (and this one marked), never a secret,
    let sessions = listed(here.cookie.clone()).await;
    let sessions = sessions.as_array().expect("a list").clone();
    assert!(sessions.len() >= 2, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == json!(true)).count(), 1, "{sessions:?}");
    let secret = here.cookie.split_once('=').unwrap().1;
    assert!(!Value::Array(sessions.clone()).to_string().contains(secret), "no secret is listed");
    // she ends the other one, which is signed out (bob cannot end hers);
    let there_id = {
        let there_sessions = listed(there.cookie.clone()).await;
        there_sessions.as_array().unwrap().iter().find(|s| s["current"] == json!(true)).unwrap()["sessionId"].clone()
    };
    // (a token, which a program holds and may leak, neither sees nor ends sessions)
    for path in ["/api/auth/sessions", "/api/auth/end-session", "/api/auth/sign-out-everywhere"] {
        let with_token = here.client.post(format!("{}{path}", app.address)).json(&json!({"sessionId": there_id}));
        assert_eq!(with_token.send().await.unwrap().status(), StatusCode::FORBIDDEN, "{path}");
    }
    let by_bob = as_browser(&app, &bob.cookie, "/api/auth/end-session", json!({"sessionId": there_id})).await;
    assert_eq!(crate::helpers::error_code(by_bob, StatusCode::NOT_FOUND).await, "not_found");
    let ended = as_browser(&app, &here.cookie, "/api/auth/end-session", json!({"sessionId": there_id})).await;
    assert_eq!(ended.status(), StatusCode::OK);
    assert_eq!(signed_in_as(&app, &there.cookie).await, Value::Null);
    // and "sign out everywhere" ends this one and every other, and clears this browser's cookie.
    let everywhere = as_browser(&app, &here.cookie, "/api/auth/sign-out-everywhere", json!({})).await;
    assert_eq!(everywhere.status(), StatusCode::OK);
    let cleared = everywhere.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().contains("Max-Age=0"));
    assert!(cleared, "the cookie is cleared");
    assert_eq!(signed_in_as(&app, &here.cookie).await, Value::Null);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions JOIN users USING (user_id) WHERE username = $1")
        .bind(CUSTOMER)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(signed_in_as(&app, &bob.cookie).await, json!("bob"), "nobody else's");
}

#[sqlx::test(migrations = false)]
async fn making_a_token_asks_for_the_password_again(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let alice = app.sign_in(CUSTOMER).await;
    // A session left open (or stolen) does not make a token that outlives it without the password.
    let without =
        as_browser(&app, &alice.cookie, "/api/tokens/create", json!({"name": "x", "password": "guess"})).await;
    assert_eq!(crate::helpers::error_code(without, StatusCode::FORBIDDEN).await, "forbidden");
    let with = as_browser(&app, &alice.cookie, "/api/tokens/create", json!({"name": "x", "password": PASSWORD})).await;
    assert_eq!(with.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn a_token_may_be_made_to_read_only_to_scrape_only_or_to_expire(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("alice", 10.0).await;
    let account = created["accountId"].as_str().unwrap().to_owned();
    // Read below without `after`: the read model must have the account first.
    app.account_after(&account, created["position"].as_str().unwrap()).await;
    let alice = app.sign_in(CUSTOMER).await;
    let make = |cookie: String, body: Value| {
        let app = &app;
        async move {
            let made = as_browser(app, &cookie, "/api/tokens/create", body).await;
            assert_eq!(made.status(), StatusCode::OK);
            let made: Value = made.json().await.unwrap();
            (made["token"].as_str().unwrap().to_owned(), made)
        }
    };
    let body = json!({"accountId": account, "amount": 1});
    let with = |token: &str, method: reqwest::Method, path: &str| {
        let request = http_client().build().unwrap().request(method, format!("{}{path}", app.address));
        request.bearer_auth(token).json(&body).send()
    };
    use reqwest::Method;
    // A read-only token reads, and does nothing else;
    let (reader, _) =
        make(alice.cookie.clone(), json!({"name": "reader", "password": PASSWORD, "scope": "read"})).await;
    let one = format!("/api/queries/accounts/{account}");
    assert_eq!(with(&reader, Method::GET, &one).await.unwrap().status(), StatusCode::OK);
    assert_eq!(with(&reader, Method::POST, "/api/queries/accounts").await.unwrap().status(), StatusCode::OK);
    let deposit = with(&reader, Method::POST, "/api/commands/deposit").await.unwrap();
    assert_eq!(crate::helpers::error_code(deposit, StatusCode::FORBIDDEN).await, "forbidden");
    assert_eq!(with(&reader, Method::POST, "/api/tokens/list").await.unwrap().status(), StatusCode::FORBIDDEN);
    // an operator's scraper token scrapes /metrics, and reads nothing;
    let olga = app.operator("olga").await;
    let (scraper, _) =
        make(olga.cookie.clone(), json!({"name": "prometheus", "password": PASSWORD, "scope": "metrics"})).await;
    assert_eq!(with(&scraper, Method::GET, "/metrics").await.unwrap().status(), StatusCode::OK);
    assert_eq!(with(&scraper, Method::POST, "/api/queries/accounts").await.unwrap().status(), StatusCode::FORBIDDEN);
    // a token made to last a day works until it expires.
    let (daily, made) =
        make(alice.cookie.clone(), json!({"name": "for a day", "password": PASSWORD, "expiresInDays": 1})).await;
    assert!(made["expiresAt"].is_string(), "{made}");
    assert_eq!(with(&daily, Method::POST, "/api/queries/accounts").await.unwrap().status(), StatusCode::OK);
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'for a day'")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually("the expired token refused", PATIENCE, || async {
        when(with(&daily, Method::POST, "/api/queries/accounts").await.unwrap().status(), |status| {
            *status == StatusCode::UNAUTHORIZED
        })
    })
    .await;
    // Scopes and lifetimes it does not know are refused.
    for body in [
        json!({"name": "x", "password": PASSWORD, "scope": "admin"}),
        json!({"name": "x", "password": PASSWORD, "expiresInDays": 0}),
        json!({"name": "x", "password": PASSWORD, "expiresInDays": 366}),
    ] {
        let refused = as_browser(&app, &alice.cookie, "/api/tokens/create", body.clone()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
    }
}
