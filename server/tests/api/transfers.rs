//! Transfers between accounts: the process that debits, credits or refunds, its guarantees
//! under repeats, deadlines, refusals, a kill -9 and a Postgres restart, and the routes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::write_side::transfers::{TransferProcess, TransferRequests, TransferTermsWithoutDeadline};
use backend::write_side::{CommandEnvelope, CommandHandler, WriteOptions};
use bank::domain::{
    AccountCommand, AccountEvent, AccountState, Amount, CommandBy, Money, Movement, OwnerId, Sender, TransferEvent,
};
use eventstore::AppendNotifier;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};
use uuid::Uuid;

use crate::helpers::{TestApp, User, error_code, spawn_app, spawn_app_with};
use crate::multi_instance::leader_of;
use crate::private_postgres::PrivatePostgres;
use crate::processes::{OPERATOR, operator_client, spawn_server_at};

impl TestApp {
    /// POST as `user`.
    async fn post_as(&self, user: &User, path: &str, body: &Value) -> reqwest::Response {
        user.client.post(format!("{}{path}", self.address)).json(body).send().await.expect("answered")
    }

    /// The account's transfers as `user` sees them.
    async fn transfers_of(&self, user: &User, account_id: &str) -> Value {
        let response = self.post_as(user, "/api/queries/account-transfers", &json!({"accountId": account_id})).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits until the transfer is finished as the transfers read model shows it to `user`.
    async fn finished_transfer(&self, user: &User, account_id: &str, transfer_id: &str) -> Value {
        eventually(&format!("transfer {transfer_id} finished"), PATIENCE, || async {
            let listed = self.transfers_of(user, account_id).await;
            let found =
                listed["transfers"].as_array().unwrap().iter().find(|t| t["transferId"] == transfer_id).cloned();
            match found {
                Some(transfer) if matches!(transfer["state"].as_str(), Some("completed" | "failed")) => Ok(transfer),
                _ => Err(listed),
            }
        })
        .await
    }

    /// The account's balance once the read model has every event.
    async fn balance_as(&self, user: &User, account_id: &str) -> Value {
        self.wait_for_projection().await;
        let response = user
            .client
            .get(format!("{}/api/queries/accounts/{account_id}", self.address))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn open_account(&self, user: &User, initial_balance: &str) -> String {
        self.create_account_as(user, initial_balance.parse().unwrap()).await["accountId"].as_str().unwrap().to_owned()
    }
}

/// An account view's balance (a JSON number).
fn balance(view: &Value) -> Decimal {
    view["currentBalance"].to_string().parse().unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_transfer_moves_money_between_two_customers_and_both_sides_say_so(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (alice, bob) = (app.sign_in("alice").await, app.sign_up("bob").await);
    let (from, to) = (app.open_account(&alice, "100").await, app.open_account(&bob, "5").await);

    let response = app
        .post_as(
            &alice,
            "/api/commands/transfer",
            &json!({"fromAccountId": from, "toAccountId": to, "amount": "30.25"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let accepted: Value = response.json().await.unwrap();
    let transfer_id = accepted["transferId"].as_str().unwrap().to_owned();

    let seen_by_alice = app.finished_transfer(&alice, &from, &transfer_id).await;
    assert_eq!(seen_by_alice["state"], "completed", "{seen_by_alice}");
    for step in ["debitedAt", "creditedAt", "finishedAt"] {
        assert!(seen_by_alice[step].is_string(), "{step} in {seen_by_alice}");
    }
    assert!(seen_by_alice["refundedAt"].is_null());
    let seen_by_bob = app.finished_transfer(&bob, &to, &transfer_id).await;
    assert_eq!(seen_by_bob, seen_by_alice, "both sides read the same transfer");
    assert_eq!(balance(&app.balance_as(&alice, &from).await), "69.75".parse::<Decimal>().unwrap());
    assert_eq!(balance(&app.balance_as(&bob, &to).await), "35.25".parse::<Decimal>().unwrap());

    // Each account's audit trail names the transfer and the account on its other side.
    for (user, account, other, event_type) in
        [(&alice, &from, &to, "TransferDebited"), (&bob, &to, &from, "TransferCredited")]
    {
        let page: Value = app
            .post_as(user, "/api/queries/account-history", &json!({"accountId": account}))
            .await
            .json()
            .await
            .unwrap();
        let entry = &page["entries"][0];
        assert_eq!(entry["eventType"], event_type, "{page}");
        assert_eq!(entry["transferId"], transfer_id.as_str());
        assert_eq!(entry["counterpartyAccountId"], other.as_str());
        assert_eq!(entry["amount"].to_string(), "30.25");
    }

    // One correlation id links every event of the transfer, on all three streams; each step
    // names the transfer event that caused it.
    let linked: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, metadata FROM events WHERE metadata->>'correlationId' = $1 ORDER BY global_position",
    )
    .bind(&transfer_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let types: Vec<&str> = linked.iter().map(|(event_type, _)| event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "TransferRequested",
            "TransferDebited",
            "SourceDebited",
            "TransferCredited",
            "TargetCredited",
            "TransferCompleted"
        ]
    );
    let requested_id: Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE stream_id = $1::uuid AND event_type = 'TransferRequested'",
    )
    .bind(&transfer_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(linked[1].1["causationId"], requested_id.to_string(), "the debit was caused by the request");
}

#[sqlx::test(migrations = false)]
async fn transfers_that_cannot_be_are_clear_4xx_and_write_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (alice, bob) = (app.sign_in("alice").await, app.sign_up("bob").await);
    let (mine, theirs) = (app.open_account(&alice, "100").await, app.open_account(&bob, "100").await);
    let before = app.event_count().await;
    let unknown = Uuid::new_v4().to_string();
    let cases = [
        (
            json!({"fromAccountId": mine, "toAccountId": mine, "amount": "1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "same_account",
        ),
        (
            json!({"fromAccountId": theirs, "toAccountId": mine, "amount": "1"}),
            StatusCode::NOT_FOUND,
            "account_not_found",
        ),
        (
            json!({"fromAccountId": unknown, "toAccountId": mine, "amount": "1"}),
            StatusCode::NOT_FOUND,
            "account_not_found",
        ),
        (
            json!({"fromAccountId": mine, "toAccountId": unknown, "amount": "1"}),
            StatusCode::NOT_FOUND,
            "account_not_found",
        ),
        (
            json!({"fromAccountId": mine, "toAccountId": theirs, "amount": "0"}),
            StatusCode::BAD_REQUEST,
            "invalid_amount",
        ),
        (
            json!({"fromAccountId": mine, "toAccountId": theirs, "amount": "-5"}),
            StatusCode::BAD_REQUEST,
            "invalid_amount",
        ),
        (
            json!({"fromAccountId": mine, "toAccountId": theirs, "amount": "0.001"}),
            StatusCode::BAD_REQUEST,
            "invalid_amount",
        ),
        (
            json!({"fromAccountId": mine, "toAccountId": theirs, "amount": 1e15}),
            StatusCode::BAD_REQUEST,
            "invalid_amount",
        ),
        (
            json!({"fromAccountId": mine, "toAccountId": theirs, "amount": "lots"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (json!({"fromAccountId": mine, "amount": "1"}), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            json!({"fromAccountId": "nope", "toAccountId": theirs, "amount": "1"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let response = app.post_as(&alice, "/api/commands/transfer", &body).await;
        assert_eq!(error_code(response, status).await, code, "{body}");
    }
    let anonymous = app
        .anonymous
        .post(format!("{}/api/commands/transfer", app.address))
        .json(&json!({"fromAccountId": mine, "toAccountId": theirs, "amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(anonymous, StatusCode::UNAUTHORIZED).await, "unauthenticated");
    assert_eq!(app.event_count().await, before, "nothing was written");

    // More than the balance is requested, then refused at the debit: the transfer fails, and
    // no money moved.
    let response = app
        .post_as(
            &alice,
            "/api/commands/transfer",
            &json!({"fromAccountId": mine, "toAccountId": theirs, "amount": "100.01"}),
        )
        .await;
    let transfer_id = response.json::<Value>().await.unwrap()["transferId"].as_str().unwrap().to_owned();
    let failed = app.finished_transfer(&alice, &mine, &transfer_id).await;
    assert_eq!(failed["state"], "failed");
    assert!(failed["reason"].as_str().unwrap().contains("insufficient funds"), "{failed}");
    assert!(failed["debitedAt"].is_null() && failed["refundedAt"].is_null(), "{failed}");
    assert_eq!(balance(&app.balance_as(&alice, &mine).await), "100.00".parse::<Decimal>().unwrap());
}

#[sqlx::test(migrations = false)]
async fn a_transfer_to_a_closed_or_frozen_account_is_refunded(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (alice, bob) = (app.sign_in("alice").await, app.sign_up("bob").await);
    let from = app.open_account(&alice, "100").await;
    let (closing, freezing) = (app.open_account(&bob, "0").await, app.open_account(&bob, "10").await);

    // Closing: the owner only, at zero only.
    let close = |account: &str| json!({"accountId": account});
    assert_eq!(
        error_code(
            app.post_as(&bob, "/api/commands/close-account", &close(&freezing)).await,
            StatusCode::UNPROCESSABLE_ENTITY
        )
        .await,
        "balance_not_zero"
    );
    assert_eq!(
        error_code(app.post_as(&alice, "/api/commands/close-account", &close(&closing)).await, StatusCode::NOT_FOUND)
            .await,
        "account_not_found"
    );
    assert_eq!(app.post_as(&bob, "/api/commands/close-account", &close(&closing)).await.status(), StatusCode::OK);
    let deposit = app.post_as(&bob, "/api/commands/deposit", &json!({"accountId": closing, "amount": "1"})).await;
    assert_eq!(error_code(deposit, StatusCode::UNPROCESSABLE_ENTITY).await, "account_closed");
    assert_eq!(app.balance_as(&bob, &closing).await["status"], "closed");

    // Freezing: operators only, with a reason.
    let freeze = json!({"accountId": freezing, "reason": "fraud check"});
    let by_customer = app.post_as(&bob, "/api/commands/freeze-account", &freeze).await;
    assert_eq!(error_code(by_customer, StatusCode::FORBIDDEN).await, "forbidden");
    let no_reason =
        app.post_as_operator("/api/commands/freeze-account", &json!({"accountId": freezing, "reason": " "})).await;
    assert_eq!(error_code(no_reason, StatusCode::BAD_REQUEST).await, "invalid_reason");
    assert_eq!(app.post_as_operator("/api/commands/freeze-account", &freeze).await.status(), StatusCode::OK);
    let deposit = app.post_as(&bob, "/api/commands/deposit", &json!({"accountId": freezing, "amount": "1"})).await;
    assert_eq!(error_code(deposit, StatusCode::UNPROCESSABLE_ENTITY).await, "account_frozen");
    let frozen = app.balance_as(&bob, &freezing).await;
    assert_eq!((&frozen["status"], &frozen["statusReason"]), (&json!("frozen"), &json!("fraud check")));

    // A transfer to either is refused at the credit, and its money goes back.
    for (target, why) in [(&closing, "closed"), (&freezing, "frozen")] {
        let response = app
            .post_as(
                &alice,
                "/api/commands/transfer",
                &json!({"fromAccountId": from, "toAccountId": target, "amount": "30"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let transfer_id = response.json::<Value>().await.unwrap()["transferId"].as_str().unwrap().to_owned();
        let failed = app.finished_transfer(&alice, &from, &transfer_id).await;
        assert_eq!(failed["state"], "failed", "{failed}");
        assert!(failed["reason"].as_str().unwrap().contains("frozen or closed"), "{why}: {failed}");
        assert!(!failed["reason"].as_str().unwrap().contains("fraud"), "the freeze's reason is the bank's: {failed}");
        assert!(failed["debitedAt"].is_string() && failed["refundedAt"].is_string(), "{failed}");
        assert!(failed["creditedAt"].is_null(), "{failed}");
    }
    assert_eq!(balance(&app.balance_as(&alice, &from).await), "100.00".parse::<Decimal>().unwrap());
    assert_eq!(balance(&app.balance_as(&bob, &closing).await), "0.00".parse::<Decimal>().unwrap());
    assert_eq!(balance(&app.balance_as(&bob, &freezing).await), "10.00".parse::<Decimal>().unwrap());

    // Unfrozen, it takes money again; unfreezing twice is refused.
    let unfreeze = json!({"accountId": freezing});
    assert_eq!(app.post_as_operator("/api/commands/unfreeze-account", &unfreeze).await.status(), StatusCode::OK);
    let again = app.post_as_operator("/api/commands/unfreeze-account", &unfreeze).await;
    assert_eq!(error_code(again, StatusCode::UNPROCESSABLE_ENTITY).await, "not_frozen");
    let deposit = app.post_as(&bob, "/api/commands/deposit", &json!({"accountId": freezing, "amount": "1"})).await;
    assert_eq!(deposit.status(), StatusCode::OK);
}

/// The write side and the process on a database with no server: the test takes the steps.
struct Bank {
    pool: PgPool,
    accounts: CommandHandler,
    process: TransferProcess,
}

impl Bank {
    async fn new(db: PgConnectOptions) -> Bank {
        let pool = PgPool::connect_with(db).await.unwrap();
        backend::schema::migrate(&pool).await.unwrap();
        let appends = AppendNotifier::new();
        let accounts = CommandHandler::new(pool.clone(), appends.clone(), WriteOptions::default());
        let process = TransferProcess::new(pool.clone(), accounts.clone(), appends, WriteOptions::default());
        Bank { pool, accounts, process }
    }

    async fn open(&self, owner: &str, initial_balance: &str) -> Uuid {
        let account_id = Uuid::new_v4();
        let command = AccountCommand::CreateAccount {
            owner_id: OwnerId::parse(owner).unwrap(),
            initial_balance: Money::parse(initial_balance).unwrap(),
        };
        let by = Sender::Customer(OwnerId::parse(owner).unwrap());
        let command_id = Uuid::new_v4();
        let envelope = CommandEnvelope {
            command_id,
            correlation_id: command_id,
            stream_id: account_id,
            command: CommandBy { by, command },
            causation_id: None,
            metadata: Default::default(),
        };
        self.accounts.handle(envelope).await.unwrap();
        account_id
    }

    async fn request(&self, from: Uuid, to: Uuid, amount: &str, deadline: Duration) -> Uuid {
        let requests =
            TransferRequests::new(self.pool.clone(), AppendNotifier::new(), WriteOptions::default(), deadline);
        let command_id = Uuid::new_v4();
        let envelope = eventstore::CommandEnvelope {
            command_id,
            correlation_id: command_id,
            stream_id: Uuid::new_v4(),
            command: TransferTermsWithoutDeadline {
                from,
                to,
                amount: Amount::parse(amount).unwrap(),
                requested_by: OwnerId::parse("alice").unwrap(),
            },
            causation_id: None,
            metadata: Default::default(),
        };
        requests.request(envelope).await.unwrap().transfer_id
    }

    /// The log's identity and every event in it, in the readers' order, once readers see them
    /// all: a transaction still open anywhere in the cluster (other tests') holds back what a
    /// gap-safe reader sees.
    async fn whole_log(&self) -> (String, Vec<eventstore::RecordedEvent>) {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.pool).await.unwrap();
        eventually(&format!("the log's readers seeing its {stored} events"), PATIENCE, || async {
            let events = eventstore::read_all_after(&self.pool, eventstore::Position::START, i64::MAX).await.unwrap();
            match eventstore::log_identity(&self.pool).await.unwrap() {
                Some(log) if events.len() as i64 == stored => Ok((log.to_string(), events)),
                _ => Err(events.len()),
            }
        })
        .await
    }

    /// As [`Self::whole_log`], only the events that wake the transfer process.
    async fn woken_log(&self) -> (String, Vec<eventstore::RecordedEvent>) {
        let (log, events) = self.whole_log().await;
        let woken = events.into_iter().filter(|event| {
            <TransferProcess as eventstore::projection::ExternalProjection>::EVENT_TYPES
                .contains(&event.event_type.as_str())
        });
        (log, woken.collect())
    }

    /// Every event's type, by stream, once `transfer` has finished (four events: it went as far
    /// as it goes).
    async fn finished(&self, transfer: Uuid) -> BTreeMap<Uuid, Vec<String>> {
        eventually(&format!("transfer {transfer} finished"), PATIENCE, || async {
            when(self.events().await, |streams| streams[&transfer].len() == 4)
        })
        .await
    }

    /// Every event's type, by stream, in order.
    async fn events(&self) -> BTreeMap<Uuid, Vec<String>> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT stream_id, event_type FROM events ORDER BY stream_id, stream_version")
                .fetch_all(&self.pool)
                .await
                .unwrap();
        let mut streams: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
        for (stream, event_type) in rows {
            streams.entry(stream).or_default().push(event_type);
        }
        streams
    }
}

#[sqlx::test(migrations = false)]
async fn a_step_taken_twice_or_twice_at_once_is_applied_once(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    let transfer = bank.request(from, to, "40", Duration::from_secs(30)).await;

    // Two leaders (a paused one waking up, say) take the same transfer at the same moment,
    // then a redelivered event wakes the process once more.
    let (first, second) = tokio::join!(bank.process.advance(transfer), bank.process.advance(transfer));
    first.unwrap();
    second.unwrap();
    let after_both = bank.events().await;
    bank.process.advance(transfer).await.unwrap();
    assert_eq!(bank.events().await, after_both, "a third delivery changes nothing");
    assert_eq!(after_both[&from], ["AccountCreated", "TransferDebited"]);
    assert_eq!(after_both[&to], ["AccountCreated", "TransferCredited"]);
    assert_eq!(after_both[&transfer], ["TransferRequested", "SourceDebited", "TargetCredited", "TransferCompleted"]);

    // The same batch of the log delivered to the process twice: applied, then refused as a
    // batch the checkpoint has passed; nothing more is written either time.
    use eventstore::projection::{CompareAndSet, ExternalProjection};
    let (log, woken) = bank.woken_log().await;
    let batch = whole_batch(&log, &woken);
    assert_eq!(bank.process.apply(&batch).await.unwrap(), CompareAndSet::Applied);
    assert_eq!(bank.process.apply(&batch).await.unwrap(), CompareAndSet::CheckpointMoved);
    assert_eq!(bank.events().await, after_both);
}

#[sqlx::test(migrations = false)]
async fn a_transfer_left_debited_is_undone_at_its_deadline_after_a_restart(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db.clone()).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    let transfer = bank.request(from, to, "25", Duration::from_secs(1)).await;
    // The process took the debit, then stopped (no server runs) before the credit.
    assert!(bank.process.take_next_step(transfer).await.unwrap());
    assert_eq!(bank.events().await[&transfer], ["TransferRequested", "SourceDebited"]);
    // The deadline under test passes: a second, and any more a busy machine takes, only helps.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A server starts, past the deadline: the credit is refused as too late and the source
    // refunded, once.
    let app = spawn_app_with(db, |settings| settings.transfer_deadline = Duration::from_secs(1)).await;
    let streams = bank.finished(transfer).await;
    assert_eq!(streams[&transfer], ["TransferRequested", "SourceDebited", "SourceRefunded", "TransferFailed"]);
    assert_eq!(streams[&from], ["AccountCreated", "TransferDebited", "TransferRefunded"]);
    assert_eq!(streams[&to], ["AccountCreated"], "the target got nothing");
    let reason: String =
        sqlx::query_scalar("SELECT data->>'reason' FROM events WHERE stream_id = $1 AND event_type = 'TransferFailed'")
            .bind(transfer)
            .fetch_one(&bank.pool)
            .await
            .unwrap();
    assert!(reason.contains("deadline"), "{reason}");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn money_is_conserved_through_transfers_a_kill_9_of_the_leader_and_a_postgres_restart() {
    const ACCOUNTS: usize = 12;
    let cluster = PrivatePostgres::start().await;
    let url = cluster.url("bank");
    let db: PgConnectOptions = url.parse().unwrap();
    let env = [("TRANSFER_DEADLINE_SECONDS", "20".to_owned())];
    let mut servers = vec![spawn_server_at(&url, "first", &env), spawn_server_at(&url, "second", &env)];
    let client = operator_client(&db, &servers[0]).await;
    let pool = PgPool::connect_with(db.clone()).await.unwrap();
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        accounts
            .push(servers[0].create_account(&client, OPERATOR, 1000).await["accountId"].as_str().unwrap().to_owned());
    }
    // One account is frozen for the first half: transfers to it are refunded, from it refused.
    let freeze = json!({"accountId": accounts[0], "reason": "under review"});
    let frozen = client.post(format!("{}/api/commands/freeze-account", servers[0].address)).json(&freeze).send().await;
    assert_eq!(frozen.unwrap().status(), StatusCode::OK);
    let addresses = Arc::new(Mutex::new(servers.iter().map(|s| s.address.clone()).collect::<Vec<_>>()));
    let load = Transfers::start(&client, addresses.clone(), accounts.clone());
    eventually("a transfer refunded and one refused at the debit", PATIENCE, || async {
        let (refunded, refused): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE event_type = 'SourceRefunded'),
                    count(*) FILTER (WHERE event_type = 'TransferFailed' AND NOT EXISTS
                        (SELECT 1 FROM events d WHERE d.stream_id = f.stream_id AND d.event_type = 'SourceDebited'))
             FROM events f",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        when((refunded, refused), |&(refunded, refused)| refunded > 0 && refused > 0)
    })
    .await;

    // Mid-run: kill -9 whichever instance leads the transfer process, and start another.
    let leader = leader_of(&client, &servers[1], "transfer_process").await;
    let victim = servers.iter().position(|s| s.instance == leader).unwrap();
    servers[victim].kill_9();
    servers.remove(victim);
    servers.push(spawn_server_at(&url, "third", &env));
    *addresses.lock().unwrap() = servers.iter().map(|s| s.address.clone()).collect();
    let unfreeze = json!({"accountId": accounts[0]});
    let unfrozen =
        client.post(format!("{}/api/commands/unfreeze-account", servers[0].address)).json(&unfreeze).send().await;
    assert_eq!(unfrozen.unwrap().status(), StatusCode::OK);

    // Then, with transfers going on, Postgres itself goes down hard (as a crash would) and comes
    // back; transfers go on after it.
    load.accepted_more(20).await;
    cluster.restart(Duration::from_millis(1500)).await;
    load.accepted_more(20).await;
    // Mid-run, with transfers under way: in one snapshot of the log, the balances and the money
    // in flight (debited, neither credited nor refunded yet) add up to what the accounts began with.
    let pool = PgPool::connect_with(db.clone()).await.unwrap();
    let (balances, in_flight) = balances_and_money_in_flight(&pool).await;
    assert_eq!(balances + in_flight, Decimal::from(1000 * ACCOUNTS as u64), "{balances} + {in_flight} in flight");
    load.stop().await;

    // Every transfer requested (answered or not) finishes, Completed or Failed, once.
    wait_until_every_transfer_finished(&pool).await;
    let (done, undone, declined) = assert_money_is_conserved(&pool, ACCOUNTS, Decimal::from(1000)).await;
    assert!(done > 0 && undone > 0 && declined > 0, "{done} completed, {undone} refunded, {declined} refused");
    crate::helpers::wait_for_projections(&pool).await;
    assert_transfers_read_model_equals_the_streams(&pool).await;
    crate::read_model::assert_read_model_equals_replay(&pool).await;
    drop(servers);
}

/// Transfers in a ring and at random between `accounts`, from four clients, to whichever
/// server `addresses` lists now, until stopped.
struct Transfers {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Transfers {
    fn start(client: &reqwest::Client, addresses: Arc<Mutex<Vec<String>>>, accounts: Vec<String>) -> Transfers {
        let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let workers = (0..4)
            .map(|worker| {
                let (client, addresses, accounts, stop, accepted) =
                    (client.clone(), addresses.clone(), accounts.clone(), stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let mut n = worker * 7;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let from = n % accounts.len();
                        // Workers 0 and 1 send around the ring; 2 and 3 anywhere.
                        let to = if worker < 2 { (from + 1) % accounts.len() } else { fastrand::usize(..accounts.len()) };
                        if to == from {
                            continue;
                        }
                        let address = {
                            let addresses = addresses.lock().unwrap();
                            addresses[n % addresses.len()].clone()
                        };
                        // Now and then more than an account may hold: refused at the debit.
                        let amount = if n % 29 == 0 { "1500".to_owned() } else { format!("{}.{:02}", n % 90 + 1, n % 100) };
                        let sent = client
                            .post(format!("{address}/api/commands/transfer"))
                            .json(&json!({"fromAccountId": accounts[from], "toAccountId": accounts[to], "amount": amount}))
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        if sent.is_ok_and(|response| response.status().is_success()) {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Transfers { stop, accepted, workers }
    }

    /// Waits until `more` transfers beyond those accepted so far have been accepted.
    async fn accepted_more(&self, more: usize) {
        let target = self.accepted.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more transfers accepted"), PATIENCE, || async {
            when(self.accepted.load(Ordering::Relaxed), |&accepted| accepted >= target)
        })
        .await;
    }

    /// Stops the clients and waits for their last requests.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// From the event store itself: every balance folded from its events is never negative and
/// they sum to what the accounts started with; each transfer is one of the three stories
/// (debit refused; debited and credited; debited and refunded), each of its movements once.
/// Returns how many transfers completed, were refunded and were refused at the debit.
/// Waits until every transfer requested (answered or not) has finished, Completed or Failed.
async fn wait_until_every_transfer_finished(pool: &PgPool) {
    eventually("every transfer requested finished", PATIENCE, || async {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events r WHERE r.event_type = 'TransferRequested' AND NOT EXISTS
                 (SELECT 1 FROM events f WHERE f.stream_id = r.stream_id
                  AND f.event_type IN ('TransferCompleted', 'TransferFailed'))",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        when(unfinished, |&unfinished| unfinished == 0)
    })
    .await;
}

async fn assert_money_is_conserved(pool: &PgPool, accounts: usize, each: Decimal) -> (usize, usize, usize) {
    // Every committed event, stream by stream (each in version order; the checks below are per
    // stream). Not `read_all_after`: it stops below the oldest transaction still running anywhere
    // in the cluster (a projection's batch, a heartbeat), and would leave out the last steps of
    // transfers that have finished, which then look debited and never credited.
    let streams: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT stream_id FROM events").fetch_all(pool).await.unwrap();
    let mut events = Vec::new();
    for stream in streams {
        events.extend(eventstore::read_stream(pool, stream, 0).await.unwrap());
    }
    crate::helpers::load_keys(pool, &events).await;
    let mut states: HashMap<Uuid, AccountState> = HashMap::new();
    // Per transfer: how often it was debited, credited and refunded in the accounts' streams,
    // and its own stream's events.
    let mut movements: HashMap<Uuid, [u32; 3]> = HashMap::new();
    let mut stories: HashMap<Uuid, Vec<String>> = HashMap::new();
    for event in &events {
        if event.stream_type == "transfer" {
            backend::event_codec::decode_transfer(event).unwrap();
            stories.entry(event.stream_id).or_default().push(event.event_type.clone());
            continue;
        }
        let decoded = backend::event_codec::decode(event).unwrap();
        let state = states.remove(&event.stream_id).unwrap_or_default();
        let before = state.balance();
        let after = bank::domain::evolve(state.clone(), &decoded);
        // The fold ignores an event that does not fit the balance: none may be ignored here.
        match decoded.movement() {
            Some(Movement::In(amount)) => {
                assert_eq!(after.balance().map(|b| b.value()), before.map(|b| b.value() + amount.value()))
            }
            Some(Movement::Out(amount)) => {
                assert_eq!(after.balance().map(|b| b.value()), before.map(|b| b.value() - amount.value()))
            }
            _ => {}
        }
        states.insert(event.stream_id, after);
        let slot = match decoded {
            AccountEvent::TransferDebited { transfer_id, .. } => Some((transfer_id, 0)),
            AccountEvent::TransferCredited { transfer_id, .. } => Some((transfer_id, 1)),
            AccountEvent::TransferRefunded { transfer_id, .. } => Some((transfer_id, 2)),
            _ => None,
        };
        if let Some((transfer_id, index)) = slot {
            movements.entry(transfer_id).or_default()[index] += 1;
        }
    }
    assert_eq!(states.len(), accounts);
    let total: Decimal = states.values().map(|state| state.balance().expect("open").value()).sum();
    assert_eq!(total, each * Decimal::from(accounts as u64), "money was made or lost");

    let types = TransferEvent::TYPES;
    let completed = [types[0], types[1], types[2], types[3]].map(str::to_owned).to_vec();
    let refunded = [types[0], types[1], types[4], types[5]].map(str::to_owned).to_vec();
    let refused = [types[0], types[5]].map(str::to_owned).to_vec();
    let (mut done, mut undone, mut declined) = (0, 0, 0);
    for (transfer, story) in &stories {
        let moved = movements.get(transfer).copied().unwrap_or_default();
        if *story == completed {
            assert_eq!(moved, [1, 1, 0], "transfer {transfer}");
            done += 1;
        } else if *story == refunded {
            assert_eq!(moved, [1, 0, 1], "transfer {transfer}");
            undone += 1;
        } else if *story == refused {
            assert_eq!(moved, [0, 0, 0], "transfer {transfer}");
            declined += 1;
        } else {
            panic!("transfer {transfer} went {story:?} with movements {moved:?}");
        }
    }
    eprintln!("transfers: {done} completed, {undone} refunded, {declined} refused at the debit");
    (done, undone, declined)
}

/// Waits until the transfers read model has every event, then compares each row's state with
/// its transfer's stream.
async fn assert_transfers_read_model_equals_the_streams(pool: &PgPool) {
    eventually("the transfers read model equal to the streams", PATIENCE, || async {
        let differ: Vec<Uuid> = sqlx::query_scalar(
            "SELECT s.stream_id FROM (SELECT stream_id, (array_agg(event_type ORDER BY stream_version DESC))[1] AS last
                                      FROM events WHERE stream_type = 'transfer' GROUP BY stream_id) s
             LEFT JOIN transfers t ON t.transfer_id = s.stream_id
             WHERE t.state IS DISTINCT FROM CASE s.last WHEN 'TransferCompleted' THEN 'completed'
                                                      WHEN 'TransferFailed' THEN 'failed' END",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        when(differ, Vec::is_empty)
    })
    .await;
}

/// The sum of every account's balance and of the money in flight, from one snapshot of the log.
async fn balances_and_money_in_flight(pool: &PgPool) -> (Decimal, Decimal) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await.unwrap();
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT event_type, data FROM events WHERE stream_type = 'account'")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let (mut balances, mut in_flight) = (Decimal::ZERO, Decimal::ZERO);
    let amount = |data: &Value, key: &str| data[key].as_str().unwrap().parse::<Decimal>().unwrap();
    for (event_type, data) in rows {
        match event_type.as_str() {
            "AccountCreated" => balances += amount(&data, "initialBalance"),
            "MoneyDeposited" => balances += amount(&data, "amount"),
            "MoneyWithdrawn" => balances -= amount(&data, "amount"),
            // Out of the source and into flight; out of flight and into an account.
            "TransferDebited" => {
                balances -= amount(&data, "amount");
                in_flight += amount(&data, "amount");
            }
            "TransferCredited" | "TransferRefunded" => {
                balances += amount(&data, "amount");
                in_flight -= amount(&data, "amount");
            }
            _ => {}
        }
    }
    (balances, in_flight)
}

#[sqlx::test(migrations = false)]
async fn a_transfer_that_cannot_go_on_is_parked_and_holds_up_no_other(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    // A transfer request no code can read (as a buggy or newer writer might append), then a
    // good one after it in the log.
    let poison = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
         VALUES ($1, 'transfer', $2, 1, 'TransferRequested', 2, '{\"amount\": \"lots\"}')",
    )
    .bind(Uuid::new_v4())
    .bind(poison)
    .execute(&bank.pool)
    .await
    .unwrap();
    let good = bank.request(from, to, "10", Duration::from_secs(30)).await;

    use eventstore::projection::{CompareAndSet, ExternalProjection};
    let (log, woken) = bank.woken_log().await;
    let batch = whole_batch(&log, &woken);
    assert_eq!(bank.process.apply(&batch).await.unwrap(), CompareAndSet::Applied, "the batch goes through");
    assert_eq!(
        bank.events().await[&good],
        ["TransferRequested", "SourceDebited", "TargetCredited", "TransferCompleted"],
        "the good transfer was not held up"
    );
    let parked: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT transfer_id, error FROM transfer_process_parked").fetch_all(&bank.pool).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, poison);
    assert!(parked[0].1.contains("cannot be read"), "{parked:?}");
}

#[sqlx::test(migrations = false)]
async fn the_deadline_watch_undoes_a_transfer_the_log_no_longer_wakes_once(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db.clone()).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    let transfer = bank.request(from, to, "25", Duration::from_secs(1)).await;
    assert!(bank.process.take_next_step(transfer).await.unwrap(), "the debit");
    // The process's checkpoint is past every event (as if it had crashed after moving it): the
    // log will not wake it for this transfer again; only the deadline watch can.
    use eventstore::projection::{CompareAndSet, ExternalBatch, ExternalProjection, LogPlace, Partition};
    let (log, events) = bank.whole_log().await;
    let last = events.last().unwrap();
    let past_all = LogPlace { position: last.position(), event: Some(last.event_id) };
    let batch = ExternalBatch {
        partition: Partition::WHOLE,
        log: &log,
        from: None,
        to: past_all,
        events: &[],
        rebuilding: false,
        epoch: 0,
    };
    assert_eq!(bank.process.apply(&batch).await.unwrap(), CompareAndSet::Applied);
    // The deadline under test passes: a second, and any more a busy machine takes, only helps.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let app = spawn_app_with(db, |settings| {
        settings.transfer_deadline = Duration::from_secs(1);
        settings.instance_id = "deadline-watch".to_owned();
    })
    .await;
    let streams = bank.finished(transfer).await;
    assert_eq!(streams[&transfer], ["TransferRequested", "SourceDebited", "SourceRefunded", "TransferFailed"]);
    assert_eq!(streams[&from], ["AccountCreated", "TransferDebited", "TransferRefunded"]);
    assert_eq!(streams[&to], ["AccountCreated"]);
    // Fired once: the watch looks again (as the running one does every second) and writes
    // nothing more, whether the transfers read model still shows the transfer debited or,
    // once it has caught up, failed.
    bank.process.fire_due_deadlines("deadline-watch").await.unwrap();
    assert_eq!(bank.events().await, streams);
    crate::helpers::wait_for_projections(&bank.pool).await;
    assert_eq!(bank.process.fire_due_deadlines("deadline-watch").await.unwrap(), 0, "nothing is overdue any more");
    assert_eq!(bank.events().await, streams);
    drop(app);
}

/// Every processed command id ages by `days`, as does the process's note of when it began each
/// transfer: the retention window, passed without waiting for it.
async fn age_command_ids(pool: &PgPool, days: i32) {
    for table in
        ["processed_commands SET processed_at = processed_at", "transfer_process_open SET opened_at = opened_at"]
    {
        sqlx::query(&format!("UPDATE {table} - make_interval(days => $1)")).bind(days).execute(pool).await.unwrap();
    }
}

#[sqlx::test(migrations = false)]
async fn a_step_is_judged_late_by_when_it_arrives_not_by_the_time_it_carries(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    // Given steps planned in time (a process paused since, say), arriving after the deadline.
    let now = time::OffsetDateTime::now_utc();
    let (planned_at, deadline) = (now - time::Duration::hours(2), now - time::Duration::hours(1));
    let amount = Amount::parse("10").unwrap();
    let transfer_id = Uuid::new_v4();
    let steps = [
        (
            from,
            Sender::Customer(OwnerId::parse("alice").unwrap()),
            AccountCommand::DebitForTransfer { transfer_id, to, amount, at: planned_at, deadline },
        ),
        (
            to,
            Sender::TransferProcess,
            AccountCommand::CreditForTransfer { transfer_id, from, amount, at: planned_at, deadline },
        ),
    ];
    for (account_id, by, command) in steps {
        let command_id = Uuid::new_v4();
        let envelope = CommandEnvelope {
            command_id,
            correlation_id: command_id,
            stream_id: account_id,
            command: CommandBy { by, command },
            causation_id: None,
            metadata: Default::default(),
        };
        // When the account takes it, then it is refused as late.
        let refused = bank.accounts.handle(envelope).await.expect_err("a late step is refused");
        assert!(
            matches!(refused, eventstore::CommandError::Rejected(bank::domain::DomainError::TransferExpired)),
            "{refused:?}"
        );
    }
    let events = bank.events().await;
    assert_eq!((events[&from].len(), events[&to].len()), (1, 1), "no money moved: {events:?}");
}

#[sqlx::test(migrations = false)]
async fn a_step_planned_before_a_pause_longer_than_the_retention_moves_no_money(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let bank = Bank::new(db).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    let transfer = bank.request(from, to, "40", Duration::from_secs(1)).await;
    assert!(bank.process.take_next_step(transfer).await.unwrap(), "the debit");
    // Given a leader that planned the credit, in time, and was paused before taking it ...
    let paused = bank.process.plan(transfer).await.unwrap().expect("the credit is next");
    // ... while another took the transfer to its end ...
    bank.process.advance(transfer).await.unwrap();
    let finished = bank.events().await;
    assert_eq!(finished[&transfer], ["TransferRequested", "SourceDebited", "TargetCredited", "TransferCompleted"]);
    // ... and the pause outlasted the deadline (a second, and any more a busy machine takes,
    // only helps) and the retention: the finished transfer's step ids are forgotten.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    age_command_ids(&bank.pool, 30).await;
    let retention = Duration::from_secs(7 * 24 * 3600);
    let forgotten = backend::write_side::forget_old_command_ids(&bank.pool, retention).await.unwrap();
    assert!(forgotten > 0, "the retention passed");

    // When the paused leader wakes and takes its step, then no money moves: the credit comes
    // too late, and the transfer it was planned for has moved on, so nothing is refunded.
    bank.process.take_planned(paused).await.unwrap();
    assert_eq!(bank.events().await, finished, "nothing more was written");
}

#[sqlx::test(migrations = false)]
async fn the_purge_spares_the_steps_of_a_transfer_not_finished(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db).await;
    let (from, to) = (bank.open("alice", "100").await, bank.open("bob", "0").await);
    let transfer = bank.request(from, to, "40", Duration::from_secs(1)).await;
    assert!(bank.process.take_next_step(transfer).await.unwrap(), "the debit");
    // Given a process that credited the target, then stopped before recording it ...
    let credit = bank.process.plan(transfer).await.unwrap().expect("the credit is next");
    let envelope = CommandEnvelope {
        command_id: backend::write_side::transfers::step_command_id(transfer, "credit"),
        correlation_id: transfer,
        stream_id: credit.step.account_id,
        command: credit.step.command.clone(),
        causation_id: credit.cause,
        metadata: Default::default(),
    };
    bank.accounts.handle(envelope).await.unwrap();
    // ... and stayed stopped past the deadline and the retention, and the purge ran.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    age_command_ids(&bank.pool, 30).await;
    let retention = Duration::from_secs(7 * 24 * 3600);
    let forgotten = backend::write_side::forget_old_command_ids(&bank.pool, retention).await.unwrap();
    assert!(forgotten > 0, "the accounts' own command ids went");

    // When the process comes back, then the credit is answered as it was the first time: the
    // transfer completes, and the source is not refunded money the target also got.
    bank.process.advance(transfer).await.unwrap();
    let streams = bank.events().await;
    assert_eq!(streams[&transfer], ["TransferRequested", "SourceDebited", "TargetCredited", "TransferCompleted"]);
    assert_eq!(streams[&from], ["AccountCreated", "TransferDebited"]);
    assert_eq!(streams[&to], ["AccountCreated", "TransferCredited"]);
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transfer_process_open").fetch_one(&bank.pool).await.unwrap();
    assert_eq!(open, 0, "finished, the transfer is no longer kept open");
}

#[sqlx::test(migrations = false)]
async fn a_transfer_whose_target_is_held_busy_holds_up_none_behind_it(_: PgPoolOptions, db: PgConnectOptions) {
    let bank = Bank::new(db.clone()).await;
    let app = spawn_app_with(db, |settings| settings.instance_id = "busy-target".to_owned()).await;
    let (from, busy) = (bank.open("alice", "1000").await, bank.open("bob", "0").await);
    // Given a target whose stream another session holds locked, and a transfer to it ...
    let mut holder = bank.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(eventstore::stream_lock_key(busy))
        .execute(&mut *holder)
        .await
        .unwrap();
    let stuck = bank.request(from, busy, "1", Duration::from_secs(600)).await;
    eventually("the stuck transfer debited", PATIENCE, || async {
        when(bank.events().await, |streams| streams[&stuck].len() >= 2)
    })
    .await;
    // ... then more events than one of the process's batches reads ...
    let depositor = bank.open("carol", "0").await;
    for _ in 0..backend::write_side::TRANSFER_BATCH + 50 {
        let command_id = Uuid::new_v4();
        let envelope = CommandEnvelope {
            command_id,
            correlation_id: command_id,
            stream_id: depositor,
            command: CommandBy {
                by: Sender::Customer(OwnerId::parse("carol").unwrap()),
                command: AccountCommand::Deposit { amount: Amount::parse("1").unwrap() },
            },
            causation_id: None,
            metadata: Default::default(),
        };
        bank.accounts.handle(envelope).await.unwrap();
    }
    // When 100 transfers between other accounts follow them ...
    let mut pairs = Vec::new();
    for index in 0..10 {
        // (The bank's transfers are requested by alice: she owns the sources.)
        pairs.push((bank.open("alice", "100").await, bank.open(&format!("erin{index}"), "0").await));
    }
    let mut behind = Vec::new();
    for index in 0..100 {
        let (source, target) = pairs[index % pairs.len()];
        behind.push(bank.request(source, target, "1", Duration::from_secs(600)).await);
    }

    // Then every one of them completes (in time: a late one would fail), while the target stays
    // held, and the stuck transfer is parked with why.
    eventually("the 100 transfers behind the stuck one completed", PATIENCE * 2, || async {
        let streams = bank.events().await;
        let done = behind.iter().filter(|transfer| streams[*transfer].len() == 4).count();
        if done == behind.len() { Ok(streams) } else { Err(format!("{done} of 100")) }
    })
    .await;
    let streams = bank.events().await;
    for transfer in &behind {
        assert_eq!(streams[transfer].last().map(String::as_str), Some("TransferCompleted"), "{:?}", streams[transfer]);
    }
    let parked: Vec<(Uuid, String, bool)> =
        sqlx::query_as("SELECT transfer_id, error, lasting FROM transfer_process_parked")
            .fetch_all(&bank.pool)
            .await
            .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, stuck);
    assert!(!parked[0].2, "a busy stream may pass by itself: {parked:?}");

    // Once the target is free, the parked transfer goes through by itself.
    holder.rollback().await.unwrap();
    let streams = bank.finished(stuck).await;
    assert_eq!(streams[&stuck].last().map(String::as_str), Some("TransferCompleted"));
    drop(app);
}

#[sqlx::test(migrations = false)]
async fn a_paused_transfer_process_leader_is_replaced_and_decides_nothing_twice(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    const ACCOUNTS: usize = 8;
    let a = crate::processes::spawn_server(&db, "instance-a");
    let client = operator_client(&db, &a).await;
    let b = crate::processes::spawn_server(&db, "instance-b");
    let accounts = crate::multi_instance::create_accounts(&client, &a, ACCOUNTS).await;
    let addresses = Arc::new(Mutex::new(vec![a.address.clone(), b.address.clone()]));
    let load = Transfers::start(&client, addresses.clone(), accounts);
    load.accepted_more(20).await;

    // Given the transfer process's leader paused mid-run (its sessions, locks and transactions
    // kept, answering nothing) while transfers go on through the other instance ...
    let leader = leader_of(&client, &b, "transfer_process").await;
    let (paused, survivor) = if leader == a.instance { (a, b) } else { (b, a) };
    *addresses.lock().unwrap() = vec![survivor.address.clone()];
    crate::multi_instance::signal(&paused, "-STOP");
    crate::multi_instance::wait_until_led_by(&client, &survivor, &["transfer_process"]).await;
    load.accepted_more(20).await;

    // When it wakes, and transfers go on through both ...
    crate::multi_instance::signal(&paused, "-CONT");
    paused.logged("stopped leading", 1).await;
    *addresses.lock().unwrap() = vec![survivor.address.clone(), paused.address.clone()];
    load.accepted_more(20).await;
    load.stop().await;

    // Then every transfer finishes once, no step is applied twice, and money is conserved.
    let pool = PgPool::connect_with(db).await.unwrap();
    wait_until_every_transfer_finished(&pool).await;
    let (done, _, _) = assert_money_is_conserved(&pool, ACCOUNTS, Decimal::from(1000)).await;
    assert!(done > 0, "transfers went through");
    crate::helpers::wait_for_projections(&pool).await;
    assert_transfers_read_model_equals_the_streams(&pool).await;
    drop((paused, survivor));
}

#[sqlx::test(migrations = false)]
async fn a_sender_sees_whose_account_a_number_is_and_nothing_more(_: PgPoolOptions, db: PgConnectOptions) {
    // Given bob's account, whose number alice was given,
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    let bobs = app.create_account_as(&bob, 5.0).await["accountId"].as_str().unwrap().to_owned();
    // when alice asks whose it is, she is told bob's name, and nothing else;
    let response = app.post("/api/queries/transfer-recipient", &json!({"accountId": bobs})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let recipient: Value = response.json().await.unwrap();
    assert_eq!(recipient, json!({"accountId": bobs, "ownerId": "bob"}));
    // a number that is nobody's is 404, and nobody signed in may ask.
    let nobody = app.post("/api/queries/transfer-recipient", &json!({"accountId": uuid::Uuid::new_v4()})).await;
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
    let anonymous = app
        .anonymous
        .post(format!("{}/api/queries/transfer-recipient", app.address))
        .json(&json!({"accountId": bobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// One batch of all of `events` (to the last of them) of the log `log`, from no checkpoint.
fn whole_batch<'a>(log: &'a str, events: &'a [eventstore::RecordedEvent]) -> eventstore::projection::ExternalBatch<'a> {
    let last = events.last().expect("events to deliver");
    eventstore::projection::ExternalBatch {
        partition: eventstore::projection::Partition::WHOLE,
        log,
        from: None,
        to: eventstore::projection::LogPlace { position: last.position(), event: Some(last.event_id) },
        events,
        rebuilding: false,
        epoch: 0,
    }
}
