//! The execution result cache: every key field separates runs, hits give identical
//! outcomes (with their output files), timing-dependent and non-deterministic runs are never
//! stored, damaged entries are recomputed, racing processes agree.

use std::time::Duration;

use dvm::results::CacheStatus;
use dvm::{Config, Determinism, Dvm, LimitKind, RunInput, Workspace};

use crate::cli::{dvm, json};
use crate::support::*;

/// A script unique to this test run, so keys never collide with earlier runs'.
fn unique_script(body: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("# {nanos} {}\n{body}", std::process::id())
}

fn deterministic() -> RunInput {
    RunInput {
        deterministic: Some(Determinism::default()),
        ..RunInput::default()
    }
}

/// The outcome as JSON without the fields that say how it was obtained.
fn comparable(outcome: &dvm::Outcome) -> serde_json::Value {
    let mut value = outcome.to_json();
    let map = value.as_object_mut().unwrap();
    map.remove("cache");
    map.remove("cache_key");
    value
}

#[test]
fn every_key_field_separates_runs_and_a_repeat_is_a_hit() {
    let source = unique_script(
        "import sys, os, random\n\
         print(sys.argv[1:], os.environ.get('K'), sys.stdin.read(), random.random())\n\
         print(sorted(os.listdir('.')))",
    );
    let run = |id: &str, name: &str, source: &str, input: &RunInput| {
        runtime(id)
            .run_script(name, source.as_bytes(), input)
            .unwrap()
    };
    let base = deterministic();
    let first = run("python", "main.py", &source, &base);
    assert_eq!(first.cache, CacheStatus::Miss, "{}", describe(&first));
    let key = first.cache_key.clone().unwrap();
    let again = run("python", "main.py", &source, &base);
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(again.cache_key.as_deref(), Some(key.as_str()));
    assert_eq!(
        comparable(&again),
        comparable(&first),
        "a hit is the same outcome"
    );

    let workspace = Workspace::new().unwrap();
    workspace.write("input.txt", b"data").unwrap();
    let variants: Vec<(&str, String, &str, RunInput)> = vec![
        ("script", format!("{source}\n"), "main.py", base.clone()),
        ("name", source.clone(), "other.py", base.clone()),
        (
            "args",
            source.clone(),
            "main.py",
            RunInput {
                args: vec!["a".into()],
                ..base.clone()
            },
        ),
        (
            "env",
            source.clone(),
            "main.py",
            RunInput {
                env: vec![("K".into(), "v".into())],
                ..base.clone()
            },
        ),
        (
            "stdin",
            source.clone(),
            "main.py",
            RunInput {
                stdin: b"in".to_vec(),
                ..base.clone()
            },
        ),
        (
            "seed",
            source.clone(),
            "main.py",
            RunInput {
                deterministic: Some(Determinism { seed: 9 }),
                ..base.clone()
            },
        ),
        (
            "fuel",
            source.clone(),
            "main.py",
            RunInput {
                limits: dvm::Limits {
                    fuel: Some(1 << 40),
                    ..Default::default()
                },
                ..base.clone()
            },
        ),
        (
            "memory",
            source.clone(),
            "main.py",
            RunInput {
                limits: dvm::Limits {
                    memory_bytes: 256 << 20,
                    ..Default::default()
                },
                ..base.clone()
            },
        ),
        (
            "deadline",
            source.clone(),
            "main.py",
            RunInput {
                limits: dvm::Limits {
                    deadline: Duration::from_secs(11),
                    ..Default::default()
                },
                ..base.clone()
            },
        ),
        (
            "disk",
            source.clone(),
            "main.py",
            RunInput {
                limits: dvm::Limits {
                    disk_bytes: 1 << 20,
                    ..Default::default()
                },
                ..base.clone()
            },
        ),
        (
            "workspace",
            source.clone(),
            "main.py",
            RunInput {
                workspace: Some(workspace.clone()),
                ..base.clone()
            },
        ),
    ];
    let mut keys = std::collections::HashSet::from([key.clone()]);
    for (field, source, name, input) in &variants {
        let outcome = run("python", name, source, input);
        assert_eq!(
            outcome.cache,
            CacheStatus::Miss,
            "{field}: {}",
            describe(&outcome)
        );
        assert!(
            keys.insert(outcome.cache_key.clone().unwrap()),
            "{field} did not change the key"
        );
        let repeat = run("python", name, source, input);
        assert_eq!(repeat.cache, CacheStatus::Hit, "{field} repeated");
        assert_eq!(
            comparable(&repeat),
            comparable(&outcome),
            "{field} repeated"
        );
    }
    // Another runtime, the same script: another key; and the same with packages installed.
    let lite = run("python-lite", "main.py", &source, &base);
    assert_eq!(lite.cache, CacheStatus::Miss);
    assert!(keys.insert(lite.cache_key.unwrap()));
    let packages = runtime("python-lite")
        .install_packages(&dvm::PackageRequest {
            requirements: vec!["tabulate".into()],
            ..Default::default()
        })
        .unwrap();
    let with_packages = RunInput {
        packages: Some(packages),
        ..base.clone()
    };
    let lite_packages = run("python-lite", "main.py", &source, &with_packages);
    assert_eq!(lite_packages.cache, CacheStatus::Miss);
    assert!(
        keys.insert(lite_packages.cache_key.unwrap()),
        "packages did not change the key"
    );
    assert_eq!(
        run("python-lite", "main.py", &source, &with_packages).cache,
        CacheStatus::Hit
    );
    // Changing a workspace file changes the key too.
    workspace.write("input.txt", b"changed").unwrap();
    let changed = run(
        "python",
        "main.py",
        &source,
        &RunInput {
            workspace: Some(workspace.clone()),
            ..base.clone()
        },
    );
    assert_eq!(changed.cache, CacheStatus::Miss);
}

