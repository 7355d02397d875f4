//! Workspaces, uploads, grants, file quotas and output collection, through the library and
//! the `dvm run` flags.

use dvm::{Grant, LimitKind, RunInput, Status, Workspace};

use crate::cli::{dvm, expect, json};
use crate::support::*;

fn in_workspace(workspace: &Workspace) -> RunInput {
    RunInput {
        workspace: Some(workspace.clone()),
        ..RunInput::default()
    }
}

#[test]
fn a_workspace_carries_files_between_runs() {
    let workspace = Workspace::new().unwrap();
    workspace.write("data/in.txt", b"from the host").unwrap();
    let first = script(
        "python",
        "first.py",
        "print(open('data/in.txt').read())\nopen('state.txt', 'w').write('from run 1')",
        &in_workspace(&workspace),
    );
    assert_eq!(stdout(&first), "from the host\n", "{}", describe(&first));
    let second = script(
        "javascript",
        "second.mjs",
        "import * as std from 'qjs:std';\nconsole.log(std.loadFile('/workspace/state.txt'));",
        &in_workspace(&workspace),
    );
    assert_eq!(stdout(&second), "from run 1\n", "{}", describe(&second));
    assert_eq!(workspace.read("state.txt", 100).unwrap(), b"from run 1");
    let listed: Vec<String> = workspace
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        listed,
        ["data", "data/in.txt", "first.py", "second.mjs", "state.txt"]
    );
    workspace.remove("data").unwrap();
    workspace.remove("/workspace/state.txt").unwrap();
    assert!(workspace.read("state.txt", 100).is_err());
    assert!(workspace.write("../escape.txt", b"x").is_err());
    assert!(workspace.read("/etc/passwd", 100).is_err());
}

#[test]
fn a_kept_workspace_stays_and_a_dropped_one_goes() {
    let kept = Workspace::new().unwrap();
    kept.write("x.txt", b"kept").unwrap();
    let path = kept.keep();
    drop(kept);
    assert_eq!(std::fs::read(path.join("x.txt")).unwrap(), b"kept");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();

    let dropped = Workspace::new().unwrap();
    dropped.write("y.txt", b"gone").unwrap();
    let path = dropped.path().to_path_buf();
    drop(dropped);
    assert!(!path.join("y.txt").exists());
}

#[test]
fn the_host_never_follows_a_guest_made_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let workspace = Workspace::new().unwrap();
    let target = outside.path().join("victim.txt");
    std::fs::write(&target, "untouched").unwrap();
    // A relative target that climbs from the workspace to the host file.
    let depth = workspace.path().components().count() - 1;
    let climb = format!(
        "{}{}",
        "../".repeat(depth),
        target.to_str().unwrap().trim_start_matches('/')
    );
    let source = format!("import os\nos.symlink({climb:?}, 'link')\nos.symlink('..', 'up')");
    let outcome = script("python", "plant.py", &source, &in_workspace(&workspace));
    expect_status(&outcome, Status::Ok);
    assert!(workspace.write("link", b"overwritten").is_err());
    assert!(workspace.read("link", 100).is_err());
    assert!(workspace.write("up/escaped.txt", b"x").is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    let kinds: Vec<_> = workspace
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&dvm::workspace::EntryKind::Symlink));
}

#[test]
fn created_and_changed_files_are_reported_with_hashes() {
    let workspace = Workspace::new().unwrap();
    workspace.write("same.txt", b"unchanged").unwrap();
    workspace.write("edit.txt", b"before").unwrap();
    let source = "open('edit.txt', 'w').write('after')\n\
                  import os\nos.makedirs('out/deep')\n\
                  open('out/deep/new.bin', 'wb').write(bytes(range(256)))\n\
                  open('/tmp/scratch.txt', 'w').write('not reported')\n\
                  os.symlink('same.txt', 'alias')";
    let outcome = script("python", "main.py", source, &in_workspace(&workspace));
    expect_status(&outcome, Status::Ok);
    let reported: Vec<(&str, u64)> = outcome
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.size))
        .collect();
    assert_eq!(reported, [("edit.txt", 5), ("out/deep/new.bin", 256)]);
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(
        outcome.files[1].blake3.as_deref(),
        Some(blake3::hash(&bytes).to_hex().as_str())
    );
    let out = tempfile::tempdir().unwrap();
    workspace.copy_out(&outcome.files, out.path()).unwrap();
    assert_eq!(
        std::fs::read(out.path().join("out/deep/new.bin")).unwrap(),
        bytes
    );
    assert_eq!(
        std::fs::read(out.path().join("edit.txt")).unwrap(),
        b"after"
    );
    assert!(!out.path().join("same.txt").exists());
}

