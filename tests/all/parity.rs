//! The same job through every surface: `dvm run --json`, `POST /execute`, a Judge0
//! submission, MCP `run_code` (`dvm mcp` over stdio) and a NATS worker. Each case is sent
//! as each surface takes it, and every answer must agree on status, exit code, limit and
//! stdout: packages from a PEP 723 block, a requirements.txt or package.json among the
//! files, auto-deps where the surface has it, a limit hit, a seeded run and a cache hit.
//!
//! Packages are the ones the deps tests install, in the shared home, so each is fetched
//! once for the whole suite.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use dvm::nats::{Queue, RunRequest};
use dvm::server::{AppState, ServerConfig};
use dvm::{Limits, RunInput};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::cli::{dvm, json};
use crate::nats::{Nats, Worker, config};
use crate::support::*;

/// One job, as plain data every surface can carry.
#[derive(Clone, Default)]
struct Case {
    label: &'static str,
    runtime: &'static str,
    code: String,
    /// Files put in the workspace first: path → text.
    files: Vec<(&'static str, String)>,
    auto_deps: bool,
    timeout_ms: Option<u64>,
    seed: Option<u64>,
}

impl Case {
    fn new(label: &'static str, runtime: &'static str, code: &str) -> Case {
        Case {
            label,
            runtime,
            code: code.to_string(),
            ..Case::default()
        }
    }

    fn script_name(&self) -> &'static str {
        if self.runtime == "javascript" {
            "main.mjs"
        } else {
            "main.py"
        }
    }
}

/// What a surface answered, in the outcome's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: String,
    exit_code: Option<i64>,
    limit: Option<String>,
    stdout: String,
    /// `hit`, `miss` or `off`; not compared between surfaces.
    cache: String,
}

impl Seen {
    fn from_json(value: &Value) -> Seen {
        let text = |key: &str| value[key].as_str().map(str::to_string);
        Seen {
            status: text("status").unwrap_or_else(|| panic!("no status in {value}")),
            exit_code: value["exit_code"].as_i64(),
            limit: text("limit"),
            stdout: text("stdout").unwrap_or_default(),
            cache: text("cache").unwrap_or_default(),
        }
    }

    /// The part every surface must agree on.
    fn result(&self) -> (String, Option<i64>, Option<String>, String) {
        (
            self.status.clone(),
            self.exit_code,
            self.limit.clone(),
            self.stdout.clone(),
        )
    }
}

fn cli(case: &Case) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(case.script_name());
    std::fs::write(&script, &case.code).unwrap();
    let uploads = dir.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    let mut args: Vec<String> = ["run", "--json", "--runtime", case.runtime]
        .map(String::from)
        .to_vec();
    for (name, text) in &case.files {
        let host = uploads.join(name);
        std::fs::write(&host, text).unwrap();
        args.push("--file".into());
        args.push(format!("{}:{name}", host.display()));
    }
    if case.auto_deps {
        args.push("--auto-deps".into());
    }
    if let Some(ms) = case.timeout_ms {
        args.push("--timeout".into());
        args.push(format!("{ms}ms"));
    }
    if let Some(seed) = case.seed {
        args.push("--seed".into());
        args.push(seed.to_string());
    }
    args.push(script.to_str().unwrap().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = dvm(&args);
    let value = json(&output);
    assert!(
        value.get("status").is_some(),
        "{}: the CLI ran nothing: {}",
        case.label,
        show(&output)
    );
    Seen::from_json(&value)
}

fn server_state() -> Arc<AppState> {
    AppState::new(ServerConfig::default(), shared().clone())
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    crate::nats::runtime()
}

