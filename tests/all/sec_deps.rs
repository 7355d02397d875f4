//! Issue 15, classes 1, 3 and 5: package installs never run code on the host, never reach
//! host paths or URLs, and locks and the package store never turn strings into paths. Each
//! attack is observed on the host: honeypot markers, file modes, link counts, a listener
//! that must never be contacted.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dvm::PackageRequest;
use dvm::deps::npm::{NpmStore, parse_package_json};
use dvm::deps::{Lock, LockedPackage, PackageStore, Sha256};

use crate::cli::{dvm, json};
use crate::support::*;

/// A Python project whose build would write `marker`: what pip would run for `name @ file:`.
fn honeypot_project(dir: &Path, marker: &Path) -> PathBuf {
    let project = dir.join("evil-project");
    std::fs::create_dir_all(&project).unwrap();
    let code = format!(
        "import pathlib\npathlib.Path({:?}).write_text('the build ran on the host')\n",
        marker.display().to_string()
    );
    std::fs::write(
        project.join("setup.py"),
        format!("{code}from setuptools import setup\nsetup(name='evil', version='1.0')\n"),
    )
    .unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    )
    .unwrap();
    std::fs::write(
        project.join("backend.py"),
        format!("{code}def get_requires_for_build_wheel(c=None): return []\n"),
    )
    .unwrap();
    project
}

/// A local listener that records whether anything connected to it.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Listener(listener)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.0.local_addr().unwrap())
    }

    fn contacted(&self) -> bool {
        self.0.accept().is_ok()
    }
}

