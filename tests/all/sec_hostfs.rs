//! Issue 15, host side of files: `--out` and every host-side write never follow a link,
//! output collection is bounded and hole-aware, deep trees are walked and removed
//! iteratively, and no run directory outlives the process. Each test observes the host:
//! honeypot files, on-disk block counts, wall time, the dvm process's peak RSS, the
//! scratch directory's entries.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dvm::{Workspace, WorkspacePath};
use proptest::prelude::*;

use crate::cli::{dvm_command, json};
use crate::support::*;

/// `dvm` with its run directories in `scratch`.
fn dvm_in(scratch: &Path, args: &[&str]) -> Command {
    let mut command = dvm_command(args);
    command.env("DVM_SCRATCH", scratch);
    command
}

/// The `dvm-run-*` entries in `scratch`.
fn run_dirs(scratch: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(scratch)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("dvm-run-"))
        })
        .collect()
}

/// A Python script that says it is running (`ready` in its workspace) and waits until the
/// host has done its part (`go`).
const WAIT_FOR_HOST: &str = "import os, time\n\
    open('ready', 'w').write('1')\n\
    while not os.path.exists('go'):\n    time.sleep(0.01)\n";

/// A finished dvm process, its wall time after the host's step, and its peak RSS in bytes.
struct Observed {
    output: Output,
    after_step: Duration,
    peak_rss: u64,
}