#[test]
fn a_wasm_module_gets_a_workspace_too() {
    // path_open(fd 4 = /workspace, "out", CREAT) then fd_write "hi" into it.
    let body = r#"
        (i32.store (i32.const 200) (i32.const 100))
        (i32.store (i32.const 204) (i32.const 2))
        (drop (call $path_open (i32.const 4) (i32.const 0) (i32.const 300) (i32.const 3)
                               (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 400)))
        (drop (call $fd_write (i32.load (i32.const 400)) (i32.const 200) (i32.const 1) (i32.const 500)))"#;
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "path_open"
            (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "hi")
          (data (i32.const 300) "out")
          (func (export "_start") {body}))"#
    );
    let outcome = run(&wat, &RunInput::default());
    expect_status(&outcome, Status::Ok);
    assert_eq!(outcome.files.len(), 1, "{}", describe(&outcome));
    assert_eq!(
        (outcome.files[0].path.as_str(), outcome.files[0].size),
        ("out", 2)
    );
}

#[test]
fn grants_are_read_only_unless_writable() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "granted").unwrap();
    let grant = |writable| Grant {
        host: host.path().to_path_buf(),
        guest: "/data".into(),
        writable,
    };
    let source = "print(open('/data/in.txt').read())\n\
                  try:\n    open('/data/out.txt', 'w').write('written')\n    print('wrote')\n\
                  except OSError:\n    print('read-only')";
    let run_with = |writable| {
        script(
            "python",
            "main.py",
            source,
            &RunInput {
                grants: vec![grant(writable)],
                ..RunInput::default()
            },
        )
    };
    assert_eq!(stdout(&run_with(false)), "granted\nread-only\n");
    assert!(!host.path().join("out.txt").exists());
    assert_eq!(stdout(&run_with(true)), "granted\nwrote\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "written"
    );
}

#[test]
fn bad_grants_are_refused_before_the_run() {
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    for (host, guest, says) in [
        (host.path().to_path_buf(), "/tmp", "taken by the sandbox"),
        (
            host.path().to_path_buf(),
            "/workspace",
            "taken by the sandbox",
        ),
        (host.path().to_path_buf(), "/", "taken by the sandbox"),
        (host.path().to_path_buf(), "data", "must be absolute"),
        (host.path().to_path_buf(), "/a/../b", "must be absolute"),
        (file, "/data", "not a directory"),
        (host.path().join("missing"), "/data", "missing"),
    ] {
        let input = RunInput {
            grants: vec![Grant {
                host,
                guest: guest.into(),
                writable: false,
            }],
            ..RunInput::default()
        };
        let error = runtime("python")
            .run_script("main.py", b"print(1)", &input)
            .expect_err("refused")
            .to_string();
        assert!(error.contains(says), "{guest}: {error}");
    }
}

mod quotas {
    use super::*;

    fn limited(edit: impl FnOnce(&mut dvm::Limits)) -> (Workspace, RunInput) {
        let workspace = Workspace::new().unwrap();
        let mut input = limits(edit);
        input.workspace = Some(workspace.clone());
        (workspace, input)
    }

