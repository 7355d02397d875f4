//! NATS nkey and credentials-file authentication (issue 15, "NATS"): a node with the right
//! user seed runs jobs on a server that only knows that user's public key; a node without
//! it, or with another seed, is refused; seed and credentials files others can read are
//! refused like ssh refuses keys; malformed ones give an error instead of a panic; no error
//! shows a seed; two ways of authenticating at once are a usage error naming both; and a
//! credentials file's JWT and nonce signature reach the server.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dvm::nats::{NatsAuth, NatsCreds, NkeySeed, Queue};

use crate::nats::{Nats, Worker, config, request, runtime};
use crate::support::*;

/// A new user key pair: (seed, public key).
fn user_pair() -> (String, String) {
    let pair = nkeys::KeyPair::new_user();
    (pair.seed().unwrap(), pair.public_key())
}

fn write_secret(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `dvm worker` against `url` with `args` and `env`, run to its end.
fn worker_output(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvm"));
    command
        .args(["worker", "--nats", url])
        .args(args)
        .env("DVM_HOME", shared_home())
        .env_remove("DVM_NATS_TOKEN")
        .env_remove("DVM_NATS_PASSWORD")
        .env_remove("DVM_NATS_NKEY")
        .env_remove("DVM_LOG")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Refused as the user's mistake (exit 2), without a panic and without showing `secret`.
fn assert_refused(out: &Output, wants: &[&str], secret: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{}", show(out));
    assert!(!text.contains("panicked"), "{}", show(out));
    assert!(
        !secret.is_empty() && !text.contains(secret),
        "the seed was shown: {text}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(secret),
        "the seed was shown on stdout"
    );
    for want in wants {
        assert!(text.contains(want), "no `{want}` in: {text}");
    }
}

/// A nats-server that knows one user, by the public key `public`.
fn nkey_server(public: &str) -> (Nats, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!("authorization {{\n  users = [\n    {{ nkey: \"{public}\" }}\n  ]\n}}\n"),
    )
    .unwrap();
    let nats = Nats::start_with(&["-c", conf.to_str().unwrap()]);
    (nats, dir)
}

#[test]
fn a_server_that_wants_an_nkey_serves_the_seed_holder_and_refuses_everyone_else() {
    let (seed, public) = user_pair();
    let (wrong_seed, _) = user_pair();
    let (nats, _conf) = nkey_server(&public);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();

    // In process: no seed is refused at once, the right seed connects.
    let started = Instant::now();
    assert!(rt.block_on(Queue::connect(&config(&nats))).is_err());
    assert!(started.elapsed() < Duration::from_secs(30));
    let parsed = NkeySeed::parse(&seed, "the test seed").unwrap();
    assert_eq!(parsed.public_key(), public);
    assert!(
        !format!("{parsed:?}").contains(&seed),
        "Debug shows the seed"
    );
    let auth = NatsAuth {
        nkey: Some(parsed),
        ..NatsAuth::default()
    };
    assert!(!format!("{auth:?}").contains(&seed), "Debug shows the seed");
    let queue = rt
        .block_on(Queue::connect(&config(&nats).with_auth(auth)))
        .unwrap();

    // A worker without a seed, or with another user's, stops with an authorization error
    // that does not show the seed it was given.
    let none = worker_output(&nats.url(), &[], &[]);
    assert!(!none.status.success(), "{}", show(&none));
    assert!(stderr(&none).contains("authorization"), "{}", show(&none));
    let wrong = worker_output(&nats.url(), &[], &[("DVM_NATS_NKEY", &wrong_seed)]);
    assert!(!wrong.status.success(), "{}", show(&wrong));
    assert!(stderr(&wrong).contains("authorization"), "{}", show(&wrong));
    assert!(stderr(&wrong).contains("DVM_NATS_NKEY"), "{}", show(&wrong));
    assert!(!stderr(&wrong).contains(&wrong_seed), "{}", show(&wrong));
    let wrong_file = write_secret(dir.path(), "wrong.nk", &wrong_seed, 0o600);
    let wrong = worker_output(
        &nats.url(),
        &["--nats-nkey-file", wrong_file.to_str().unwrap()],
        &[],
    );
    assert!(!wrong.status.success(), "{}", show(&wrong));
    assert!(stderr(&wrong).contains("authorization"), "{}", show(&wrong));
    assert!(!stderr(&wrong).contains(&wrong_seed), "{}", show(&wrong));

    // The right seed in a file others can read is refused before connecting.
    let open = write_secret(dir.path(), "open.nk", &format!("{seed}\n"), 0o644);
    let refused = worker_output(
        &nats.url(),
        &["--nats-nkey-file", open.to_str().unwrap()],
        &[],
    );
    assert_refused(&refused, &["chmod 600", "644"], &seed);

    // The right seed in the environment connects (the worker starts pulling).
    let mut child = Command::new(env!("CARGO_BIN_EXE_dvm"))
        .args(["worker", "--nats", &nats.url(), "--name", "from-env"])
        .env("DVM_HOME", shared_home())
        .env("DVM_NATS_NKEY", &seed)
        .env_remove("DVM_NATS_TOKEN")
        .env_remove("DVM_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let pulled = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("pulling runs from") => break true,
            Some(Ok(line)) => seen.push(line),
            _ => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        pulled,
        "the worker with DVM_NATS_NKEY did not start: {seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains(&seed)));

    // The right seed in a private file: a worker connects and runs a job end to end.
    let private = write_secret(dir.path(), "user.nk", &format!("{seed}\n"), 0o600);
    let _worker = Worker::start(
        &nats,
        "nkeyed",
        &["--nats-nkey-file", private.to_str().unwrap()],
    );
    let ran = rt
        .block_on(queue.run(
            &request("python", "print(6 * 7)", Duration::from_secs(30)),
            Duration::from_secs(120),
        ))
        .unwrap();
    assert_eq!(ran.into_outcome().unwrap().stdout, b"42\n");
}

#[test]
fn malformed_seeds_are_refused_with_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, _) = user_pair();
    // Nothing listens here: every refusal happens before connecting.
    let url = "nats://127.0.0.1:1";
    // One character changed: the checksum fails.
    let mut flipped = seed.clone().into_bytes();
    flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let account = nkeys::KeyPair::new_account().seed().unwrap();
    let public = nkeys::KeyPair::new_user().public_key();
    for (name, text, wants) in [
        ("flipped", flipped.as_str(), "not a NATS user nkey seed"),
        ("account", account.as_str(), "user seed"),
        ("public", public.as_str(), "not a NATS user nkey seed"),
        ("short", &seed[..20], "not a NATS user nkey seed"),
        ("empty", "", "not a NATS user nkey seed"),
        ("binary", "SU\u{0}\u{ff}é", "not a NATS user nkey seed"),
    ] {
        let file = write_secret(dir.path(), name, text, 0o600);
        let out = worker_output(url, &["--nats-nkey-file", file.to_str().unwrap()], &[]);
        assert_refused(&out, &[wants, "nkey seed file"], &seed);
        if text.len() > 8 {
            assert!(!stderr(&out).contains(text), "{name}: the file was shown");
        }
        if !text.contains('\u{0}') {
            let out = worker_output(url, &[], &[("DVM_NATS_NKEY", text)]);
            if text.is_empty() {
                // An empty variable is no variable: the worker only fails to connect.
                assert_ne!(out.status.code(), Some(2), "{}", show(&out));
                continue;
            }
            assert_refused(&out, &[wants, "DVM_NATS_NKEY"], &seed);
            assert!(
                !stderr(&out).contains(text),
                "{name}: the variable was shown"
            );
        }
    }
    // A directory, a missing file and a FIFO (which is not waited on).
    for path in [dir.path().to_path_buf(), dir.path().join("missing")] {
        let out = worker_output(url, &["--nats-nkey-file", path.to_str().unwrap()], &[]);
        assert_refused(&out, &["nkey seed file"], &seed);
    }
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    let started = Instant::now();
    let out = worker_output(url, &["--nats-nkey-file", fifo.to_str().unwrap()], &[]);
    assert_refused(&out, &["not a regular file"], &seed);
    assert!(started.elapsed() < Duration::from_secs(60));
    // A group-readable seed file is refused too, and so is a huge one.
    let group = write_secret(dir.path(), "group.nk", &seed, 0o640);
    let out = worker_output(url, &["--nats-nkey-file", group.to_str().unwrap()], &[]);
    assert_refused(&out, &["chmod 600"], &seed);
    let huge = write_secret(dir.path(), "huge.nk", &"S".repeat(1 << 20), 0o600);
    let out = worker_output(url, &["--nats-nkey-file", huge.to_str().unwrap()], &[]);
    assert_refused(&out, &["larger than"], &seed);
    // A 0600 seed file that belongs to someone else is not ours to use (only root can make
    // one, so the case runs when the tests do).
    let theirs = write_secret(dir.path(), "theirs.nk", &seed, 0o600);
    if rustix::process::geteuid().is_root()
        && std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_ok()
    {
        let out = worker_output(url, &["--nats-nkey-file", theirs.to_str().unwrap()], &[]);
        assert_refused(&out, &["not to you", "chown"], &seed);
    }
}