#[test]
fn a_hit_brings_back_the_output_files() {
    let source = unique_script("import random\nopen('out/r.txt', 'w').write(str(random.random()))");
    let source = format!("import os\nos.makedirs('out', exist_ok=True)\n{source}");
    let first_ws = Workspace::new().unwrap();
    let input = |workspace: &Workspace| RunInput {
        workspace: Some(workspace.clone()),
        ..deterministic()
    };
    let first = runtime("python")
        .run_script("main.py", source.as_bytes(), &input(&first_ws))
        .unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    let second_ws = Workspace::new().unwrap();
    let second = runtime("python")
        .run_script("main.py", source.as_bytes(), &input(&second_ws))
        .unwrap();
    assert_eq!(second.cache, CacheStatus::Hit, "{}", describe(&second));
    assert_eq!(second.files, first.files);
    assert_eq!(
        second_ws.read("out/r.txt", 100).unwrap(),
        first_ws.read("out/r.txt", 100).unwrap()
    );
}

#[test]
fn timing_dependent_and_nondeterministic_runs_are_never_stored() {
    let spin = unique_script("while True:\n    pass");
    let input = RunInput {
        limits: dvm::Limits {
            deadline: Duration::from_millis(300),
            ..Default::default()
        },
        ..deterministic()
    };
    for _ in 0..2 {
        let outcome = runtime("python")
            .run_script("main.py", spin.as_bytes(), &input)
            .unwrap();
        expect_limit(&outcome, LimitKind::Deadline, "spin");
        assert_eq!(
            outcome.cache,
            CacheStatus::Miss,
            "a deadline ending is not stored"
        );
    }
    let plain = unique_script("print(1)");
    for _ in 0..2 {
        let outcome = runtime("python")
            .run_script("main.py", plain.as_bytes(), &RunInput::default())
            .unwrap();
        assert_eq!(outcome.cache, CacheStatus::Off);
        assert_eq!(outcome.cache_key, None);
    }
    let off = RunInput {
        cache: dvm::results::CacheMode::Off,
        ..deterministic()
    };
    for _ in 0..2 {
        let outcome = runtime("python")
            .run_script("main.py", plain.as_bytes(), &off)
            .unwrap();
        assert_eq!(outcome.cache, CacheStatus::Off);
    }
    // A fuel limit is deterministic: stored.
    let fuel = RunInput {
        limits: dvm::Limits {
            fuel: Some(2_000_000),
            ..Default::default()
        },
        ..deterministic()
    };
    let first = runtime("python")
        .run_script("main.py", spin.as_bytes(), &fuel)
        .unwrap();
    expect_limit(&first, LimitKind::Fuel, "fuel");
    let second = runtime("python")
        .run_script("main.py", spin.as_bytes(), &fuel)
        .unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    // Grants read host directories that can change under the key: not cached.
    let host = tempfile::tempdir().unwrap();
    let granted = RunInput {
        grants: vec![dvm::Grant {
            host: host.path().to_path_buf(),
            guest: "/data".into(),
            writable: false,
        }],
        ..deterministic()
    };
    let outcome = runtime("python")
        .run_script("main.py", plain.as_bytes(), &granted)
        .unwrap();
    assert_eq!(outcome.cache, CacheStatus::Off);
}

