//! Session forks and snapshots: copies go on exactly where the session stands, each on its
//! own, and a snapshot on disk is resumed only as it was signed.

use dvm::{RunInput, SessionOptions, Status};

use crate::support::*;

/// The two snapshot tests share blobs (chunks of equal sessions are stored once), and one of
/// them damages a blob for a moment: they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn call(session: &dvm::Session, code: &str) -> String {
    let outcome = session.run(code, &RunInput::default()).unwrap();
    assert_eq!(outcome.status, Status::Ok, "{}", describe(&outcome));
    stdout(&outcome)
}

/// A session with state worth copying: variables, a DataFrame, a seeded generator part way
/// through, a module, a file.
fn busy_session() -> dvm::Session {
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    call(
        &session,
        "import random, json, time\nimport pandas as pd\nrandom.seed(7)\nrandom.random()\n\
         df = pd.DataFrame({'a': range(1000), 'b': [i * i for i in range(1000)]})\n\
         history = [random.random() for _ in range(3)]\nstarted = time.monotonic()\n\
         open('notes.txt', 'w').write('kept')\nNone",
    );
    session
}

/// What the next call shows of the state (random state included).
const PROBE: &str = "print(history, int(df.b.sum()), random.random(), open('notes.txt').read())";

#[test]
fn forks_go_on_where_the_session_stands_and_then_on_their_own() {
    let session = busy_session();
    let forks = session.fork(3).unwrap();
    assert_eq!(forks.len(), 3);
    let expected = call(&session, PROBE);
    assert!(expected.contains("332833500"), "{expected}");
    for fork in &forks {
        assert_eq!(call(fork, PROBE), expected, "a fork's next call differs");
    }
    // Each goes on alone: variables and files.
    call(
        &forks[0],
        "history.append('only here')\nopen('notes.txt', 'w').write('changed')\nNone",
    );
    assert!(
        call(&forks[0], "print(history[-1], open('notes.txt').read())")
            .contains("only here changed")
    );
    assert_eq!(
        call(&forks[1], "print(len(history), open('notes.txt').read())"),
        "3 kept\n"
    );
    assert_eq!(
        call(&session, "print(len(history), open('notes.txt').read())"),
        "3 kept\n"
    );
    // The clock never runs backwards in a fork.
    assert_eq!(
        call(&forks[2], "print(time.monotonic() >= started)"),
        "True\n"
    );
    // A fork of a fork.
    let again = forks[1].fork(1).unwrap();
    assert_eq!(call(&again[0], "print(len(history))"), "3\n");
}

#[test]
fn javascript_sessions_fork_and_resume_where_they_stand() {
    let session = runtime("javascript")
        .session(SessionOptions::default())
        .unwrap();
    call(
        &session,
        "let n = 41; const seen = new Map([[1, 'a']]);\n\
         let state = 7; const next = () => (state = (state * 48271) % 2147483647);\n\
         next(); std.writeFile('notes.txt', 'kept')",
    );
    let probe = "[n, seen.get(1), next(), std.loadFile('notes.txt')]";
    let forks = session.fork(2).unwrap();
    let expected = call(&session, probe);
    assert_eq!(expected, "[ 41, 'a', 1278240558, 'kept' ]\n");
    for fork in &forks {
        assert_eq!(call(fork, probe), expected, "a fork's next call differs");
    }
    call(&forks[0], "n++; std.writeFile('notes.txt', 'changed')");
    assert_eq!(
        call(&forks[0], "[n, std.loadFile('notes.txt')]"),
        "[ 42, 'changed' ]\n"
    );
    assert_eq!(
        call(&forks[1], "[n, std.loadFile('notes.txt')]"),
        "[ 41, 'kept' ]\n"
    );

    let id = forks[0].snapshot().unwrap();
    let resumed = runtime("javascript").resume(&id).unwrap();
    assert_eq!(
        call(&resumed, "await Promise.resolve([n, seen.size])"),
        "[ 42, 1 ]\n"
    );
    assert!(dvm::delete_session_snapshot(&shared_home(), &id).unwrap());
}

#[test]
fn a_snapshot_is_resumed_as_it_was_and_only_as_it_was_signed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let session = busy_session();
    let id = session.snapshot().unwrap();
    assert_eq!(id.len(), 32);
    let expected = call(&session, PROBE);
    session.close();

    // A new Dvm on the same home resumes it (as after a restart of the server).
    let python = dvm::Dvm::new(dvm::Config {
        home: shared_home(),
        ..dvm::Config::default()
    })
    .unwrap()
    .runtime("python")
    .unwrap();
    let resumed = python.resume(&id).unwrap();
    assert_eq!(call(&resumed, PROBE), expected);
    assert_eq!(
        call(&resumed, "print(time.monotonic() >= started)"),
        "True\n"
    );
    // Twice: a snapshot is not used up.
    let again = python.resume(&id).unwrap();
    assert_eq!(call(&again, PROBE), expected);

    // Ids that are not ids never reach the file system; unknown ones are not found.
    for bad in [
        "../../etc/passwd",
        "",
        "ABCDEF0123456789ABCDEF0123456789",
        "x.json",
    ] {
        let error = python.resume(bad).unwrap_err().to_string();
        assert!(
            error.contains("not a session snapshot id"),
            "{bad}: {error}"
        );
    }
    let error = python.resume(&"0".repeat(32)).unwrap_err().to_string();
    assert!(error.contains("no session snapshot"), "{error}");

    // A manifest changed after signing is refused.
    let path = shared_home().join("sessions/v1").join(format!("{id}.json"));
    let original = std::fs::read_to_string(&path).unwrap();
    let forged = original.replacen("notes.txt", "notes.txz", 1);
    assert_ne!(forged, original);
    std::fs::write(&path, &forged).unwrap();
    let error = python.resume(&id).unwrap_err().to_string();
    assert!(error.contains("is not used"), "{error}");
    std::fs::write(&path, &original).unwrap();
    assert!(python.resume(&id).is_ok());

    assert!(dvm::delete_session_snapshot(&shared_home(), &id).unwrap());
    assert!(!dvm::delete_session_snapshot(&shared_home(), &id).unwrap());
    assert!(
        python
            .resume(&id)
            .unwrap_err()
            .to_string()
            .contains("no session snapshot")
    );
}

#[test]
fn a_damaged_chunk_is_refused_never_loaded() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let session = busy_session();
    let id = session.snapshot().unwrap();
    let path = shared_home().join("sessions/v1").join(format!("{id}.json"));
    let sealed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(sealed["body"].as_str().unwrap()).unwrap();
    let chunk = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c[1].as_str())
        .expect("a stored chunk")
        .to_string();
    let blob = shared_home()
        .join("store/v1/blobs")
        .join(&chunk[..2])
        .join(&chunk);
    let bytes = std::fs::read(&blob).unwrap();
    let mut damaged = bytes.clone();
    damaged[100] ^= 0xff;
    std::fs::write(&blob, &damaged).unwrap();
    let error = runtime("python").resume(&id).unwrap_err().to_string();
    std::fs::write(&blob, &bytes).unwrap();
    assert!(error.contains("damaged"), "{error}");
    dvm::delete_session_snapshot(&shared_home(), &id).unwrap();
}
