//! The OpenAPI document served at `/openapi.json` against the server itself: every route the
//! router serves is documented (and nothing else is); every operation's real answers validate
//! against the document's schema for their status and media type; every request the
//! document's schemas allow (their examples, and the least instance of each) is accepted.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dvm::server::{AppState, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::*;

const HOST: (&str, &str) = ("host", "127.0.0.1:8080");
const JSON: (&str, &str) = ("content-type", "application/json");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One answer of the router.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = dvm::server::router(state.clone())
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn fetch_document(state: &Arc<AppState>) -> Value {
    let answer = send(state, "GET", "/openapi.json", &[HOST], Body::empty()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");
    doc
}

/// A validator for `schema`, a part of `doc` whose `$ref`s point into `doc`'s components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({ "components": doc["components"], "allOf": [schema] });
    jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("the schema {schema} does not compile: {e}"))
}

/// Why `instance` does not validate against `schema`, if it does not.
fn problems(doc: &Value, schema: &Value, instance: &Value) -> Option<String> {
    let validator = validator(doc, schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

fn media(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Checks one real answer against the document's operation `method template`; `Err` says
/// how it disagrees.
fn check(doc: &Value, method: &str, template: &str, answer: &Answer) -> Result<(), String> {
    let what = format!("{method} {template} answered {}", answer.status.as_u16());
    let operation = &doc["paths"][template][method.to_ascii_lowercase()];
    if !operation.is_object() {
        return Err(format!("{what}: the operation is not documented"));
    }
    let code = answer.status.as_u16().to_string();
    let range = format!("{}XX", answer.status.as_u16() / 100);
    let responses = &operation["responses"];
    let response = [code.as_str(), range.as_str(), "default"]
        .iter()
        .map(|key| &responses[*key])
        .find(|r| r.is_object())
        .ok_or_else(|| format!("{what}: the document has no answer for this status"))?;
    let Some(content) = response["content"].as_object() else {
        return if answer.body.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: the document says no body, the server sent {:?}",
                String::from_utf8_lossy(&answer.body)
            ))
        };
    };
    // A body without a Content-Type (MCP's transport refuses that way) is read as text.
    let real = match media(&answer.content_type) {
        "" => "text/plain",
        real => real,
    };
    let Some((_, documented)) = content.iter().find(|(key, _)| media(key) == real) else {
        return Err(format!(
            "{what}: sent {real:?}, documented {:?}",
            content.keys().collect::<Vec<_>>()
        ));
    };
    if real != "application/json" {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("{what}: the body is not JSON: {e}"))?;
    match problems(doc, &documented["schema"], &body) {
        None => Ok(()),
        Some(problems) => Err(format!("{what}: {body} does not match: {problems}")),
    }
}

/// Sends requests, checks each answer against the document, and notes the operations seen.
struct Checker {
    state: Arc<AppState>,
    doc: Value,
    seen: Mutex<BTreeSet<(String, String)>>,
    failures: Mutex<Vec<String>>,
}

impl Checker {
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let answer = send(&self.state, method, path, headers, body).await;
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_ascii_lowercase(), template.to_string()));
        if let Err(failure) = check(&self.doc, method, template, &answer) {
            self.failures.lock().unwrap().push(failure);
        }
        answer
    }

    async fn json(&self, method: &str, template: &str, path: &str, body: &Value) -> Answer {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.call(method, template, path, &[HOST, JSON], text).await
    }

    async fn get(&self, template: &str, path: &str) -> Answer {
        self.call("GET", template, path, &[HOST], Body::empty())
            .await
    }

    /// The request body schema of an operation.
    fn request_schema(&self, method: &str, template: &str) -> Value {
        self.doc["paths"][template][method]["requestBody"]["content"]["application/json"]["schema"]
            .clone()
    }
}

/// Follows `$ref`s into the document's components.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(doc, doc.pointer(pointer).unwrap_or(&Value::Null))
        }
        None => schema,
    }
}