/// One request to the router, as a local client sends it.
async fn call(state: &Arc<AppState>, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = dvm::server::router(state.clone())
        .oneshot(request)
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

fn http(rt: &tokio::runtime::Runtime, state: &Arc<AppState>, case: &Case) -> Seen {
    let mut body = json!({ "runtime": case.runtime, "code": case.code });
    if !case.files.is_empty() {
        let files: serde_json::Map<String, Value> = case
            .files
            .iter()
            .map(|(name, text)| (name.to_string(), Value::from(text.clone())))
            .collect();
        body["files"] = Value::Object(files);
    }
    if case.auto_deps {
        body["auto_deps"] = true.into();
    }
    if let Some(ms) = case.timeout_ms {
        body["timeout_ms"] = ms.into();
    }
    if let Some(seed) = case.seed {
        body["seed"] = seed.into();
    }
    let (status, value) = rt.block_on(call(state, "POST", "/execute", body));
    assert_eq!(
        status,
        StatusCode::OK,
        "{}: POST /execute: {value}",
        case.label
    );
    Seen::from_json(&value)
}

/// A Judge0 submission (no files, seed or auto-deps there): its status id and stdout.
fn judge0(rt: &tokio::runtime::Runtime, state: &Arc<AppState>, case: &Case) -> (u64, String) {
    assert!(case.files.is_empty() && case.seed.is_none() && !case.auto_deps);
    let mut body = json!({
        "source_code": case.code,
        "language_id": if case.runtime == "javascript" { 93 } else { 71 },
    });
    if let Some(ms) = case.timeout_ms {
        body["cpu_time_limit"] = (ms as f64 / 1000.0).into();
    }
    let (status, value) = rt.block_on(call(
        state,
        "POST",
        "/submissions?wait=true&fields=stdout,status,exit_code",
        body,
    ));
    assert!(
        status.is_success(),
        "{}: Judge0: {status} {value}",
        case.label
    );
    (
        value["status"]["id"].as_u64().unwrap_or_default(),
        value["stdout"].as_str().unwrap_or_default().to_string(),
    )
}

/// The Judge0 status a dvm outcome maps to.
fn judge0_status(seen: &Seen) -> u64 {
    match (seen.status.as_str(), seen.exit_code) {
        ("ok", _) => 3,
        ("error", _) => 11,
        ("limit", _) if seen.limit.as_deref() == Some("deadline") => 5,
        _ => 0,
    }
}

/// `dvm mcp` over stdio: one connection, so one workspace.
struct Mcp {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next_id: u64,
}

impl Mcp {
    fn start() -> Mcp {
        Mcp::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Mcp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dvm"))
            .arg("mcp")
            .args(args)
            .env("DVM_HOME", shared_home())
            .env_remove("DVM_LOG")
            .env_remove("DVM_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dvm mcp starts");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut mcp = Mcp {
            child,
            input,
            output,
            next_id: 1,
        };
        let initialized = mcp.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "parity", "version": "1"}}),
        );
        assert!(initialized["result"].is_object(), "{initialized}");
        mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.input, "{message}").unwrap();
        self.input.flush().unwrap();
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            let read = self.output.read_line(&mut line).unwrap();
            assert!(read > 0, "dvm mcp closed its stdout");
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if message["id"] == id {
                return message;
            }
        }
    }

    /// Calls a tool; its text, and whether it was an error.
    fn tool(&mut self, name: &str, arguments: Value) -> (bool, String) {
        let reply = self.request("tools/call", json!({"name": name, "arguments": arguments}));
        let result = &reply["result"];
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text from {name}: {reply}"))
            .to_string();
        (result["isError"].as_bool().unwrap_or(false), text)
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// MCP (no seed there): `write_file` for each file, then `run_code`, on a fresh connection.
fn mcp(case: &Case) -> Seen {
    assert!(case.seed.is_none());
    let mut mcp = Mcp::start();
    for (name, text) in &case.files {
        let (error, reply) = mcp.tool("write_file", json!({"path": name, "content": text}));
        assert!(!error, "{}: write_file: {reply}", case.label);
    }
    let mut arguments = json!({"code": case.code, "runtime": case.runtime});
    if case.auto_deps {
        arguments["auto_deps"] = true.into();
    }
    if let Some(ms) = case.timeout_ms {
        arguments["timeout_ms"] = ms.into();
    }
    let (error, reply) = mcp.tool("run_code", arguments);
    assert!(!error, "{}: run_code failed: {reply}", case.label);
    Seen::from_json(&serde_json::from_str(&reply).unwrap())
}

/// A NATS worker's answer; the script's name is left to the worker.
fn nats(rt: &tokio::runtime::Runtime, queue: &Queue, case: &Case) -> Seen {
    let mut request = RunRequest::new(
        case.runtime,
        "",
        &case.code,
        &RunInput {
            limits: Limits {
                deadline: Duration::from_millis(case.timeout_ms.unwrap_or(10_000)),
                ..Limits::default()
            },
            deterministic: case.seed.map(|seed| dvm::Determinism { seed }),
            ..RunInput::default()
        },
    );
    request.auto_deps = case.auto_deps;
    request.files = case
        .files
        .iter()
        .map(|(name, text)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            (name.to_string(), encoded)
        })
        .collect();
    let outcome = rt
        .block_on(queue.run(&request, Duration::from_secs(600)))
        .unwrap_or_else(|e| panic!("{}: NATS: {e}", case.label));
    assert_eq!(outcome.error, None, "{}: the worker refused it", case.label);
    Seen::from_json(&outcome.into_outcome().unwrap().to_json())
}