/// A WASI module printing `hello`, run from a `Dvm` with its own home.
fn wat_program(dvm: &Dvm) -> dvm::Program {
    dvm.load_file(&fixture("wat/hello.wat")).unwrap()
}

#[test]
fn a_damaged_entry_is_recomputed_never_returned() {
    let home = tempfile::tempdir().unwrap();
    let dvm = Dvm::new(Config {
        home: home.path().to_path_buf(),
        pool: None,
        ..Config::default()
    })
    .unwrap();
    let program = wat_program(&dvm);
    let first = program.run(&deterministic()).unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    let key = first.cache_key.clone().unwrap();
    let entry = home
        .path()
        .join("results/v2/entries")
        .join(format!("{key}.json"));
    let text = std::fs::read_to_string(&entry).unwrap();
    std::fs::write(
        &entry,
        text.replace("\"exit_code\\\":0", "\"exit_code\\\":7"),
    )
    .unwrap();
    assert_ne!(
        std::fs::read_to_string(&entry).unwrap(),
        text,
        "the test damaged the entry"
    );
    let after = program.run(&deterministic()).unwrap();
    assert_eq!(after.cache, CacheStatus::Miss, "damage is a miss");
    assert_eq!(after.exit_code, Some(0));
    let hit = program.run(&deterministic()).unwrap();
    assert_eq!(
        hit.cache,
        CacheStatus::Hit,
        "the recomputed entry is stored again"
    );
    assert_eq!(comparable(&hit), comparable(&after));
}

#[test]
fn the_store_stays_within_its_bound_and_can_be_cleared() {
    let home = tempfile::tempdir().unwrap();
    let dvm = Dvm::new(Config {
        home: home.path().to_path_buf(),
        pool: None,
        result_cache_bytes: 2_000,
        ..Config::default()
    })
    .unwrap();
    let program = wat_program(&dvm);
    for i in 0..10 {
        let input = RunInput {
            args: vec![format!("arg {i}")],
            ..deterministic()
        };
        program.run(&input).unwrap();
    }
    let stats = dvm.results().stats().unwrap();
    assert!(stats.entry_bytes + stats.blob_bytes <= 2_000, "{stats:?}");
    assert!(stats.entries >= 1 && stats.entries < 10, "{stats:?}");
    // The most recent run survived eviction.
    let latest = program
        .run(&RunInput {
            args: vec!["arg 9".into()],
            ..deterministic()
        })
        .unwrap();
    assert_eq!(latest.cache, CacheStatus::Hit);
    assert!(dvm.results().clear().unwrap() >= 1);
    assert_eq!(dvm.results().stats().unwrap().entries, 0);
}