/// The least instance of a schema: required properties only, each the least of its own.
fn least(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(example) = schema["examples"].get(0) {
        // Keep the example's required part when the schema is an object.
        if let (Some(object), Some(required)) = (example.as_object(), schema["required"].as_array())
        {
            return Value::Object(
                object
                    .iter()
                    .filter(|(key, _)| required.iter().any(|r| r == *key))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
        }
        return example.clone();
    }
    if let Some(value) = schema["enum"].get(0) {
        return value.clone();
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema[combinator].get(0) {
            return least(doc, first);
        }
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .find(|k| *k != "null")
            .cloned()
            .unwrap_or(Value::Null),
        other => other.clone(),
    };
    match kind.as_str() {
        Some("object") => {
            let mut object = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                object.insert(name.to_string(), least(doc, &schema["properties"][name]));
            }
            Value::Object(object)
        }
        Some("array") => {
            let count = schema["minItems"].as_u64().unwrap_or(0);
            Value::Array((0..count).map(|_| least(doc, &schema["items"])).collect())
        }
        Some("string") => {
            Value::String("x".repeat(schema["minLength"].as_u64().unwrap_or(0) as usize))
        }
        Some("integer") => json!(schema["minimum"].as_u64().unwrap_or(1)),
        Some("number") => json!(schema["minimum"].as_f64().unwrap_or(1.0)),
        Some("boolean") => Value::Bool(false),
        _ => Value::Null,
    }
}

/// Every (method, path) the router serves, read from the route tables in the source (the
/// router does not list its routes), `{*path}` written `{path}` as OpenAPI does.
fn served_routes() -> BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let methods = regex::Regex::new(r"\b(get|post|put|delete|patch)\(").unwrap();
    let mut routes = BTreeSet::new();
    for file in ["api.rs", "judge0/mod.rs"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's text, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &rest[..end];
            let path = call.split('"').nth(1).unwrap().replace("{*", "{");
            for found in methods.captures_iter(call) {
                routes.insert((found[1].to_string(), path.clone()));
            }
        }
    }
    let server = std::fs::read_to_string(root.join("mod.rs")).unwrap();
    assert!(
        server.contains(".nest_service(\"/mcp\", mcp)"),
        "the router nests MCP at /mcp"
    );
    // Streamable HTTP: requests (POST), the event stream (GET), ending a session (DELETE).
    for method in ["post", "get", "delete"] {
        routes.insert((method.to_string(), "/mcp".to_string()));
    }
    routes
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                routes.insert((method.clone(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let state = AppState::new(ServerConfig::default(), shared().clone());
    let doc = runtime().block_on(fetch_document(&state));
    let served = served_routes();
    let documented = documented_routes(&doc);
    assert!(served.len() > 40, "the route tables were read: {served:?}");
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
    // Each documented operation says what it answers, errors included, and is secured by the
    // bearer token unless it says otherwise.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method];
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('4')),
            "{method} {path} documents its client errors"
        );
        for parameter in path.split('/').filter(|p| p.starts_with('{')) {
            let name = parameter.trim_matches(|c| c == '{' || c == '}');
            assert!(
                operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{method} {path} documents its parameter {name}"
            );
        }
    }
}

#[test]
fn the_checks_catch_a_document_that_disagrees() {
    let state = AppState::new(ServerConfig::default(), shared().clone());
    runtime().block_on(async {
        let doc = fetch_document(&state).await;
        let health = send(&state, "GET", "/health", &[HOST], Body::empty()).await;
        check(&doc, "GET", "/health", &health).unwrap();
        // A field the schema lacks (it refuses unknown properties).
        let mut extra = health.json();
        extra["surprise"] = json!(1);
        let sent = Answer {
            status: StatusCode::OK,
            content_type: "application/json".into(),
            body: extra.to_string().into_bytes(),
        };
        assert!(check(&doc, "GET", "/health", &sent).is_err());
        // A required field missing.
        let mut missing = health.json();
        missing.as_object_mut().unwrap().remove("version");
        let sent = Answer {
            body: missing.to_string().into_bytes(),
            ..sent
        };
        assert!(check(&doc, "GET", "/health", &sent).is_err());
        // A status the operation does not answer with, and an undocumented operation.
        let teapot = Answer {
            status: StatusCode::CREATED,
            ..sent
        };
        assert!(check(&doc, "GET", "/health", &teapot).is_err());
        assert!(check(&doc, "PATCH", "/health", &health).is_err());
        // The wrong media type.
        let text = Answer {
            status: StatusCode::OK,
            content_type: "text/plain".into(),
            body: b"ok".to_vec(),
        };
        assert!(check(&doc, "GET", "/health", &text).is_err());
        // A request the schema refuses is refused by the validator too.
        let execute = &doc["components"]["schemas"]["ExecuteRequest"];
        assert!(problems(&doc, execute, &json!({"code": "1", "nope": 1})).is_some());
        assert!(problems(&doc, execute, &json!({"name": "main.py"})).is_some());
        assert!(problems(&doc, execute, &json!({"code": "1"})).is_none());
    });
}

