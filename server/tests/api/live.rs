//! The live stream (`GET /api/live`): what the read model learns reaches subscribers as it
//! learns it, a client coming back misses nothing and gets nothing twice, streams are capped and
//! end with the server.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::collections::HashSet;

use testkit::{PATIENCE, eventually, when};

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Message {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A live stream being read.
struct Subscriber {
    response: Response,
    buffer: String,
}

impl Subscriber {
    async fn open(app: &TestApp, last_event_id: Option<&str>) -> Subscriber {
        Subscriber::open_at(app, "/api/live", last_event_id).await
    }

    async fn open_at(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Subscriber {
        // An operator: they hear of every account (a customer hears of their own, see below).
        let mut request = app.operator_client().await.get(format!("{}{path}", app.address));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut subscriber = Subscriber { response, buffer: String::new() };
        let ready = subscriber.next().await.expect("the stream starts with `ready`");
        assert_eq!(ready.event, "ready");
        subscriber
    }

    /// The next event (keep-alive comments skipped); `None` once the stream has ended.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message { event: "message".into(), id: None, data: Value::Null };
                let mut any = false;
                for line in block.lines() {
                    if let Some(event) = line.strip_prefix("event:") {
                        message.event = event.trim().to_owned();
                        any = true;
                    } else if let Some(id) = line.strip_prefix("id:") {
                        message.id = Some(id.trim().to_owned());
                    } else if let Some(data) = line.strip_prefix("data:") {
                        message.data = serde_json::from_str(data.trim()).unwrap();
                    }
                }
                if any {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream says something")
                .expect("the stream reads");
            self.buffer.push_str(std::str::from_utf8(&chunk?).unwrap());
        }
    }

    /// Progress messages until every account in `expected` has been named; returns them all.
    async fn until_named(&mut self, expected: &[&str]) -> Vec<Message> {
        let mut seen = Vec::new();
        let mut named = HashSet::new();
        while !expected.iter().all(|account| named.contains(*account)) {
            let message = self.next().await.expect("the stream goes on");
            assert_eq!(message.event, "progress", "{message:?}");
            assert_eq!(message.data["everything"], json!(false), "{message:?}");
            for account in message.data["accounts"].as_array().unwrap() {
                named.insert(account.as_str().unwrap().to_owned());
            }
            seen.push(message);
        }
        seen
    }
}

fn named(messages: &[Message], field: &str) -> Vec<String> {
    messages
        .iter()
        .flat_map(|message| message.data[field].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()))
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_subscriber_hears_which_accounts_changed_as_the_read_model_applies_them(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let mut live = Subscriber::open(&app, None).await;

    let created = app.create_account("alice", 10.0).await;
    let account = created["accountId"].as_str().unwrap();
    let opened = live.until_named(&[account]).await;
    assert_eq!(named(&opened, "opened"), [account]);
    let last = opened.last().unwrap();
    assert!(last.id.as_deref() == last.data["position"].as_str(), "the event id is its position: {last:?}");
    let position: eventstore::Position = last.id.as_deref().unwrap().parse().unwrap();
    let token: eventstore::Position = created["position"].as_str().unwrap().parse().unwrap();
    assert!(position >= token, "named only once the read model has applied it");

    app.deposit(account, 5).await;
    let deposited = live.until_named(&[account]).await;
    assert!(named(&deposited, "opened").is_empty(), "{deposited:?}");
    let body = app.get(&format!("/api/queries/accounts/{account}")).await.json::<Value>().await.unwrap();
    assert_eq!(body["currentBalance"], json!(15.0), "the read model had it when the message came");
}

#[sqlx::test(migrations = false)]
async fn a_client_coming_back_gets_every_change_since_its_last_event_once(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let mut live = Subscriber::open(&app, None).await;
    let first = app.account_id("alice", 10.0).await;
    let heard = live.until_named(&[&first]).await;
    let last_id = heard.last().unwrap().id.clone().unwrap();
    drop(live);

    // Away: two new accounts and a deposit to the first.
    let second = app.account_id("alice", 20.0).await;
    let third = app.account_id("alice", 30.0).await;
    app.deposit(&first, 1).await;
    app.wait_for_projection().await;

    let mut back = Subscriber::open(&app, Some(&last_id)).await;
    // The first message after `ready` is the catch-up, read from the store: all of it at once.
    let caught_up = vec![back.next().await.expect("the catch-up")];
    assert_eq!(caught_up[0].event, "progress");
    let mut accounts = named(&caught_up, "accounts");
    accounts.sort();
    let mut expected = vec![first.clone(), second.clone(), third.clone()];
    expected.sort();
    assert_eq!(accounts, expected, "each change since the last event, once");
    let mut opened = named(&caught_up, "opened");
    opened.sort();
    let mut new_ones = vec![second.clone(), third.clone()];
    new_ones.sort();
    assert_eq!(opened, new_ones);

    // Then the feed goes on, without repeating the catch-up.
    let fourth = app.account_id("alice", 40.0).await;
    let next = back.until_named(&[&fourth]).await;
    assert_eq!(named(&next, "accounts"), [fourth]);

    let garbage = app.client.get(format!("{}/api/live", app.address)).header("last-event-id", "yesterday").send().await;
    assert_eq!(error_code(garbage.unwrap(), StatusCode::BAD_REQUEST).await, "invalid_request");
}

#[sqlx::test(migrations = false)]
async fn live_streams_are_capped_per_client_and_in_all(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db.clone(), |settings| settings.max_live_streams_per_client = 2).await;
    let one = Subscriber::open(&app, None).await;
    let _two = Subscriber::open(&app, None).await;
    let operator = app.operator_client().await;
    let third = operator.get(format!("{}/api/live", app.address)).send().await.unwrap();
    assert_eq!(error_code(third, StatusCode::TOO_MANY_REQUESTS).await, "too_many_requests");
    // Queries and commands are not streams: they go on.
    app.create_account("alice", 1.0).await;
    // A stream's place is given back when its client goes away.
    drop(one);
    eventually("the place of a closed stream given back", PATIENCE, || async {
        let again = operator.get(format!("{}/api/live", app.address)).send().await.unwrap();
        assert!(matches!(again.status(), StatusCode::OK | StatusCode::TOO_MANY_REQUESTS), "{}", again.status());
        when(again.status(), |&status| status == StatusCode::OK)
    })
    .await;

    let total = spawn_app_with(db, |settings| settings.max_live_streams = 1).await;
    let _only = Subscriber::open(&total, None).await;
    // The cap in all counts every user's streams.
    let refused = total.client.get(format!("{}/api/live", total.address)).send().await.unwrap();
    assert_eq!(error_code(refused, StatusCode::TOO_MANY_REQUESTS).await, "too_many_requests");
}