/// The surfaces that take `case`, each with its answer.
struct Surfaces {
    state: Arc<AppState>,
    // Dropped in this order: the queue, the worker, its NATS server, then the async
    // runtime the queue's client ran on.
    queue: Queue,
    _worker: Worker,
    _nats: Nats,
    rt: tokio::runtime::Runtime,
}

impl Surfaces {
    fn start() -> Surfaces {
        let nats = Nats::start();
        let worker = Worker::start(&nats, "parity", &[]);
        let rt = tokio_runtime();
        let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
        Surfaces {
            state: server_state(),
            queue,
            _worker: worker,
            _nats: nats,
            rt,
        }
    }

    /// Sends `case` through every surface that can carry it and checks they agree with the
    /// CLI; returns the CLI's answer.
    fn agree(&self, case: &Case) -> Seen {
        let reference = cli(case);
        let mut answers = vec![
            ("http", http(&self.rt, &self.state, case)),
            ("nats", nats(&self.rt, &self.queue, case)),
        ];
        if case.seed.is_none() {
            answers.push(("mcp", mcp(case)));
        }
        for (surface, seen) in &answers {
            assert_eq!(
                seen.result(),
                reference.result(),
                "{}: {surface} differs from the CLI",
                case.label
            );
        }
        if case.files.is_empty() && case.seed.is_none() && !case.auto_deps {
            let (status, stdout) = judge0(&self.rt, &self.state, case);
            assert_eq!(
                (status, stdout.as_str()),
                (judge0_status(&reference), reference.stdout.as_str()),
                "{}: Judge0 differs from the CLI",
                case.label
            );
        }
        reference
    }
}

#[test]
fn packages_are_found_the_same_way_on_every_surface() {
    let surfaces = Surfaces::start();

    let pep723 = Case::new(
        "PEP 723",
        "python",
        "# /// script\n# dependencies = [\"humanize\"]\n# ///\n\
         import humanize\nprint(humanize.intcomma(1234567))\n",
    );
    let seen = surfaces.agree(&pep723);
    assert_eq!(seen.stdout, "1,234,567\n", "{seen:?}");

    let mut requirements = Case::new(
        "requirements.txt",
        "python",
        "import humanize\nprint(humanize.naturalsize(1000000))\n",
    );
    requirements.files = vec![("requirements.txt", "humanize\n".into())];
    let seen = surfaces.agree(&requirements);
    assert_eq!(seen.stdout, "1.0 MB\n", "{seen:?}");

    let mut package_json = Case::new(
        "package.json",
        "javascript",
        "import { sum } from 'lodash-es';\nconsole.log(sum([1, 2, 3]));\n",
    );
    package_json.files = vec![(
        "package.json",
        r#"{"dependencies": {"lodash-es": "^4.17.0"}}"#.into(),
    )];
    let seen = surfaces.agree(&package_json);
    assert_eq!(seen.stdout, "6\n", "{seen:?}");

    // Imports are installed only when asked for, on every surface that can be asked.
    let mut imports = Case::new(
        "auto-deps",
        "python",
        "import humanize\nprint(humanize.intword(1200000))\n",
    );
    let seen = surfaces.agree(&imports);
    assert_eq!(seen.exit_code, Some(1), "without auto-deps: {seen:?}");
    imports.auto_deps = true;
    let seen = surfaces.agree(&imports);
    assert_eq!(seen.stdout, "1.2 million\n", "{seen:?}");
}

