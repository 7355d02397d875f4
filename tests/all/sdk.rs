//! The official Python SDKs as clients of dvm: `judge0` against `dvm serve`'s Judge0
//! endpoints, and `mcp` against `dvm mcp` (stdio) and `dvm serve`'s `/mcp` (streamable
//! HTTP). The client scripts are in `tests/sdk/`; they print one JSON line or fail with the
//! check that did not hold. The SDKs live in a venv this module builds once, pinned.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::server::{Server, client};
use crate::support::*;

/// What the venv holds; a venv whose marker lists anything else is rebuilt.
const REQUIREMENTS: &[&str] = &["judge0==0.0.8", "mcp==2.3.0"];
/// Names the venv's marker file, written last, so its presence means a finished install.
const MARKER: &str = "dvm-sdk-requirements.txt";
/// Bounds on child processes: they stop a hung client, they are not expectations.
const INSTALL_LIMIT: Duration = Duration::from_secs(900);
const SCRIPT_LIMIT: Duration = Duration::from_secs(900);

/// The venv's interpreter, with the pinned SDKs installed; built on first use.
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(prepare_venv) {
        Ok(python) => python,
        Err(problem) => panic!("the SDK venv is not available: {problem}"),
    }
}

fn marker_text() -> String {
    REQUIREMENTS.join("\n") + "\n"
}

fn python_in(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// A venv is reused only when its marker lists exactly `REQUIREMENTS` and the SDKs import.
fn ready(venv: &Path) -> bool {
    std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|listed| listed == marker_text())
        && bounded(
            Command::new(python_in(venv)).args(["-c", "import judge0, mcp"]),
            Duration::from_secs(120),
        )
        .is_ok_and(|output| output.status.success())
}

/// Builds `target/tmp/sdk-venv` beside itself and renames it into place, so a test never
/// sees a half-installed venv; another test process that published first wins.
fn prepare_venv() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("tmp");
    let venv = root.join("sdk-venv");
    if ready(&venv) {
        return Ok(python_in(&venv));
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let staging = root.join(format!("sdk-venv.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(problem) = install_into(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(problem);
    }
    if ready(&venv) {
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(python_in(&venv));
    }
    // Stale (another pin, or broken): replace it.
    let _ = std::fs::remove_dir_all(&venv);
    if let Err(e) = std::fs::rename(&staging, &venv) {
        let _ = std::fs::remove_dir_all(&staging);
        if !ready(&venv) {
            return Err(format!("publishing {}: {e}", venv.display()));
        }
    }
    Ok(python_in(&venv))
}

/// Makes a venv at `staging` with `REQUIREMENTS` installed, marker last.
fn install_into(staging: &Path) -> Result<(), String> {
    let made = bounded(
        Command::new("python3").args(["-m", "venv"]).arg(staging),
        INSTALL_LIMIT,
    )?;
    if !made.status.success() {
        return Err(format!("python3 -m venv failed:\n{}", show(&made)));
    }
    let installed = bounded(
        Command::new(python_in(staging))
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(REQUIREMENTS),
        INSTALL_LIMIT,
    )?;
    if !installed.status.success() {
        return Err(format!(
            "pip install {} failed:\n{}",
            REQUIREMENTS.join(" "),
            show(&installed)
        ));
    }
    std::fs::write(staging.join(MARKER), marker_text())
        .map_err(|e| format!("{}: {e}", staging.display()))
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (send, receive) = channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = send.send(bytes);
    });
    receive
}

/// Runs `command` to its end, killing it past `limit`; stdout and stderr are captured.
pub(crate) fn bounded(command: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?} does not start: {e}"))?;
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + limit;
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A grandchild may still hold a pipe open; don't wait on it forever.
    let collect = |pipe: Receiver<Vec<u8>>| {
        pipe.recv_timeout(Duration::from_secs(30))
            .unwrap_or_default()
    };
    let output = Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    if killed {
        return Err(format!(
            "{command:?} was still running after {limit:?} and was killed\n{}",
            show(&output)
        ));
    }
    Ok(output)
}

/// Runs `tests/sdk/SCRIPT ARGS…` with the venv's python and returns its JSON line.
fn run_script(script: &str, args: &[&str], server: Option<&Server>) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sdk")
        .join(script);
    let output = bounded(
        Command::new(python())
            .arg(&path)
            .args(args)
            .env_remove("DVM_LOG")
            .env_remove("DVM_CONFIG")
            .env_remove("DVM_TOKEN")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        SCRIPT_LIMIT,
    )
    .unwrap_or_else(|problem| panic!("{script}: {problem}"));
    let log = server.map_or_else(String::new, |s| {
        format!("\n--- dvm serve ---\n{}", s.log.lock().unwrap())
    });
    assert!(
        output.status.success(),
        "{script} failed\n{}{log}",
        show(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{script} did not end with a JSON line ({e})\n{}{log}",
            show(&output)
        )
    })
}

const ALL_TOOLS: &[&str] = &[
    "close_session",
    "create_session",
    "fork_session",
    "install_packages",
    "list_files",
    "list_runtimes",
    "read_file",
    "restore_session",
    "run_code",
    "run_in_session",
    "snapshot_session",
    "write_file",
];

