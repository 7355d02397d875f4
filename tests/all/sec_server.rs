//! Issue 15, classes 2 and 9: `dvm serve` against browsers (DNS rebinding, cross-site
//! requests) and against exhaustion (session counts, memory, the instance pool, limits
//! above the server's maxima, workspace quotas across executions, Judge0 storage).
//!
//! Each test attacks as a client would and checks the host: what the server created, what
//! its workspaces hold on disk, what it keeps in memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dvm::server::{AppState, MaxLimits, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::server::{Server, client};
use crate::support::*;

fn state(edit: impl FnOnce(&mut ServerConfig)) -> Arc<AppState> {
    let mut config = ServerConfig::default();
    edit(&mut config);
    AppState::new(config, shared().clone())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends one request; returns the status and the body (JSON when it parses).
async fn send(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = dvm::server::router(state.clone())
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

const JSON: (&str, &str) = ("content-type", "application/json");
const LOCAL: (&str, &str) = ("host", "127.0.0.1:8080");

async fn post(state: &Arc<AppState>, path: &str, body: Value) -> (StatusCode, Value) {
    send(state, "POST", path, &[JSON, LOCAL], body.to_string()).await
}

/// Every regular file under `dir` on the host and its size, walking without following links.
fn host_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                found.push((entry.path(), meta.len()));
            }
        }
    }
    found
}

/// DNS rebinding: a page whose own name resolves to 127.0.0.1 sends `Host: evil.example`.
/// Every route refuses it, with and without a token, and nothing is created.
#[test]
fn a_foreign_host_is_refused_on_every_route_and_creates_nothing() {
    for token in [None, Some("s3cret")] {
        let state = state(|c| c.token = token.map(str::to_string));
        runtime().block_on(async {
            let auth = format!("Bearer {}", token.unwrap_or_default());
            let headers =
                |host: &'static str| vec![JSON, ("host", host), ("authorization", auth.as_str())];
            for host in [
                "evil.example",
                "evil.example:8080",
                "localhost:9999",
                "127.0.0.1.evil.example:8080",
            ] {
                for (method, path, body) in [
                    ("POST", "/sessions", json!({})),
                    ("POST", "/sandboxes", json!({})),
                    ("POST", "/execute", json!({"code": "print(1)"})),
                    (
                        "POST",
                        "/submissions?wait=true",
                        json!({"source_code": "print(1)", "language_id": 71}),
                    ),
                    (
                        "POST",
                        "/mcp",
                        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
                    ),
                    ("GET", "/metrics", Value::Null),
                    ("GET", "/openapi.json", Value::Null),
                    ("GET", "/health", Value::Null),
                    ("GET", "/sessions", Value::Null),
                    ("GET", "/languages", Value::Null),
                ] {
                    let text = if body.is_null() {
                        String::new()
                    } else {
                        body.to_string()
                    };
                    let (status, answer) = send(&state, method, path, &headers(host), text).await;
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{method} {path} Host {host}: {answer}"
                    );
                    assert_eq!(answer["error"]["kind"], "forbidden_host", "{answer}");
                }
            }
            assert!(
                state.sandboxes.lock().unwrap().is_empty(),
                "a refused request made a sandbox"
            );
            assert_eq!(state.admitted().0, 0);
            assert_eq!(
                state.submissions.retained().0,
                0,
                "a refused submission was kept"
            );
            assert!(state.runs.lock().unwrap().is_empty());
            // The server's own names pass.
            let (status, _) =
                send(&state, "GET", "/runtimes", &headers("localhost:8080"), "").await;
            assert_eq!(status, StatusCode::OK);
        });
    }
}