fn kind_of(output: &std::process::Output) -> String {
    json(output)["error"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_pep_723_file_requirement_never_builds_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("MARKER");
    let project = honeypot_project(dir.path(), &marker);
    let listener = Listener::new();
    let script = dir.path().join("main.py");
    for requirement in [
        format!("evil @ file://{}", project.display()),
        format!("evil@file://{}", project.display()),
        format!("evil @ {}", listener.url("evil-1.0.tar.gz")),
        format!("evil @ git+file://{}", project.display()),
        project.display().to_string(),
    ] {
        std::fs::write(
            &script,
            format!("# /// script\n# dependencies = [{requirement:?}]\n# ///\nprint('ran')\n"),
        )
        .unwrap();
        let output = dvm(&[
            "run",
            "--json",
            "--runtime",
            "python-lite",
            script.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(2), "{}", show(&output));
        assert_eq!(
            kind_of(&output),
            "unsupported_requirement",
            "{}",
            show(&output)
        );
        let message = json(&output)["error"]["message"].to_string();
        assert!(message.contains("--find-links"), "{message}");
        assert!(!marker.exists(), "{requirement}: the build ran on the host");
    }
    assert!(!listener.contacted(), "a URL requirement was fetched");
}

#[test]
fn every_python_surface_refuses_urls_and_paths_before_pip() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("MARKER");
    let project = honeypot_project(dir.path(), &marker);
    let listener = Listener::new();
    let home = dir.path().join("home");
    let store = PackageStore::new(&home);
    for requirement in [
        format!("evil @ file://{}", project.display()),
        "x @ file:///etc/shadow".to_string(),
        format!("evil @ {}", listener.url("x.whl")),
        format!("-e {}", project.display()),
        format!("--index-url={}", listener.url("simple")),
        "./evil-project".to_string(),
        "evil.tar.gz".to_string(),
    ] {
        let request = PackageRequest {
            requirements: vec![requirement.clone()],
            ..PackageRequest::default()
        };
        let error = store
            .install("python-lite", "3.12.0", &BTreeMap::new(), &request)
            .expect_err(&requirement);
        assert_eq!(
            error.kind(),
            "unsupported_requirement",
            "{requirement}: {error}"
        );
        assert!(!marker.exists());
    }
    assert!(!listener.contacted());
    // `--with` on the CLI is the same door.
    let script = dir.path().join("main.py");
    std::fs::write(&script, "print('ran')\n").unwrap();
    let with = format!("evil @ file://{}", project.display());
    let output = dvm(&[
        "run",
        "--json",
        "--runtime",
        "python-lite",
        "--with",
        &with,
        script.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert_eq!(kind_of(&output), "unsupported_requirement");
    assert!(!marker.exists());
}

#[test]
fn an_uploaded_requirements_file_stays_inside_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("MARKER");
    let project = honeypot_project(dir.path(), &marker);
    let upload = dir.path().join("upload");
    std::fs::create_dir(&upload).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "evil\n").unwrap();
    let script = upload.join("main.py");
    std::fs::write(&script, "print('ran')\n").unwrap();
    let requirements = upload.join("requirements.txt");
    for text in [
        "-r ../outside.txt\n".to_string(),
        format!("-r {}\n", dir.path().join("outside.txt").display()),
        "-c ../outside.txt\n".to_string(),
        "--extra-index-url http://127.0.0.1:9/simple\nsix\n".to_string(),
        "--trusted-host 127.0.0.1\n".to_string(),
        "-f /tmp\n".to_string(),
        format!("-e {}\n", project.display()),
        format!("evil @ file://{}\n", project.display()),
    ] {
        std::fs::write(&requirements, &text).unwrap();
        let output = dvm(&[
            "run",
            "--json",
            "--runtime",
            "python-lite",
            "--file",
            requirements.to_str().unwrap(),
            script.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(2), "{text}: {}", show(&output));
        assert_eq!(kind_of(&output), "unsupported_requirement", "{text}");
        assert!(
            json(&output)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("requirements.txt"),
            "{}",
            show(&output)
        );
        assert!(!marker.exists());
    }
    // `dvm deps install -r FILE` reads includes only beside FILE, never through a symlink out.
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), upload.join("linked.txt")).unwrap();
    std::fs::write(&requirements, "-r linked.txt\n").unwrap();
    let output = dvm(&[
        "deps",
        "install",
        "--json",
        "--runtime",
        "python-lite",
        "-r",
        requirements.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert_eq!(
        kind_of(&output),
        "unsupported_requirement",
        "{}",
        show(&output)
    );
}

#[test]
fn a_review_project_include_leaving_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "six\n").unwrap();
    std::fs::write(project.join("requirements.txt"), "-r ../outside.txt\n").unwrap();
    std::fs::write(project.join("test_x.py"), "def test_x(): pass\n").unwrap();
    let output = dvm(&[
        "review",
        project.to_str().unwrap(),
        "--runtime",
        "python-lite",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert_eq!(
        kind_of(&output),
        "unsupported_requirement",
        "{}",
        show(&output)
    );
}

#[test]
fn npm_specs_that_reach_host_paths_or_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let honeypot = dir.path().join("honeypot");
    std::fs::create_dir(&honeypot).unwrap();
    std::fs::write(
        honeypot.join("package.json"),
        r#"{"name": "pkg", "version": "1.0.0", "scripts": {"prepack": "touch MARKER"}}"#,
    )
    .unwrap();
    let listener = Listener::new();
    let home = dir.path().join("home");
    let store = NpmStore::new(&home);
    for spec in [
        format!("pkg@file:{}", honeypot.display()),
        format!("pkg@file:../../{}", honeypot.display()),
        format!("pkg@link:{}", honeypot.display()),
        format!("pkg@{}", listener.url("pkg.tgz")),
        format!("pkg@git+{}", listener.url("pkg.git")),
        "pkg@github:user/repo".to_string(),
        "user/repo".to_string(),
        "pkg@npm:other@1".to_string(),
        "pkg@workspace:*".to_string(),
        honeypot.display().to_string(),
        "./honeypot".to_string(),
        "pkg@honeypot.tgz".to_string(),
        "../../x".to_string(),
    ] {
        let request = PackageRequest {
            requirements: vec![spec.clone()],
            ..PackageRequest::default()
        };
        let error = store.install("javascript", &request).expect_err(&spec);
        assert_eq!(error.kind(), "unsupported_requirement", "{spec}: {error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("`{spec}` is refused")),
            "{message}"
        );
    }
    assert!(!listener.contacted(), "an npm URL spec was fetched");
    assert!(!honeypot.join("MARKER").exists());
    assert!(
        !home.join("packages/v1/npm/trees").exists(),
        "nothing was stored"
    );
    let manifest = format!(
        r#"{{"dependencies": {{"pkg": "file:{}"}}}}"#,
        honeypot.display()
    );
    assert_eq!(
        parse_package_json(&manifest).unwrap_err().kind(),
        "unsupported_requirement"
    );
}

/// A honeypot directory with one read-only file, and its state to compare after.
fn honeypot_dir(dir: &Path) -> (PathBuf, PathBuf) {
    let honeypot = dir.join("honeypot");
    std::fs::create_dir_all(&honeypot).unwrap();
    let secret = honeypot.join("secret.txt");
    std::fs::write(&secret, "host secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o444)).unwrap();
    (honeypot, secret)
}

fn assert_untouched(secret: &Path) {
    let meta = std::fs::symlink_metadata(secret).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o444,
        "the mode changed"
    );
    assert_eq!(meta.nlink(), 1, "the honeypot was linked into the store");
    assert_eq!(std::fs::read_to_string(secret).unwrap(), "host secret\n");
}

#[test]
fn a_python_lock_with_a_traversal_sha_is_refused_and_mounts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (honeypot, secret) = honeypot_dir(dir.path());
    let lock = dir.path().join("lock.json");
    let traversal = format!("../../../../../../../../../..{}", honeypot.display());
    std::fs::write(
        &lock,
        serde_json::json!({
            "schema": 1, "runtime": "python-lite", "python": "3.12",
            "packages": [{"name": "evil", "version": "1.0",
                          "file": "evil-1.0-py3-none-any.whl", "sha256": traversal}],
        })
        .to_string(),
    )
    .unwrap();
    let error = Lock::read(&lock).unwrap_err();
    assert_eq!(error.kind(), "invalid_input");
    assert!(error.to_string().contains("sha256"), "{error}");
    let script = dir.path().join("main.py");
    std::fs::write(
        &script,
        "import os\nprint(os.listdir('/packages/python'))\n",
    )
    .unwrap();
    let output = dvm(&[
        "run",
        "--json",
        "--runtime",
        "python-lite",
        "--lock",
        lock.to_str().unwrap(),
        "--locked",
        script.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("secret.txt"));
    assert_untouched(&secret);
    // A wheel file name that climbs, or one that is not the locked package's, is refused too.
    for (name, file) in [
        ("evil", "../../evil-1.0-py3-none-any.whl"),
        ("evil", "other-1.0-py3-none-any.whl"),
        ("../evil", "evil-1.0-py3-none-any.whl"),
    ] {
        std::fs::write(
            &lock,
            serde_json::json!({
                "schema": 1, "runtime": "python-lite", "python": "3.12",
                "packages": [{"name": name, "version": "1.0", "file": file,
                              "sha256": "0".repeat(64)}],
            })
            .to_string(),
        )
        .unwrap();
        assert!(Lock::read(&lock).is_err(), "{name} {file}");
    }
}

#[test]
fn an_npm_lock_entry_named_with_dots_links_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // A package already in the store, so that a lock naming it would be laid out at once.
    let sha = "ab".repeat(32);
    let tree = home.join("packages/v1/npm/trees").join(&sha);
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("index.js"), "export default 1;\n").unwrap();
    // node_modules sits at home/packages/v1/npm/tmp/<t>/node_modules: seven levels up is `dir`.
    for name in [
        "../../../../../../../escaped",
        "../escaped",
        "@s/../../escaped",
        "/escaped",
    ] {
        let lock = Lock {
            schema: 1,
            runtime: "javascript".into(),
            python: String::new(),
            packages: vec![LockedPackage {
                name: name.into(),
                version: "1.0.0".into(),
                file: "x-1.0.0.tgz".into(),
                sha256: Sha256::parse(&sha).unwrap(),
            }],
        };
        let request = PackageRequest {
            locked: Some(lock),
            ..PackageRequest::default()
        };
        let error = NpmStore::new(&home)
            .install("javascript", &request)
            .expect_err(name);
        assert_eq!(error.kind(), "invalid_input", "{name}: {error}");
        assert!(
            !dir.path().join("escaped").exists(),
            "{name} escaped the store"
        );
        assert!(!Path::new("/escaped").exists());
    }
    assert_eq!(
        std::fs::metadata(tree.join("index.js")).unwrap().nlink(),
        1,
        "nothing was linked"
    );
    // The same entry read from a file is refused at the parse.
    let text = serde_json::json!({
        "schema": 1, "runtime": "javascript",
        "packages": [{"name": "../../x", "version": "1.0.0", "file": "x-1.0.0.tgz",
                      "sha256": sha}],
    })
    .to_string();
    assert!(serde_json::from_str::<Lock>(&text).is_err());
}