mod cli {
    use super::*;

    #[test]
    fn racing_processes_agree_and_the_cache_commands_work() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("race.py");
        std::fs::write(
            &script,
            unique_script("import random\nprint(random.random())"),
        )
        .unwrap();
        let script = script.to_str().unwrap().to_string();
        let racers: Vec<_> = (0..3)
            .map(|_| {
                let script = script.clone();
                std::thread::spawn(move || dvm(&["run", "--json", "--cache", &script]))
            })
            .collect();
        let outputs: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let values: Vec<serde_json::Value> = outputs.iter().map(json).collect();
        for value in &values {
            assert_eq!(value["stdout"], values[0]["stdout"]);
            assert_eq!(value["cache_key"], values[0]["cache_key"]);
        }
        let key = values[0]["cache_key"].as_str().unwrap().to_string();
        let hit = json(&dvm(&["run", "--json", "--deterministic", &script]));
        assert_eq!(hit["cache"], "hit");
        assert_eq!(hit["stdout"], values[0]["stdout"]);
        let plain = dvm(&["run", "--deterministic", &script]);
        assert_eq!(
            String::from_utf8_lossy(&plain.stdout),
            values[0]["stdout"].as_str().unwrap(),
            "{}",
            show(&plain)
        );

        let shown = json(&dvm(&["cache", "show", &key]));
        assert_eq!(shown["stdout"], values[0]["stdout"]);
        let listed = json(&dvm(&["cache", "ls", "--json"]));
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["key"] == key.as_str())
        );
        let stats = json(&dvm(&["cache", "stats", "--json"]));
        assert!(stats["entries"].as_u64().unwrap() >= 1);
        assert_eq!(dvm(&["cache", "rm", &key]).status.code(), Some(0));
        let missing = dvm(&["cache", "show", &key]);
        assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
        let off = json(&dvm(&[
            "run",
            "--json",
            "--no-cache",
            "--deterministic",
            &script,
        ]));
        assert_eq!(off["cache"], "off");
    }
}

mod sharing {
    use super::*;

    fn home_dvm(home: &std::path::Path) -> Dvm {
        Dvm::new(Config {
            home: home.to_path_buf(),
            pool: None,
            ..Config::default()
        })
        .unwrap()
    }

    /// Unpacks a bundle, lets `edit` change its members, packs it again.
    fn rewrite(bundle: &std::path::Path, edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) {
        let file = std::fs::File::open(bundle).unwrap();
        let decoder = ruzstd::decoding::StreamingDecoder::new(file).unwrap();
        let mut archive = tar::Archive::new(decoder);
        let mut out = tar::Builder::new(Vec::new());
        for member in archive.entries().unwrap() {
            let mut member = member.unwrap();
            let name = member.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut member, &mut bytes).unwrap();
            let bytes = edit(&name, bytes);
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            out.append_data(&mut header, &name, bytes.as_slice())
                .unwrap();
        }
        let tarball = out.into_inner().unwrap();
        let packed = ruzstd::encoding::compress_to_vec(
            tarball.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        std::fs::write(bundle, packed).unwrap();
    }

