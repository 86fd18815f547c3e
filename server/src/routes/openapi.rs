//! The HTTP API described in OpenAPI 3.1, at `/api/openapi.json`.

use axum::http::header;
use axum::response::IntoResponse;

/// The description, written by hand beside the routes it describes (`openapi.json`); a test
/// compares its paths with the routes the server registers.
pub const DESCRIPTION: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`: public, like `/health`.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DESCRIPTION)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::DESCRIPTION;

    fn description() -> Value {
        serde_json::from_str(DESCRIPTION).expect("openapi.json is JSON")
    }

    /// Every `$ref` in `value`, with where it was found.
    fn references<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(object) => {
                for (key, inner) in object {
                    match (key.as_str(), inner) {
                        ("$ref", Value::String(target)) => found.push((at.clone(), target)),
                        _ => references(inner, format!("{at}/{key}"), found),
                    }
                }
            }
            Value::Array(items) => {
                for (index, inner) in items.iter().enumerate() {
                    references(inner, format!("{at}/{index}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_description_is_openapi_3_1_json() {
        let description = description();
        assert_eq!(description["openapi"], "3.1.0");
        assert!(description["paths"].as_object().is_some_and(|paths| !paths.is_empty()), "it describes paths");
    }

    #[test]
    fn every_reference_in_the_description_resolves() {
        let description = description();
        let mut found = Vec::new();
        references(&description, String::new(), &mut found);
        assert!(!found.is_empty(), "the description shares its schemas and responses by reference");
        for (at, target) in found {
            // Local references only: `#/components/...`, a JSON pointer into this document.
            let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {target} is not local"));
            assert!(description.pointer(pointer).is_some(), "{at}: {target} names nothing");
        }
    }

    #[test]
    fn every_operation_has_a_unique_id_and_answers_200() {
        let description = description();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in description["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no id"));
                assert!(ids.insert(id.to_owned()), "{method} {path}: operationId {id} is used twice");
                assert!(operation["responses"]["200"].is_object(), "{method} {path}: no 200");
            }
        }
    }
}