#[test]
fn limits_seeds_and_the_cache_are_the_same_on_every_surface() {
    let surfaces = Surfaces::start();

    let mut spin = Case::new("timeout", "python", "while True:\n    pass\n");
    spin.timeout_ms = Some(500);
    let seen = surfaces.agree(&spin);
    assert_eq!(seen.status, "limit", "{seen:?}");
    assert_eq!(seen.limit.as_deref(), Some("deadline"), "{seen:?}");

    let failing = Case::new(
        "exit code",
        "javascript",
        "console.log('x');\nthrow new Error('boom');\n",
    );
    let seen = surfaces.agree(&failing);
    assert_ne!(seen.exit_code, Some(0), "{seen:?}");

    // Each surface computes its own (a comment no other run has makes its cache key its
    // own): the same seed gives the same output everywhere, and the second identical run
    // is answered from the cache.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let seeded = |surface: &str, seed: u64| {
        let mut case = Case::new(
            "seeded",
            "python",
            &format!(
                "# {surface} {nonce}\nimport random, time\n\
                 print(random.random(), random.getrandbits(64), time.time())\n"
            ),
        );
        case.seed = Some(seed);
        case
    };
    let mut outputs = Vec::new();
    for surface in ["cli", "http", "nats"] {
        let run = |case: &Case| match surface {
            "cli" => cli(case),
            "http" => http(&surfaces.rt, &surfaces.state, case),
            _ => nats(&surfaces.rt, &surfaces.queue, case),
        };
        let case = seeded(surface, 7);
        let first = run(&case);
        let second = run(&case);
        assert_eq!(first.status, "ok", "{surface}: {first:?}");
        assert_eq!(first.cache, "miss", "{surface}: {first:?}");
        assert_eq!(second.cache, "hit", "{surface}: {second:?}");
        assert_eq!(
            second.result(),
            first.result(),
            "{surface}: the hit differs"
        );
        let other = run(&seeded(surface, 8));
        assert_ne!(other.stdout, first.stdout, "{surface}: the seed is ignored");
        outputs.push((surface, first.stdout));
    }
    for (surface, stdout) in &outputs {
        assert_eq!(stdout, &outputs[0].1, "{surface} differs from the CLI");
    }
}

/// The library's own door: inline code gets its language's default name, an entry runs
/// from the job's workspace, and what a job cannot mean is refused before anything runs.
#[test]
fn a_job_runs_inline_code_or_an_entry_in_its_workspace() {
    let dvm = shared();
    let quiet: dvm::Progress = Arc::new(|_: &dvm::InstallStep| {});
    // `main.mjs`: an ES module, where top-level await works.
    let done = dvm
        .run(
            &dvm::Job::code("javascript", "console.log(await Promise.resolve(5));"),
            &quiet,
        )
        .unwrap();
    assert_eq!(stdout(&done.outcome), "5\n", "{}", describe(&done.outcome));
    assert_eq!(done.runtime, "javascript");
    assert!(done.packages.is_none());

    let workspace = dvm::Workspace::new().unwrap();
    workspace
        .write("app/run.py", b"print(open('app/data.txt').read())")
        .unwrap();
    workspace.write("app/data.txt", b"hi").unwrap();
    let mut job = dvm::Job::code("python", "");
    job.source = dvm::JobSource::Entry("app/run.py".into());
    job.input.workspace = Some(workspace);
    let done = dvm.run(&job, &quiet).unwrap();
    assert_eq!(stdout(&done.outcome), "hi\n", "{}", describe(&done.outcome));
    assert_eq!(done.runtime, "python");

    job.input.workspace = None;
    let error = dvm.run(&job, &quiet).unwrap_err().to_string();
    assert!(error.contains("app/run.py"), "{error}");

    let mut imports = dvm::Job::code("javascript", "console.log(1)");
    imports.discovery.auto_deps = true;
    let error = dvm.run(&imports, &quiet).unwrap_err().to_string();
    assert!(
        error.contains("--auto-deps reads Python imports"),
        "{error}"
    );
}

