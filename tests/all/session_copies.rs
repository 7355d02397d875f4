//! Session forks and snapshots: copies go on exactly where the session stands, each on its
//! own, and a snapshot on disk is resumed only as it was signed.

use dvm::{SessionOptions, Status};

use crate::support::*;

/// The snapshot tests share blobs (chunks of equal sessions are stored once), and some damage
/// or remove blobs for a moment; the fork test counts the process's mappings: they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn call(session: &dvm::Session, code: &str) -> String {
    let outcome = session.run(code, &patient()).unwrap();
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
    let refused = session.fork(dvm::MAX_FORKS + 1).unwrap_err().to_string();
    assert!(refused.contains("at most 64 forks"), "{refused}");
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

/// Mappings this process has from session layers (each line of its map is one mapping; a
/// layer is an in-memory file named for what it is).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines()
                .filter(|line| line.contains("dvm-session-layer"))
                .count()
        })
        .unwrap_or(0)
}

/// Forks share their parent's frozen memory and take only what was written since the last
/// fork: over many rounds of turns and forks (more than a frozen memory keeps layers, so they
/// fold), every fork and fork of a fork goes on byte for byte as its parent would, writes
/// stay with their writer, and the mappings copies make are gone when they are.
#[test]
fn forks_of_forks_after_many_turns_share_memory_and_stay_exact() {
    // The other tests here that snapshot sessions map layers too.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    call(
        &session,
        "import random\nrandom.seed(3)\nbig = bytearray(range(256)) * 16384\nlog = []\nNone",
    );
    let before = mappings();
    let probe = "print(sum(big), big[4096 * len(log)], log[-3:], random.random())";
    for round in 0..12 {
        call(
            &session,
            &format!(
                "big[4096 * {round} + 4096] = {round}\nlog.append({round})\n\
                 junk = [str(i) * 10 for i in range(2000 * {round})]\nNone"
            ),
        );
        let forks = session.fork(2).unwrap();
        if round == 0 {
            assert!(
                mappings() > before,
                "the forks map their memory from layers"
            );
        }
        let expected = call(&session, probe);
        for fork in &forks {
            assert_eq!(call(fork, probe), expected, "round {round}: a fork differs");
        }
        // A fork's writes are its own; its own fork sees them, its parent does not.
        call(
            &forks[0],
            "big[7] = 201
log.append('fork')
None",
        );
        let grandchild = forks[0].fork(1).unwrap();
        assert_eq!(
            call(&grandchild[0], "print(big[7], log[-1])"),
            "201 fork\n",
            "round {round}"
        );
        assert_eq!(call(&forks[1], "print(big[7])"), "7\n", "round {round}");
        assert_eq!(call(&session, "print(big[7])"), "7\n", "round {round}");
    }
    let after = mappings();
    // The session's own memory may keep some runs mapped from its layers; the copies' are
    // unmapped with them.
    assert!(
        after < before + 600,
        "mappings grew from {before} to {after} over rounds of forks"
    );
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
    // A process that did not take it reads the store (as after a restart), and refuses.
    let error = fresh_python()
        .resume(&id)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    // The process that took it holds its memory, and does not read the store at all.
    let held = runtime("python").resume(&id);
    std::fs::write(&blob, &bytes).unwrap();
    assert!(error.contains("damaged"), "{error}");
    assert_eq!(
        call(&held.unwrap(), "print(int(df.b.sum()))"),
        "332833500\n"
    );
    dvm::delete_session_snapshot(&shared_home(), &id).unwrap();
}

/// The python runtime of a new `Dvm` on the shared home: it holds no session's memory, so a
/// resume reads the store, as after a restart.
fn fresh_python() -> dvm::Runtime {
    dvm::Dvm::new(dvm::Config {
        home: shared_home(),
        ..dvm::Config::default()
    })
    .unwrap()
    .runtime("python")
    .unwrap()
}

