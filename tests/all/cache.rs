//! The compiled-module cache: compile once per machine, load by mmap after, verify before
//! trusting, survive races and corruption.

use std::path::{Path, PathBuf};

use dvm::{ModuleSource, RunInput, Status};

use crate::support::*;

fn objects(home: &Path) -> Vec<PathBuf> {
    let dir = home.join("modules/v1/objects");
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "cwasm"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn a_second_runtime_loads_the_compiled_module_from_disk() {
    let home = tempfile::tempdir().unwrap();
    let hello = fixture("wat/hello.wat");

    let first = isolated(home.path()).load_file(&hello).unwrap();
    assert_eq!(first.source(), ModuleSource::Compiled);
    assert_eq!(objects(home.path()).len(), 1);

    let dvm = isolated(home.path());
    let second = dvm.load_file(&hello).unwrap();
    assert_eq!(second.source(), ModuleSource::Disk);
    assert_eq!(second.digest(), first.digest());
    expect_status(&second.run(&RunInput::default()).unwrap(), Status::Ok);

    // Within one runtime, a module is loaded once.
    assert_eq!(
        dvm.load_file(&hello).unwrap().source(),
        ModuleSource::Memory
    );
}

#[test]
fn a_corrupted_cache_object_is_detected_and_recompiled() {
    let home = tempfile::tempdir().unwrap();
    let hello = fixture("wat/hello.wat");
    isolated(home.path()).load_file(&hello).unwrap();
    let object = objects(home.path()).pop().unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    overwrite(&object, &bytes);

    let program = isolated(home.path()).load_file(&hello).unwrap();
    assert_eq!(program.source(), ModuleSource::Compiled);
    let outcome = program.run(&RunInput::default()).unwrap();
    assert_eq!(outcome.stdout, b"hello from dvm\n");
    // The repaired entry is good again.
    assert_eq!(
        isolated(home.path()).load_file(&hello).unwrap().source(),
        ModuleSource::Disk
    );
}

#[test]
fn a_verified_object_is_not_rehashed_until_it_changes() {
    let home = tempfile::tempdir().unwrap();
    let hello = fixture("wat/hello.wat");
    isolated(home.path()).load_file(&hello).unwrap();
    // The first load from disk verifies the object and stamps it.
    assert_eq!(
        isolated(home.path()).load_file(&hello).unwrap().source(),
        ModuleSource::Disk
    );
    let object = objects(home.path()).pop().unwrap();
    let stamp = object.with_extension("verified");
    let recorded = std::fs::read_to_string(&stamp).unwrap();
    assert!(recorded.contains("ino="), "{recorded}");
    // Same length, one byte flipped: the stamp no longer matches, the hash catches it.
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    overwrite(&object, &bytes);
    let program = isolated(home.path()).load_file(&hello).unwrap();
    assert_eq!(program.source(), ModuleSource::Compiled);
    expect_status(&program.run(&RunInput::default()).unwrap(), Status::Ok);
}

#[test]
fn a_truncated_index_entry_is_recompiled() {
    let home = tempfile::tempdir().unwrap();
    let hello = fixture("wat/hello.wat");
    isolated(home.path()).load_file(&hello).unwrap();
    for entry in std::fs::read_dir(home.path().join("modules/v1/index")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"").unwrap();
    }
    let program = isolated(home.path()).load_file(&hello).unwrap();
    assert_eq!(program.source(), ModuleSource::Compiled);
    expect_status(&program.run(&RunInput::default()).unwrap(), Status::Ok);
}

#[test]
fn an_unwritable_home_degrades_to_compiling_in_memory() {
    let home = tempfile::tempdir().unwrap();
    let blocker = home.path().join("file-not-dir");
    std::fs::write(&blocker, b"").unwrap();
    let program = isolated(&blocker)
        .load_file(&fixture("wat/hello.wat"))
        .unwrap();
    assert_eq!(program.source(), ModuleSource::Compiled);
    expect_status(&program.run(&RunInput::default()).unwrap(), Status::Ok);
}

#[test]
fn racing_runtimes_each_get_a_working_module() {
    let home = tempfile::tempdir().unwrap();
    let wat = command(1, "", &counting_loop(Some(77)));
    std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let program = isolated(home.path())
                        .load_bytes("race.wat", wat.as_bytes())
                        .unwrap();
                    program.run(&RunInput::default()).unwrap()
                })
            })
            .collect();
        for racer in racers {
            expect_status(&racer.join().unwrap(), Status::Ok);
        }
    });
    assert_eq!(objects(home.path()).len(), 1);
}

#[test]
fn racing_processes_share_one_cache() {
    let home = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_dvm"))
                .args(["run", fixture("wat/hello.wat").to_str().unwrap()])
                .env("DVM_HOME", home.path())
                .output_async()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(output.stdout, b"hello from dvm\n");
    }
    assert_eq!(objects(home.path()).len(), 1);
}

trait SpawnPiped {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnPiped for std::process::Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("dvm starts")
    }
}

#[test]
fn the_pinned_wasmtime_version_matches_the_lock_file() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime\"\n"))
        .unwrap();
    assert!(
        entry.contains(&format!("version = \"{}\"", dvm::engine::WASMTIME_VERSION)),
        "update WASMTIME_VERSION to the locked wasmtime:\n{entry}"
    );
}