/// CSRF: a page on another site POSTs `text/plain` (no preflight) to run code that would
/// leave a marker in a sandbox's workspace. Refused whichever way it comes, nothing runs.
#[test]
fn cross_site_and_non_json_posts_run_nothing() {
    let state = state(|c| c.allowed_origins = vec!["http://localhost:3000".into()]);
    runtime().block_on(async {
        let (status, sandbox) = post(&state, "/sandboxes", json!({"runtime": "python"})).await;
        assert_eq!(status, StatusCode::CREATED, "{sandbox}");
        let id = sandbox["id"].as_str().unwrap().to_string();
        let workspace = state.sandbox(&id).unwrap().workspace.path().to_path_buf();
        let marker = workspace.join("marker.txt");
        let code = json!({"code": "open('marker.txt', 'w').write('ran')"}).to_string();
        let path = format!("/sandboxes/{id}/execute");
        let evil = ("origin", "http://evil.example");
        let attempts: Vec<(Vec<(&str, &str)>, StatusCode)> = vec![
            (
                vec![LOCAL, evil, ("content-type", "text/plain")],
                StatusCode::FORBIDDEN,
            ),
            (vec![LOCAL, evil, JSON], StatusCode::FORBIDDEN),
            (
                vec![LOCAL, ("origin", "null"), ("content-type", "text/plain")],
                StatusCode::FORBIDDEN,
            ),
            (
                vec![LOCAL, ("origin", "http://localhost:3001"), JSON],
                StatusCode::FORBIDDEN,
            ),
            (
                vec![
                    LOCAL,
                    ("sec-fetch-site", "cross-site"),
                    ("content-type", "text/plain"),
                ],
                StatusCode::FORBIDDEN,
            ),
            (
                vec![LOCAL, ("content-type", "text/plain")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                vec![LOCAL, ("content-type", "application/x-www-form-urlencoded")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                vec![LOCAL, ("content-type", "multipart/form-data; boundary=x")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (vec![LOCAL], StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ];
        for (headers, expected) in &attempts {
            for route in [path.as_str(), "/execute"] {
                let (status, body) = send(&state, "POST", route, headers, code.clone()).await;
                assert_eq!(status, *expected, "{route} {headers:?}: {body}");
            }
        }
        // Sessions, sandboxes and Judge0 submissions the same way.
        for (route, body) in [
            ("/sessions", json!({}).to_string()),
            ("/sandboxes", json!({"session": true}).to_string()),
            (
                "/submissions?wait=true",
                json!({"source_code": "open('/workspace/x','w')", "language_id": 71}).to_string(),
            ),
            (
                "/submissions/batch",
                json!({"submissions": [{"source_code": "1", "language_id": 71}]}).to_string(),
            ),
        ] {
            for (headers, expected) in &attempts {
                let (status, answer) = send(&state, "POST", route, headers, body.clone()).await;
                assert_eq!(status, *expected, "{route} {headers:?}: {answer}");
            }
        }
        assert!(!marker.exists(), "a refused request ran the guest");
        assert_eq!(
            state.sandboxes.lock().unwrap().len(),
            1,
            "a refused request made a sandbox"
        );
        assert_eq!(state.submissions.retained().0, 0);
        let metrics = dvm::server::router(state.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let metrics = axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap();
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            !metrics.contains("dvm_runs_total{"),
            "something ran: {metrics}"
        );

        // The allowed origin, with JSON, runs.
        let (status, ran) = send(
            &state,
            "POST",
            &path,
            &[LOCAL, ("origin", "http://localhost:3000"), JSON],
            code.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{ran}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran");
    });
}

/// Sixty-four concurrent creations under a cap of five make exactly five.
#[test]
fn concurrent_creations_stop_exactly_at_the_cap() {
    let state = state(|c| c.max_sandboxes = 5);
    runtime().block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let state = state.clone();
                tokio::spawn(async move {
                    let route = if i % 2 == 0 {
                        "/sessions"
                    } else {
                        "/sandboxes"
                    };
                    post(&state, route, json!({"limits": {"memory_bytes": 64 << 20}})).await
                })
            })
            .collect();
        let mut made = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                StatusCode::CREATED => made += 1,
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["error"]["kind"], "busy"),
                other => panic!("{other}: {body}"),
            }
        }
        assert_eq!(made, 5);
        assert_eq!(state.sandboxes.lock().unwrap().len(), 5);
        assert_eq!(state.admitted().0, 5);
        // Closing one gives its place back.
        let id = state
            .sandboxes
            .lock()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        state.close_sandbox(&id).await.unwrap();
        for _ in 0..100 {
            if state.admitted().0 == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = post(&state, "/sandboxes", json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        state.shut_down().await;
    });
}

/// An MCP connection (its own workspace) takes a place like a sandbox: past the cap, a new
/// connection is refused and makes nothing.
#[test]
fn mcp_connections_count_toward_the_cap() {
    let state = state(|c| c.max_sandboxes = 1);
    runtime().block_on(async {
        let initialize = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}},
        })
        .to_string();
        let headers = [
            JSON,
            LOCAL,
            ("accept", "application/json, text/event-stream"),
        ];
        let (status, body) = send(&state, "POST", "/mcp", &headers, initialize.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(state.admitted().0, 1, "the connection holds a place");
        let (status, body) = post(&state, "/sandboxes", json!({})).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let (status, body) = send(&state, "POST", "/mcp", &headers, initialize).await;
        assert!(
            !status.is_success(),
            "a second connection past the cap: {status} {body}"
        );
        assert_eq!(state.admitted().0, 1);
    });
}