/// Arguments, environment, and the two names the error must show.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], [&'a str; 2]);

#[test]
fn two_ways_of_authenticating_at_once_are_a_usage_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, _) = user_pair();
    let nk = write_secret(dir.path(), "user.nk", &seed, 0o600);
    let creds = write_secret(dir.path(), "user.creds", &creds_text("a.b.c", &seed), 0o600);
    let (nk, creds) = (nk.to_str().unwrap(), creds.to_str().unwrap());
    let url = "nats://127.0.0.1:1";
    let cases: [Case; 6] = [
        (
            &["--nats-token", "t", "--nats-nkey-file", nk],
            &[],
            ["--nats-token", "--nats-nkey-file"],
        ),
        (
            &["--nats-creds", creds, "--nats-nkey-file", nk],
            &[],
            ["--nats-creds", "--nats-nkey-file"],
        ),
        (
            &[
                "--nats-user",
                "u",
                "--nats-password",
                "p",
                "--nats-creds",
                creds,
            ],
            &[],
            ["--nats-user", "--nats-creds"],
        ),
        (
            &["--nats-creds", creds],
            &[("DVM_NATS_TOKEN", "t")],
            ["--nats-token", "--nats-creds"],
        ),
        (
            &["--nats-creds", creds],
            &[("DVM_NATS_NKEY", &seed)],
            ["DVM_NATS_NKEY", "--nats-creds"],
        ),
        (
            &["--nats-token", "t"],
            &[("DVM_NATS_NKEY", &seed)],
            ["DVM_NATS_NKEY", "--nats-token"],
        ),
    ];
    for (args, env, names) in cases {
        let out = worker_output(url, args, env);
        assert_refused(&out, &names, &seed);
    }
    // `serve --nats` takes the same flags.
    let out = Command::new(env!("CARGO_BIN_EXE_dvm"))
        .args([
            "serve",
            "--nats",
            url,
            "--nats-token",
            "t",
            "--nats-creds",
            creds,
        ])
        .env("DVM_HOME", shared_home())
        .env_remove("DVM_NATS_NKEY")
        .output()
        .unwrap();
    assert_refused(&out, &["--nats-token", "--nats-creds"], &seed);
}