    /// Bytes of the files the guest wrote (the script itself left out).
    fn workspace_bytes(workspace: &Workspace) -> u64 {
        let entries = workspace.list().unwrap();
        entries
            .iter()
            .filter(|e| e.path != "main.py")
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn writing_ten_gigabytes_stops_at_the_disk_quota() {
        let (workspace, input) = limited(|l| l.disk_bytes = 8 << 20);
        let source = "chunk = b'x' * (1 << 20)\nwith open('big.bin', 'wb') as f:\n    \
                      for _ in range(10 * 1024):\n        f.write(chunk)";
        let outcome = script("python", "main.py", source, &input);
        expect_limit(&outcome, LimitKind::Disk, "10 GB");
        assert!(
            workspace_bytes(&workspace) <= 8 << 20,
            "{}",
            workspace_bytes(&workspace)
        );
        // The host carries on serving.
        let next = script("python", "main.py", "print('next')", &RunInput::default());
        assert_eq!(stdout(&next), "next\n");
    }

    #[test]
    fn writes_to_tmp_count_and_stdout_does_not() {
        let (_, input) = limited(|l| l.disk_bytes = 1 << 20);
        let to_tmp = "open('/tmp/t', 'wb').write(b'x' * (2 << 20))";
        expect_limit(
            &script("python", "main.py", to_tmp, &input),
            LimitKind::Disk,
            "tmp",
        );
        let to_stdout = "import sys\nsys.stdout.write('x' * (2 << 20))";
        let outcome = script("python", "main.py", to_stdout, &input);
        expect_status(&outcome, Status::Ok);
    }

    #[test]
    fn growing_a_file_by_truncation_counts() {
        let (_, input) = limited(|l| l.disk_bytes = 1 << 20);
        let source = "f = open('sparse', 'wb')\nf.truncate(1 << 40)";
        expect_limit(
            &script("python", "main.py", source, &input),
            LimitKind::Disk,
            "truncate",
        );
    }

    #[test]
    fn within_the_disk_quota_writes_succeed() {
        let (workspace, input) = limited(|l| l.disk_bytes = 4 << 20);
        let source = "open('a.bin', 'wb').write(b'x' * (3 << 20))";
        let outcome = script("python", "main.py", source, &input);
        expect_status(&outcome, Status::Ok);
        assert_eq!(workspace_bytes(&workspace), 3 << 20);
    }

    #[test]
    fn a_million_files_stop_at_the_files_quota() {
        let (workspace, input) = limited(|l| l.files = 500);
        let source = "for i in range(1_000_000):\n    open(f'f{i}', 'w').close()";
        let outcome = script("python", "main.py", source, &input);
        expect_limit(&outcome, LimitKind::Files, "files");
        let count = workspace.list().unwrap().len();
        assert!((500..=502).contains(&count), "{count} entries");
    }

    #[test]
    fn directories_and_links_count_as_files() {
        let (_, input) = limited(|l| l.files = 20);
        let dirs = "import os\nfor i in range(100):\n    os.mkdir(f'd{i}')";
        expect_limit(
            &script("python", "main.py", dirs, &input),
            LimitKind::Files,
            "mkdir",
        );
        let links = "import os\nfor i in range(100):\n    os.symlink('x', f'l{i}')";
        expect_limit(
            &script("python", "main.py", links, &input),
            LimitKind::Files,
            "symlink",
        );
        // Rewriting the same file does not create one.
        let rewrite = "for i in range(100):\n    open('same', 'w').write(str(i))";
        expect_status(&script("python", "main.py", rewrite, &input), Status::Ok);
    }

    #[test]
    fn too_many_open_files_stop_the_run() {
        let (_, input) = limited(|l| l.open_files = 64);
        let hoard = "files = [open(f'f{i}', 'w') for i in range(1000)]";
        expect_limit(
            &script("python", "main.py", hoard, &input),
            LimitKind::Files,
            "open",
        );
        let one_at_a_time = "for i in range(1000):\n    open('f', 'w').close()";
        expect_status(
            &script("python", "main.py", one_at_a_time, &input),
            Status::Ok,
        );
    }
}

mod cli {
    use super::*;

