//! The OpenAPI description (`GET /api/openapi.json`) against the routes the server has: every
//! route is described with its method, every described operation exists, the credentials it
//! says an operation needs are the ones the server asks for, and anyone may read it.

use std::collections::BTreeSet;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, spawn_app};

/// An operation: its method (upper case) and path, as the description writes them.
type Operation = (String, String);

fn description() -> Value {
    serde_json::from_str(server::routes::openapi::DESCRIPTION).expect("the description is JSON")
}

/// Every operation the description has.
fn described(description: &Value) -> BTreeSet<Operation> {
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let paths = description["paths"].as_object().expect("the description has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("a path item is an object");
            methods
                .keys()
                .filter(|key| METHODS.contains(&key.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// Routers `server/src/routes/mod.rs` merges or nests that are not the API: the bundle's files.
const NOT_THE_API: [&str; 1] = ["bundle"];

/// The server's own routes beside Leptos's, as `server/src/routes/mod.rs` registers them
/// (`.route("/path", get(handler))`): read from that file, so that a route added there is
/// found here without anyone remembering to list it.
fn plain_routes() -> BTreeSet<Operation> {
    let source = include_str!("../../src/routes/mod.rs");
    // Not its unit tests' routers.
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    for other_way in [".nest(", ".merge(", ".route_service(", ".nest_service("] {
        for registration in source.split(other_way).skip(1) {
            let what = registration.split(')').next().unwrap_or_default().trim();
            assert!(
                NOT_THE_API.contains(&what),
                "routes/mod.rs registers {what:?} with {other_way}: describe its routes, or say here why not",
            );
        }
    }
    let mut routes = BTreeSet::new();
    for registration in source.split(".route(").skip(1) {
        let registration = registration.trim_start();
        let path = registration.strip_prefix('"').and_then(|rest| rest.split_once('"')).map(|(path, _)| path);
        let path = path.unwrap_or_else(|| panic!("a .route( without a literal path: {registration:.80}"));
        let handler = registration[path.len() + 2..].trim_start().trim_start_matches(',').trim_start();
        let method = handler.split_once('(').map(|(method, _)| method).unwrap_or_default();
        assert!(
            ["get", "post", "put", "patch", "delete"].contains(&method),
            "{path}: registered with {method:?}, not one method router (teach this test)",
        );
        routes.insert((method.to_uppercase(), path.to_owned()));
    }
    assert!(routes.len() >= 5, "routes/mod.rs was read: {routes:?}");
    routes
}

/// Every route the server answers: its server functions (as Leptos registers them) and its own.
fn registered() -> BTreeSet<Operation> {
    let server_functions: BTreeSet<Operation> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, method)| (method.as_str().to_owned(), path.to_owned()))
        .collect();
    assert!(server_functions.len() >= 30, "the server functions are registered: {server_functions:?}");
    server_functions.into_iter().chain(plain_routes()).collect()
}

/// The operation asked as a client would, with an empty JSON object for a body; a path
/// parameter gets a UUID.
async fn call(app: &TestApp, client: &reqwest::Client, (method, path): &Operation) -> Response {
    let url = format!("{}{}", app.address, path.replace("{id}", &uuid::Uuid::new_v4().to_string()));
    let request = match method.as_str() {
        "GET" => client.get(url),
        "POST" => client.post(url).json(&json!({})),
        other => panic!("{other} {path}: teach this test the method"),
    };
    request.send().await.unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

/// Whether the answer says there is no such route (rather than, say, no such account).
async fn no_such_route(response: Response) -> Option<String> {
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Some("405".to_owned());
    }
    if status != StatusCode::NOT_FOUND {
        return None;
    }
    // An unknown account is a 404 too, with its own code; an unknown route's is `not_found`.
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("(not the JSON error)");
    (code != "account_not_found").then(|| format!("404 {code}"))
}

#[sqlx::test(migrations = false)]
async fn every_route_is_described_and_every_described_operation_exists(_: PgPoolOptions, db: PgConnectOptions) {
    // Given the description and the routes the server registers,
    let described = described(&description());
    let registered = registered();

    // then each is in the other, with the same method,
    let undescribed: Vec<_> = registered.difference(&described).collect();
    assert!(undescribed.is_empty(), "routes missing from openapi.json: {undescribed:?}");
    let absent: Vec<_> = described.difference(&registered).collect();
    assert!(absent.is_empty(), "openapi.json describes routes the server does not have: {absent:?}");

    // and, asked on a running server, no described operation answers as an unknown route.
    let app = spawn_app(db).await;
    for operation in &described {
        let response = call(&app, &app.client, operation).await;
        if let Some(answer) = no_such_route(response).await {
            panic!("{} {} answers {answer}", operation.0, operation.1);
        }
    }
}

#[sqlx::test(migrations = false)]
async fn the_credentials_the_description_asks_for_are_the_ones_the_server_asks_for(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given the description's security requirements (an operation's own, or the document's),
    let description = description();
    let app = spawn_app(db).await;
    for (method, path) in described(&description) {
        let operation = &description["paths"][&path][method.to_lowercase()];
        let security = operation.get("security").unwrap_or(&description["security"]);
        let requirements = security.as_array().expect("security is a list");
        // an empty list, or one with an empty requirement, lets anybody in.
        let public =
            requirements.is_empty() || requirements.iter().any(|r| r.as_object().is_some_and(|r| r.is_empty()));

        // when it is called without credentials,
        let status = call(&app, &app.anonymous, &(method.clone(), path.clone())).await.status();

        // then the server asks for credentials exactly where the description says it does.
        if public {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path} is described as public");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} is described as needing credentials");
        }
    }
}

#[sqlx::test(migrations = false)]
async fn the_description_is_served_to_anyone(_: PgPoolOptions, db: PgConnectOptions) {
    // Given a server,
    let app = spawn_app(db).await;

    // when someone without credentials asks for the description,
    let response = app.anonymous.get(format!("{}/api/openapi.json", app.address)).send().await.unwrap();

    // then it is the OpenAPI 3.1 document, as JSON.
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let served: Value = response.json().await.expect("the description is JSON");
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served, description());
}
