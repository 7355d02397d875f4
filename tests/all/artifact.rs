//! The artifact store through its library API: round trips, dedup, versions, removal and gc,
//! damage detection, and concurrent puts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use dvm::Error;
use dvm::artifact::{ArtifactLimits, ArtifactStore, GcReport, Overwrite};

use crate::support::{overwrite, show};

/// Writes `contents` at `relative` under `root`, making directories.
fn write(root: &Path, relative: &str, contents: &[u8]) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Every file under `dir` by relative path: contents and executable bit. Panics on a link.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            } else {
                assert!(meta.is_file(), "{} is not a plain file", path.display());
                let relative = path.strip_prefix(dir).unwrap().to_str().unwrap();
                files.insert(
                    relative.replace('\\', "/"),
                    (std::fs::read(&path).unwrap(), is_executable(&meta)),
                );
            }
        }
    }
    files
}

fn blobs(home: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(shards) = std::fs::read_dir(home.join("artifacts/v1/blobs")) else {
        return found;
    };
    for shard in shards {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for blob in std::fs::read_dir(shard).unwrap() {
                found.insert(blob.unwrap().file_name().into_string().unwrap());
            }
        }
    }
    found
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn blob_path(home: &Path, blake3: &str) -> PathBuf {
    home.join("artifacts/v1/blobs")
        .join(&blake3[..2])
        .join(blake3)
}

/// The blob holding the file at `path` in the version `spec` names.
fn blob_of(store: &ArtifactStore, home: &Path, spec: &str, path: &str) -> PathBuf {
    let manifest = store.manifest(spec).unwrap();
    let entry = manifest
        .entries
        .iter()
        .find(|entry| entry.path == path)
        .unwrap_or_else(|| panic!("{spec} has no {path}: {manifest:#?}"));
    blob_path(home, &entry.blake3)
}

/// A home and a work directory for one test.
struct Fixture {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    store: ArtifactStore,
}

fn fixture() -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(home.path());
    Fixture {
        work: tempfile::tempdir().unwrap(),
        home,
        store,
    }
}

impl Fixture {
    fn home(&self) -> &Path {
        self.home.path()
    }

    /// A directory `app` in the work directory holding `files`, replacing what was there.
    fn app(&self, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.work.path().join("app");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (path, contents) in files {
            write(&dir, path, contents);
        }
        dir
    }