/// A credentials file as `nsc` writes it.
fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[test]
fn malformed_or_readable_credentials_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, _) = user_pair();
    let url = "nats://127.0.0.1:1";
    let account = nkeys::KeyPair::new_account().seed().unwrap();
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVIn0.c2ln";
    let good = creds_text(jwt, &seed);
    let bad_seed = good.replace(&seed, &format!("{}AAAA", &seed[..54]));
    for (name, text) in [
        ("empty", String::new()),
        ("garbage", "not a creds file\n".repeat(10)),
        (
            "no-seed",
            good.split("-----BEGIN USER").next().unwrap().to_string(),
        ),
        ("no-jwt", good.replace(jwt, "")),
        ("bad-seed", bad_seed),
        ("account-seed", creds_text(jwt, &account)),
    ] {
        let file = write_secret(dir.path(), name, &text, 0o600);
        let out = worker_output(url, &["--nats-creds", file.to_str().unwrap()], &[]);
        assert_refused(&out, &["NATS credentials file", "not usable"], &seed);
        assert!(
            !stderr(&out).contains(&account),
            "{name}: the seed was shown"
        );
    }
    for mode in [0o644, 0o604, 0o660] {
        let file = write_secret(dir.path(), "open.creds", &good, mode);
        let out = worker_output(url, &["--nats-creds", file.to_str().unwrap()], &[]);
        assert_refused(&out, &["chmod 600", &format!("{mode:03o}")], &seed);
    }
    // In the library too, and a well-formed private file is accepted.
    let file = write_secret(dir.path(), "ok.creds", &good, 0o600);
    let creds = NatsCreds::from_file(&file).unwrap();
    assert!(!format!("{creds:?}").contains(&seed));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = NatsCreds::from_file(&file).unwrap_err().to_string();
    assert!(refused.contains("chmod 600"), "{refused}");
}

