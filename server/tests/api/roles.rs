//! Least privilege: the server runs as a role that may append and read events but never change
//! them, while the tables' owner migrates. The whole server works as that role (commands,
//! projections, a rebuild, sign-up), and history cannot be rewritten through it.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use testkit::{PATIENCE, eventually, when};

use crate::helpers::spawn_app_with;

#[sqlx::test(migrations = false)]
async fn the_servers_role_appends_events_but_cannot_change_them(_: PgPoolOptions, db: PgConnectOptions) {
    let owner = PgPool::connect_with(db.clone()).await.unwrap();
    // Roles belong to the cluster: a name of this test's own, dropped at the end.
    let role = format!("bank_server_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"))
        .execute(&owner)
        .await
        .unwrap();
    let as_server = db.clone().username(&role);

    let app = spawn_app_with(as_server.clone(), |settings| settings.owner_database = Some(db.clone())).await;
    let account = app.account_id("alice", 10.0).await;
    let deposited = app.deposit(&account, 5).await;
    assert_eq!(deposited.status(), StatusCode::OK);
    app.wait_for_projection().await;
    let rebuilt = app
        .post_as_operator("/api/operations/rebuild-projection", &json!({"reason": "a test", "name": "account_summary"}))
        .await;
    assert_eq!(rebuilt.status(), StatusCode::OK);
    // The rebuild is under way from the answer on; running again once swapped in.
    eventually("the rebuild run as the server's role", PATIENCE, || async {
        let projections: serde_json::Value =
            app.post_as_operator("/api/operations/projections", &json!({})).await.json().await.unwrap();
        let summary = projections.as_array().unwrap().iter().find(|p| p["name"] == "account_summary").unwrap().clone();
        assert!(summary["lastError"].is_null(), "{summary}");
        when(summary, |summary| summary["state"] == "running")
    })
    .await;
    let read: serde_json::Value = app.get(&format!("/api/queries/accounts/{account}")).await.json().await.unwrap();
    assert_eq!(read["currentBalance"], json!(15.0));

    // A transfer, taken through its steps by the transfer process, as the server's role; and
    // what the process keeps of its own, it may keep.
    let other = app.account_id("alice", 0.0).await;
    let sent =
        app.post("/api/commands/transfer", &json!({"fromAccountId": account, "toAccountId": other, "amount": 5})).await;
    assert_eq!(sent.status(), StatusCode::OK);
    let transfer: serde_json::Value = sent.json().await.unwrap();
    eventually("the transfer completed as the server's role", PATIENCE, || async {
        let finished: Option<String> = sqlx::query_scalar(
            "SELECT event_type FROM events WHERE stream_id = $1::text::uuid AND event_type = 'TransferCompleted'",
        )
        .bind(transfer["transferId"].as_str().unwrap())
        .fetch_optional(&owner)
        .await
        .unwrap();
        when(finished, Option::is_some)
    })
    .await;
    for (table, privilege) in [
        ("transfer_process_checkpoint", "INSERT"),
        ("transfer_process_checkpoint", "UPDATE"),
        ("transfer_process_parked", "INSERT"),
        ("transfer_process_parked", "UPDATE"),
        ("transfer_process_parked", "DELETE"),
    ] {
        let granted: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, $3)")
            .bind(&role)
            .bind(table)
            .bind(privilege)
            .fetch_one(&owner)
            .await
            .unwrap();
        assert!(granted, "{privilege} on {table}");
    }

    // What an attacker holding the server's credentials would try.
    let mut conn = PgConnection::connect_with(&as_server).await.unwrap();
    for attack in [
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "ALTER TABLE events DISABLE TRIGGER events_are_immutable",
        "SET session_replication_role = replica",
        "DROP TABLE events",
        "ALTER TABLE events ADD COLUMN note text",
        // Planting, where the owner resolves names, what the owner would run with its rights.
        "CREATE FUNCTION quote_ident(name) RETURNS text LANGUAGE sql AS 'SELECT ''planted''::text'",
        "CREATE TABLE planted (note text)",
        // Nor may it change the read tables it writes (a trigger would run as their writer).
        "ALTER TABLE account_summary ADD COLUMN note text",
        "CREATE TRIGGER planted BEFORE INSERT ON account_summary FOR EACH ROW EXECUTE FUNCTION pg_catalog.now()",
    ] {
        let refused = sqlx::query(attack).execute(&mut conn).await.expect_err(attack);
        let code = refused.as_database_error().and_then(|error| error.code()).map(|code| code.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{attack}: {refused}");
    }
    conn.close().await.unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&owner).await.unwrap();
    // Two accounts, a deposit, and the transfer's six events.
    assert_eq!(events, 9, "history is whole");

    // The role owns no table and may create nothing where the owner resolves names. Were a
    // function there that matches the owner's calls better than pg_catalog's (planted where
    // some role could create, as PUBLIC could before Postgres 15; here by the owner itself),
    // the owner's start-up still names pg_catalog's, and never runs it.
    let owns: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relowner = $1::text::regrole")
        .bind(&role)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(owns, 0, "the server's role owns no table");
    for planted in ["quote_ident(name)", "quote_ident(varchar)", "to_regclass(varchar)", "pg_get_userbyid(integer)"] {
        let returns = if planted.starts_with("to_regclass") { "regclass" } else { "text" };
        sqlx::query(&format!(
            "CREATE FUNCTION {planted} RETURNS {returns} LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'a planted function ran as %', current_user; END $$"
        ))
        .execute(&owner)
        .await
        .unwrap();
    }
    // Another start (a restart, or a second instance) finds everything handed over already.
    let again = spawn_app_with(as_server.clone(), |settings| settings.owner_database = Some(db.clone())).await;
    assert_eq!(again.get(&format!("/api/queries/accounts/{account}")).await.status(), StatusCode::OK);
    again.stop();
    app.stop();
    drop((app, again));
    // Once their sessions have ended: a role still connected cannot be dropped.
    eventually("the servers' sessions as the role ended", PATIENCE, || async {
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(&role)
            .fetch_one(&owner)
            .await
            .unwrap();
        when(sessions, |&sessions| sessions == 0)
    })
    .await;
    // The role leaves nothing behind in the cluster.
    sqlx::query(&format!("REASSIGN OWNED BY {role} TO CURRENT_USER")).execute(&owner).await.unwrap();
    sqlx::query(&format!("DROP OWNED BY {role}")).execute(&owner).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}")).execute(&owner).await.ok();
}