    fn out(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

#[test]
fn put_then_get_gives_a_byte_identical_tree() {
    let f = fixture();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let app = f.app(&[
        ("main.py", b"print('hi')\n"),
        ("lib/deep/nested/mod.py", b"X = 1\n"),
        ("empty.txt", b""),
        ("data.bin", &binary),
        ("ünïcödé/日本語.txt", "こんにちは".as_bytes()),
        ("run.sh", b"#!/bin/sh\necho run\n"),
    ]);
    #[cfg(unix)]
    make_executable(&app.join("run.sh"));
    let readme = write(f.work.path(), "README.md", b"# readme\n");

    let version = f.store.put("app", &[app.clone(), readme]).unwrap();
    assert_eq!(version.version, 1);
    assert_eq!(version.files, 7);
    assert_eq!(version.bytes, 12 + 6 + 70_000 + 15 + 19 + 9);

    let out = f.out("out");
    let resolved = f.store.get("app", &out, Overwrite::Refuse).unwrap();
    assert_eq!(resolved.version, version);
    assert_eq!(resolved.to_string(), "app@1");

    // The directory's contents land at the root, as `tar -C app .` would store them.
    let mut expected: BTreeMap<String, (Vec<u8>, bool)> = snapshot(&app);
    expected.insert("README.md".to_string(), (b"# readme\n".to_vec(), false));
    let got = snapshot(&out);
    assert_eq!(got, expected);
    assert_eq!(got["data.bin"].0, binary);
    assert_eq!(got["run.sh"].1, cfg!(unix), "the executable bit");
    assert!(!got["main.py"].1);

    let paths: Vec<String> = f
        .store
        .manifest("app@1")
        .unwrap()
        .entries
        .into_iter()
        .map(|entry| entry.path)
        .collect();
    assert_eq!(
        paths,
        [
            "README.md",
            "data.bin",
            "empty.txt",
            "lib/deep/nested/mod.py",
            "main.py",
            "run.sh",
            "ünïcödé/日本語.txt",
        ]
    );
}

#[test]
fn identical_content_is_stored_once() {
    let f = fixture();
    let app = f.app(&[
        ("a.txt", b"same"),
        ("b/a-copy.txt", b"same"),
        ("c.txt", b"other"),
    ]);
    let first = f.store.put("one", std::slice::from_ref(&app)).unwrap();
    assert_eq!(blobs(f.home()).len(), 2, "two distinct contents");

    let second = f.store.put("two", std::slice::from_ref(&app)).unwrap();
    assert_eq!(second.version, 1);
    assert_eq!(second.root, first.root);
    assert_eq!(blobs(f.home()).len(), 2, "no new blob for a second name");
    assert_eq!(count_files(&f.home().join("artifacts/v1/manifests")), 1);

    let again = f.store.put("one", &[app]).unwrap();
    assert_eq!(again, first, "an identical re-put is the same version");
    assert_eq!(f.store.versions("one").unwrap(), [first]);
}

#[test]
fn a_changed_tree_gets_the_next_version() {
    let f = fixture();
    let v1 = f.store.put("app", &[f.app(&[("a.txt", b"1")])]).unwrap();
    let v2 = f.store.put("app", &[f.app(&[("a.txt", b"2")])]).unwrap();
    let renamed = f.store.put("app", &[f.app(&[("b.txt", b"2")])]).unwrap();
    // Back to the first tree: only the latest version is compared, so this is new too.
    let back = f.store.put("app", &[f.app(&[("a.txt", b"1")])]).unwrap();

    let numbers: Vec<u64> = [&v1, &v2, &renamed, &back]
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(back.root, v1.root);
    assert_ne!(v2.root, v1.root);
    assert_ne!(renamed.root, v2.root);
    assert_eq!(
        f.store.versions("app").unwrap(),
        [v1, v2, renamed, back.clone()]
    );
    assert_eq!(f.store.resolve("app").unwrap().version, back);
}

#[cfg(unix)]
#[test]
fn changing_only_the_executable_bit_is_a_new_version() {
    let f = fixture();
    let app = f.app(&[("run.sh", b"echo")]);
    let plain = f.store.put("app", std::slice::from_ref(&app)).unwrap();
    make_executable(&app.join("run.sh"));
    let executable = f.store.put("app", &[app]).unwrap();
    assert_eq!(executable.version, 2);
    assert_ne!(executable.root, plain.root);
}

#[test]
fn specs_resolve_by_number_and_root_prefix() {
    let f = fixture();
    let v1 = f.store.put("app", &[f.app(&[("a.txt", b"one")])]).unwrap();
    let v2 = f.store.put("app", &[f.app(&[("a.txt", b"two")])]).unwrap();

    assert_eq!(f.store.resolve("app").unwrap().version, v2);
    assert_eq!(f.store.resolve("app@1").unwrap().version, v1);
    assert_eq!(f.store.resolve("app@2").unwrap().version, v2);
    let by_prefix = format!("app@{}", &v1.root[..8]);
    assert_eq!(f.store.resolve(&by_prefix).unwrap().version, v1);
    let uppercase = format!("app@{}", v1.root[..12].to_uppercase());
    assert_eq!(f.store.resolve(&uppercase).unwrap().version, v1);
    let full = format!("app@{}", v2.root);
    assert_eq!(f.store.resolve(&full).unwrap().version, v2);

    let out = f.out("out");
    f.store.get(&by_prefix, &out, Overwrite::Refuse).unwrap();
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"one");

    let error = f.store.resolve("app@3").unwrap_err();
    assert!(
        matches!(error, Error::UnknownArtifactVersion { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("its versions are 1, 2"),
        "{error}"
    );

    let unused = (b'0'..=b'9')
        .chain(b'a'..=b'f')
        .map(char::from)
        .find(|c| !v1.root.starts_with(*c) && !v2.root.starts_with(*c))
        .unwrap();
    let error = f
        .store
        .resolve(&format!("app@{unused}0000000"))
        .unwrap_err();
    assert!(
        matches!(error, Error::UnknownArtifactVersion { .. }),
        "{error:?}"
    );

    let error = f.store.resolve("nope").unwrap_err();
    assert!(matches!(error, Error::UnknownArtifact { .. }), "{error:?}");
    assert!(error.to_string().contains("`nope`"), "{error}");
    assert!(error.is_user_error());

    for bad in ["app@", "app@abc", "app@1.0", "app@-1"] {
        let error = f.store.resolve(bad).unwrap_err();
        assert!(
            matches!(error, Error::InvalidArtifactSpec { .. }),
            "{bad}: {error:?}"
        );
        assert!(error.to_string().contains(bad), "{error}");
    }
}

#[test]
fn rm_removes_one_version_or_every_version() {
    let f = fixture();
    for contents in [b"1", b"2", b"3"] {
        f.store
            .put("app", &[f.app(&[("a.txt", contents)])])
            .unwrap();
    }
    f.store.put("other", &[f.app(&[("a.txt", b"x")])]).unwrap();

    let removed = f.store.rm("app@2").unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].version, 2);
    let left: Vec<u64> = f
        .store
        .versions("app")
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, [1, 3]);
    assert!(matches!(
        f.store.resolve("app@2"),
        Err(Error::UnknownArtifactVersion { .. })
    ));
    let out = f.out("one");
    f.store.get("app@1", &out, Overwrite::Refuse).unwrap();
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"1");

    let removed: Vec<u64> = f
        .store
        .rm("app")
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(removed, [1, 3]);
    assert!(matches!(
        f.store.resolve("app"),
        Err(Error::UnknownArtifact { .. })
    ));
    assert!(matches!(
        f.store.versions("app"),
        Err(Error::UnknownArtifact { .. })
    ));
    let names: Vec<String> = f
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["other"]);
    assert!(matches!(
        f.store.rm("app"),
        Err(Error::UnknownArtifact { .. })
    ));

    // Numbers are never reused, so `app@1` can never mean another tree.
    let next = f.store.put("app", &[f.app(&[("a.txt", b"1")])]).unwrap();
    assert_eq!(next.version, 4);
}

