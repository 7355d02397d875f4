//! `dvm serve --local` and `dvm run` through it: the same output, exit code and JSON as a
//! run in the client's own process; a client that goes away cancels its run; a server that
//! goes away is reported, and a socket it left behind is not followed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A home of its own (its result cache, its socket) that shares the test binary's installed
/// runtimes, compiled modules and snapshots, so nothing is compiled again.
fn linked_home() -> tempfile::TempDir {
    // Installed here first: the servers load them (and prestart python-lite) at start.
    for id in ["python", "javascript", "python-lite"] {
        runtime(id);
    }
    let home = tempfile::tempdir().unwrap();
    for dir in ["modules", "runtimes", "store", "snapshots", "runners"] {
        std::os::unix::fs::symlink(shared_home().join(dir), home.path().join(dir)).unwrap();
    }
    home
}

fn socket(home: &Path) -> PathBuf {
    home.join("run").join("local.sock")
}

fn dvm_in(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvm"));
    command
        .env("DVM_HOME", home)
        .env("DVM_WARM_BUILDS", "off")
        .env_remove("DVM_LOG")
        .env_remove("DVM_CONFIG");
    command
}

/// `dvm serve --local ARGS…` on `home`, killed on drop; started once its socket answers.
struct LocalServer {
    child: Child,
}

impl LocalServer {
    fn start(home: &Path, args: &[&str]) -> LocalServer {
        let mut child = dvm_in(home)
            .args(["serve", "--local"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dvm serve --local starts");
        let stderr = child.stderr.take().unwrap();
        let (ready, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("dvm: serving `dvm run` on ") {
                    let _ = ready.send(());
                }
            }
        });
        listening
            .recv_timeout(Duration::from_secs(600))
            .expect("dvm serve --local says where it listens");
        assert!(socket(home).exists());
        LocalServer { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn run(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = dvm_in(home)
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The JSON outcome without what differs between any two runs (times, fuel, memory).
fn comparable(output: &Output) -> serde_json::Value {
    let mut value: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(output)));
    for field in ["duration_ms", "fuel_used", "memory_peak_bytes"] {
        value.as_object_mut().unwrap().remove(field);
    }
    value
}

#[test]
fn runs_through_the_local_server_as_they_run_in_process() {
    let home = linked_home();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("echo.py");
    std::fs::write(
        &script,
        "import os, sys\n\
         data = sys.stdin.read()\n\
         print('args', sys.argv[1:], 'env', os.environ.get('GREETING'))\n\
         print('stdin', data.upper(), end='')\n\
         print('to stderr', file=sys.stderr)\n\
         sys.exit(int(sys.argv[1]))\n",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    let broken = dir.path().join("broken.js");
    std::fs::write(&broken, "console.log('before'); throw new Error('boom');").unwrap();
    let broken = broken.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &[u8])> = vec![
        (
            vec![
                "--stdin",
                "-",
                "--env",
                "GREETING=hi",
                script,
                "--",
                "3",
                "x y",
            ],
            b"some input\n",
        ),
        (
            vec!["--json", "--env", "GREETING=hi", script, "--", "0"],
            b"json",
        ),
        (
            vec![
                "--deterministic",
                "--code",
                "import random; print(random.random())",
                "--runtime",
                "python",
            ],
            b"",
        ),
        (vec![broken], b""),
        (vec!["--runtime", "cobol", "--code", "x"], b""),
        (
            vec![
                "--fuel",
                "20000000",
                "--code",
                "while True: pass",
                "--runtime",
                "python",
            ],
            b"",
        ),
    ];
    let in_process: Vec<Output> = cases
        .iter()
        .map(|(args, stdin)| run(home.path(), &[&["--in-process"], &args[..]].concat(), stdin))
        .collect();

    let _server = LocalServer::start(home.path(), &["--workers", "2"]);
    for ((args, stdin), expected) in cases.iter().zip(&in_process) {
        let served = run(home.path(), args, stdin);
        assert_eq!(
            served.status.code(),
            expected.status.code(),
            "{args:?}: {}",
            show(&served)
        );
        if args.contains(&"--json") {
            assert_eq!(comparable(&served), comparable(expected), "{args:?}");
        } else {
            assert_eq!(
                String::from_utf8_lossy(&served.stdout),
                String::from_utf8_lossy(&expected.stdout),
                "{args:?}"
            );
            assert_eq!(
                String::from_utf8_lossy(&served.stderr),
                String::from_utf8_lossy(&expected.stderr),
                "{args:?}"
            );
        }
    }
    // The first case really ran (exit code 3 from the guest, its output upper-cased).
    assert_eq!(
        in_process[0].status.code(),
        Some(3),
        "{}",
        show(&in_process[0])
    );
    assert!(String::from_utf8_lossy(&in_process[0].stdout).contains("stdin SOME INPUT"));

    // Owner-only: the directory and the socket.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home.path().join("run")), 0o700);
    assert_eq!(mode(&socket(home.path())), 0o600);
}

/// `dvm run --code 'print(N)'` on `home` prints N.
#[track_caller]
fn expect_printed(home: &Path, n: u32) {
    let code = format!("print({n})");
    let output = run(home, &["--runtime", "python", "--code", &code], b"");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{n}\n"),
        "{}",
        show(&output)
    );
}

/// Starts `dvm run` on a script that prints `started` then spins, and returns once the line
/// arrived (so the run is on the server).
fn start_spinning(home: &Path, flags: &[&str]) -> Child {
    let mut child = dvm_in(home)
        .args(["run", "--runtime", "python", "--timeout", "10m"])
        .args(flags)
        .args(["--code", "print('started', flush=True)\nwhile True: pass"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    child
}

#[test]
fn a_client_that_goes_away_cancels_its_run_and_a_server_that_goes_away_is_reported() {
    let home = linked_home();
    let mut server = LocalServer::start(home.path(), &["--workers", "1", "--no-warm"]);

    // With one worker, the next run is served only once the spinning one was cancelled.
    let mut spinning = start_spinning(home.path(), &[]);
    spinning.kill().unwrap();
    spinning.wait().unwrap();
    let started = Instant::now();
    expect_printed(home.path(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the abandoned run kept the only worker"
    );

    // The server dies mid-run: the client says so instead of hanging or running it twice.
    let spinning = start_spinning(home.path(), &[]);
    server.kill();
    let output = spinning.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("went away during the run"),
        "{}",
        show(&output)
    );

    // The socket it left behind answers no one: runs go on in their own process, and a new
    // server takes the socket's place.
    assert!(socket(home.path()).exists());
    expect_printed(home.path(), 3);
    let _again = LocalServer::start(home.path(), &["--workers", "1", "--no-warm"]);
    expect_printed(home.path(), 4);

    // A second server on the same home is refused while the first answers.
    let second = dvm_in(home.path())
        .args(["serve", "--local", "--no-warm"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", show(&second));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already listening"));
}

/// A server on a socket of its own (as `dvm bench` starts one) serves only the runs that name
/// it, and leaves the home's socket alone: other `dvm run`s never reach it, nor fail when it
/// stops.
#[test]
fn a_run_can_name_its_server_and_a_private_server_leaves_the_homes_socket_alone() {
    let home = linked_home();
    let private = home.path().join("run").join("bench-test.sock");
    let mut server = dvm_in(home.path())
        .args(["serve", "--no-warm", "--local-socket"])
        .arg(&private)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&private).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the server never listened"
        );
        assert!(server.try_wait().unwrap().is_none(), "the server ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!socket(home.path()).exists());
    expect_printed(home.path(), 5);

    // A run that names the socket is served there: when the server dies mid-run, it says so.
    let flag = ["--local-socket", private.to_str().unwrap()];
    let spinning = start_spinning(home.path(), &flag);
    server.kill().unwrap();
    server.wait().unwrap();
    let output = spinning.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("went away during the run"),
        "{}",
        show(&output)
    );
    expect_printed(home.path(), 6);
}

/// The live worker processes of a `dvm serve --processes N` with pid `server`.
fn worker_pids(server: u32) -> Vec<u32> {
    // Each thread lists the children it started.
    let children: String = std::fs::read_dir(format!("/proc/{server}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .collect::<Vec<_>>()
        .join(" ");
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("--local-socket"))
        })
        .collect()
}

