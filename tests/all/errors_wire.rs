//! An error a NATS worker meets reaches the client with the worker's kind, so `dvm serve
//! --nats` answers with the same kind and status as a local run, and a library client can
//! tell a refused request from a broken worker.

use std::time::Duration;

use crate::nats::{Nats, Worker, config, request, runtime};
use dvm::nats::Queue;

#[test]
fn a_workers_refusal_arrives_with_its_kind_and_exit_code() {
    let nats = Nats::start();
    let _worker = Worker::start(&nats, "refuser", &[]);
    let rt = runtime();
    let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();

    let unknown = request("cobol", "DISPLAY 'HI'.", Duration::from_secs(30));
    let wire = rt
        .block_on(queue.run(&unknown, Duration::from_secs(120)))
        .unwrap();
    assert_eq!(wire.error_kind.as_deref(), Some("unknown_runtime"));
    let error = wire.into_outcome().unwrap_err();
    assert_eq!(error.kind(), "unknown_runtime", "{error}");
    assert!(error.is_user_error(), "exit code 2: {error}");
    assert!(error.to_string().contains("cobol"), "{error}");

    let mut vcs = request("python", "print(1)", Duration::from_secs(30));
    vcs.requirements = vec!["git+https://example.invalid/x.git".into()];
    let wire = rt
        .block_on(queue.run(&vcs, Duration::from_secs(120)))
        .unwrap();
    let error = wire.into_outcome().unwrap_err();
    assert_eq!(error.kind(), "unsupported_requirement", "{error}");
    assert!(error.is_user_error(), "{error}");
    assert_eq!(error.http_status(), 422);
}

#[test]
fn serve_over_nats_answers_a_workers_error_with_its_kind() {
    let nats = Nats::start();
    let worker = Worker::start(&nats, "behind", &[]);
    let server = crate::server::Server::start(&["--no-warm", "--nats", &nats.url()]);
    let answer = crate::server::client()
        .post(server.url("/execute"))
        .json(&serde_json::json!({"runtime": "cobol", "code": "DISPLAY 'HI'."}))
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 422);
    let body: serde_json::Value = answer.json().unwrap();
    assert_eq!(body["error"]["kind"], "unknown_runtime", "{body}");
    // The worker's log line is read by a thread of its own and may arrive after the answer.
    let logged = || {
        worker
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("running "))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !logged() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(logged(), "the worker, not the server, refused it");
}