#[test]
fn gc_removes_only_unreferenced_blobs() {
    let f = fixture();
    let keep_v1 = f
        .store
        .put(
            "keep",
            &[f.app(&[("shared.txt", b"shared"), ("old.txt", b"old")])],
        )
        .unwrap();
    f.store
        .put(
            "keep",
            &[f.app(&[("shared.txt", b"shared"), ("new.txt", b"new")])],
        )
        .unwrap();
    f.store
        .put(
            "drop",
            &[f.app(&[("shared.txt", b"shared"), ("gone.txt", b"only here")])],
        )
        .unwrap();
    let gone = blob_path(f.home(), blake3::hash(b"only here").to_hex().as_str());
    assert!(gone.exists());
    assert_eq!(blobs(f.home()).len(), 4);

    assert_eq!(
        f.store.gc().unwrap(),
        GcReport::default(),
        "nothing to collect yet"
    );

    f.store.rm("drop").unwrap();
    let report = f.store.gc().unwrap();
    assert_eq!(
        report,
        GcReport {
            blobs_removed: 1,
            bytes_freed: 9,
            manifests_removed: 1,
        }
    );
    assert!(!gone.exists());
    let expected: BTreeSet<String> = [&b"shared"[..], b"old", b"new"]
        .iter()
        .map(|contents| blake3::hash(contents).to_hex().to_string())
        .collect();
    assert_eq!(
        blobs(f.home()),
        expected,
        "an older version still holds `old`"
    );

    let out = f.out("out");
    f.store.get("keep@1", &out, Overwrite::Refuse).unwrap();
    assert_eq!(
        snapshot(&out),
        BTreeMap::from([
            ("old.txt".to_string(), (b"old".to_vec(), false)),
            ("shared.txt".to_string(), (b"shared".to_vec(), false)),
        ])
    );

    f.store.rm(&format!("keep@{}", &keep_v1.root[..8])).unwrap();
    let report = f.store.gc().unwrap();
    assert_eq!((report.blobs_removed, report.manifests_removed), (1, 1));
    assert_eq!(blobs(f.home()).len(), 2);
}