/// A one-connection stand-in for a NATS server: sends INFO with `nonce`, reads the client's
/// CONNECT, answers its PING and returns the CONNECT's JSON.
fn fake_server(nonce: &str) -> (String, std::thread::JoinHandle<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    let info = format!(
        "INFO {{\"server_id\":\"fake\",\"server_name\":\"fake\",\"version\":\"2.10.0\",\
         \"go\":\"go1\",\"host\":\"127.0.0.1\",\"port\":4222,\"headers\":true,\
         \"max_payload\":1048576,\"proto\":1,\"auth_required\":true,\"nonce\":\"{nonce}\"}}\r\n"
    );
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(info.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut connect = None;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            if let Some(json) = line.trim_end().strip_prefix("CONNECT ") {
                connect = Some(serde_json::from_str(json).unwrap());
            } else if line.starts_with("PING") {
                stream.write_all(b"PONG\r\n").unwrap();
                break;
            }
            line.clear();
        }
        // Hold the connection a moment so the client sees the PONG.
        std::thread::sleep(Duration::from_millis(500));
        connect.expect("the client sent CONNECT")
    });
    (url, handle)
}

fn verify_nonce_signature(public: &str, nonce: &str, connect: &serde_json::Value) {
    let sig = connect["sig"].as_str().expect("a nonce signature");
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    nkeys::KeyPair::from_public_key(public)
        .unwrap()
        .verify(nonce.as_bytes(), &sig)
        .expect("the nonce is signed by the user's key");
}

#[test]
fn the_seed_and_a_credentials_files_jwt_reach_the_server_in_connect() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (seed, public) = user_pair();
    let nonce = "dvm-test-nonce-7";

    // Credentials file: the JWT is sent as is and the nonce is signed with its seed.
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVIn0.c2ln";
    let file = write_secret(dir.path(), "user.creds", &creds_text(jwt, &seed), 0o600);
    let auth = NatsAuth {
        creds: Some(NatsCreds::from_file(&file).unwrap()),
        ..NatsAuth::default()
    };
    let (url, server) = fake_server(nonce);
    let client = rt
        .block_on(auth.options().unwrap().connect(url))
        .expect("connected to the stand-in");
    let connect = server.join().unwrap();
    drop(client);
    assert_eq!(connect["jwt"], jwt, "{connect}");
    verify_nonce_signature(&public, nonce, &connect);
    assert!(!connect.to_string().contains(&seed));

    // Nkey seed: the public key is sent and the nonce signed; the seed never leaves.
    let auth = NatsAuth {
        nkey: Some(NkeySeed::parse(&seed, "test").unwrap()),
        ..NatsAuth::default()
    };
    let (url, server) = fake_server(nonce);
    let client = rt
        .block_on(auth.options().unwrap().connect(url))
        .expect("connected to the stand-in");
    let connect = server.join().unwrap();
    drop(client);
    assert_eq!(connect["nkey"], public.as_str(), "{connect}");
    verify_nonce_signature(&public, nonce, &connect);
    assert!(!connect.to_string().contains(&seed));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text is a seed or an error that does not repeat it; never a panic.
        #[test]
        fn seed_parsing_never_panics_or_echoes(text in "\\PC{0,80}|S[A-Z2-7]{57}") {
            if let Err(e) = NkeySeed::parse(&text, "the input") {
                let shown = e.to_string();
                prop_assert!(text.trim().len() < 8 || !shown.contains(text.trim()), "{}", shown);
            }
        }

        /// Every generated user seed parses to its own public key.
        #[test]
        fn generated_user_seeds_parse(raw in proptest::array::uniform32(any::<u8>())) {
            let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, raw).unwrap();
            let seed = pair.seed().unwrap();
            let parsed = NkeySeed::parse(&format!("  {seed}\n"), "x").unwrap();
            prop_assert_eq!(parsed.public_key(), pair.public_key());
        }

        /// Credentials text around a seed: accepted only with both blocks well formed, and
        /// an error never shows the seed.
        #[test]
        fn creds_parsing_never_panics_or_shows_the_seed(
            raw in proptest::array::uniform32(any::<u8>()),
            jwt in "[A-Za-z0-9_.-]{0,40}",
            junk in "\\PC{0,40}",
            drop_jwt in any::<bool>(),
        ) {
            let seed = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, raw)
                .unwrap()
                .seed()
                .unwrap();
            let mut text = creds_text(&jwt, &seed);
            if drop_jwt {
                text = text.replace(&format!("{jwt}\n"), &format!("{junk}\n"));
            }
            match NatsCreds::parse(&text, Path::new("x.creds")) {
                Ok(_) => {
                    let used = if drop_jwt { junk.trim() } else { jwt.as_str() };
                    prop_assert_eq!(used.split('.').count(), 3);
                    prop_assert!(!used.starts_with('S') || used.contains('.'));
                }
                Err(e) => prop_assert!(!e.to_string().contains(&seed)),
            }
        }
    }
}
