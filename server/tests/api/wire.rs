//! What crosses the wire: the bundle precompressed, cached for good under hashed names and
//! revalidated (`304`) under others, pages and JSON compressed as sent, answers with secrets
//! never compressed.

use std::path::PathBuf;

use leptos::config::LeptosOptions;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_app_with;

/// A site folder of the test's own, as `cargo xtask site` leaves it
/// with `hash-files`: the glue under a hashed name, with its `.br` and `.gz` beside it.
fn site_with_precompressed_bundle() -> PathBuf {
    let root = std::env::temp_dir().join(format!("cqrs-bank-site-{}", uuid::Uuid::new_v4()));
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("cqrs-bank.0123abcd.js"), "export function hydrate() {}\n".repeat(50)).unwrap();
    // Not real brotli and gzip: the server sends the file it finds, and the test tells which.
    std::fs::write(pkg.join("cqrs-bank.0123abcd.js.br"), "brotli bytes").unwrap();
    std::fs::write(pkg.join("cqrs-bank.0123abcd.js.gz"), "gzip bytes").unwrap();
    // A leftover of a build without hashes, under a name whose content may change.
    std::fs::write(pkg.join("cqrs-bank.js"), "export function hydrate() {}\n").unwrap();
    root
}

#[sqlx::test(migrations = false)]
async fn the_bundle_is_sent_precompressed_and_cached_for_good_under_hashed_names(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let site = site_with_precompressed_bundle();
    let site_root = site.to_str().unwrap().to_owned();
    let app = spawn_app_with(db, move |settings| {
        settings.leptos_options =
            LeptosOptions::builder().output_name("cqrs-bank").site_root(site_root).hash_files(true).build();
    })
    .await;
    let url = format!("{}/pkg/cqrs-bank.0123abcd.js", app.address);

    for (accepted, encoding, body) in [("br, gzip", Some("br"), "brotli bytes"), ("gzip", Some("gzip"), "gzip bytes")] {
        let response = app.anonymous.get(&url).header("accept-encoding", accepted).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("content-encoding").map(|v| v.to_str().unwrap()), encoding, "{accepted}");
        assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert!(response.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("accept-encoding")));
        assert_eq!(response.text().await.unwrap(), body);
    }
    // A client that accepts neither gets the file as it is.
    let plain = app.anonymous.get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.text().await.unwrap().starts_with("export function hydrate"));

    // A name without a hash is asked for again every time, even beside hashed ones.
    let unhashed = app.anonymous.get(format!("{}/pkg/cqrs-bank.js", app.address)).send().await.unwrap();
    assert_eq!(unhashed.status(), StatusCode::OK);
    assert_eq!(unhashed.headers()["cache-control"], "no-cache");
    // Asked again whether its copy is still good, the browser is told so, without the file.
    let modified = unhashed.headers()["last-modified"].to_str().unwrap().to_owned();
    let again = app
        .anonymous
        .get(format!("{}/pkg/cqrs-bank.js", app.address))
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["cache-control"], "no-cache");
    assert!(again.bytes().await.unwrap().is_empty());

    // A name that does not exist is not cached: the next build may bring it.
    let missing = app.anonymous.get(format!("{}/pkg/cqrs-bank.ffff.js", app.address)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["cache-control"], "no-store");
    std::fs::remove_dir_all(site).unwrap();
}

#[sqlx::test(migrations = false)]
async fn unhashed_bundle_names_are_revalidated(_: PgPoolOptions, db: PgConnectOptions) {
    let site = site_with_precompressed_bundle();
    let site_root = site.to_str().unwrap().to_owned();
    let app = spawn_app_with(db, move |settings| {
        settings.leptos_options = LeptosOptions::builder().output_name("cqrs-bank").site_root(site_root).build();
    })
    .await;
    let response = app.anonymous.get(format!("{}/pkg/cqrs-bank.0123abcd.js", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-cache");
    std::fs::remove_dir_all(site).unwrap();
}

#[sqlx::test(migrations = false)]
async fn pages_and_json_are_compressed_but_answers_with_secrets_are_not(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |_| {}).await;
    let id = app.account_id("alice", 10.0).await;
    app.wait_for_projection().await;

    for path in [format!("/api/queries/accounts/{id}"), format!("/accounts/{id}"), "/".to_owned()] {
        for encoding in ["br", "gzip"] {
            let response = app
                .client
                .get(format!("{}{path}", app.address))
                .header("accept-encoding", encoding)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()["content-encoding"], encoding, "{path}");
        }
        // Unless another site made the browser ask (it chose the URL; the cookie went along).
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("accept-encoding", "br, gzip")
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers().get("content-encoding").is_none(), "{path}");
    }

    // Signing up and making a token answer with secrets: never compressed, whatever is accepted.
    let sign_up = app
        .anonymous
        .post(format!("{}/api/auth/sign-up", app.address))
        .header("accept-encoding", "br, gzip")
        .json(&json!({"username": "bob", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_up.status(), StatusCode::OK);
    assert!(sign_up.headers().get("content-encoding").is_none());
    assert_eq!(sign_up.headers()["cache-control"], "no-store");
    let cookie = crate::helpers::session_cookie(&sign_up);
    let token = app
        .anonymous
        .post(format!("{}/api/tokens/create", app.address))
        .header("cookie", &cookie)
        .header("accept-encoding", "br, gzip")
        .json(&json!({"name": "compressed, were it not for the secret", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
    assert!(token.headers().get("content-encoding").is_none());
    assert_eq!(token.headers()["cache-control"], "no-store");
    assert!(token.text().await.unwrap().contains("cqb_"));
}

#[sqlx::test(migrations = false)]
async fn every_answer_but_the_bundle_is_kept_by_no_cache(_: PgPoolOptions, db: PgConnectOptions) {
    let app = crate::helpers::spawn_app(db).await;
    let account = app.account_id("alice", 1.0).await;
    let cookie = app.customer_cookie().await;
    // Pages and answers that depend on who is signed in (and the rest, alike): a proxy's or the
    // browser's copy of one could show it to someone else.
    let answers = [
        app.client.get(format!("{}/accounts/{account}", app.address)).header("cookie", &cookie).send().await,
        app.client.get(format!("{}/api/queries/accounts/{account}", app.address)).send().await,
        app.client.post(format!("{}/api/queries/accounts", app.address)).json(&json!({})).send().await,
        app.anonymous.get(format!("{}/health", app.address)).send().await,
        app.anonymous.get(format!("{}/sign-in", app.address)).send().await,
    ];
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(
            answer.headers().get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{}",
            answer.url()
        );
    }
}