    #[test]
    fn a_bundle_moves_results_between_homes_and_tampering_is_rejected() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let source = "(module
          (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) (result i32)))
          (import \"wasi_snapshot_preview1\" \"path_open\"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (memory (export \"memory\") 1)
          (data (i32.const 100) \"shared result\\n\")
          (data (i32.const 300) \"out.txt\")
          (func (export \"_start\")
            (i32.store (i32.const 200) (i32.const 100))
            (i32.store (i32.const 204) (i32.const 14))
            (drop (call $w (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 400)))
            (drop (call $open (i32.const 4) (i32.const 0) (i32.const 300) (i32.const 7)
                              (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 500)))
            (drop (call $w (i32.load (i32.const 500)) (i32.const 200) (i32.const 1) (i32.const 400)))))";
        let run_in = |home: &std::path::Path| {
            home_dvm(home)
                .load_bytes("shared.wat", source.as_bytes())
                .unwrap()
                .run(&deterministic())
                .unwrap()
        };
        let original = run_in(a.path());
        assert_eq!(original.cache, CacheStatus::Miss, "{}", describe(&original));
        assert_eq!(original.files.len(), 1);
        let bundle = a.path().join("results.tar.zst");
        let exported = home_dvm(a.path()).results().export(&[], &bundle).unwrap();
        assert_eq!((exported.entries, exported.blobs), (1, 1));

        // Another home trusts a's entries once it trusts a's key.
        let a_key = home_dvm(a.path()).results().keys().unwrap().signer.public();
        let imported = home_dvm(b.path())
            .results()
            .import(&bundle, &[a_key])
            .unwrap();
        assert_eq!(imported.imported, 1, "{imported:?}");
        assert!(imported.rejected.is_empty(), "{imported:?}");
        let shared = run_in(b.path());
        assert_eq!(shared.cache, CacheStatus::Hit, "{}", describe(&shared));
        assert_eq!(comparable(&shared), comparable(&original));

        // An entry whose body was changed no longer matches its signature.
        rewrite(&bundle, |name, bytes| {
            if name.starts_with("entries/") {
                String::from_utf8(bytes)
                    .unwrap()
                    .replace("fuel_used\\\":", "fuel_used\\\":1")
                    .into_bytes()
            } else {
                bytes
            }
        });
        let tampered = home_dvm(c.path())
            .results()
            .import(&bundle, &[a_key])
            .unwrap();
        assert_eq!(tampered.imported, 0, "{tampered:?}");
        assert!(tampered.rejected[0].contains("signature"), "{tampered:?}");
        assert_eq!(run_in(c.path()).cache, CacheStatus::Miss);

        // So is an output file that was swapped.
        let bundle_b = b.path().join("again.tar.zst");
        home_dvm(b.path()).results().export(&[], &bundle_b).unwrap();
        rewrite(&bundle_b, |name, bytes| {
            if name.starts_with("blobs/") {
                b"swapped".to_vec()
            } else {
                bytes
            }
        });
        // b signed what it imported with its own key.
        let b_key = home_dvm(b.path()).results().keys().unwrap().signer.public();
        let d = tempfile::tempdir().unwrap();
        let swapped = home_dvm(d.path())
            .results()
            .import(&bundle_b, &[b_key])
            .unwrap();
        assert!(
            swapped.rejected[0].contains("does not match"),
            "{swapped:?}"
        );
        let garbage = d.path().join("garbage.tar.zst");
        std::fs::write(&garbage, b"not a bundle").unwrap();
        assert!(
            home_dvm(d.path())
                .results()
                .import(&garbage, &[a_key])
                .is_err()
        );
    }

    #[test]
    fn export_and_import_through_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("share.py");
        std::fs::write(&script, unique_script("print('shared')")).unwrap();
        let first = json(&dvm(&[
            "run",
            "--json",
            "--cache",
            script.to_str().unwrap(),
        ]));
        let key = first["cache_key"].as_str().unwrap();
        let bundle = dir.path().join("b.tar.zst");
        let exported = dvm(&["cache", "export", key, "--to", bundle.to_str().unwrap()]);
        assert_eq!(exported.status.code(), Some(0), "{}", show(&exported));
        let imported = dvm(&["cache", "import", bundle.to_str().unwrap()]);
        assert_eq!(imported.status.code(), Some(0), "{}", show(&imported));
        assert!(String::from_utf8_lossy(&imported.stdout).contains("imported 1 entries"));
        let unknown = dvm(&[
            "cache",
            "export",
            &"0".repeat(64),
            "--to",
            bundle.to_str().unwrap(),
        ]);
        assert_eq!(unknown.status.code(), Some(2), "{}", show(&unknown));
    }
}