#[sqlx::test(migrations = false)]
async fn live_streams_end_when_the_server_stops(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let mut live = Subscriber::open(&app, None).await;
    app.stop();
    // Its end is read: the server ends it, rather than the stream going on or breaking off.
    let ended = tokio::time::timeout(PATIENCE, live.next()).await;
    assert!(matches!(ended, Ok(None)), "the stream ends with the server: {ended:?}");
}

#[sqlx::test(migrations = false)]
async fn every_instance_tells_its_subscribers_whichever_instance_applied_the_batch(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let first = spawn_app(db.clone()).await;
    let second = spawn_app(db).await;
    let mut on_first = Subscriber::open(&first, None).await;
    let mut on_second = Subscriber::open(&second, None).await;
    // One instance leads the projection; the other hears its batches through NOTIFY.
    let account = second.account_id("alice", 3.0).await;
    on_first.until_named(&[&account]).await;
    on_second.until_named(&[&account]).await;
}

#[sqlx::test(migrations = false)]
async fn a_subscriber_watching_some_accounts_hears_only_of_them(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let mine = app.account_id("alice", 10.0).await;
    let other = app.account_id("alice", 10.0).await;
    app.wait_for_projection().await;
    let mut live = Subscriber::open_at(&app, &format!("/api/live?accounts={mine}"), None).await;

    app.deposit(&other, 1).await;
    app.account_id("alice", 1.0).await;
    app.wait_for_projection().await;
    app.deposit(&mine, 1).await;
    let heard = live.next().await.expect("a message");
    assert_eq!(heard.event, "progress");
    assert_eq!(heard.data["accounts"], json!([mine]), "only what it watches: {heard:?}");

    for bad in ["/api/live?accounts=yesterday", "/api/live?accounts="] {
        let response = app.client.get(format!("{}{bad}", app.address)).send().await.unwrap();
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request", "{bad}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_customer_hears_only_of_their_own_accounts(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    let mine = app.account_id("alice", 10.0).await;
    let bobs = app.create_account_as(&bob, 10.0).await["accountId"].as_str().unwrap().to_owned();
    app.wait_for_projection().await;
    let open = |path: String| {
        let request = app.client.get(format!("{}{path}", app.address));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut subscriber = Subscriber { response, buffer: String::new() };
            assert_eq!(subscriber.next().await.unwrap().event, "ready");
            subscriber
        }
    };
    // Everything, as the overview asks, and bob's account by id, as a guessed URL would.
    let mut everything = open("/api/live".to_owned()).await;
    let mut guessed = open(format!("/api/live?accounts={bobs},{mine}")).await;

    let deposit = |user: &reqwest::Client, account: &str| {
        user.post(format!("{}/api/commands/deposit", app.address))
            .json(&json!({"accountId": account, "amount": 1}))
            .send()
    };
    assert_eq!(deposit(&bob.client, &bobs).await.unwrap().status(), StatusCode::OK);
    app.wait_for_projection().await;
    assert_eq!(deposit(&app.client, &mine).await.unwrap().status(), StatusCode::OK);
    for live in [&mut everything, &mut guessed] {
        let heard = live.next().await.expect("a message");
        assert_eq!(heard.data["accounts"], json!([mine]), "bob's deposit is not told to alice: {heard:?}");
    }
}