#[test]
fn gc_never_changes_the_mode_of_a_file_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let (honeypot, secret) = honeypot_dir(dir.path());
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "other\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o400)).unwrap();
    let home = dir.path().join("home");
    for language in ["python", "npm"] {
        let store = home.join("packages/v1").join(language);
        let real_tree = store.join("trees").join("cd".repeat(32));
        std::fs::create_dir_all(&real_tree).unwrap();
        std::fs::write(real_tree.join("own.py"), "x").unwrap();
        // Links planted where the store keeps trees and sets.
        std::os::unix::fs::symlink(&honeypot, store.join("trees").join("ef".repeat(32))).unwrap();
        std::os::unix::fs::symlink(&honeypot, store.join("trees/not-a-digest")).unwrap();
        let set = store.join("sets").join("01".repeat(32));
        std::fs::create_dir_all(&set).unwrap();
        std::fs::hard_link(&other, set.join("linked.txt")).unwrap();
        std::os::unix::fs::symlink(&honeypot, store.join("sets/evil")).unwrap();
    }
    assert_eq!(std::fs::metadata(&other).unwrap().nlink(), 3);
    for all in [false, true] {
        PackageStore::new(&home).gc(all).unwrap();
        PackageStore::npm(&home).gc(all).unwrap();
    }
    assert_eq!(mode(&secret), 0o444);
    assert_eq!(
        mode(&other),
        0o400,
        "a hard-linked host file gained write bits"
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "other\n");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
    assert!(honeypot.is_dir());
    // The store's own tree is gone, and its sets with it.
    assert!(
        !home
            .join("packages/v1/python/trees")
            .join("cd".repeat(32))
            .exists()
    );
    assert_eq!(std::fs::metadata(&other).unwrap().nlink(), 1);
    // Through the CLI as well, on a home of its own.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dvm"))
        .args(["deps", "gc", "--all", "--json"])
        .env("DVM_HOME", &home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(mode(&secret), 0o444);
}

#[test]
fn api_requirements_are_refused_before_pip() {
    use tower::ServiceExt as _;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("MARKER");
    let project = honeypot_project(dir.path(), &marker);
    let listener = Listener::new();
    let state = dvm::server::AppState::new(dvm::server::ServerConfig::default(), shared().clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (path, body) in [
        (
            "/execute",
            serde_json::json!({"code": "print(1)", "runtime": "python-lite",
                               "requirements": [format!("evil @ file://{}", project.display())]}),
        ),
        (
            "/sandboxes",
            serde_json::json!({"runtime": "python-lite",
                               "requirements": [format!("evil @ {}", listener.url("x.whl"))]}),
        ),
        (
            "/execute",
            serde_json::json!({"code": "1", "runtime": "javascript",
                               "requirements": [format!("pkg@file:{}", project.display())]}),
        ),
    ] {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let (status, value) = runtime.block_on(async {
            let response = dvm::server::router(state.clone())
                .oneshot(request)
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (status, value)
        });
        assert_eq!(status.as_u16(), 422, "{path} {body}: {value}");
        assert_eq!(value["error"]["kind"], "unsupported_requirement", "{value}");
        assert!(!marker.exists());
    }
    assert!(!listener.contacted());
}