    #[test]
    fn files_go_in_and_results_come_out() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = dir.path().join("inputs");
        std::fs::create_dir_all(inputs.join("nested")).unwrap();
        std::fs::write(inputs.join("nested/a.csv"), "1,2\n").unwrap();
        let single = dir.path().join("single.txt");
        std::fs::write(&single, "single").unwrap();
        let script = dir.path().join("main.py");
        std::fs::write(
            &script,
            "print(open('inputs/nested/a.csv').read().strip(), open('renamed.txt').read(), \
             open('single.txt').read())\nopen('result.csv', 'w').write('sum\\n3\\n')",
        )
        .unwrap();
        let out = dir.path().join("out");
        let output = dvm(&[
            "run",
            "--json",
            "--file",
            inputs.to_str().unwrap(),
            "--file",
            &format!("{}:renamed.txt", single.to_str().unwrap()),
            "--file",
            single.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            script.to_str().unwrap(),
        ]);
        let value = json(&output);
        assert_eq!(value["stdout"], "1,2 single single\n", "{}", show(&output));
        assert_eq!(value["files"][0]["path"], "result.csv");
        assert_eq!(value["files"][0]["size"], 6);
        assert_eq!(
            value["files"][0]["blake3"],
            blake3::hash(b"sum\n3\n").to_hex().as_str()
        );
        assert_eq!(
            std::fs::read_to_string(out.join("result.csv")).unwrap(),
            "sum\n3\n"
        );
        assert!(!out.join("single.txt").exists());
    }

    #[test]
    fn grants_and_keep() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), "granted").unwrap();
        let grant = format!("{}:/data", dir.path().to_str().unwrap());
        let output = dvm(&[
            "run",
            "--runtime",
            "python",
            "--grant",
            &grant,
            "--keep",
            "--code",
            "print(open('/data/in.txt').read())\nopen('kept.txt', 'w').write('k')",
        ]);
        expect(&output, 0, "granted\n", "workspace is kept at ");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let kept = stderr
            .lines()
            .find_map(|line| line.split("kept at ").nth(1))
            .unwrap();
        let kept = std::path::Path::new(kept.trim());
        assert_eq!(std::fs::read_to_string(kept.join("kept.txt")).unwrap(), "k");
        std::fs::remove_dir_all(kept.parent().unwrap()).unwrap();

        let rw = format!("{}:/data:rw", dir.path().to_str().unwrap());
        let output = dvm(&[
            "run",
            "--runtime",
            "python",
            "--grant",
            &rw,
            "--code",
            "open('/data/new.txt', 'w').write('n')",
        ]);
        expect(&output, 0, "", "");
        assert!(dir.path().join("new.txt").exists());
    }

    #[test]
    fn quota_flags_stop_with_their_limit() {
        for (flags, code, limit) in [
            (
                vec!["--disk", "1MiB"],
                "open('b', 'wb').write(b'x' * (4 << 20))",
                "disk",
            ),
            (
                vec!["--files", "10"],
                "[open(f'f{i}', 'w').close() for i in range(50)]",
                "files",
            ),
            (
                vec!["--open-files", "32"],
                "fs = [open(f'f{i}', 'w') for i in range(100)]",
                "files",
            ),
        ] {
            let mut args = vec!["run", "--json", "--runtime", "python"];
            args.extend(flags);
            args.extend(["--code", code]);
            let output = dvm(&args);
            assert_eq!(output.status.code(), Some(125), "{}", show(&output));
            assert_eq!(json(&output)["limit"], limit, "{}", show(&output));
        }
    }

    #[test]
    fn bad_file_and_grant_flags_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().to_str().unwrap();
        for (args, says) in [
            (vec!["--file", "/no/such/file"], "/no/such/file"),
            (
                vec!["--file", &format!("{here}:../up")],
                "`..` is not allowed",
            ),
            (
                vec!["--file", &format!("{here}:/etc/x")],
                "outside the workspace",
            ),
            (vec!["--grant", "/no/such/dir:/data"], "/no/such/dir"),
            (
                vec!["--grant", &format!("{here}:/tmp")],
                "taken by the sandbox",
            ),
            (vec!["--grant", &format!("{here}:/data:rx")], "not ro or rw"),
            (vec!["--grant", here], "missing the guest path"),
            (vec!["--open-files", "0"], "0"),
        ] {
            let mut all = vec!["run", "--runtime", "python"];
            all.extend(args.iter().copied());
            all.extend(["--code", "print(1)"]);
            let output = dvm(&all);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {}", show(&output));
            assert!(
                String::from_utf8_lossy(&output.stderr).contains(says),
                "{args:?}: {}",
                show(&output)
            );
        }
    }
}