#[test]
fn a_flipped_byte_in_a_blob_fails_the_get_and_names_it() {
    let f = fixture();
    let app = f.app(&[("a.txt", b"fine"), ("data.bin", &[7u8; 1000])]);
    let version = f.store.put("app", std::slice::from_ref(&app)).unwrap();
    let blob = blob_of(&f.store, f.home(), "app", "data.bin");
    let mut damaged = std::fs::read(&blob).unwrap();
    damaged[500] ^= 1;
    overwrite(&blob, &damaged);

    let out = f.out("out");
    let error = f.store.get("app", &out, Overwrite::Refuse).unwrap_err();
    assert!(matches!(error, Error::ArtifactDamaged { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("app@1"), "{message}");
    assert!(message.contains("data.bin"), "{message}");
    assert!(message.contains(&blob.display().to_string()), "{message}");
    assert!(!error.is_user_error());
    assert_eq!(
        snapshot(&out),
        BTreeMap::new(),
        "nothing of the tree is written"
    );

    // Putting the original files again repairs the blob.
    assert_eq!(f.store.put("app", &[app]).unwrap(), version);
    f.store.get("app", &out, Overwrite::Refuse).unwrap();
    assert_eq!(std::fs::read(out.join("data.bin")).unwrap(), [7u8; 1000]);
}

#[test]
fn a_missing_blob_fails_the_get() {
    let f = fixture();
    f.store
        .put("app", &[f.app(&[("a.txt", b"a"), ("b.txt", b"b")])])
        .unwrap();
    let blob = blob_of(&f.store, f.home(), "app", "b.txt");
    std::fs::remove_file(&blob).unwrap();

    let out = f.out("out");
    let error = f.store.get("app@1", &out, Overwrite::Refuse).unwrap_err();
    assert!(matches!(error, Error::ArtifactDamaged { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("missing"), "{message}");
    assert!(message.contains("b.txt"), "{message}");
    assert!(message.contains(&blob.display().to_string()), "{message}");
    assert_eq!(snapshot(&out), BTreeMap::new());
}

fn manifest_file(f: &Fixture, root: &str) -> PathBuf {
    f.home()
        .join("artifacts/v1/manifests")
        .join(format!("{root}.json"))
}

#[test]
fn a_manifest_with_an_escaping_path_is_refused() {
    let f = fixture();
    let version = f.store.put("app", &[f.app(&[("x", b"escape")])]).unwrap();
    let path = manifest_file(&f, &version.root);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"x\""), "{text}");
    overwrite(&path, text.replace("\"x\"", "\"../x\"").as_bytes());

    let out = f.out("out");
    let error = f.store.get("app", &out, Overwrite::Replace).unwrap_err();
    assert!(matches!(error, Error::ArtifactDamaged { .. }), "{error:?}");
    assert!(error.to_string().contains("`../x`"), "{error}");
    assert!(!f.work.path().join("x").exists());
}

#[test]
fn a_manifest_that_does_not_hash_to_its_name_is_refused() {
    let f = fixture();
    let version = f.store.put("app", &[f.app(&[("x", b"data")])]).unwrap();
    let path = manifest_file(&f, &version.root);
    let text = std::fs::read_to_string(&path).unwrap();
    overwrite(
        &path,
        text.replace("\"executable\":false", "\"executable\":true")
            .as_bytes(),
    );

    let error = f
        .store
        .get("app", &f.out("out"), Overwrite::Refuse)
        .unwrap_err();
    assert!(matches!(error, Error::ArtifactDamaged { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not to the root it is named by"),
        "{error}"
    );
    let error = f.store.manifest("app").unwrap_err();
    assert!(matches!(error, Error::ArtifactDamaged { .. }), "{error:?}");
    // The damage blocks gc rather than letting it guess which blobs are in use.
    let error = f.store.gc().unwrap_err();
    assert!(error.to_string().contains("gc removed nothing"), "{error}");
    assert_eq!(blobs(f.home()).len(), 1);
}

#[test]
fn concurrent_puts_to_one_name_keep_every_version() {
    let f = fixture();
    let inputs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let dir = f.work.path().join(format!("thread-{i}/app"));
            write(&dir, "who.txt", format!("thread {i}").as_bytes());
            dir
        })
        .collect();
    let start = Barrier::new(inputs.len());
    let versions: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|input| {
                let (store, start) = (&f.store, &start);
                scope.spawn(move || {
                    start.wait();
                    store.put("shared", std::slice::from_ref(input)).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let numbers: BTreeSet<u64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=8).collect());
    let mut index = f.store.versions("shared").unwrap();
    index.sort_by_key(|v| v.version);
    let mut returned = versions.clone();
    returned.sort_by_key(|v| v.version);
    assert_eq!(index, returned);
    for (i, version) in versions.iter().enumerate() {
        let out = f.out(&format!("out-{i}"));
        let spec = format!("shared@{}", version.version);
        f.store.get(&spec, &out, Overwrite::Refuse).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("who.txt")).unwrap(),
            format!("thread {i}")
        );
    }
}

#[test]
fn concurrent_identical_puts_give_one_version() {
    let f = fixture();
    let app = f.app(&[("a.txt", b"same for all")]);
    let start = Barrier::new(8);
    let versions: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, start, app) = (&f.store, &start, &app);
                scope.spawn(move || {
                    start.wait();
                    store.put("same", std::slice::from_ref(app)).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:#?}");
    assert_eq!(versions[0].version, 1);
    assert_eq!(f.store.versions("same").unwrap(), [versions[0].clone()]);
    assert_eq!(blobs(f.home()).len(), 1);
}

const CHILD_HOME: &str = "DVM_TEST_ARTIFACT_HOME";
const CHILD_INPUT: &str = "DVM_TEST_ARTIFACT_INPUT";

/// One put, run in a child process by the test below.
#[test]
#[ignore = "a child process of concurrent_puts_from_processes_keep_every_version"]
fn child_put() {
    let (Some(home), Some(input)) = (std::env::var_os(CHILD_HOME), std::env::var_os(CHILD_INPUT))
    else {
        return;
    };
    ArtifactStore::new(Path::new(&home))
        .put("shared", &[PathBuf::from(input)])
        .unwrap();
}

#[test]
fn concurrent_puts_from_processes_keep_every_version() {
    let f = fixture();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let dir = f.work.path().join(format!("process-{i}/app"));
            write(&dir, "who.txt", format!("process {i}").as_bytes());
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "artifact::child_put", "--ignored"])
                .env(CHILD_HOME, f.home())
                .env(CHILD_INPUT, &dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", show(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "the child ran the put: {}",
            show(&output)
        );
    }

    let versions = f.store.versions("shared").unwrap();
    let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let mut contents = BTreeSet::new();
    for version in &versions {
        let out = f.out(&format!("out-{}", version.version));
        let spec = format!("shared@{}", version.version);
        f.store.get(&spec, &out, Overwrite::Refuse).unwrap();
        contents.insert(std::fs::read_to_string(out.join("who.txt")).unwrap());
    }
    let expected: BTreeSet<String> = (0..4).map(|i| format!("process {i}")).collect();
    assert_eq!(contents, expected);
}