#[test]
fn later_snapshots_store_what_changed_and_resume_exactly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    // A buffer of a pattern no other test writes, so its chunks are this test's alone.
    const PROBE: &str =
        "import hashlib\nprint(buf[12345], buf[3 << 20], hashlib.sha256(buf).hexdigest()[:16])";
    call(
        &session,
        "buf = bytearray(b'dvm-later-snapshots!' * (4 << 16))\nbuf[12345] = 1\nNone",
    );
    let first = session.snapshot().unwrap();
    let first_probe = call(&session, PROBE);
    call(&session, "buf[12345] = 2\nbuf[3 << 20] = 7\nNone");
    // The buffer's chunks go from the store (as gc would take them once no snapshot named
    // them): the next snapshot, which knows them unchanged, must store them again.
    let chunks = |id: &str| -> Vec<String> {
        let path = shared_home().join("sessions/v1").join(format!("{id}.json"));
        let sealed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_str(sealed["body"].as_str().unwrap()).unwrap();
        manifest["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c[1].as_str().map(str::to_string))
            .collect()
    };
    let blob = |hash: &str| {
        shared_home()
            .join("store/v1/blobs")
            .join(&hash[..2])
            .join(hash)
    };
    let mut removed = 0;
    let named: std::collections::BTreeSet<String> = chunks(&first).into_iter().collect();
    for hash in named {
        let bytes = std::fs::read(blob(&hash)).unwrap();
        if bytes
            .windows(20)
            .filter(|w| w == b"dvm-later-snapshots!")
            .count()
            > 1000
        {
            std::fs::remove_file(blob(&hash)).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "the buffer's chunks were found");
    let second = session.snapshot().unwrap();
    let second_probe = call(&session, PROBE);
    call(&session, "buf[3 << 20] = 9\nNone");
    let third = session.snapshot().unwrap();
    let third_probe = call(&session, PROBE);
    assert!(third_probe.starts_with("2 9 "), "{third_probe}");
    assert_ne!(second_probe, third_probe);
    // The third snapshot differs from the second only where the calls wrote.
    let (two, three) = (chunks(&second), chunks(&third));
    let changed = three.iter().filter(|hash| !two.contains(hash)).count();
    assert!(
        changed >= 1 && changed < three.len() / 4,
        "{changed} of {}",
        three.len()
    );
    // Read from the store, each is exactly as it was.
    let fresh = fresh_python();
    for (id, expected) in [(&second, &second_probe), (&third, &third_probe)] {
        let resumed = fresh.resume(id).unwrap();
        assert_eq!(&call(&resumed, PROBE), expected);
    }
    // The first lost its chunks: read from the store it is refused; this process still
    // holds its memory.
    let error = fresh.resume(&first).map(|_| ()).unwrap_err().to_string();
    assert!(error.contains("missing"), "{error}");
    let held = runtime("python").resume(&first).unwrap();
    assert_eq!(call(&held, PROBE), first_probe);
    for id in [first, second, third] {
        dvm::delete_session_snapshot(&shared_home(), &id).unwrap();
    }
}

/// gc keeps every blob a session snapshot, an installed runtime or a warm runtime names,
/// and young blobs; it removes the rest, and nothing while a naming file is unreadable.
#[test]
fn snapshot_gc_removes_only_blobs_nothing_names() {
    use std::path::Path;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    let blob = |name: &str, aged: bool| {
        let hash = blake3::hash(name.as_bytes()).to_hex().to_string();
        let path = home.join("store/v1/blobs").join(&hash[..2]).join(&hash);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, name).unwrap();
        if aged {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        (hash, path)
    };
    let (chunk, chunk_path) = blob("chunk", true);
    let (file, file_path) = blob("file", true);
    let (runtime, runtime_path) = blob("runtime", true);
    let (warm, warm_path) = blob("warm", true);
    let (_, orphan_path) = blob("orphan", true);
    let (_, young_path) = blob("young", false);
    let write = |path: &Path, text: String| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let id = "0123456789abcdef0123456789abcdef";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let manifest = |created: u64| {
        let body = serde_json::json!({
            "id": id, "created": created,
            "chunks": [[0, chunk], [1, null]],
            "files": [{"path": "a.txt", "blake3": file, "size": 4}, {"path": "d", "blake3": null, "size": 0}],
        });
        serde_json::json!({"format": 1, "body": body.to_string()}).to_string()
    };
    let manifest_path = home.join("sessions/v1").join(format!("{id}.json"));
    write(&manifest_path, manifest(now));
    write(
        &home.join("runtimes/v1/python/3.15/installed.json"),
        serde_json::json!({"files": [{"blake3": runtime}]}).to_string(),
    );
    write(&home.join("snapshots/v1/somekey"), warm.clone());
    // An unreadable naming file: nothing is removed.
    let broken = home.join("runtimes/v1/js/1/installed.json");
    write(&broken, "{not json".into());
    let report = dvm::gc_session_snapshots(home, None).unwrap();
    assert_eq!(report.blobs_removed, 0);
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert!(orphan_path.exists());
    std::fs::remove_file(&broken).unwrap();
    let report = dvm::gc_session_snapshots(home, None).unwrap();
    assert_eq!(
        (report.snapshots_removed, report.blobs_removed),
        (0, 1),
        "{report:?}"
    );
    assert!(!orphan_path.exists(), "the orphan stays");
    for kept in [
        &chunk_path,
        &file_path,
        &runtime_path,
        &warm_path,
        &young_path,
    ] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    // A snapshot past its age goes, and then its blobs.
    write(&manifest_path, manifest(now - 10 * 86_400));
    let report =
        dvm::gc_session_snapshots(home, Some(std::time::Duration::from_secs(86_400))).unwrap();
    assert_eq!(
        (report.snapshots_removed, report.blobs_removed),
        (1, 2),
        "{report:?}"
    );
    assert!(!manifest_path.exists() && !chunk_path.exists() && !file_path.exists());
    assert!(runtime_path.exists() && warm_path.exists() && young_path.exists());
}