/// What both MCP transports must have shown.
#[track_caller]
fn expect_every_tool_worked(results: &serde_json::Value, transport: &str) {
    assert_eq!(results["transport"], transport, "{results}");
    assert_eq!(results["tools"], serde_json::json!(ALL_TOOLS), "{results}");
    let files = results["files"].as_array().expect("files");
    for file in ["data/numbers.txt", "out/total.txt"] {
        assert!(files.contains(&file.into()), "{file} not listed: {results}");
    }
    let installed = results["installed"].as_array().expect("installed");
    assert!(
        installed
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.starts_with("humanize "))),
        "{results}"
    );
    let closed = results["closed_session_error"].as_str().unwrap_or_default();
    assert!(closed.contains("no session"), "{results}");
    let runtimes = results["runtimes"].as_array().expect("runtimes");
    for runtime in ["python", "javascript"] {
        assert!(runtimes.contains(&runtime.into()), "{results}");
    }
}

#[test]
fn judge0_sdk_runs_submissions_on_dvm_serve() {
    let server = Server::start(&[]);
    let results = run_script("judge0_client.py", &[&server.base], Some(&server));
    assert_eq!(results["python"], "Accepted", "{results}");
    assert_eq!(results["javascript"], "Accepted", "{results}");
    assert_eq!(results["wrong_answer"], "Wrong Answer", "{results}");
    assert_eq!(results["time_limit"], "Time Limit Exceeded", "{results}");
    assert_eq!(results["runtime_error"], 11, "{results}");
    assert_eq!(
        results["test_cases"],
        serde_json::json!(["Accepted", "Accepted", "Wrong Answer", "Accepted"]),
        "{results}"
    );
    assert_eq!(
        results["unicode"], "héllo wörld ✓ 日本語 🚀 → ok\nßßß\n",
        "{results}"
    );
}

#[test]
fn mcp_sdk_over_stdio_calls_every_tool() {
    let home = shared_home();
    let results = run_script(
        "mcp_client.py",
        &[
            "stdio",
            env!("CARGO_BIN_EXE_dvm"),
            home.to_str().expect("UTF-8 home"),
        ],
        None,
    );
    expect_every_tool_worked(&results, "stdio");
}

#[test]
fn mcp_sdk_over_streamable_http_calls_every_tool() {
    let server = Server::start(&[]);
    let results = run_script("mcp_client.py", &["http", &server.base], Some(&server));
    expect_every_tool_worked(&results, "http");
}

/// The start of an MCP conversation, as a client POSTs it.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"dvm-test","version":"1"}}}"#;

#[test]
fn mcp_over_http_refuses_browser_origins_it_was_not_told_to_allow() {
    let server = Server::start(&["--allow-origin", "http://localhost:3000"]);
    let post = |origin: Option<&str>| {
        let mut request = client()
            .post(server.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(INITIALIZE);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        // Only the status matters; the body of an accepted request is an event stream.
        request
            .send()
            .expect("the server answers")
            .status()
            .as_u16()
    };
    assert_eq!(post(Some("http://evil.example")), 403);
    assert_eq!(post(Some("http://localhost:3001")), 403);
    assert_eq!(post(Some("http://localhost:3000")), 200);
    assert_eq!(post(None), 200);
}

/// The MCP server the code-mode test connects to: `examples/mcp_upstream.rs`, which `cargo
/// test` builds beside the tests.
pub(crate) fn upstream_example() -> PathBuf {
    let dvm = Path::new(env!("CARGO_BIN_EXE_dvm"));
    let example = dvm
        .parent()
        .expect("the binary's directory")
        .join("examples")
        .join("mcp_upstream");
    assert!(
        example.is_file(),
        "{} is missing: `cargo test` builds the examples",
        example.display()
    );
    example
}

#[test]
fn code_mode_calls_an_upstream_mcp_servers_tools_in_a_loop() {
    let home = shared_home();
    let upstream = upstream_example();
    let results = run_script(
        "mcp_code_mode.py",
        &[
            env!("CARGO_BIN_EXE_dvm"),
            home.to_str().expect("UTF-8 home"),
            upstream.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    // The model is told which tools its programs can call, under their guest names.
    let described = results["described"].as_str().unwrap_or_default();
    for line in [
        "dvm_tools.tracker.search_issues: Issues whose title contains the query.",
        "dvm_tools.tracker.get_issue: One issue by number.",
        "dvm_tools.tracker.close_issue",
    ] {
        assert!(described.contains(line), "{line} not in {described}");
    }
    // One program: a search, a call per hit, errors as exceptions; only the aggregate
    // comes back.
    assert_eq!(
        results["aggregate"],
        serde_json::json!({
            "bugs": 3,
            "labels": {"bug": 3, "parser": 1},
            "missing": "there is no issue 99",
            "refused": "issue 1 cannot be closed: the tracker is read-only",
        }),
        "{results}"
    );
    assert_eq!(
        results["calls"],
        serde_json::json!([
            "tracker.search_issues",
            "tracker.get_issue",
            "tracker.get_issue",
            "tracker.get_issue",
            "tracker.get_issue",
            "tracker.close_issue"
        ]),
        "{results}"
    );
    assert_eq!(
        results["javascript"],
        serde_json::json!({"numbers": [1, 3], "title": "Crash when the input is empty"}),
        "{results}"
    );
    assert_eq!(results["javascript_calls"], 2, "{results}");
    // Code that does not ask for the tools runs without them (and stays cacheable).
    assert_eq!(results["plain_calls"], 0, "{results}");
    assert_eq!(results["plain"], "42\n", "{results}");
}