/// Polls a Judge0 submission until it has finished.
async fn finished(checker: &Checker, token: &str) -> Value {
    for _ in 0..600 {
        let answer = checker
            .get(
                "/submissions/{token}",
                &format!("/submissions/{token}?fields=status_id"),
            )
            .await;
        if answer.json()["status_id"].as_u64().unwrap_or(0) > 2 {
            return answer.json();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("submission {token} did not finish");
}

#[test]
fn every_operation_answers_as_documented() {
    let state = AppState::new(ServerConfig::default(), shared().clone());
    runtime().block_on(async {
        let doc = fetch_document(&state).await;
        let checker = Checker {
            state: state.clone(),
            doc: doc.clone(),
            seen: Mutex::default(),
            failures: Mutex::default(),
        };
        let c = &checker;
        c.get("/health", "/health").await;
        // Prometheus's classic text format by default; OpenMetrics when asked for.
        let classic = c.get("/metrics", "/metrics").await;
        assert!(
            classic
                .content_type
                .starts_with("text/plain; version=0.0.4"),
            "{}",
            classic.content_type
        );
        let text = String::from_utf8(classic.body.clone()).unwrap();
        for (kind, name) in [
            ("counter", "dvm_http_responses_total"),
            ("counter", "dvm_cache_hits_total"),
            ("gauge", "dvm_runs_in_flight"),
            ("gauge", "dvm_judge0_retained_bytes"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        let metrics = c
            .call(
                "GET",
                "/metrics",
                "/metrics",
                &[
                    HOST,
                    ("accept", "application/openmetrics-text; version=1.0.0"),
                ],
                Body::empty(),
            )
            .await;
        assert!(
            metrics
                .content_type
                .starts_with("application/openmetrics-text; version=1.0.0"),
            "{}",
            metrics.content_type
        );
        let text = String::from_utf8(metrics.body.clone()).unwrap();
        for (kind, name) in [
            // Families with samples only: runs are checked in `server::`.
            ("counter", "dvm_http_responses"),
            ("counter", "dvm_cache_hits"),
            ("gauge", "dvm_runs_in_flight"),
            ("gauge", "dvm_judge0_retained_bytes"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        c.get("/openapi.json", "/openapi.json").await;
        c.get("/runtimes", "/runtimes").await;
        let example = |template: &str| {
            resolve(&doc, &c.request_schema("post", template))["examples"][0].clone()
        };
        let run = example("/execute");
        let ran = c.json("POST", "/execute", "/execute", &run).await;
        assert_eq!(ran.status, StatusCode::OK);
        assert_eq!(ran.json()["stdout"], "['a'] text\n");
        let streamed = c
            .json(
                "POST",
                "/execute",
                "/execute?stream=true",
                &json!({"code": "print(1)"}),
            )
            .await;
        assert_eq!(media(&streamed.content_type), "text/event-stream");
        c.json("POST", "/execute", "/execute", &json!({"code": 1}))
            .await;
        c.json(
            "POST",
            "/execute",
            "/execute",
            &json!({"code": "1", "runtime": "cobol"}),
        )
        .await;
        c.call("POST", "/execute", "/execute", &[HOST], "{}").await;
        // Cancelling: a run in flight (202), then one that is not (404).
        let slow = {
            let state = state.clone();
            tokio::spawn(async move {
                send(
                    &state,
                    "POST",
                    "/execute",
                    &[HOST, JSON],
                    json!({"code": "while True: pass", "run_id": "slow-run", "timeout_ms": 60000})
                        .to_string(),
                )
                .await
            })
        };
        let mut cancelled = false;
        for _ in 0..600 {
            let answer = c
                .call(
                    "POST",
                    "/runs/{run_id}/cancel",
                    "/runs/slow-run/cancel",
                    &[HOST],
                    Body::empty(),
                )
                .await;
            if answer.status == StatusCode::ACCEPTED {
                cancelled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cancelled);
        // Tool answers: nothing waits under a made-up id; neither answer is refused.
        let path = "/runs/{run_id}/tool_results/{call_id}";
        let none = c
            .json(
                "POST",
                path,
                "/runs/slow-run/tool_results/no-such-call",
                &json!({"result": 1}),
            )
            .await;
        assert_eq!(none.status, StatusCode::NOT_FOUND);
        let bad = c
            .json(
                "POST",
                path,
                "/runs/slow-run/tool_results/no-such-call",
                &json!({"x": 1}),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let slow = slow.await.unwrap();
        check(&doc, "POST", "/execute", &slow).unwrap();
        assert_eq!(slow.json()["limit"], "cancelled");

        for base in ["/sandboxes", "/sessions"] {
            let t = |rest: &str| format!("{base}{rest}");
            let created = c.json("POST", base, base, &Value::Null).await;
            assert_eq!(created.status, StatusCode::CREATED);
            let id = created.json()["id"].as_str().unwrap().to_string();
            let p = |rest: &str| format!("{base}/{id}{rest}");
            c.get(base, base).await;
            c.get(&t("/{id}"), &p("")).await;
            c.get(&t("/{id}"), &format!("{base}/no-such-sandbox")).await;
            let ran = c
                .json("POST", &t("/{id}/execute"), &p("/execute"), &run)
                .await;
            assert_eq!(ran.status, StatusCode::OK);
            c.json(
                "POST",
                &t("/{id}/execute"),
                &p("/execute?stream=true"),
                &json!({"code": "print(2)"}),
            )
            .await;
            c.json(
                "POST",
                &t("/{id}/execute"),
                &p("/execute"),
                &json!({"code": "1", "requirements": ["humanize"]}),
            )
            .await;
            c.call(
                "POST",
                &t("/{id}/cancel"),
                &p("/cancel"),
                &[HOST],
                Body::empty(),
            )
            .await;
            let installed = c
                .json(
                    "POST",
                    &t("/{id}/packages"),
                    &p("/packages"),
                    &example(&t("/{id}/packages")),
                )
                .await;
            if base == "/sandboxes" {
                assert_eq!(installed.status, StatusCode::OK);
            } else {
                assert_eq!(installed.status, StatusCode::CONFLICT);
            }
            let put = c
                .call(
                    "PUT",
                    &t("/{id}/files/{path}"),
                    &p("/files/dir/a.txt"),
                    &[HOST, ("content-type", "application/octet-stream")],
                    "bytes",
                )
                .await;
            assert_eq!(put.status, StatusCode::CREATED);
            c.get(&t("/{id}/files"), &p("/files")).await;
            if base == "/sessions" {
                let taken = c
                    .json("POST", &t("/{id}/snapshot"), &p("/snapshot"), &Value::Null)
                    .await;
                assert_eq!(taken.status, StatusCode::CREATED);
                let snapshot = taken.json()["id"].as_str().unwrap().to_string();
                let one = |rest: &str| format!("/snapshots/{snapshot}{rest}");
                c.get("/snapshots/{id}", &one("")).await;
                c.get("/snapshots/{id}", "/snapshots/not-an-id").await;
                let resumed = c
                    .json("POST", base, base, &json!({ "from_snapshot": snapshot }))
                    .await;
                assert_eq!(resumed.status, StatusCode::CREATED);
                let forked = c
                    .json(
                        "POST",
                        &t("/{id}/fork"),
                        &p("/fork"),
                        &example(&t("/{id}/fork")),
                    )
                    .await;
                assert_eq!(forked.status, StatusCode::CREATED);
                c.json("POST", &t("/{id}/fork"), &p("/fork"), &json!({"count": 99}))
                    .await;
                let removed = c
                    .call(
                        "DELETE",
                        "/snapshots/{id}",
                        &one(""),
                        &[HOST],
                        Body::empty(),
                    )
                    .await;
                assert_eq!(removed.status, StatusCode::NO_CONTENT);
                c.call(
                    "DELETE",
                    "/snapshots/{id}",
                    &one(""),
                    &[HOST],
                    Body::empty(),
                )
                .await;
            } else {
                c.json(
                    "POST",
                    "/sessions/{id}/snapshot",
                    &format!("/sessions/{id}/snapshot"),
                    &Value::Null,
                )
                .await;
            }
            let read = c
                .get(&t("/{id}/files/{path}"), &p("/files/dir/a.txt"))
                .await;
            assert_eq!(read.body, b"bytes");
            c.get(&t("/{id}/files/{path}"), &p("/files/missing.txt"))
                .await;
            let removed = c
                .call(
                    "DELETE",
                    &t("/{id}/files/{path}"),
                    &p("/files/dir/a.txt"),
                    &[HOST],
                    Body::empty(),
                )
                .await;
            assert_eq!(removed.status, StatusCode::NO_CONTENT);
            let closed = c
                .call("DELETE", &t("/{id}"), &p(""), &[HOST], Body::empty())
                .await;
            assert_eq!(closed.status, StatusCode::NO_CONTENT);
        }
        // A sandbox made from the full example.
        let full = c
            .json("POST", "/sandboxes", "/sandboxes", &example("/sandboxes"))
            .await;
        assert_eq!(full.status, StatusCode::CREATED);

        // Judge0.
        c.get("/languages", "/languages").await;
        c.get("/languages/{id}", "/languages/71").await;
        c.get("/languages/{id}", "/languages/1").await;
        c.get("/languages/{id}", "/languages/python").await;
        c.get("/statuses", "/statuses").await;
        c.get("/about", "/about").await;
        c.get("/config_info", "/config_info").await;
        c.get("/workers", "/workers").await;
        let submission = example("/submissions");
        let waited = c
            .json(
                "POST",
                "/submissions",
                "/submissions?wait=true&fields=*",
                &submission,
            )
            .await;
        assert_eq!(waited.status, StatusCode::CREATED);
        assert_eq!(waited.json()["status"]["description"], "Accepted");
        let done = waited.json()["token"].as_str().unwrap().to_string();
        let queued = c
            .json("POST", "/submissions", "/submissions", &submission)
            .await;
        let token = queued.json()["token"].as_str().unwrap().to_string();
        c.json(
            "POST",
            "/submissions",
            "/submissions",
            &json!({"language_id": 1}),
        )
        .await;
        c.json(
            "POST",
            "/submissions",
            "/submissions?fields=nope",
            &submission,
        )
        .await;
        c.call(
            "POST",
            "/submissions",
            "/submissions",
            &[HOST],
            submission.to_string(),
        )
        .await;
        finished(c, &token).await;
        c.get("/submissions/{token}", &format!("/submissions/{token}"))
            .await;
        c.get(
            "/submissions/{token}",
            &format!("/submissions/{token}?fields=*&base64_encoded=true"),
        )
        .await;
        c.get("/submissions/{token}", "/submissions/no-such-token")
            .await;
        let deleted = c
            .call(
                "DELETE",
                "/submissions/{token}",
                &format!("/submissions/{done}?fields=*"),
                &[HOST],
                Body::empty(),
            )
            .await;
        assert_eq!(deleted.status, StatusCode::OK);
        c.call(
            "DELETE",
            "/submissions/{token}",
            "/submissions/no-such-token",
            &[HOST],
            Body::empty(),
        )
        .await;
        let batch = c
            .json(
                "POST",
                "/submissions/batch",
                "/submissions/batch",
                &example("/submissions/batch"),
            )
            .await;
        assert_eq!(batch.status, StatusCode::CREATED);
        c.json(
            "POST",
            "/submissions/batch",
            "/submissions/batch",
            &json!({"submissions": [{"language_id": 1}]}),
        )
        .await;
        c.get(
            "/submissions/batch",
            &format!("/submissions/batch?tokens={token},no-such-token&fields=*"),
        )
        .await;
        c.get("/submissions/batch", "/submissions/batch").await;

        // MCP.
        let mcp_headers = [
            HOST,
            JSON,
            ("accept", "application/json, text/event-stream"),
        ];
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "openapi-test", "version": "1"}}});
        let answer = c
            .call("POST", "/mcp", "/mcp", &mcp_headers, initialize.to_string())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        c.call(
            "GET",
            "/mcp",
            "/mcp",
            &[HOST, ("accept", "text/event-stream")],
            Body::empty(),
        )
        .await;
        c.call("DELETE", "/mcp", "/mcp", &[HOST], Body::empty())
            .await;

        // Access checks on any route: a foreign Host, and a missing token.
        c.call(
            "GET",
            "/runtimes",
            "/runtimes",
            &[("host", "evil.example")],
            Body::empty(),
        )
        .await;
        let failures = checker.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let seen = checker.seen.lock().unwrap().clone();
        let unseen: Vec<_> = documented_routes(&doc).difference(&seen).cloned().collect();
        assert!(unseen.is_empty(), "operations not exercised: {unseen:?}");
    });
    let guarded = AppState::new(
        ServerConfig {
            token: Some("secret".into()),
            ..ServerConfig::default()
        },
        shared().clone(),
    );
    runtime().block_on(async {
        let doc = fetch_document_with(&guarded, "secret").await;
        for (path, template) in [("/runtimes", "/runtimes"), ("/statuses", "/statuses")] {
            let refused = send(&guarded, "GET", path, &[HOST], Body::empty()).await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
            check(&doc, "GET", template, &refused).unwrap();
        }
    });
}

async fn fetch_document_with(state: &Arc<AppState>, token: &str) -> Value {
    let bearer = format!("Bearer {token}");
    let answer = send(
        state,
        "GET",
        "/openapi.json",
        &[HOST, ("authorization", bearer.as_str())],
        Body::empty(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()
}

#[test]
fn requests_the_document_allows_are_accepted() {
    let state = AppState::new(ServerConfig::default(), shared().clone());
    runtime().block_on(async {
        let doc = fetch_document(&state).await;
        let sandbox = send(&state, "POST", "/sandboxes", &[HOST, JSON], "").await.json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let session = send(&state, "POST", "/sessions", &[HOST, JSON], "").await.json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut tried = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let Some(schema) =
                    operation["requestBody"]["content"]["application/json"]["schema"].as_object()
                else {
                    continue;
                };
                if path == "/mcp" {
                    continue; // JSON-RPC: its own specification, tested in server::.
                }
                let schema = Value::Object(schema.clone());
                let resolved = resolve(&doc, &schema);
                let mut instances: Vec<Value> =
                    resolved["examples"].as_array().cloned().unwrap_or_default();
                assert!(!instances.is_empty(), "{method} {path}: the request schema has an example");
                instances.push(least(&doc, &schema));
                for instance in instances {
                    if let Some(problems) = problems(&doc, &schema, &instance) {
                        panic!("{method} {path}: {instance} is not valid for its own schema: {problems}");
                    }
                    let uri = if path.starts_with("/sessions/") {
                        path.replace("{id}", &session)
                    } else {
                        path.replace("{id}", &sandbox)
                    };
                    let uri = if path == "/submissions" {
                        format!("{uri}?wait=true")
                    } else {
                        uri
                    };
                    let answer = send(
                        &state,
                        &method.to_ascii_uppercase(),
                        &uri,
                        &[HOST, JSON],
                        instance.to_string(),
                    )
                    .await;
                    let refused_for_shape = [
                        StatusCode::BAD_REQUEST,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    ]
                    .contains(&answer.status);
                    // A session's packages are fixed at creation (409, documented).
                    assert!(
                        !refused_for_shape,
                        "{method} {path} refused {instance}: {} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    );
                    check(&doc, method, path, &answer).unwrap();
                    tried += 1;
                }
            }
        }
        assert!(tried >= 16, "request bodies tried: {tried}");
    });
}

#[test]
fn ids_are_uuid_v4() {
    let pattern =
        regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
            .unwrap();
    let ids: BTreeSet<String> = (0..64).map(|_| dvm::server::new_id()).collect();
    assert_eq!(ids.len(), 64);
    for id in &ids {
        assert!(pattern.is_match(id), "{id}");
    }
}
