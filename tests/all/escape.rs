//! The sandbox filesystem holds: every way out of the mounts and every way to modify a
//! read-only grant fails inside the guest with an ordinary errno, and honeypot files beside
//! and above every mount are unchanged afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dvm::{Grant, RunInput, Status, Workspace};

use crate::support::*;

/// Host directories around a sandbox: a read-only grant at `/data`, a writable one at
/// `/out`, host-planted symlinks inside both, and honeypots beside and above each mount and
/// the workspace.
struct Rig {
    _root: tempfile::TempDir,
    workspace: Workspace,
    grants: Vec<Grant>,
    /// Every honeypot and what it held.
    honey: BTreeMap<PathBuf, Vec<u8>>,
    /// Directories whose listings must not change.
    watched: BTreeMap<PathBuf, Vec<String>>,
    _above_workspace: tempfile::NamedTempFile,
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Rig {
    fn new() -> Rig {
        let root = tempfile::tempdir().unwrap();
        let top = root.path().join("honey-top.txt");
        let mounts = root.path().join("mounts");
        let beside = mounts.join("honey-beside.txt");
        let ro = mounts.join("ro");
        let rw = mounts.join("rw");
        for dir in [&ro, &rw] {
            std::fs::create_dir_all(dir.join("sub")).unwrap();
        }
        std::fs::write(&top, "top secret").unwrap();
        std::fs::write(&beside, "beside secret").unwrap();
        std::fs::write(ro.join("inside.txt"), "read-only data").unwrap();
        std::fs::write(ro.join("sub/deep.txt"), "deep data").unwrap();
        std::fs::write(rw.join("existing.txt"), "writable data").unwrap();
        for dir in [&ro, &rw] {
            std::os::unix::fs::symlink(&top, dir.join("planted-abs")).unwrap();
            std::os::unix::fs::symlink("../honey-beside.txt", dir.join("planted-rel")).unwrap();
            std::os::unix::fs::symlink("..", dir.join("planted-dir")).unwrap();
        }

        let workspace = Workspace::new().unwrap();
        workspace.write("mine.txt", b"workspace data").unwrap();
        let run_dir = workspace.path().parent().unwrap().to_path_buf();
        let ws_beside = run_dir.join("honey-ws.txt");
        std::fs::write(&ws_beside, "beside the workspace").unwrap();
        let above_workspace = tempfile::Builder::new()
            .prefix("dvm-honey-")
            .tempfile_in(run_dir.parent().unwrap())
            .unwrap();
        std::fs::write(above_workspace.path(), "above the workspace").unwrap();

        let mut honey = BTreeMap::new();
        for path in [
            top,
            beside,
            ro.join("inside.txt"),
            ro.join("sub/deep.txt"),
            ws_beside,
            above_workspace.path().to_path_buf(),
        ] {
            honey.insert(path.clone(), std::fs::read(&path).unwrap());
        }
        let mut watched = BTreeMap::new();
        for dir in [
            root.path().to_path_buf(),
            mounts,
            ro.clone(),
            ro.join("sub"),
            run_dir,
        ] {
            watched.insert(dir.clone(), listing(&dir));
        }
        Rig {
            grants: vec![
                Grant {
                    host: ro,
                    guest: "/data".into(),
                    writable: false,
                },
                Grant {
                    host: rw,
                    guest: "/out".into(),
                    writable: true,
                },
            ],
            _root: root,
            workspace,
            honey,
            watched,
            _above_workspace: above_workspace,
        }
    }

    /// Runs `attempts` (one Python expression or statement per entry, each expected to
    /// fail) and checks each failed with an OSError, then that nothing outside changed.
    #[track_caller]
    fn expect_all_denied(&self, attempts: &[&str]) {
        let mut source = String::from("import os\nresults = []\n");
        for attempt in attempts {
            source.push_str(&format!(
                "try:\n    {attempt}\n    results.append('ALLOWED: ' + {attempt:?})\n\
                 except OSError as e:\n    results.append(f'denied {{e.errno}}')\n"
            ));
        }
        source.push_str("print('\\n'.join(results))\n");
        let input = RunInput {
            workspace: Some(self.workspace.clone()),
            grants: self.grants.clone(),
            ..RunInput::default()
        };
        let outcome = script("python", "attempt.py", &source, &input);
        expect_status(&outcome, Status::Ok);
        let out = stdout(&outcome);
        assert_eq!(
            out.lines().count(),
            attempts.len(),
            "{}",
            describe(&outcome)
        );
        for (line, attempt) in out.lines().zip(attempts) {
            assert!(line.starts_with("denied "), "{attempt}: {line}");
        }
        self.check_honey();
    }

    #[track_caller]
    fn check_honey(&self) {
        for (path, contents) in &self.honey {
            assert_eq!(
                &std::fs::read(path).unwrap(),
                contents,
                "{} changed",
                path.display()
            );
        }
        for (dir, names) in &self.watched {
            assert_eq!(&listing(dir), names, "{} changed", dir.display());
        }
    }
}

#[test]
fn parent_traversal_and_absolute_paths_outside_mounts() {
    let rig = Rig::new();
    rig.expect_all_denied(&[
        "open('../honey-ws.txt').read()",
        "open('/workspace/../honey-ws.txt').read()",
        "open('../../' + os.listdir('../..')[0]).read()",
        "open('/data/../honey-beside.txt').read()",
        "open('/data/../../honey-top.txt').read()",
        "open('/out/../honey-beside.txt', 'w').write('x')",
        "open('/etc/passwd').read()",
        "open('/proc/self/environ').read()",
        "os.listdir('/data/..')",
        "open('/tmp/../honey-ws.txt', 'w').write('x')",
    ]);
}

#[test]
fn guest_made_symlinks_pointing_outside() {
    let rig = Rig::new();
    rig.expect_all_denied(&[
        "os.symlink('/etc/passwd', 'to-abs') or open('to-abs').read()",
        "os.symlink('../honey-ws.txt', 'to-rel') or open('to-rel').read()",
        "open('to-rel', 'w').write('x')",
        "open('to-rel', 'a').write('x')",
        "os.symlink('..', 'up') or open('up/honey-ws.txt').read()",
        "open('up/honey-ws.txt', 'w').write('x')",
        "os.mkdir('up/newdir')",
        "os.makedirs('target-dir', exist_ok=True) or os.rename('up', 'target-dir') or open('target-dir/honey-ws.txt').read()",
        "os.symlink('../../honey-top.txt', '/out/to-top') or open('/out/to-top').read()",
        "os.symlink('/data/../honey-beside.txt', 'via-grant') or open('via-grant').read()",
    ]);
}

#[test]
fn host_planted_symlinks_in_grants() {
    let rig = Rig::new();
    rig.expect_all_denied(&[
        "open('/data/planted-abs').read()",
        "open('/data/planted-rel').read()",
        "os.listdir('/data/planted-dir')",
        "open('/data/planted-dir/honey-beside.txt').read()",
        "open('/out/planted-abs', 'w').write('x')",
        "open('/out/planted-rel', 'a').write('x')",
        "open('/out/planted-dir/honey-beside.txt', 'w').write('x')",
        "os.mkdir('/out/planted-dir/new')",
    ]);
}

#[test]
fn hard_links_and_renames_across_mounts() {
    let rig = Rig::new();
    rig.expect_all_denied(&[
        "os.link('/data/inside.txt', 'linked.txt')",
        "os.link('../honey-ws.txt', 'linked2.txt')",
        "os.link('/out/planted-rel', 'linked3.txt') or open('linked3.txt').read()",
        "os.link('mine.txt', '/data/linked.txt')",
        "os.rename('/data/inside.txt', 'moved.txt')",
        "os.rename('mine.txt', '/data/moved.txt')",
        "os.rename('/data/sub', '/out/sub2')",
        "os.rename('mine.txt', '../moved.txt')",
    ]);
    // Untouched by the attempts: the workspace file is still there.
    assert_eq!(
        rig.workspace.read("mine.txt", 1 << 20).unwrap(),
        b"workspace data"
    );
}

#[test]
fn every_way_to_modify_a_read_only_grant() {
    let rig = Rig::new();
    rig.expect_all_denied(&[
        "open('/data/inside.txt', 'w')",
        "open('/data/inside.txt', 'a').write('x')",
        "open('/data/inside.txt', 'r+').write('x')",
        "os.open('/data/inside.txt', os.O_WRONLY | os.O_TRUNC)",
        "os.truncate('/data/inside.txt', 0)",
        "open('/data/new.txt', 'x')",
        "os.rename('/data/inside.txt', '/data/renamed.txt')",
        "os.rename('mine.txt', '/data/inside.txt')",
        "os.replace('/data/sub/deep.txt', '/data/inside.txt')",
        "os.unlink('/data/inside.txt')",
        "os.rmdir('/data/sub')",
        "os.mkdir('/data/newdir')",
        "os.symlink('inside.txt', '/data/newlink')",
        "os.utime('/data/inside.txt', (0, 0))",
        "os.utime('/data/sub', (0, 0))",
    ]);
}

#[test]
fn odd_path_names_are_ordinary_names_or_errors() {
    let rig = Rig::new();
    let source = r#"import os
names = ['a\nb', 'back\\slash', 'sp ace', 'ünï-☃', '...', '-dash', 'x' * 255]
for name in names:
    open(name, 'w').write(name)
print(sorted(n for n in os.listdir('.') if n in names) == sorted(names))
for bad in [b'\xff\xfe', 'x' * 300, 'nul\0byte']:
    try:
        open(bad, 'w')
        print('ALLOWED', bad)
    except (OSError, ValueError) as e:
        print('refused', type(e).__name__)
"#;
    let input = RunInput {
        workspace: Some(rig.workspace.clone()),
        ..RunInput::default()
    };
    let outcome = script("python", "names.py", source, &input);
    expect_status(&outcome, Status::Ok);
    let out = stdout(&outcome);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("True"), "{}", describe(&outcome));
    assert!(lines.all(|line| line.starts_with("refused")), "{out}");
    // The odd names come back out of the sandbox as they are.
    let paths: Vec<&str> = outcome.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        paths.contains(&"a\nb") && paths.contains(&"ünï-☃"),
        "{paths:?}"
    );
    rig.check_honey();
}