#[test]
fn gc_beside_puts_keeps_what_they_reference() {
    let f = fixture();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..3)
            .map(|writer| {
                let f = &f;
                scope.spawn(move || {
                    for round in 0..5 {
                        let dir = f.work.path().join(format!("w{writer}-r{round}/app"));
                        let contents = format!("writer {writer} round {round}");
                        write(&dir, "a.txt", contents.as_bytes());
                        let name = format!("w{writer}");
                        let version = f.store.put(&name, &[dir]).unwrap();
                        // Leave garbage behind for the collector.
                        if version.version > 1 {
                            f.store
                                .rm(&format!("{name}@{}", version.version - 1))
                                .unwrap();
                        }
                        let out = f.out(&format!("out-w{writer}-r{round}"));
                        let spec = format!("{name}@{}", version.version);
                        f.store.get(&spec, &out, Overwrite::Refuse).unwrap();
                        assert_eq!(
                            std::fs::read_to_string(out.join("a.txt")).unwrap(),
                            contents
                        );
                    }
                })
            })
            .collect();
        // Until every writer is done, also when one fails.
        while !writers.iter().all(|writer| writer.is_finished()) {
            f.store.gc().unwrap();
            // Lets waiting puts take the store lock between collections.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    f.store.gc().unwrap();
    let left = blobs(f.home());
    assert_eq!(left.len(), 3, "one live version per writer");
    for writer in 0..3 {
        let out = f.out(&format!("final-{writer}"));
        f.store
            .get(&format!("w{writer}"), &out, Overwrite::Refuse)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("a.txt")).unwrap(),
            format!("writer {writer} round 4")
        );
    }
}

#[test]
fn invalid_names_are_refused() {
    let f = fixture();
    let app = f.app(&[("a.txt", b"a")]);
    let long = "x".repeat(129);
    for name in [
        "", "../x", "a/b", ".hidden", "-x", "x y", "a@1", "名前", &long,
    ] {
        let error = f.store.put(name, std::slice::from_ref(&app)).unwrap_err();
        assert!(
            matches!(error, Error::InvalidArtifactName { .. }),
            "{name:?}: {error:?}"
        );
        assert!(error.is_user_error());
    }
    assert!(
        !f.home().join("artifacts").exists(),
        "nothing was written for a refused name"
    );
    let longest = "x".repeat(128);
    assert_eq!(f.store.put(&longest, &[app]).unwrap().version, 1);
}