/// Starts `command` (running [`WAIT_FOR_HOST`] in a workspace under `scratch`), runs `step`
/// on the host with that workspace while the guest waits, lets the guest finish, and
/// samples the process's VmHWM until it exits.
fn with_host_step(mut command: Command, scratch: &Path, step: impl FnOnce(&Path)) -> Observed {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dvm starts");
    let mut child = KillOnDrop(Some(child));
    let child = child.0.as_mut().unwrap();
    let started = Instant::now();
    let workspace = loop {
        let found = run_dirs(scratch)
            .into_iter()
            .map(|dir| dir.join("workspace"))
            .find(|workspace| workspace.join("ready").exists());
        if let Some(workspace) = found {
            break workspace;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("dvm ended ({status}) before the guest was ready: {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the guest never got ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    step(&workspace);
    std::fs::write(workspace.join("go"), "").unwrap();
    let stepped = Instant::now();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        {
            peak_rss = peak_rss.max(kib * 1024);
        }
        assert!(
            stepped.elapsed() < Duration::from_secs(120),
            "dvm is still running two minutes after the host's step"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let after_step = stepped.elapsed();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    std::io::Read::read_to_end(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    Observed {
        output: Output {
            status: child.wait().unwrap(),
            stdout,
            stderr,
        },
        after_step,
        peak_rss,
    }
}

/// A child process killed when a failed assertion unwinds past it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn out_never_follows_links_planted_in_a_shared_grant() {
    let top = tempfile::tempdir().unwrap();
    let honeypot = top.path().join("honeypot.txt");
    std::fs::write(&honeypot, "honey").unwrap();
    let shared = top.path().join("a").join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // Links as an earlier run with the same grant could have left them.
    std::os::unix::fs::symlink("../../honeypot.txt", shared.join("host-file.txt")).unwrap();
    std::os::unix::fs::symlink("../..", shared.join("host-dir")).unwrap();
    std::os::unix::fs::symlink(&honeypot, shared.join("host-abs.txt")).unwrap();
    // This run's guest plants the same kinds of links, then writes outputs of those names.
    let source = "import os\n\
        for target, link in [('../../honeypot.txt', 'guest-file.txt'), ('../..', 'guest-dir')]:\n\
        \x20   try:\n\
        \x20       os.symlink(target, '/out/' + link)\n\
        \x20       print('planted', link)\n\
        \x20   except OSError as e:\n\
        \x20       print('refused', link, e)\n\
        for name in ['guest-file.txt', 'host-file.txt', 'host-abs.txt', 'guest-dir/honeypot.txt',\n\
        \x20            'host-dir/honeypot.txt', 'host-dir/a/shared/deeper.txt', 'plain.txt']:\n\
        \x20   os.makedirs(os.path.dirname(name) or '.', exist_ok=True)\n\
        \x20   open(name, 'w').write('written by the guest')\n";
    let grant = format!("{}:/out:rw", shared.display());
    let output = dvm_command(&[
        "run",
        "--json",
        "--runtime",
        "python",
        "--grant",
        &grant,
        "--out",
        shared.to_str().unwrap(),
        "--code",
        source,
    ])
    .output()
    .unwrap();
    let value = json(&output);
    assert_eq!(value["status"], "ok", "{}", show(&output));
    assert_eq!(
        std::fs::read_to_string(&honeypot).unwrap(),
        "honey",
        "{}",
        show(&output)
    );
    assert!(!top.path().join("deeper.txt").exists());
    assert!(!top.path().join("a/deeper.txt").exists());
    let planted = String::from_utf8_lossy(&output.stdout).contains("planted guest-dir");
    // Files whose name held a link are replaced by the output, never written through.
    for name in ["host-file.txt", "host-abs.txt", "plain.txt"] {
        let meta = std::fs::symlink_metadata(shared.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is not a regular file");
        assert_eq!(
            std::fs::read_to_string(shared.join(name)).unwrap(),
            "written by the guest"
        );
    }
    // Directory links stay links; what would have gone through them is reported.
    assert!(
        std::fs::symlink_metadata(shared.join("host-dir"))
            .unwrap()
            .is_symlink()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("host-dir/honeypot.txt was not copied"),
        "{}",
        show(&output)
    );
    if planted {
        assert!(stderr.contains("guest-dir/honeypot.txt was not copied"));
    }
    // Nothing the host wrote landed anywhere but the shared directory.
    let mut outside: Vec<_> = std::fs::read_dir(top.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, ["a", "honeypot.txt"]);
}

#[test]
fn copy_out_replaces_a_link_and_a_hard_link_without_writing_through() {
    let workspace = Workspace::new().unwrap();
    let out = tempfile::tempdir().unwrap();
    let victim = out.path().join("victim.txt");
    std::fs::write(&victim, "victim").unwrap();
    std::os::unix::fs::symlink(&victim, out.path().join("soft.txt")).unwrap();
    std::fs::hard_link(&victim, out.path().join("hard.txt")).unwrap();
    let outcome = script(
        "python",
        "main.py",
        "open('soft.txt', 'w').write('new')\nopen('hard.txt', 'w').write('new')",
        &RunInputs::in_workspace(&workspace),
    );
    expect_status(&outcome, dvm::Status::Ok);
    let report = workspace.copy_out(&outcome.files, out.path()).unwrap();
    assert_eq!(report.copied, ["hard.txt", "soft.txt"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
    assert_eq!(
        std::fs::read_to_string(out.path().join("soft.txt")).unwrap(),
        "new"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("hard.txt")).unwrap(),
        "new"
    );
    // No temp file is left behind.
    let mut names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hard.txt", "soft.txt", "victim.txt"]);
}

struct RunInputs;

impl RunInputs {
    fn in_workspace(workspace: &Workspace) -> dvm::RunInput {
        dvm::RunInput {
            workspace: Some(workspace.clone()),
            ..dvm::RunInput::default()
        }
    }
}

#[test]
fn twenty_sparse_gibibyte_outputs_are_listed_not_read() {
    const GIB: u64 = 1 << 30;
    let scratch = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let command = dvm_in(
        scratch.path(),
        &[
            "run",
            "--json",
            "--runtime",
            "python",
            "--out",
            out.path().to_str().unwrap(),
            "--code",
            WAIT_FOR_HOST,
        ],
    );
    // The host makes the files (a guest quota that counts holes would refuse them): each
    // 1 GiB long with one byte of data in the middle.
    let observed = with_host_step(command, scratch.path(), |workspace| {
        std::fs::create_dir(workspace.join("sparse")).unwrap();
        for i in 0..20 {
            let file = std::fs::File::create(workspace.join(format!("sparse/{i:02}.bin"))).unwrap();
            file.set_len(GIB).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"x", GIB / 2).unwrap();
        }
    });
    let output = &observed.output;
    eprintln!(
        "twenty sparse GiB: {:?} after the host's step, peak RSS {} MiB",
        observed.after_step,
        observed.peak_rss >> 20
    );
    let value = json(output);
    assert_eq!(value["status"], "ok", "{}", show(output));
    assert!(
        observed.after_step < Duration::from_secs(20),
        "collecting took {:?}",
        observed.after_step
    );
    assert!(
        observed.peak_rss < 500 << 20,
        "dvm peaked at {} MiB",
        observed.peak_rss >> 20
    );
    let files = value["files"].as_array().unwrap();
    let sparse: Vec<_> = files
        .iter()
        .filter(|f| f["path"].as_str().unwrap().starts_with("sparse/"))
        .collect();
    assert_eq!(sparse.len(), 20, "{}", show(output));
    // Sizes count the holes.
    assert!(sparse.iter().all(|f| f["size"] == GIB));
    // At most the disk quota (1 GiB by default) is read back: one of them.
    let hashed: Vec<_> = sparse.iter().filter(|f| !f["blake3"].is_null()).collect();
    assert!(hashed.len() <= 1, "{}", show(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("were not read"), "{}", show(output));
    assert!(stderr.contains("was not copied"), "{}", show(output));
    // What was copied is the same sparse file: same length, almost no blocks on disk.
    for file in hashed {
        let copied = out.path().join(file["path"].as_str().unwrap());
        let meta = std::fs::metadata(&copied).unwrap();
        assert_eq!(meta.len(), GIB);
        assert!(meta.blocks() * 512 < 16 << 20, "{} blocks", meta.blocks());
        let zeros = vec![0u8; 1 << 20];
        let mut hasher = blake3::Hasher::new();
        for _ in 0..512 {
            hasher.update(&zeros);
        }
        hasher.update(b"x");
        hasher.update(&zeros[1..]);
        for _ in 0..511 {
            hasher.update(&zeros);
        }
        assert_eq!(file["blake3"], hasher.finalize().to_hex().as_str());
    }
    let copied = std::fs::read_dir(out.path().join("sparse"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert!(copied <= 1);
    assert!(run_dirs(scratch.path()).is_empty());
}

/// Makes `depth` nested directories `d` under `dir`, a file at the bottom, without ever
/// naming a path longer than one component.
fn deep_tree(dir: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(dir, flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", flags, Mode::empty()).unwrap();
    }
    let file = rustix::fs::openat(
        &fd,
        "bottom.txt",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&file, b"deep").unwrap();
}

/// `dvm ARGS` under `ulimit -n 1024`.
fn low_fd_limit(scratch: &Path, args: &[&str]) -> Command {
    let command = dvm_in(scratch, &[]);
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(command.get_program())
        .args(args);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    shell
}

#[test]
fn a_guest_made_3000_deep_tree_is_an_outcome_and_is_removed_under_ulimit() {
    let scratch = tempfile::tempdir().unwrap();
    // Guest paths stop at 4096 bytes, so three 1000-deep chains are made and nested by
    // renames: c2/d…/c1/d…/c0/d…/bottom.txt.
    let source = "import os\n\
        previous = None\n\
        for i in range(3):\n\
        \x20   bottom = f'c{i}'\n\
        \x20   os.mkdir(bottom)\n\
        \x20   for _ in range(999):\n\
        \x20       bottom += '/d'\n\
        \x20       os.mkdir(bottom)\n\
        \x20   if previous:\n\
        \x20       os.rename(previous, bottom + '/' + previous)\n\
        \x20   else:\n\
        \x20       open(bottom + '/bottom.txt', 'w').write('deep')\n\
        \x20   previous = f'c{i}'\n\
        print('made')\n";
    let output = low_fd_limit(
        scratch.path(),
        &["run", "--json", "--runtime", "python", "--code", source],
    )
    .output()
    .unwrap();
    let value = json(&output);
    assert_eq!(value["status"], "ok", "{}", show(&output));
    assert_eq!(value["stdout"], "made\n", "{}", show(&output));
    // The listing stopped at its depth bound and said so.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("left out"), "{}", show(&output));
    assert!(
        run_dirs(scratch.path()).is_empty(),
        "a run directory survived: {:?}",
        run_dirs(scratch.path())
    );
}

#[test]
fn a_host_made_3000_deep_tree_in_the_workspace_is_removed_under_ulimit() {
    let scratch = tempfile::tempdir().unwrap();
    let command = low_fd_limit(
        scratch.path(),
        &[
            "run",
            "--json",
            "--runtime",
            "python",
            "--code",
            WAIT_FOR_HOST,
        ],
    );
    let observed = with_host_step(command, scratch.path(), |workspace| {
        deep_tree(workspace, 3000);
    });
    let output = &observed.output;
    let value = json(output);
    assert_eq!(value["status"], "ok", "{}", show(output));
    let listed: Vec<&str> = value["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["go", "ready"],
        "the bottom file is past the depth bound"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("left out"),
        "{}",
        show(output)
    );
    assert!(
        run_dirs(scratch.path()).is_empty(),
        "a run directory survived: {:?}",
        run_dirs(scratch.path())
    );
}

#[test]
fn the_library_removes_a_deep_workspace_tree() {
    let workspace = Workspace::new().unwrap();
    deep_tree(workspace.path(), 3000);
    let listed = workspace.list().unwrap();
    assert_eq!(listed.len(), dvm::workspace::MAX_PATH_DEPTH);
    assert!(workspace.exists("d/d").unwrap());
    workspace.remove("d").unwrap();
    assert!(workspace.list().unwrap().is_empty());
    let path = workspace.path().to_path_buf();
    deep_tree(&path, 3000);
    drop(workspace);
    assert!(!path.join("d").exists());
}

#[test]
fn cli_runs_leave_no_run_directories() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "in").unwrap();
    let hello = fixture("wat/hello.wat");
    let upload = format!("{}:in.txt", dir.path().join("in.txt").display());
    let out = dir.path().join("out");
    let runs: [Vec<&str>; 3] = [
        vec!["run", hello.to_str().unwrap()],
        vec!["run", "--file", &upload, hello.to_str().unwrap()],
        vec![
            "run",
            "--runtime",
            "python",
            "--out",
            out.to_str().unwrap(),
            "--code",
            "open('x.txt', 'w').write('x')",
        ],
    ];
    for args in runs {
        let output = dvm_in(scratch.path(), &args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", show(&output));
        assert_eq!(run_dirs(scratch.path()), Vec::<PathBuf>::new(), "{args:?}");
    }
    assert_eq!(std::fs::read_to_string(out.join("x.txt")).unwrap(), "x");
}

/// One piece of a generated path.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("workspace".to_string()),
        Just("\0".to_string()),
        Just("a\0b".to_string()),
        "[a-z.]{1,4}",
        "[^/]{0,300}",
    ]
}

proptest! {
    #[test]
    fn workspace_paths_never_leave_their_root(
        lead in prop_oneof![Just(""), Just("/"), Just("/workspace/"), Just("./"), Just("/workspace")],
        pieces in proptest::collection::vec(piece(), 0..300),
    ) {
        let text = format!("{lead}{}", pieces.join("/"));
        match WorkspacePath::parse(&text) {
            Ok(path) => {
                let s = path.as_str();
                prop_assert!(!s.starts_with('/'));
                prop_assert!(s.len() <= dvm::workspace::MAX_PATH_BYTES);
                let parts: Vec<&str> = path.components().collect();
                prop_assert!(!parts.is_empty() && parts.len() <= dvm::workspace::MAX_PATH_DEPTH);
                for part in &parts {
                    prop_assert!(!part.is_empty() && *part != "." && *part != "..");
                    prop_assert!(!part.contains('\0') && !part.contains('/'));
                }
                // Lexically under any root, and stable when parsed again.
                let root = Path::new("/root/ws");
                let joined = root.join(s);
                prop_assert!(joined.starts_with(root) && joined != root);
                prop_assert!(joined.components().all(|c| !matches!(c, std::path::Component::ParentDir)));
                prop_assert_eq!(WorkspacePath::parse(s).unwrap(), path.clone());
                // No `..` ever survives.
                prop_assert!(!text.split('/').any(|p| p == ".."));
                prop_assert!(!text.contains('\0'));
            }
            Err(e) => {
                prop_assert!(e.to_string().contains("not a path in the workspace"));
            }
        }
    }
}

#[test]
fn sparse_files_stay_sparse_through_upload_and_copy_out() {
    const SIZE: u64 = 256 << 20;
    let host = tempfile::tempdir().unwrap();
    let sparse = host.path().join("sparse.bin");
    let file = std::fs::File::create(&sparse).unwrap();
    file.set_len(SIZE).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"data", SIZE / 2).unwrap();
    drop(file);
    let mut hasher = blake3::Hasher::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        hasher.update(&zeros);
    }
    hasher.update(b"data");
    hasher.update(&zeros[4..]);
    for _ in 0..127 {
        hasher.update(&zeros);
    }
    let hash = hasher.finalize().to_hex().to_string();

    let workspace = Workspace::new().unwrap();
    workspace.upload(&sparse, "in/sparse.bin").unwrap();
    let uploaded = std::fs::metadata(workspace.path().join("in/sparse.bin")).unwrap();
    assert_eq!(uploaded.len(), SIZE);
    assert!(
        uploaded.blocks() * 512 < 4 << 20,
        "{} blocks",
        uploaded.blocks()
    );

    let out = tempfile::tempdir().unwrap();
    let listed = |blake3: &str| dvm::OutputFile {
        path: "in/sparse.bin".into(),
        size: SIZE,
        blake3: Some(blake3.into()),
    };
    // A hash that does not match what is there now: reported, nothing left behind.
    let report = workspace
        .copy_out(&[listed(&"0".repeat(64))], out.path())
        .unwrap();
    assert!(report.copied.is_empty());
    assert!(report.skipped[0].1.contains("changed since the run"));
    assert!(!out.path().join("in/sparse.bin").exists());
    assert_eq!(std::fs::read_dir(out.path().join("in")).unwrap().count(), 0);

    let report = workspace.copy_out(&[listed(&hash)], out.path()).unwrap();
    assert_eq!(report.copied, ["in/sparse.bin"]);
    let copied = std::fs::metadata(out.path().join("in/sparse.bin")).unwrap();
    assert_eq!(copied.len(), SIZE);
    assert!(
        copied.blocks() * 512 < 4 << 20,
        "{} blocks",
        copied.blocks()
    );
    let bytes = std::fs::read(out.path().join("in/sparse.bin")).unwrap();
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash);
}
