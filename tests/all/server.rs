//! `dvm serve` and `dvm mcp`: in-process router tests, and black-box tests against a running
//! server (the native API, Judge0 endpoints, cancellation, limits on bodies, auth, shutdown).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A `dvm serve` child process on a free loopback port, killed on drop.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// What the server wrote on stderr after its address line, read by a thread.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `dvm serve --addr 127.0.0.1:0 ARGS…` and waits for its address.
    pub(crate) fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dvm"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("DVM_HOME", shared_home())
            .env_remove("DVM_LOG")
            .env_remove("DVM_TOKEN")
            .env_remove("DVM_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dvm serve starts");
        let stderr = child.stderr.take().unwrap();
        let (address, found) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.strip_prefix("dvm: listening on ") {
                    let base = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = address.send(base);
                    sent = true;
                }
                kept.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let base = found
            .recv_timeout(Duration::from_secs(600))
            .expect("dvm serve prints its address");
        Server { child, base, log }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "dvm serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client for the tests.
pub(crate) fn client() -> reqwest::blocking::Client {
    // dvm's reqwest carries no TLS provider of its own (dvm installs ring before use).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

mod in_process {
    //! The router called directly, without a socket.

    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use dvm::server::{AppState, ServerConfig};
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

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

    /// Sends one request; returns the status, the headers and the body.
    async fn send(
        state: &Arc<AppState>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = dvm::server::router(state.clone())
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    async fn json_call(
        state: &Arc<AppState>,
        method: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, _, bytes) = send(
            state,
            method,
            path,
            &[("content-type", "application/json")],
            text,
        )
        .await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    #[test]
    fn execute_health_runtimes_metrics_and_openapi() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (status, body) = json_call(&state, "POST", "/execute", json!({"code": "print(6 * 7)"})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["stdout"], "42\n");
            assert_eq!(body["runtime"], "python");
            assert!(body["run_id"].as_str().unwrap().len() == 36);
            let (_, body) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"runtime": "javascript", "code": "console.log(process === undefined ? 1 : 2)",
                       "files": {"in.txt": "x"}, "args": ["a"], "timeout_ms": 2000}),
            )
            .await;
            assert_eq!(body["status"], "error", "no `process` in QuickJS: {body}");
            let (_, body) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"code": "import sys, os\nprint(open('in.txt').read(), sys.argv[1:], os.environ['K'], sys.stdin.read())",
                       "files": {"in.txt": "data"}, "args": ["a", "b"], "env": {"K": "v"}, "stdin": "hi"}),
            )
            .await;
            assert_eq!(body["stdout"], "data ['a', 'b'] v hi\n", "{body}");

            let (status, health) = json_call(&state, "GET", "/health", Value::Null).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(health["status"], "ok");
            let (_, runtimes) = json_call(&state, "GET", "/runtimes", Value::Null).await;
            let ids: Vec<&str> = runtimes.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
            assert!(ids.contains(&"python") && ids.contains(&"javascript"), "{runtimes}");

            let (_, _, metrics) = send(&state, "GET", "/metrics", &[], "").await;
            let metrics = String::from_utf8(metrics).unwrap();
            assert!(metrics.contains("dvm_runs_total{runtime=\"python\",status=\"ok\",limit=\"\"} 2"), "{metrics}");
            assert!(metrics.contains("dvm_run_duration_seconds_count{runtime=\"python\"} 2"), "{metrics}");
            assert!(metrics.contains("dvm_sessions_live 0"));

            let (_, openapi) = json_call(&state, "GET", "/openapi.json", Value::Null).await;
            assert_eq!(openapi["openapi"], "3.1.0");
            for path in ["/execute", "/sessions/{id}/execute", "/submissions", "/submissions/batch", "/metrics"] {
                assert!(openapi["paths"].get(path).is_some(), "{path} missing");
            }
        });
    }

    #[test]
    fn bad_requests_get_json_errors_without_host_paths() {
        let state = state(|c| c.max_body_bytes = 4096);
        runtime().block_on(async {
            let (status, _, body) = send(
                &state,
                "POST",
                "/execute",
                &[("content-type", "application/json")],
                "{not json",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            let error: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(error["error"]["kind"], "bad_request");

            let (status, body) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"code": "1", "colour": "red"}),
            )
            .await;
            assert!(status.is_client_error(), "{status} {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("colour")
            );

            let big = json!({"code": "x".repeat(10_000)}).to_string();
            let (status, _, body) = send(
                &state,
                "POST",
                "/execute",
                &[("content-type", "application/json")],
                big,
            )
            .await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            let error: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&body)));
            assert_eq!(error["error"]["kind"], "too_large");

            let (status, body) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"code": "1", "runtime": "cobol"}),
            )
            .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let (status, body) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"code": "1", "timeout_ms": 10_000_000}),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

            // A missing file in a sandbox: the message names the file, not the host's layout.
            let (_, sandbox) = json_call(&state, "POST", "/sandboxes", Value::Null).await;
            let id = sandbox["id"].as_str().unwrap();
            let (status, body) = json_call(
                &state,
                "GET",
                &format!("/sandboxes/{id}/files/missing.txt"),
                Value::Null,
            )
            .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("missing.txt"), "{message}");
            let tmp = std::env::temp_dir().display().to_string();
            assert!(!message.contains(&tmp), "{message}");
            let (status, body) = json_call(
                &state,
                "GET",
                &format!("/sandboxes/{id}/files/..%2F..%2Fetc%2Fpasswd"),
                Value::Null,
            )
            .await;
            assert!(status.is_client_error(), "{status} {body}");
            let (status, _) = json_call(&state, "GET", "/sandboxes/nope", Value::Null).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        });
    }

    #[test]
    fn a_token_guards_every_route_but_health() {
        let state = state(|c| c.token = Some("s3cret".into()));
        runtime().block_on(async {
            let (status, _, _) = send(&state, "GET", "/runtimes", &[], "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            let (status, _, _) = send(
                &state,
                "GET",
                "/runtimes",
                &[("authorization", "Bearer wrong")],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            let (status, _, _) = send(
                &state,
                "GET",
                "/runtimes",
                &[("authorization", "Bearer s3cret")],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let (status, _, _) = send(
                &state,
                "GET",
                "/languages",
                &[("x-auth-token", "s3cret")],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let (status, _, _) = send(&state, "GET", "/health", &[], "").await;
            assert_eq!(status, StatusCode::OK);
        });
    }

    #[test]
    fn sessions_snapshot_resume_and_fork_over_http() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (status, session) = json_call(&state, "POST", "/sessions", Value::Null).await;
            assert_eq!(status, StatusCode::CREATED, "{session}");
            let id = session["id"].as_str().unwrap().to_string();
            let run = |code: &str| json!({ "code": code });
            let execute = |id: String, code: &'static str| {
                let state = state.clone();
                async move {
                    json_call(
                        &state,
                        "POST",
                        &format!("/sessions/{id}/execute"),
                        run(code),
                    )
                    .await
                }
            };
            let (_, set) =
                execute(id.clone(), "x = 41\nopen('f.txt', 'w').write('file')\nNone").await;
            assert_eq!(set["status"], "ok", "{set}");

            let (status, snapshot) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/snapshot"),
                Value::Null,
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{snapshot}");
            assert_eq!(snapshot["session_id"], id.as_str());
            let snapshot_id = snapshot["id"].as_str().unwrap().to_string();
            let (status, shown) = json_call(
                &state,
                "GET",
                &format!("/snapshots/{snapshot_id}"),
                Value::Null,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{shown}");
            assert_eq!(shown["runtime"], "python");

            // The session goes on; a resumed copy has what it had at the snapshot.
            execute(id.clone(), "x = 0").await;
            let (status, resumed) = json_call(
                &state,
                "POST",
                "/sessions",
                json!({ "from_snapshot": snapshot_id }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{resumed}");
            let resumed_id = resumed["id"].as_str().unwrap().to_string();
            assert_ne!(resumed_id, id);
            let (_, seen) = execute(resumed_id, "print(x + 1, open('f.txt').read())").await;
            assert_eq!(seen["stdout"], "42 file\n", "{seen}");

            let (status, forked) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/fork"),
                json!({ "count": 2 }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{forked}");
            let forks = forked["sessions"].as_array().unwrap();
            assert_eq!(forks.len(), 2);
            for fork in forks {
                let (_, seen) = execute(fork["id"].as_str().unwrap().to_string(), "x").await;
                assert_eq!(seen["stdout"], "0\n", "{seen}");
            }

            for (body, expected) in [(json!({"count": 0}), 400), (json!({"count": 17}), 400)] {
                let (status, _) =
                    json_call(&state, "POST", &format!("/sessions/{id}/fork"), body).await;
                assert_eq!(status.as_u16(), expected);
            }
            let (status, _) =
                json_call(&state, "GET", "/snapshots/..%2F..%2Fetc", Value::Null).await;
            assert_eq!(status.as_u16(), 422);
            let (status, gone) = json_call(
                &state,
                "DELETE",
                &format!("/snapshots/{snapshot_id}"),
                Value::Null,
            )
            .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{gone}");
            for (method, path, body) in [
                ("GET", format!("/snapshots/{snapshot_id}"), Value::Null),
                ("DELETE", format!("/snapshots/{snapshot_id}"), Value::Null),
                (
                    "POST",
                    "/sessions".to_string(),
                    json!({ "from_snapshot": snapshot_id }),
                ),
            ] {
                let (status, body) = json_call(&state, method, &path, body).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
            }
        });
    }

    #[test]
    fn sessions_keep_state_files_and_end_on_a_limit() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (status, session) = json_call(
                &state,
                "POST",
                "/sessions",
                json!({"requirements": ["humanize"]}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{session}");
            assert_eq!(session["kind"], "session");
            let id = session["id"].as_str().unwrap().to_string();
            let run = |code: &str| json!({ "code": code });
            let (_, first) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/execute"),
                run("import humanize\nx = 41"),
            )
            .await;
            assert_eq!(first["status"], "ok", "{first}");
            let (_, second) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/execute"),
                run("humanize.intcomma((x + 1) * 1000)"),
            )
            .await;
            assert_eq!(second["stdout"], "'42,000'\n", "{second}");

            let (status, _, _) = send(
                &state,
                "PUT",
                &format!("/sessions/{id}/files/data/in.txt"),
                &[],
                "hello",
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            let (_, wrote) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/execute"),
                run("open('data/out.txt', 'w').write(open('data/in.txt').read().upper())"),
            )
            .await;
            assert_eq!(wrote["files"][0]["path"], "data/out.txt", "{wrote}");
            let (status, _, bytes) = send(
                &state,
                "GET",
                &format!("/sessions/{id}/files/data/out.txt"),
                &[],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(bytes, b"HELLO");
            let (_, listing) =
                json_call(&state, "GET", &format!("/sessions/{id}/files"), Value::Null).await;
            assert_eq!(listing.as_array().unwrap().len(), 3, "{listing}");
            let (status, _, _) = send(
                &state,
                "DELETE",
                &format!("/sessions/{id}/files/data/in.txt"),
                &[],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            let (status, _) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/packages"),
                json!({"requirements": ["attrs"]}),
            )
            .await;
            assert_eq!(status, StatusCode::CONFLICT);

            let (_, shown) =
                json_call(&state, "GET", &format!("/sessions/{id}"), Value::Null).await;
            assert_eq!(shown["calls"], 3);
            let (_, listed) = json_call(&state, "GET", "/sessions", Value::Null).await;
            assert!(
                listed
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["id"] == id.as_str())
            );

            let (_, spun) = json_call(
                &state,
                "POST",
                &format!("/sessions/{id}/execute"),
                json!({"code": "while True: pass", "timeout_ms": 300}),
            )
            .await;
            assert_eq!(spun["limit"], "deadline", "{spun}");
            let (status, gone) =
                json_call(&state, "POST", &format!("/sessions/{id}/execute"), run("x")).await;
            assert_eq!(status, StatusCode::GONE, "{gone}");
            assert_eq!(gone["error"]["kind"], "session_closed");
            state.reap().await;
            let (status, _) =
                json_call(&state, "GET", &format!("/sessions/{id}"), Value::Null).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "an ended session is reaped");

            // A javascript session over HTTP: globals carry over, top-level await settles.
            let (status, js) = json_call(
                &state,
                "POST",
                "/sessions",
                json!({"runtime": "javascript"}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{js}");
            let js_path = format!("/sessions/{}/execute", js["id"].as_str().unwrap());
            let (_, first) = json_call(&state, "POST", &js_path, run("let total = 40")).await;
            assert_eq!(first["status"], "ok", "{first}");
            let (_, second) = json_call(
                &state,
                "POST",
                &js_path,
                run("await Promise.resolve(total + 2)"),
            )
            .await;
            assert_eq!(second["stdout"], "42\n", "{second}");

            let (status, refused) = json_call(
                &state,
                "POST",
                "/sessions",
                json!({"runtime": "python-lite"}),
            )
            .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
            assert!(
                refused["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("sandbox")
            );
        });
    }

    #[test]
    fn a_session_serves_a_thousand_calls_over_http_without_growing() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (_, session) = json_call(&state, "POST", "/sessions", Value::Null).await;
            let path = format!("/sessions/{}/execute", session["id"].as_str().unwrap());
            json_call(&state, "POST", &path, json!({"code": "n = 0"})).await;
            let mut peaks = Vec::new();
            for i in 0..1000 {
                let (status, body) = json_call(
                    &state,
                    "POST",
                    &path,
                    json!({"code": "block = list(range(5000))\nn += 1\ndel block"}),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "call {i}: {body}");
                assert_eq!(body["status"], "ok", "call {i}: {body}");
                if i == 99 || i == 999 {
                    peaks.push(body["memory_peak_bytes"].as_u64().unwrap());
                }
            }
            assert_eq!(
                peaks[0], peaks[1],
                "linear memory grew between call 100 and 1000"
            );
            let (_, last) = json_call(&state, "POST", &path, json!({"code": "n"})).await;
            assert_eq!(last["stdout"], "1000\n");
        });
    }

    #[test]
    fn sandboxes_keep_files_between_fresh_interpreters() {
        let state = state(|c| c.idle_timeout = Duration::from_millis(300));
        runtime().block_on(async {
            let (_, sandbox) = json_call(&state, "POST", "/sandboxes", json!({"runtime": "javascript", "limits": {"timeout_ms": 5000}})).await;
            assert_eq!(sandbox["kind"], "sandbox");
            let id = sandbox["id"].as_str().unwrap().to_string();
            let (_, wrote) = json_call(&state, "POST", &format!("/sandboxes/{id}/execute"), json!({
                "code": "import * as std from 'qjs:std';\nconst f = std.open('n.txt', 'w'); f.puts('7'); f.close();\nglobalThis.kept = 1;",
            })).await;
            assert_eq!(wrote["status"], "ok", "{wrote}");
            let (_, read) = json_call(&state, "POST", &format!("/sandboxes/{id}/execute"), json!({
                "code": "import * as std from 'qjs:std';\nconsole.log(std.loadFile('n.txt'), typeof globalThis.kept);",
            })).await;
            assert_eq!(read["stdout"], "7 undefined\n", "{read}");
            tokio::time::sleep(Duration::from_millis(400)).await;
            state.reap().await;
            let (status, _) = json_call(&state, "GET", &format!("/sandboxes/{id}"), Value::Null).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "idle sandboxes are closed");
        });
    }

    /// A loopback HTTP server answering every request with `ok`; it counts requests.
    fn ok_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        (port, count)
    }

    #[test]
    fn http_executions_that_ask_for_dvm_tools_get_the_upstream_tools() {
        let state = state(|_| {});
        runtime().block_on(async {
            let upstream = crate::sdk::upstream_example();
            let spec =
                dvm::server::upstream::UpstreamSpec::new("tracker", upstream.to_str().unwrap())
                    .unwrap();
            let upstreams = dvm::server::upstream::Upstreams::connect(&[spec])
                .await
                .unwrap();
            state.set_upstreams(upstreams);
            let code = "from dvm_tools.tracker import search_issues\n\
                        print(len(search_issues('crash', limit=2)))";
            let (status, body) = json_call(&state, "POST", "/execute", json!({"code": code})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["stdout"], "2\n", "{body}");
            assert_eq!(
                body["tool_calls"][0]["name"], "tracker.search_issues",
                "{body}"
            );
            let (_, body) =
                json_call(&state, "POST", "/execute", json!({"code": "print(1)"})).await;
            assert!(body.get("tool_calls").is_none(), "{body}");
        });
    }

    #[test]
    fn sandboxes_keep_the_tools_and_hosts_they_were_created_with() {
        let (port, count) = ok_server();
        let allowed = format!("127.0.0.1:{port}");
        let state = state(|config| config.allow_net = vec![allowed.parse().unwrap()]);
        runtime().block_on(async {
            let (status, made) = json_call(
                &state,
                "POST",
                "/sessions",
                json!({"allow_net": [allowed],
                       "tools": [{"name": "lookup", "parameters": {"type": "object"}}]}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{made}");
            let id = made["id"].as_str().unwrap().to_string();
            let path = format!("/sessions/{id}/execute");
            // Tools answer over the stream: a plain execution in it is refused.
            let (status, body) = json_call(&state, "POST", &path, json!({"code": "1"})).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let (status, body) = json_call(&state, "POST", "/sandboxes",
                json!({"allow_net": [allowed]})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let sandbox = body["id"].as_str().unwrap().to_string();
            let code = format!(
                "import urllib.request\nprint(urllib.request.urlopen('http://{allowed}/').read().decode())"
            );
            let (status, body) = json_call(
                &state,
                "POST",
                &format!("/sandboxes/{sandbox}/execute"),
                json!({"code": code}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["stdout"], "ok\n", "{body}");
            // Bad declarations create nothing.
            let before = state.sandboxes.lock().unwrap().len();
            for bad in [
                json!({"tools": [{"name": "not a name"}]}),
                json!({"allow_net": ["example.com"]}),
            ] {
                let (status, body) = json_call(&state, "POST", "/sandboxes", bad).await;
                assert!(status.is_client_error(), "{status} {body}");
            }
            assert_eq!(state.sandboxes.lock().unwrap().len(), before);
        });
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn executions_get_only_the_network_the_operator_allows() {
        let (port, count) = ok_server();
        let allowed = format!("127.0.0.1:{port}");
        let code = format!(
            "import urllib.request\nprint(urllib.request.urlopen('http://{allowed}/').read().decode())"
        );
        let open = state(|config| config.allow_net = vec![allowed.parse().unwrap()]);
        let closed = state(|_| {});
        runtime().block_on(async {
            let (status, body) = json_call(
                &open,
                "POST",
                "/execute",
                json!({"code": code, "allow_net": [allowed]}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["stdout"], "ok\n", "{body}");
            assert_eq!(body["net"][0]["status"], 200, "{body}");
            assert_eq!(body["net"][0]["bytes"], 2, "{body}");
            // More than the operator allows, or anything on a server that allows nothing.
            for (state, entry, says) in [
                (&open, "127.0.0.1", "this server allows only 127.0.0.1:"),
                (&open, "example.com", "this server allows only"),
                (&closed, allowed.as_str(), "allows no network"),
            ] {
                let (status, body) = json_call(
                    state,
                    "POST",
                    "/execute",
                    json!({"code": code, "allow_net": [entry]}),
                )
                .await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
                assert_eq!(body["error"]["kind"], "forbidden_net", "{body}");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains(says),
                    "{body}"
                );
            }
            let (status, body) = json_call(
                &open,
                "POST",
                "/execute",
                json!({"code": code, "allow_net": ["http://x/"]}),
            )
            .await;
            assert!(status.is_client_error(), "{status} {body}");
            let (status, body) = json_call(
                &open,
                "POST",
                "/execute",
                json!({"code": code, "allow_net": [allowed], "seed": 1}),
            )
            .await;
            assert!(status.is_client_error(), "{status} {body}");
            // Without allow_net the guest has no network, even on an open server.
            let (status, body) = json_call(&open, "POST", "/execute", json!({"code": code})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_ne!(body["stdout"], "ok\n", "{body}");
        });
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_streamed_run_calls_the_clients_tools_and_waits_for_its_answers() {
        use futures_util::StreamExt as _;
        let state = state(|_| {});
        runtime().block_on(async {
            let lookup = json!({
                "name": "lookup",
                "description": "The length of a key.",
                "parameters": {"type": "object", "properties": {"key": {"type": "string"}},
                               "required": ["key"]},
                "timeout_ms": 10000
            });
            let code = "import dvm_tools\nfrom dvm_tools import lookup\n\
                        print(sum(lookup(k) for k in ['a', 'bb', 'ccc']))\n\
                        try:\n    lookup('zzzz')\nexcept dvm_tools.ToolError as e:\n\
                        \x20   print('refused:', e)\n";
            // Tools are answered over the stream: a plain request is refused.
            let (status, refused) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"code": code, "tools": [lookup.clone()]}),
            )
            .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
            let (status, refused) = json_call(
                &state,
                "POST",
                "/execute",
                json!({"code": code, "stream": true,
                       "tools": [{"name": "not a name", "parameters": {}}]}),
            )
            .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");

            let request = Request::builder()
                .method("POST")
                .uri("/execute")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"code": code, "stream": true, "run_id": "tools-run",
                           "tools": [lookup]})
                    .to_string(),
                ))
                .unwrap();
            let response = dvm::server::router(state.clone())
                .oneshot(request)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut chunks = response.into_body().into_data_stream();
            let (mut text, mut seen, mut calls) = (String::new(), 0, Vec::new());
            while let Some(Ok(chunk)) = chunks.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text[seen..].find("\n\n") {
                    let block = text[seen..seen + end].to_string();
                    seen += end + 2;
                    if !block.contains("event: tool_call") {
                        continue;
                    }
                    let data = block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap();
                    let call: Value = serde_json::from_str(data).unwrap();
                    assert_eq!(call["name"], "lookup", "{call}");
                    let key = call["args"]["key"].as_str().unwrap().to_string();
                    calls.push(key.clone());
                    let path = format!(
                        "/runs/tools-run/tool_results/{}",
                        call["id"].as_str().unwrap()
                    );
                    // A malformed answer and another run's id are refused; the call waits on.
                    let (status, _) = json_call(&state, "POST", &path, json!({"nope": 1})).await;
                    assert_eq!(status, StatusCode::BAD_REQUEST);
                    let other = path.replace("tools-run", "other-run");
                    let (status, _) = json_call(&state, "POST", &other, json!({"result": 1})).await;
                    assert_eq!(status, StatusCode::NOT_FOUND);
                    let answer = if key == "zzzz" {
                        json!({"error": "unknown key"})
                    } else {
                        json!({"result": key.len()})
                    };
                    let (status, _, body) = send(
                        &state,
                        "POST",
                        &path,
                        &[("content-type", "application/json")],
                        answer.to_string(),
                    )
                    .await;
                    assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
                    // Answered once: a second answer finds nothing waiting.
                    let (status, _) = json_call(&state, "POST", &path, json!({"result": 0})).await;
                    assert_eq!(status, StatusCode::NOT_FOUND);
                }
            }
            assert_eq!(calls, ["a", "bb", "ccc", "zzzz"], "{text}");
            let result = text
                .split("\n\n")
                .find(|block| block.contains("event: result"))
                .and_then(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
                .expect(&text);
            let result: Value = serde_json::from_str(result).unwrap();
            assert_eq!(result["stdout"], "6\nrefused: unknown key\n", "{result}");
            assert_eq!(
                result["tool_calls"].as_array().unwrap().len(),
                4,
                "{result}"
            );
            assert_eq!(result["tool_calls"][3]["error"], "unknown key");

            // A call left unanswered when its run ends is forgotten then, not when the
            // tool's own ten minutes are up: a late answer finds nothing.
            let patient = json!({"name": "lookup", "parameters": {}, "timeout_ms": 600_000});
            let (status, _, body) = send(
                &state,
                "POST",
                "/execute",
                &[("content-type", "application/json")],
                json!({"code": "from dvm_tools import lookup\nlookup()", "stream": true,
                       "run_id": "late-run", "timeout_ms": 500, "tools": [patient]})
                .to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let text = String::from_utf8(body).unwrap();
            let call: Value = text
                .split("\n\n")
                .find(|block| block.contains("event: tool_call"))
                .and_then(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
                .map(|data| serde_json::from_str(data).unwrap())
                .expect(&text);
            assert!(text.contains("\"deadline\""), "{text}");
            let late = format!(
                "/runs/late-run/tool_results/{}",
                call["id"].as_str().unwrap()
            );
            let (status, _) = json_call(&state, "POST", &late, json!({"result": 1})).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        });
    }

    #[test]
    fn what_a_streamed_run_displays_arrives_as_display_events_as_it_happens() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (status, _, body) = send(
                &state,
                "POST",
                "/execute",
                &[
                    ("content-type", "application/json"),
                    ("accept", "text/event-stream"),
                ],
                json!({"code": "print('a', flush=True)\ndisplay({'k': 1})\nprint('b', flush=True)"})
                    .to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let text = String::from_utf8(body).unwrap();
            let events: Vec<(&str, &str)> = text
                .split("\n\n")
                .filter_map(|block| {
                    let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                    Some((name, data))
                })
                .collect();
            // Live, in the order the guest made them: a, the item, b; then the result. Sent
            // once, not again after the run.
            let order: Vec<&str> = events
                .iter()
                .filter(|(name, _)| *name != "start")
                .map(|(name, data)| match *name {
                    "stdout" => {
                        if data.contains('a') {
                            "a"
                        } else {
                            "b"
                        }
                    }
                    other => other,
                })
                .collect();
            assert_eq!(order, ["a", "display", "b", "result"], "{text}");
            assert!(
                text.contains(r#"{"data":{"text/plain":"{'k': 1}"}}"#),
                "{text}"
            );
        });
    }

    #[test]
    fn output_streams_as_events_and_runs_can_be_cancelled() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (status, headers, body) = send(
                &state,
                "POST",
                "/execute",
                &[("content-type", "application/json"), ("accept", "text/event-stream")],
                json!({"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('more')"}).to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            let text = String::from_utf8(body).unwrap();
            let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
            assert_eq!(events.first(), Some(&"start"), "{text}");
            assert_eq!(events.last(), Some(&"result"), "{text}");
            assert!(events.contains(&"stdout") && events.contains(&"stderr"), "{text}");
            assert!(text.contains("{\"text\":\"err\\n\"}"), "{text}");

            // Cancel by run id while it spins.
            let running = tokio::spawn({
                let state = state.clone();
                async move {
                    json_call(&state, "POST", "/execute",
                        json!({"code": "while True: pass", "timeout_ms": 60_000, "run_id": "spin-1"})).await
                }
            });
            let mut cancelled = false;
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let (status, _) = json_call(&state, "POST", "/runs/spin-1/cancel", Value::Null).await;
                if status == StatusCode::ACCEPTED {
                    cancelled = true;
                    break;
                }
            }
            assert!(cancelled, "the run never showed up");
            let (status, body) = running.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["limit"], "cancelled", "{body}");
            let (status, _) = json_call(&state, "POST", "/runs/spin-1/cancel", Value::Null).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        });
    }

    #[test]
    fn a_full_queue_is_refused_with_429() {
        let state = state(|c| {
            c.workers = 1;
            c.queue = 0;
        });
        runtime().block_on(async {
            let busy = tokio::spawn({
                let state = state.clone();
                async move {
                    json_call(
                        &state,
                        "POST",
                        "/execute",
                        json!({"code": "import time\ntime.sleep(2)", "run_id": "busy"}),
                    )
                    .await
                }
            });
            // Wait until the first run holds the only worker.
            for _ in 0..200 {
                if !state.runs.lock().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (status, body) = json_call(&state, "POST", "/execute", json!({"code": "1"})).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(body["error"]["kind"], "busy");
            let (status, _) = busy.await.unwrap();
            assert_eq!(status, StatusCode::OK);
        });
    }

    #[test]
    fn judge0_submissions_verdicts_batches_and_fields() {
        let state = state(|_| {});
        runtime().block_on(async {
            let (_, languages) = json_call(&state, "GET", "/languages", Value::Null).await;
            let ids: Vec<u64> = languages.as_array().unwrap().iter().map(|l| l["id"].as_u64().unwrap()).collect();
            assert!(ids.contains(&71) && ids.contains(&63), "{languages}");
            let (_, statuses) = json_call(&state, "GET", "/statuses", Value::Null).await;
            assert_eq!(statuses.as_array().unwrap().len(), 14);
            assert_eq!(statuses[10], json!({"id": 11, "description": "Runtime Error (NZEC)"}));
            let (_, config) = json_call(&state, "GET", "/config_info", Value::Null).await;
            assert_eq!(config.as_object().unwrap().len(), 39, "every key the judge0 SDK's Config reads");

            let submit = |body: Value| {
                let state = state.clone();
                async move { json_call(&state, "POST", "/submissions?wait=true", body).await }
            };
            let (status, accepted) = submit(json!({"source_code": "print(input()[::-1])", "language_id": 71, "stdin": "abc", "expected_output": "cba\n"})).await;
            assert_eq!(status, StatusCode::CREATED);
            assert_eq!(accepted["status"], json!({"id": 3, "description": "Accepted"}), "{accepted}");
            assert_eq!(accepted["stdout"], "cba\n");
            assert!(accepted["time"].as_str().unwrap().parse::<f64>().is_ok());
            let (_, wrong) = submit(json!({"source_code": "console.log(2)", "language_id": 63, "expected_output": "3"})).await;
            assert_eq!(wrong["status"]["id"], 4, "{wrong}");
            let (_, slow) = submit(json!({"source_code": "while True: pass", "language_id": 71, "cpu_time_limit": 0.5})).await;
            assert_eq!(slow["status"]["id"], 5, "{slow}");
            let (_, failed) = submit(json!({"source_code": "import sys\nsys.exit(3)", "language_id": 71})).await;
            assert_eq!(failed["status"]["id"], 11, "{failed}");
            let (_, bomb) = submit(json!({"source_code": "x = bytearray(10**9)", "language_id": 71, "memory_limit": 65536})).await;
            assert_eq!(bomb["status"]["id"], 12, "{bomb}");
            let (_, merged) = submit(json!({"source_code": "import sys\nprint('a')\nprint('b', file=sys.stderr)", "language_id": 71, "redirect_stderr_to_stdout": true})).await;
            // Both streams in one, in the order the guest flushed them.
            let mut lines: Vec<&str> = merged["stdout"].as_str().unwrap().lines().collect();
            lines.sort_unstable();
            assert_eq!(lines, ["a", "b"], "{merged}");
            assert!(merged["stderr"].is_null(), "{merged}");

            // base64 both ways, and a chosen set of fields.
            let encoded = "cHJpbnQoJ2jDqScp"; // print('hé')
            let (_, b64) = json_call(&state, "POST", "/submissions?wait=true&base64_encoded=true&fields=stdout,status_id,language",
                json!({"source_code": encoded, "language_id": 71})).await;
            assert_eq!(b64["stdout"], "aMOpCg==", "{b64}");
            assert_eq!(b64.as_object().unwrap().len(), 3, "{b64}");

            // Without wait: a token, then polling.
            let (status, created) = json_call(&state, "POST", "/submissions", json!({"source_code": "print(5)", "language_id": 71})).await;
            assert_eq!(status, StatusCode::CREATED);
            let token = created["token"].as_str().unwrap().to_string();
            let mut polled = Value::Null;
            for _ in 0..400 {
                polled = json_call(&state, "GET", &format!("/submissions/{token}"), Value::Null).await.1;
                if polled["status"]["id"].as_u64().unwrap_or(1) > 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert_eq!(polled["stdout"], "5\n", "{polled}");

            let (status, tokens) = json_call(&state, "POST", "/submissions/batch", json!({"submissions": [
                {"source_code": "print(1)", "language_id": 71},
                {"source_code": "console.log(2)", "language_id": 63},
                {"language_id": 71},
            ]})).await;
            assert_eq!(status, StatusCode::CREATED);
            assert!(tokens[2]["source_code"].is_array(), "{tokens}");
            let list = format!("{},{},unknown", tokens[0]["token"].as_str().unwrap(), tokens[1]["token"].as_str().unwrap());
            let mut batch = Value::Null;
            for _ in 0..400 {
                batch = json_call(&state, "GET", &format!("/submissions/batch?tokens={list}&fields=stdout,status"), Value::Null).await.1;
                if (0..2).all(|i| batch["submissions"][i]["status"]["id"].as_u64().unwrap_or(1) > 2) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert_eq!(batch["submissions"][0]["stdout"], "1\n", "{batch}");
            assert_eq!(batch["submissions"][1]["stdout"], "2\n", "{batch}");
            assert!(batch["submissions"][2].is_null());

            let (status, missing) = json_call(&state, "POST", "/submissions", json!({"source_code": "1"})).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(missing["language_id"].is_array(), "{missing}");
            let (status, _) = json_call(&state, "GET", "/submissions/nope", Value::Null).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            let (status, _) = json_call(&state, "GET", &format!("/submissions/{token}?fields=bogus"), Value::Null).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
        });
    }
}

mod black_box {
    //! A running `dvm serve`, driven over loopback.

    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::{Server, client};

    fn post(base: &Server, path: &str, body: Value) -> (u16, Value) {
        let response = client().post(base.url(path)).json(&body).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// Code mode over streamable HTTP: one `dvm serve` is the other's MCP upstream, and
    /// guest code on the outer one calls the inner one's tools.
    #[test]
    fn an_upstream_over_streamable_http_gives_its_tools_to_guest_code() {
        let inner = Server::start(&[]);
        let upstream = format!("inner={}/mcp", inner.base);
        let outer = Server::start(&["--mcp-upstream", &upstream, "--no-warm"]);
        let code = "from dvm_tools.inner import run_code, list_runtimes\n\
                    ids = sorted(r['id'] for r in list_runtimes())\n\
                    ran = run_code(code='print(6 * 7)')\n\
                    print(ids, ran['stdout'].strip())";
        let (status, body) = post(&outer, "/execute", json!({"code": code}));
        assert_eq!(status, 200, "{body}\n{}", outer.log.lock().unwrap());
        let out = body["stdout"].as_str().unwrap_or_default();
        assert!(
            out.contains("'javascript'") && out.contains("'python'"),
            "{body}"
        );
        assert!(out.trim_end().ends_with("42"), "{body}");
        assert_eq!(
            body["tool_calls"].as_array().map(Vec::len),
            Some(2),
            "{body}"
        );
    }

    fn wait_for_running(server: &Server, count: u64) {
        for _ in 0..400 {
            let health: Value = client()
                .get(server.url("/health"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if health["running"].as_u64() == Some(count) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the run never started");
    }

    /// POSTs `body` to /execute on a thread of its own; join it for the answer.
    fn execute_in_background(server: &Server, body: Value) -> std::thread::JoinHandle<Value> {
        let url = server.url("/execute");
        std::thread::spawn(move || {
            client()
                .post(url)
                .json(&body)
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        })
    }

    #[test]
    fn shutdown_lets_runs_finish_then_cancels_the_rest() {
        let server = Server::start(&["--no-warm", "--shutdown-grace", "20s"]);
        let running = execute_in_background(
            &server,
            json!({"code": "import time\ntime.sleep(1.5)\nprint('done')"}),
        );
        wait_for_running(&server, 1);
        let status = server.terminate();
        let finished = running.join().unwrap();
        assert_eq!(finished["stdout"], "done\n", "{finished}");
        assert!(status.success(), "{status:?}");

        let server = Server::start(&["--no-warm", "--shutdown-grace", "300ms"]);
        let url = server.url("/health");
        let running = execute_in_background(
            &server,
            json!({"code": "import time\ntime.sleep(60)", "timeout_ms": 120_000}),
        );
        wait_for_running(&server, 1);
        let status = server.terminate();
        let cancelled = running.join().unwrap();
        assert_eq!(cancelled["limit"], "cancelled", "{cancelled}");
        assert!(status.success());
        assert!(
            client().get(url).send().is_err(),
            "nothing listens after shutdown"
        );
    }

    #[test]
    fn body_limits_tokens_and_malformed_json_over_the_wire() {
        let server = Server::start(&["--no-warm", "--max-body", "1KiB", "--token", "t0ken"]);
        let big = json!({"code": "x".repeat(4096)});
        let response = client()
            .post(server.url("/execute"))
            .bearer_auth("t0ken")
            .json(&big)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 413);
        let response = client()
            .post(server.url("/sessions/x/files/big.bin"))
            .bearer_auth("t0ken")
            .body(vec![0u8; 4096])
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 413);
        let response = client()
            .post(server.url("/execute"))
            .header("content-type", "application/json")
            .bearer_auth("t0ken")
            .body("{\"code\": ")
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let error: Value = response.json().unwrap();
        assert_eq!(error["error"]["kind"], "bad_request");
        let response = client()
            .post(server.url("/execute"))
            .json(&json!({"code": "1"}))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let response = client()
            .post(server.url("/execute"))
            .bearer_auth("t0ken")
            .json(&json!({"code": "print('ok')"}))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }

    #[test]
    fn a_client_that_hangs_up_on_a_stream_cancels_its_run() {
        use std::io::Read as _;
        let server = Server::start(&["--no-warm"]);
        let mut response = client()
            .post(server.url("/execute"))
            .json(&json!({"code": "while True: pass", "timeout_ms": 120_000, "stream": true}))
            .send()
            .unwrap();
        let mut first = [0u8; 64];
        let read = response.read(&mut first).unwrap();
        assert!(String::from_utf8_lossy(&first[..read]).contains("event: start"));
        wait_for_running(&server, 1);
        drop(response);
        wait_for_running(&server, 0);

        // Without a stream too: the client gives up, the run is cancelled, its id is free.
        let impatient = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap();
        let body = json!({"code": "while True: pass", "timeout_ms": 120_000, "run_id": "mine"});
        assert!(
            impatient
                .post(server.url("/execute"))
                .json(&body)
                .send()
                .is_err()
        );
        wait_for_running(&server, 0);
        let (status, again) = post(
            &server,
            "/execute",
            json!({"code": "print(1)", "run_id": "mine"}),
        );
        assert_eq!(status, 200, "{again}");
        let health: Value = client()
            .get(server.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(health["queued"], 0);
    }

    /// Resident memory of a process, from /proc.
    fn rss_bytes(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The load test: 2,000 requests, 200 at a time, mixed runtimes and endings. Every
    /// request is answered with the ending its program calls for, and the server's resident
    /// memory stays bounded. Prints throughput and latency percentiles.
    #[test]
    fn two_thousand_mixed_requests_two_hundred_at_a_time() {
        const REQUESTS: usize = 2000;
        const CONCURRENT: usize = 200;
        let server = Server::start(&["--queue", "4096"]);
        // (request, expected status, expected limit)
        let kinds: Vec<(Value, &str, Option<&str>)> = vec![
            (json!({"code": "print(sum(range(1000)))"}), "ok", None),
            (
                json!({"runtime": "javascript", "code": "console.log([1,2,3].map(x => x * 2).join(','))"}),
                "ok",
                None,
            ),
            (
                json!({"runtime": "python-lite", "code": "print('lite')"}),
                "ok",
                None,
            ),
            (json!({"code": "raise ValueError('boom')"}), "error", None),
            (
                json!({"code": "while True: pass", "timeout_ms": 100}),
                "limit",
                Some("deadline"),
            ),
            (
                json!({"runtime": "javascript", "code": "for (;;) {}", "timeout_ms": 100}),
                "limit",
                Some("deadline"),
            ),
            (
                json!({"code": "x = bytearray(1 << 30)", "limits": {"memory_bytes": 128 << 20}}),
                "limit",
                Some("memory"),
            ),
            (
                json!({"runtime": "javascript", "code": "const a = []; for (;;) a.push(new Array(1e6).fill(1));", "limits": {"memory_bytes": 64 << 20}}),
                "limit",
                Some("memory"),
            ),
        ];
        // Warm every runtime once; then the baseline memory.
        for (body, _, _) in &kinds[..3] {
            let (status, _) = post(&server, "/execute", body.clone());
            assert_eq!(status, 200);
        }
        let rss_before = rss_bytes(server.pid());
        // Two rounds of half the requests each: what the first round leaves resident (pool
        // slots, page cache of the modules) must not grow in the second.
        let mut results: Vec<(usize, u16, Value, Duration)> = Vec::with_capacity(REQUESTS);
        let mut rss_after_round = Vec::new();
        let started = Instant::now();
        for round in 0..2 {
            let next = std::sync::atomic::AtomicUsize::new(round * REQUESTS / 2);
            let end = (round + 1) * REQUESTS / 2;
            let answered: Vec<(usize, u16, Value, Duration)> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..CONCURRENT)
                    .map(|_| {
                        scope.spawn(|| {
                            let http = client();
                            let mut mine = Vec::new();
                            loop {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if i >= end {
                                    break;
                                }
                                let kind = i % kinds.len();
                                let sent = Instant::now();
                                let response = http
                                    .post(server.url("/execute"))
                                    .json(&kinds[kind].0)
                                    .send();
                                let (status, body) = match response {
                                    Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
                                    Err(e) => (0, Value::String(e.to_string())),
                                };
                                mine.push((kind, status, body, sent.elapsed()));
                            }
                            mine
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap())
                    .collect()
            });
            results.extend(answered);
            rss_after_round.push(rss_bytes(server.pid()));
        }
        let elapsed = started.elapsed();
        assert_eq!(results.len(), REQUESTS, "every request answered");
        for (kind, status, body, _) in &results {
            let (_, want_status, want_limit) = &kinds[*kind];
            assert_eq!(*status, 200, "kind {kind}: {body}");
            assert_eq!(body["status"], *want_status, "kind {kind}: {body}");
            if let Some(limit) = want_limit {
                assert_eq!(body["limit"], *limit, "kind {kind}: {body}");
            }
        }
        let mut latencies: Vec<Duration> = results.iter().map(|r| r.3).collect();
        latencies.sort_unstable();
        let percentile =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let mut in_sandbox = vec![(0.0, 0usize); kinds.len()];
        for (kind, _, body, _) in &results {
            in_sandbox[*kind].0 += body["duration_ms"].as_f64().unwrap_or(0.0);
            in_sandbox[*kind].1 += 1;
        }
        eprintln!(
            "load: {REQUESTS} requests, {CONCURRENT} concurrent, in {:.1} s: {:.0} requests/s, \
             p50 {:.0} ms, p99 {:.0} ms; server RSS {} MiB before, {} MiB after round 1, {} MiB \
             after round 2; mean time in the sandbox by kind (ms): {:?}",
            elapsed.as_secs_f64(),
            REQUESTS as f64 / elapsed.as_secs_f64(),
            percentile(0.50).as_secs_f64() * 1000.0,
            percentile(0.99).as_secs_f64() * 1000.0,
            rss_before >> 20,
            rss_after_round[0] >> 20,
            rss_after_round[1] >> 20,
            in_sandbox
                .iter()
                .map(|(total, n)| (total / *n as f64).round())
                .collect::<Vec<_>>(),
        );
        let metrics = client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(metrics.contains("dvm_runs_in_flight 0"), "{metrics}");
        // What stays resident is bounded by the runs that can be live at once (the workers,
        // each within its memory cap: 128 MiB here) plus the server itself; the number of
        // requests served does not enter into it.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get() * 4) as u64;
        let bound = rss_before + workers * (128 << 20) + (512 << 20);
        for rss in &rss_after_round {
            assert!(
                rss < &bound,
                "the server holds {} MiB, over {} MiB",
                rss >> 20,
                bound >> 20
            );
        }
    }
}