#[test]
fn serve_with_worker_processes_answers_as_one_process_does_and_outlives_a_dead_worker() {
    use crate::server::{Server, client};
    use serde_json::{Value, json};

    let execute = |server: &Server, body: &Value| -> Value {
        client()
            .post(server.url("/execute"))
            .json(body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let bodies = [
        json!({"code": "import sys\nprint(sys.argv[1:], sys.stdin.read())\nsys.exit(4)",
               "args": ["a", "b c"], "stdin": "from stdin"}),
        json!({"code": "import random\nprint(random.random())", "seed": 7}),
        json!({"code": "console.log([1, 2].map(x => x * 3))", "runtime": "javascript"}),
        json!({"code": "while True: pass", "timeout_ms": 300}),
        json!({"code": "x = 1 +", "runtime": "python"}),
    ];
    let same = |outcome: &Value| {
        let mut outcome = outcome.clone();
        // `cache`: the second server finds what the first stored (the key is compared).
        for field in [
            "duration_ms",
            "fuel_used",
            "memory_peak_bytes",
            "id",
            "run_id",
            "cache",
        ] {
            if let Some(fields) = outcome.as_object_mut() {
                fields.remove(field);
            }
        }
        outcome
    };
    let alone: Vec<Value> = {
        let server = Server::start(&[]);
        bodies
            .iter()
            .map(|body| same(&execute(&server, body)))
            .collect()
    };

    let server = Server::start(&["--processes", "2"]);
    let workers = worker_pids(server.pid());
    assert_eq!(workers.len(), 2, "{workers:?}");
    for (body, expected) in bodies.iter().zip(&alone) {
        assert_eq!(&same(&execute(&server, body)), expected, "{body}");
    }
    assert_eq!(alone[0]["exit_code"], 4, "{}", alone[0]);
    assert_eq!(alone[3]["limit"], "deadline", "{}", alone[3]);

    // A worker killed between runs is started again; every run is still answered.
    let _ = Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status();
    for _ in 0..6 {
        let outcome = execute(&server, &json!({"code": "print(5)"}));
        assert_eq!(outcome["stdout"], "5\n", "{outcome}");
    }
    let again = worker_pids(server.pid());
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(!again.contains(&workers[0]));

    // The workers end with the server.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let gone = |pid: u32| {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !again.iter().all(|&pid| gone(pid)) {
        assert!(
            Instant::now() < deadline,
            "workers {again:?} outlived the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