/// MCP `run_code` hands the model the figures a run shows as image content, and keeps their
/// bytes out of the JSON text.
#[test]
fn mcp_run_code_returns_figures_as_images() {
    let mut mcp = Mcp::start();
    let code = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\
        plt.plot([1, 2, 3], [2, 1, 3])\nplt.show()\nprint('drawn')";
    let reply = mcp.request(
        "tools/call",
        json!({"name": "run_code", "arguments": {"code": code}}),
    );
    let content = reply["result"]["content"].as_array().expect("content");
    let text: Value = serde_json::from_str(content[0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["stdout"], "drawn\n", "{reply}");
    assert_eq!(
        text["display"][0]["data"]["image/png"],
        "(image 1, sent as image content)"
    );
    assert_eq!(content.len(), 2, "{reply}");
    assert_eq!(content[1]["type"], "image");
    assert_eq!(content[1]["mimeType"], "image/png");
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(content[1]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// MCP: a session snapshot restored into a new session, and forks, each with the state.
#[test]
fn mcp_sessions_snapshot_restore_and_fork() {
    let mut mcp = Mcp::start();
    let json_of = |(error, text): (bool, String)| -> Value {
        assert!(!error, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    let session = json_of(mcp.tool("create_session", json!({})));
    let id = session["session_id"].as_str().unwrap().to_string();
    json_of(mcp.tool(
        "run_in_session",
        json!({"session_id": id, "code": "x = 41"}),
    ));
    let snapshot = json_of(mcp.tool("snapshot_session", json!({"session_id": id})));
    let snapshot_id = snapshot["snapshot_id"].as_str().unwrap().to_string();
    let restored = json_of(mcp.tool("restore_session", json!({"snapshot_id": snapshot_id})));
    let restored_id = restored["session_id"].as_str().unwrap().to_string();
    let seen = json_of(mcp.tool(
        "run_in_session",
        json!({"session_id": restored_id, "code": "x + 1"}),
    ));
    assert_eq!(seen["stdout"], "42\n", "{seen}");
    let forked = json_of(mcp.tool("fork_session", json!({"session_id": id, "count": 2})));
    let ids = forked["session_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    for fork in ids {
        let seen = json_of(mcp.tool(
            "run_in_session",
            json!({"session_id": fork, "code": "x * 2"}),
        ));
        assert_eq!(seen["stdout"], "82\n", "{seen}");
    }
    let (error, _) = mcp.tool("restore_session", json!({"snapshot_id": "../../x"}));
    assert!(error);
    dvm::delete_session_snapshot(&shared_home(), &snapshot_id).unwrap();
}

/// `dvm mcp --allow-net`: run_code says which hosts it may reach, and a call reaches only
/// those it names.
#[test]
fn mcp_run_code_reaches_only_the_hosts_it_names_among_the_allowed() {
    let server = crate::net::Server::start();
    let allowed = format!("127.0.0.1:{}", server.port);
    let mut mcp = Mcp::start_with(&["--allow-net", &allowed]);
    let listed = mcp.request("tools/list", json!({}));
    let run_code = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tool| tool["name"] == "run_code")
        .unwrap()
        .clone();
    let description = run_code["description"].as_str().unwrap();
    assert!(description.contains(&allowed), "{description}");
    let code = format!(
        "import urllib.request\ntry:\n    print(urllib.request.urlopen('{}').read().decode())\n\
         except Exception:\n    print('no network')",
        server.url("/hello")
    );
    let (error, text) = mcp.tool("run_code", json!({"code": code, "allow_net": [allowed]}));
    assert!(!error, "{text}");
    let reached: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reached["stdout"], "hello\n", "{text}");
    assert_eq!(reached["net"][0]["status"], 200, "{text}");
    let (error, text) = mcp.tool("run_code", json!({"code": code}));
    assert!(!error, "{text}");
    assert!(text.contains("no network"), "{text}");
    let (error, text) = mcp.tool(
        "run_code",
        json!({"code": code, "allow_net": ["example.com"]}),
    );
    assert!(error && text.contains("may not be allowed"), "{text}");
    assert_eq!(server.paths(), ["GET /hello"]);
}