/// Sessions reserve their memory cap: past the budget they are refused, and a session's
/// calls cannot take more than it reserved.
#[test]
fn session_memory_is_budgeted() {
    let state = state(|c| c.session_memory_bytes = 300 << 20);
    runtime().block_on(async {
        let (status, first) = post(
            &state,
            "/sessions",
            json!({"limits": {"memory_bytes": 256 << 20}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let (status, refused) = post(
            &state,
            "/sessions",
            json!({"limits": {"memory_bytes": 128 << 20}}),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("session memory"),
            "{refused}"
        );
        assert_eq!(state.admitted().1, 256 << 20);
        // Sandboxes hold no interpreter between executions: not counted.
        let (status, _) = post(&state, "/sandboxes", json!({})).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = first["id"].as_str().unwrap();
        let (status, over) = post(
            &state,
            &format!("/sessions/{id}/execute"),
            json!({"code": "x = bytearray(300 << 20)", "limits": {"memory_bytes": 512 << 20}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{over}");
        let (status, bomb) = post(
            &state,
            &format!("/sessions/{id}/execute"),
            json!({"code": "x = bytearray(300 << 20)"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{bomb}");
        assert_eq!(bomb["limit"], "memory", "{bomb}");
        state.shut_down().await;
    });
}

/// Limits above the server's maxima are refused, naming the maximum; defaults are lowered to
/// them (a fuel maximum gives runs a budget).
#[test]
fn limits_above_the_maxima_are_refused() {
    let state = state(|c| {
        c.max_limits = MaxLimits {
            memory_bytes: 128 << 20,
            disk_bytes: 1 << 20,
            output_bytes: 4096,
            fuel: Some(2_000_000_000),
            files: 10,
            open_files: 64,
        };
    });
    runtime().block_on(async {
        for (limits, flag) in [
            (json!({"memory_bytes": (128 << 20) + 1}), "--max-memory"),
            (json!({"disk_bytes": 2 << 20}), "--max-disk"),
            (json!({"max_output_bytes": 1 << 20}), "--max-output"),
            (json!({"fuel": 3_000_000_000u64}), "--max-fuel"),
            (json!({"files": 11}), "--max-files"),
            (json!({"open_files": 65}), "--max-open-files"),
            (json!({"timeout_ms": 301_000}), "--max-timeout"),
        ] {
            for route in ["/execute", "/sandboxes", "/sessions"] {
                let (status, body) = post(
                    &state,
                    route,
                    json!({"code": "print(1)", "limits": limits})
                        .as_object()
                        .map(|o| {
                            let mut o = o.clone();
                            if route != "/execute" {
                                o.remove("code");
                            }
                            Value::Object(o)
                        })
                        .unwrap(),
                )
                .await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{route} {limits}: {body}");
                assert_eq!(body["error"]["kind"], "over_maximum", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(flag), "{message}");
            }
        }
        assert!(state.sandboxes.lock().unwrap().is_empty());
        // Judge0: Judge0's 422.
        let (status, body) = post(
            &state,
            "/submissions",
            json!({"source_code": "print(1)", "language_id": 71, "memory_limit": 256_000}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["memory_limit"].is_array(), "{body}");
        let (_, config) = send(&state, "GET", "/config_info", &[LOCAL], "").await;
        assert_eq!(config["max_memory_limit"], json!(131072.0), "{config}");
        // Within them, runs work, under the lowered defaults.
        let (status, ran) = post(&state, "/execute", json!({"code": "print('x' * 100_000)"})).await;
        assert_eq!(status, StatusCode::OK, "{ran}");
        assert!(
            ran["stdout"].as_str().unwrap().len() <= 4096,
            "output past --max-output"
        );
        let (status, spun) = post(&state, "/execute", json!({"code": "while True: pass"})).await;
        assert_eq!(status, StatusCode::OK, "{spun}");
        assert_eq!(
            spun["limit"], "fuel",
            "the fuel maximum is the default budget: {spun}"
        );
        let (status, bomb) = post(
            &state,
            "/execute",
            json!({"code": "x = bytearray(200 << 20)"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{bomb}");
        assert_eq!(bomb["limit"], "memory", "{bomb}");
    });
}

/// Two executions each under the per-run disk quota but together over the workspace's: the
/// second is stopped at the disk limit, and what the workspace holds on the host stays
/// within its quota. Uploads past it are refused.
#[test]
fn a_workspace_quota_holds_across_executions() {
    let state = state(|_| {});
    runtime().block_on(async {
        for route in ["/sandboxes", "/sessions"] {
            let (status, sandbox) = post(&state, route, json!({"limits": {"disk_bytes": 1 << 20}})).await;
            assert_eq!(status, StatusCode::CREATED, "{sandbox}");
            let id = sandbox["id"].as_str().unwrap().to_string();
            let dir = state.sandbox(&id).unwrap().workspace.path().to_path_buf();
            let write = |name: &str| {
                json!({"code": format!("f = open('{name}', 'wb')\nfor _ in range(700):\n    f.write(b'x' * 1024)\n    f.flush()\nf.close()")})
            };
            let (_, first) = post(&state, &format!("{route}/{id}/execute"), write("a.bin")).await;
            assert_eq!(first["status"], "ok", "{route}: {first}");
            let (_, second) = post(&state, &format!("{route}/{id}/execute"), write("b.bin")).await;
            assert_eq!(second["limit"], "disk", "{route}: {second}");
            let held: u64 = host_files(&dir).iter().map(|(_, size)| size).sum();
            assert!(held <= (1 << 20) + 4096, "{route}: the workspace holds {held} bytes on the host");
            // An upload that would pass the quota is refused and writes nothing.
            if route == "/sandboxes" {
                let (status, body) = send(
                    &state,
                    "PUT",
                    &format!("{route}/{id}/files/c.bin"),
                    &[LOCAL],
                    vec![0u8; 600 << 10],
                )
                .await;
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
                assert_eq!(body["error"]["kind"], "disk_quota");
                assert!(!dir.join("c.bin").exists());
                let (status, body) = post(
                    &state,
                    &format!("{route}/{id}/execute"),
                    json!({"code": "1", "files_base64": {"d.bin": "A".repeat(800 << 10)}}),
                )
                .await;
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
                assert!(!dir.join("d.bin").exists());
            }
        }
        state.shut_down().await;
    });
}

/// Finished Judge0 submissions are evicted oldest first past the byte budget; a forgotten
/// token is a 404 that says so, and what the server keeps stays within the budget.
#[test]
fn judge0_storage_is_bounded_in_bytes() {
    let state = state(|c| c.judge0_max_bytes = 4 << 20);
    runtime().block_on(async {
        let source = format!("# {}\nprint('ok')\n", "x".repeat(1 << 20));
        let mut tokens = Vec::new();
        for _ in 0..12 {
            let (status, done) = post(
                &state,
                "/submissions?wait=true",
                json!({"source_code": source, "language_id": 71}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{done}");
            assert_eq!(done["stdout"], "ok\n", "{done}");
            tokens.push(done["token"].as_str().unwrap().to_string());
            let (count, bytes) = state.submissions.retained();
            assert!(bytes <= 4 << 20, "{count} submissions keep {bytes} bytes");
        }
        let (status, gone) = send(
            &state,
            "GET",
            &format!("/submissions/{}", tokens[0]),
            &[LOCAL],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
        assert!(
            gone["error"].as_str().unwrap().contains("no longer keeps"),
            "{gone}"
        );
        let (status, kept) = send(
            &state,
            "GET",
            &format!("/submissions/{}", tokens[11]),
            &[LOCAL],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{kept}");
        let (_, metrics) = send(&state, "GET", "/metrics", &[LOCAL], "").await;
        let metrics = metrics.as_str().unwrap().to_string();
        let bytes: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("dvm_judge0_retained_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes <= 4 << 20, "{metrics}");
    });
}

/// Over the wire: a rebinding `Host` is refused by the running server, the right one passes.
#[test]
fn a_running_server_refuses_foreign_hosts_and_origins() {
    let server = Server::start(&["--no-warm"]);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let http = client();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "localhost:1".into(),
    ] {
        let response = http
            .post(server.url("/sessions"))
            .header("host", host.as_str())
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{host}");
    }
    let response = http
        .post(server.url("/execute"))
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body(json!({"code": "print(1)"}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let listed: Value = http
        .get(server.url("/sessions"))
        .header("host", format!("localhost:{port}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed, json!([]), "a refused request made a session");
    let health: Value = http
        .get(server.url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["running"], 0);
}

/// Sessions cannot take the instance pool from one-shot runs: on a small pool, sessions are
/// refused once they hold what is left after the reserve, and one-shot runs still run.
#[test]
fn sessions_leave_the_pool_to_one_shot_runs() {
    let server = Server::start(&[
        "--no-warm",
        "--prestart",
        "0",
        "--workers",
        "2",
        "--pool-slots",
        "64",
        "--max-sessions",
        "1000",
        "--session-memory",
        "1TiB",
    ]);
    let http = client();
    let mut made = 0;
    let mut refused = Value::Null;
    for _ in 0..80 {
        let response = http
            .post(server.url("/sessions"))
            .json(&json!({"limits": {"memory_bytes": 32 << 20}}))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or(Value::Null);
        if status == 201 {
            made += 1;
        } else {
            assert_eq!(status, 503, "{body}");
            refused = body;
            break;
        }
    }
    assert!(made > 0, "no session fits: {refused}");
    assert_eq!(
        refused["error"]["kind"], "capacity",
        "sessions never stopped: {refused}"
    );
    // With every session slot taken, one-shot runs (more than the workers at once) still
    // run.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = server.url("/execute");
            std::thread::spawn(move || {
                let response = client()
                    .post(url)
                    .json(&json!({"code": "print(7)"}))
                    .send()
                    .unwrap();
                (
                    response.status().as_u16(),
                    response.json::<Value>().unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    for run in runs {
        let (status, body) = run.join().unwrap();
        assert_eq!(status, 200, "after {made} sessions: {body}");
        assert_eq!(body["stdout"], "7\n", "{body}");
    }
}

/// Allow-list entries that do not parse stop `dvm serve` before it listens, naming the flag.
#[test]
fn malformed_allow_lists_stop_the_server() {
    for (flag, value) in [
        ("--allow-origin", "localhost:3000"),
        ("--allow-origin", "http://x:1:*"),
        ("--allow-host", "evil.example/path"),
        ("--allow-host", "user@host"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dvm"))
            .args(["serve", "--no-warm", "--addr", "127.0.0.1:0", flag, value])
            .env("DVM_HOME", shared_home())
            .env_remove("DVM_TOKEN")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{flag} {value}: {}",
            show(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}
