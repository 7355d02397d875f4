//! The chat-completions client against a real HTTP server on loopback that answers from a
//! script: the repair loop, rate limiting, malformed answers, timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dvm::agent::Provider;
use dvm::llm::{ChatProvider, LlmConfig};

use crate::cli::{dvm, json};
use crate::support::*;

/// One scripted answer: status, extra headers, body, and a delay before answering.
struct Answer {
    status: u16,
    headers: &'static str,
    body: String,
    delay: Duration,
}

fn completion(content: &str) -> Answer {
    Answer {
        status: 200,
        headers: "",
        body: serde_json::json!({
            "choices": [{ "message": { "role": "assistant", "content": content } }]
        })
        .to_string(),
        delay: Duration::ZERO,
    }
}

/// Serves `answers` in order on a loopback port, one per connection, and records each
/// request body. Returns the base URL and the recorded bodies.
fn serve(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            recorded
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            std::thread::sleep(answer.delay);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{}",
                answer.status,
                answer.body.len(),
                answer.headers,
                answer.body
            );
        }
    });
    (base, seen)
}

const BUGGY: &str = "```python\nprint(1 + '1')\n```";
const FIXED: &str = "Fixed:\n```python\nprint(1 + 1)\n```";

fn expected_two() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expected.txt");
    std::fs::write(&path, "2\n").unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn the_repair_loop_sends_the_error_back_and_uses_the_fix() {
    let (base, seen) = serve(vec![completion(BUGGY), completion(FIXED)]);
    let (_dir, expected) = expected_two();
    let output = dvm(&[
        "agent",
        "add one and one",
        "--model",
        "test-model",
        "--base-url",
        &base,
        "--expect-stdout",
        &expected,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json(&output);
    assert_eq!(report["attempts"].as_array().unwrap().len(), 2);
    assert!(report["provider"].as_str().unwrap().contains("test-model"));
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let second: serde_json::Value = serde_json::from_str(&requests[1]).unwrap();
    assert_eq!(second["model"], "test-model");
    let messages = second["messages"].as_array().unwrap();
    let feedback = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(feedback.contains("TypeError"), "{feedback}");
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let (base, seen) = serve(vec![
        Answer {
            status: 429,
            headers: "Retry-After: 0\r\n",
            body: "{}".into(),
            delay: Duration::ZERO,
        },
        Answer {
            status: 503,
            headers: "",
            body: "{}".into(),
            delay: Duration::ZERO,
        },
        completion(FIXED),
    ]);
    let (_dir, expected) = expected_two();
    let output = dvm(&[
        "agent",
        "add",
        "--model",
        "m",
        "--base-url",
        &base,
        "--expect-stdout",
        &expected,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[test]
fn malformed_answers_and_missing_code_are_reported() {
    let (base, _) = serve(vec![Answer {
        status: 200,
        headers: "",
        body: "not json".into(),
        delay: Duration::ZERO,
    }]);
    let output = dvm(&["agent", "x", "--model", "m", "--base-url", &base, "--json"]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert_eq!(json(&output)["error"]["kind"], "llm");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a chat completion"));

    let (base, _) = serve(vec![completion("Sorry, I cannot write that.")]);
    let output = dvm(&[
        "agent",
        "x",
        "--model",
        "m",
        "--base-url",
        &base,
        "--attempts",
        "1",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let report = json(&output);
    assert!(
        report["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no fenced code block")
    );

    let (base, _) = serve(vec![Answer {
        status: 401,
        headers: "",
        body: "{\"error\":\"bad key\"}".into(),
        delay: Duration::ZERO,
    }]);
    let output = dvm(&["agent", "x", "--model", "m", "--base-url", &base]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401"),
        "{}",
        show(&output)
    );
}

#[test]
fn a_slow_endpoint_times_out_and_gives_up() {
    let slow = || Answer {
        status: 200,
        headers: "",
        body: "{}".into(),
        delay: Duration::from_millis(1500),
    };
    let (base, seen) = serve(vec![slow(), slow()]);
    let mut config = LlmConfig::from_env("m", Some(&base), Some("key"));
    config.timeout = Duration::from_millis(300);
    config.tries = 2;
    config.backoff = Duration::from_millis(10);
    let mut provider = ChatProvider::new(config).unwrap();
    let started = std::time::Instant::now();
    let error = provider.reply(&[]).expect_err("times out").to_string();
    assert!(error.contains("did not answer after 2 tries"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!seen.lock().unwrap().is_empty());
}

#[test]
fn the_config_file_names_the_model_and_its_endpoint() {
    let (base, seen) = serve(vec![completion(FIXED)]);
    let (dir, expected) = expected_two();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nname = \"configured-model\"\nbase_url = \"{base}\"\n\
             api_key_env = \"DVM_TEST_KEY\"\ntimeout = \"30s\"\n"
        ),
    )
    .unwrap();
    let output = crate::cli::dvm_command(&["agent", "add", "--expect-stdout", &expected, "--json"])
        .env("DVM_CONFIG", &config)
        .env("DVM_TEST_KEY", "sk-from-config")
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(
        json(&output)["provider"]
            .as_str()
            .unwrap()
            .contains("configured-model")
    );
    let requests = seen.lock().unwrap();
    let first: serde_json::Value = serde_json::from_str(&requests[0]).unwrap();
    assert_eq!(first["model"], "configured-model");
}