#[test]
fn missing_and_empty_inputs_are_refused() {
    let f = fixture();
    let missing = f.work.path().join("nonexistent");
    let error = f
        .store
        .put("app", std::slice::from_ref(&missing))
        .unwrap_err();
    assert!(matches!(error, Error::ArtifactInput { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    // A directory needs no name of its own: its contents are the tree, so `DIR/.` is `DIR`.
    let app = f.app(&[("a.txt", b"a")]);
    let named = f.store.put("app", std::slice::from_ref(&app)).unwrap();
    assert_eq!(f.store.put("app", &[app.join(".")]).unwrap(), named);

    let error = f.store.put("app", &[]).unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");

    std::fs::create_dir_all(f.work.path().join("empty/sub")).unwrap();
    let error = f
        .store
        .put("app", &[f.work.path().join("empty")])
        .unwrap_err();
    assert!(error.to_string().contains("no files"), "{error}");
}

#[test]
fn two_inputs_with_the_same_name_are_refused() {
    let f = fixture();
    let one = write(f.work.path(), "one/x.txt", b"1");
    let two = write(f.work.path(), "two/x.txt", b"2");
    let error = f.store.put("app", &[one.clone(), two.clone()]).unwrap_err();
    assert!(matches!(error, Error::ArtifactInput { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`x.txt`"), "{message}");
    assert!(message.contains(&one.display().to_string()), "{message}");
    assert!(message.contains(&two.display().to_string()), "{message}");
}

#[cfg(unix)]
#[test]
fn symlink_inputs_are_refused() {
    let f = fixture();
    let target = write(f.work.path(), "target.txt", b"t");
    let link = f.work.path().join("link.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let error = f.store.put("app", std::slice::from_ref(&link)).unwrap_err();
    assert!(matches!(error, Error::ArtifactInput { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&link.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("symbolic link"), "{error}");

    let real_dir = write(f.work.path(), "real-dir/file.txt", b"f")
        .parent()
        .unwrap()
        .to_path_buf();
    let dir_link = f.work.path().join("dir-link");
    std::os::unix::fs::symlink(&real_dir, &dir_link).unwrap();
    let with_slash = PathBuf::from(format!("{}/", dir_link.display()));
    let error = f.store.put("app", &[with_slash]).unwrap_err();
    assert!(error.to_string().contains("symbolic link"), "{error}");

    let app = f.app(&[("a.txt", b"a")]);
    let nested = app.join("sub/inner-link");
    std::fs::create_dir_all(nested.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &nested).unwrap();
    let error = f.store.put("app", &[app]).unwrap_err();
    assert!(
        error.to_string().contains(&nested.display().to_string()),
        "{error}"
    );
    assert!(f.store.list().unwrap().is_empty());
}

#[cfg(unix)]
#[test]
fn special_files_are_refused() {
    let f = fixture();
    let app = f.app(&[("a.txt", b"a")]);
    let socket = app.join("control.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let error = f.store.put("app", &[app]).unwrap_err();
    assert!(matches!(error, Error::ArtifactInput { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&socket.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

#[test]
fn trees_over_the_caps_are_refused() {
    let f = fixture();
    let app = f.app(&[("a.txt", b"12345"), ("b.txt", b"67890")]);
    let capped = |max_files, max_bytes| {
        ArtifactStore::new(f.home()).with_limits(ArtifactLimits {
            max_files,
            max_bytes,
        })
    };

    assert!(capped(2, 10).put("app", std::slice::from_ref(&app)).is_ok());
    let error = capped(1, 10)
        .put("app", std::slice::from_ref(&app))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::ArtifactTooLarge {
                unit: "files",
                limit: 1
            }
        ),
        "{error:?}"
    );
    let error = capped(2, 9).put("app", &[app]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::ArtifactTooLarge {
                unit: "bytes",
                limit: 9
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("more than 9 bytes"), "{error}");
}

#[test]
fn get_refuses_to_overwrite_unless_asked() {
    let f = fixture();
    f.store
        .put("app", &[f.app(&[("a.txt", b"new a"), ("b.txt", b"new b")])])
        .unwrap();
    let out = f.out("out");
    write(&out, "b.txt", b"mine");
    write(&out, "unrelated.txt", b"keep me");

    let error = f.store.get("app", &out, Overwrite::Refuse).unwrap_err();
    assert!(matches!(error, Error::ArtifactTarget { .. }), "{error:?}");
    assert!(error.to_string().contains("b.txt"), "{error}");
    assert!(
        !out.join("a.txt").exists(),
        "refused before writing anything"
    );
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"mine");

    f.store.get("app", &out, Overwrite::Replace).unwrap();
    assert_eq!(
        snapshot(&out),
        BTreeMap::from([
            ("a.txt".to_string(), (b"new a".to_vec(), false)),
            ("b.txt".to_string(), (b"new b".to_vec(), false)),
            ("unrelated.txt".to_string(), (b"keep me".to_vec(), false)),
        ])
    );
}

#[cfg(unix)]
#[test]
fn get_never_writes_through_a_directory_link() {
    let f = fixture();
    f.store
        .put("app", &[f.app(&[("app/a.txt", b"a")])])
        .unwrap();
    let elsewhere = f.work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = f.out("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("app")).unwrap();

    let error = f.store.get("app", &out, Overwrite::Replace).unwrap_err();
    assert!(matches!(error, Error::ArtifactTarget { .. }), "{error:?}");
    assert!(error.to_string().contains("in the way"), "{error}");
    assert_eq!(count_files(&elsewhere), 0);
}

#[test]
fn list_summarizes_each_name() {
    let f = fixture();
    assert!(f.store.list().unwrap().is_empty());
    f.store.put("b", &[f.app(&[("a.txt", b"1")])]).unwrap();
    let b2 = f.store.put("b", &[f.app(&[("a.txt", b"22")])]).unwrap();
    let a1 = f.store.put("a", &[f.app(&[("a.txt", b"333")])]).unwrap();

    let list = f.store.list().unwrap();
    let rows: Vec<(&str, u64, u64, &str, u64)> = list
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.latest_version,
                s.version_count,
                s.latest_root.as_str(),
                s.bytes,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a", 1, 1, a1.root.as_str(), 3),
            ("b", 2, 2, b2.root.as_str(), 2)
        ]
    );
    let json = serde_json::to_value(&list[1]).unwrap();
    assert_eq!(json["latest_version"], 2);
}

/// `dvm artifact …` and `dvm run artifact:…`, as a black box. Names are unique per test (the
/// shared test home keeps its artifacts between test runs).
mod cli {
    use super::write;
    use crate::cli::{dvm, json};
    use crate::support::{shared_home, show};

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    #[test]
    fn put_list_versions_get_rm_gc() {
        let name = unique("cli");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("app");
        write(&tree, "main.py", name.as_bytes());
        write(&tree, "lib/util.py", b"X = 1\n");
        let tree_arg = tree.to_str().unwrap();

        let first = dvm(&["artifact", "put", &name, tree_arg, "--json"]);
        assert_eq!(json(&first)["version"], 1, "{}", show(&first));
        let same = dvm(&["artifact", "put", &name, tree_arg, "--json"]);
        assert_eq!(
            json(&same)["version"],
            1,
            "unchanged tree keeps its version"
        );
        write(&tree, "lib/util.py", b"X = 2\n");
        let second = dvm(&["artifact", "put", &name, tree_arg]);
        assert_eq!(second.status.code(), Some(0), "{}", show(&second));
        assert!(String::from_utf8_lossy(&second.stdout).starts_with(&format!("{name}@2 ")));

        let list = json(&dvm(&["artifact", "list", "--json"]));
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name.as_str())
            .expect("listed");
        assert_eq!(entry["latest_version"], 2);
        let versions = json(&dvm(&["artifact", "versions", &name, "--json"]));
        assert_eq!(versions.as_array().unwrap().len(), 2);
        let root_1 = versions[0]["root"].as_str().unwrap().to_string();

        let out = dir.path().join("out");
        let spec = format!("{name}@{}", &root_1[..10]);
        let got = dvm(&["artifact", "get", &spec, out.to_str().unwrap()]);
        assert_eq!(got.status.code(), Some(0), "{}", show(&got));
        assert_eq!(std::fs::read(out.join("lib/util.py")).unwrap(), b"X = 1\n");
        let again = dvm(&["artifact", "get", &spec, out.to_str().unwrap()]);
        assert_eq!(
            again.status.code(),
            Some(2),
            "refuses to overwrite: {}",
            show(&again)
        );
        let forced = dvm(&[
            "artifact",
            "get",
            &format!("{name}@2"),
            out.to_str().unwrap(),
            "--force",
        ]);
        assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
        assert_eq!(std::fs::read(out.join("lib/util.py")).unwrap(), b"X = 2\n");

        let removed = json(&dvm(&["artifact", "rm", &format!("{name}@1"), "--json"]));
        assert_eq!(removed[0]["version"], 1);
        let gc = dvm(&["artifact", "gc", "--json"]);
        assert!(
            json(&gc)["manifests_removed"].as_u64().unwrap() >= 1,
            "{}",
            show(&gc)
        );
        let gone = dvm(&[
            "artifact",
            "get",
            &format!("{name}@1"),
            dir.path().join("x").to_str().unwrap(),
        ]);
        assert_eq!(gone.status.code(), Some(2), "{}", show(&gone));
        assert!(
            String::from_utf8_lossy(&gone.stderr).contains("version"),
            "{}",
            show(&gone)
        );
        let all = dvm(&["artifact", "rm", &name]);
        assert_eq!(all.status.code(), Some(0), "{}", show(&all));
        let none = dvm(&["artifact", "versions", &name]);
        assert_eq!(none.status.code(), Some(2), "{}", show(&none));
    }

    #[test]
    fn a_stored_version_runs_with_its_entry() {
        let name = unique("run");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("src");
        write(
            &tree,
            "main.py",
            b"import sys, helper\nprint(helper.VALUE, sys.argv[1:])\nopen('out.txt', 'w').write('made')",
        );
        write(&tree, "helper.py", b"VALUE = 'one'\n");
        assert_eq!(
            dvm(&["artifact", "put", &name, tree.to_str().unwrap()])
                .status
                .code(),
            Some(0)
        );
        write(&tree, "helper.py", b"VALUE = 'two'\n");
        assert_eq!(
            dvm(&["artifact", "put", &name, tree.to_str().unwrap()])
                .status
                .code(),
            Some(0)
        );

        let v1 = dvm(&[
            "run",
            &format!("artifact:{name}@1"),
            "--entry",
            "main.py",
            "--",
            "a",
        ]);
        assert_eq!(v1.status.code(), Some(0), "{}", show(&v1));
        assert_eq!(String::from_utf8_lossy(&v1.stdout), "one ['a']\n");
        let latest = dvm(&[
            "run",
            "--json",
            &format!("artifact:{name}"),
            "--entry",
            "main.py",
        ]);
        let value = json(&latest);
        assert_eq!(value["stdout"], "two []\n", "{}", show(&latest));
        // Only what the run made is reported, not the artifact's own files.
        assert_eq!(value["files"].as_array().unwrap().len(), 1);
        assert_eq!(value["files"][0]["path"], "out.txt");

        for (args, says) in [
            (
                vec!["run".to_string(), format!("artifact:{name}")],
                "needs --entry",
            ),
            (
                vec![
                    "run".into(),
                    "--runtime".into(),
                    "python".into(),
                    "--code".into(),
                    "1".into(),
                    "--entry".into(),
                    "x.py".into(),
                ],
                "--entry applies to artifact:",
            ),
            (
                vec![
                    "run".into(),
                    format!("artifact:{name}@9"),
                    "--entry".into(),
                    "main.py".into(),
                ],
                "version",
            ),
            (
                vec![
                    "run".into(),
                    format!("artifact:{name}"),
                    "--entry".into(),
                    "src/missing.py".into(),
                ],
                "holds no `src/missing.py`; give --entry one of the paths it holds: \
                 helper.py, main.py",
            ),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = dvm(&args);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {}", show(&output));
            assert!(
                String::from_utf8_lossy(&output.stderr).contains(says),
                "{args:?}: {}",
                show(&output)
            );
        }
        let missing = dvm(&["run", &format!("artifact:{name}@1"), "--entry", "nope.py"]);
        assert!(
            String::from_utf8_lossy(&missing.stderr)
                .contains(&format!("artifact {name}@1 holds no `nope.py`")),
            "the error names the version: {}",
            show(&missing)
        );
        assert_eq!(dvm(&["artifact", "rm", &name]).status.code(), Some(0));
    }

    #[test]
    fn a_damaged_blob_is_reported_not_returned() {
        let name = unique("damage");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        let contents = format!("unique contents for {name}\n");
        write(&tree, "data.txt", contents.as_bytes());
        assert_eq!(
            dvm(&["artifact", "put", &name, tree.to_str().unwrap()])
                .status
                .code(),
            Some(0)
        );
        let hex = blake3::hash(contents.as_bytes()).to_hex();
        let blob = shared_home()
            .join("artifacts/v1/blobs")
            .join(&hex[..2])
            .join(hex.as_str());
        crate::support::overwrite(&blob, b"tampered");
        let out = dir.path().join("out");
        let got = dvm(&["artifact", "get", &name, out.to_str().unwrap(), "--json"]);
        assert_eq!(got.status.code(), Some(3), "{}", show(&got));
        assert_eq!(json(&got)["error"]["kind"], "artifact_damaged");
        assert!(!out.join("t/data.txt").exists());
        let ran = dvm(&[
            "run",
            &format!("artifact:{name}"),
            "--entry",
            "t/data.txt",
            "--runtime",
            "python",
        ]);
        assert_eq!(ran.status.code(), Some(3), "{}", show(&ran));
        assert_eq!(dvm(&["artifact", "rm", &name]).status.code(), Some(0));
    }
}

#[test]
fn directories_contents_land_at_the_root_and_overlaps_are_refused() {
    let f = fixture();
    let one = f.work.path().join("one");
    let two = f.work.path().join("two");
    write(&one, "main.py", b"main");
    write(&one, "pkg/a.py", b"a");
    write(&two, "pkg/b.py", b"b");
    let notes = write(f.work.path(), "notes.txt", b"n");
    f.store
        .put("merged", &[one.clone(), two.clone(), notes])
        .unwrap();
    let paths: Vec<String> = f
        .store
        .manifest("merged")
        .unwrap()
        .entries
        .into_iter()
        .map(|entry| entry.path)
        .collect();
    assert_eq!(paths, ["main.py", "notes.txt", "pkg/a.py", "pkg/b.py"]);

    // Two files at one path.
    let clash = write(f.work.path(), "three/main.py", b"other");
    let error = f
        .store
        .put("app", &[one.clone(), clash.parent().unwrap().to_path_buf()])
        .unwrap_err();
    assert!(matches!(error, Error::ArtifactInput { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`main.py`"), "{message}");
    assert!(message.contains(&clash.display().to_string()), "{message}");
    assert!(
        message.contains(&one.join("main.py").display().to_string()),
        "{message}"
    );

    // A file where another input has a directory.
    let file_pkg = write(&f.work.path().join("four"), "pkg", b"a file");
    let error = f
        .store
        .put("app", &[one, file_pkg.parent().unwrap().to_path_buf()])
        .unwrap_err();
    assert!(matches!(error, Error::ArtifactInput { .. }), "{error:?}");
    assert!(error.to_string().contains("`pkg/a.py`"), "{error}");
    assert!(f.store.versions("app").unwrap_or_default().is_empty());
}

#[test]
fn a_missing_entry_names_the_version_and_lists_what_it_holds() {
    let f = fixture();
    let files: Vec<(String, Vec<u8>)> = (0..25)
        .map(|i| (format!("f{i:02}.py"), vec![b'x'; i]))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, contents)| (path.as_str(), contents.as_slice()))
        .collect();
    f.store.put("many", &[f.app(&borrowed)]).unwrap();
    let resolved = f.store.resolve("many").unwrap();
    assert!(
        f.store
            .missing_entry(&resolved, "f03.py")
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .missing_entry(&resolved, "./f03.py")
            .unwrap()
            .is_none()
    );
    let error = f
        .store
        .missing_entry(&resolved, "main.py")
        .unwrap()
        .unwrap();
    assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("artifact many@1 holds no `main.py`"),
        "{message}"
    );
    assert!(message.contains("f00.py, f01.py"), "{message}");
    assert!(message.contains("f19.py"), "{message}");
    assert!(!message.contains("f20.py"), "{message}");
    assert!(message.contains("and 5 more"), "{message}");
}
