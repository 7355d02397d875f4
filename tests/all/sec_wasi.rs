//! Issue 15, class 8 and the guest half of class 7: the WASI surface as an attacker drives
//! it. Descriptor counts, iovec walks, deadlines inside host calls, sparse files against the
//! disk quota. Each test observes the host: its open descriptors, wall time, the files on
//! disk.

use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dvm::{LimitKind, RunInput, Status, Workspace};
use proptest::prelude::*;

use crate::support::*;

const EINVAL: i32 = 28;
const EACCES: i32 = 2;
const EBADF: i32 = 8;

const OFLAGS_CREAT: i32 = 1;
const OFLAGS_TRUNC: i32 = 8;
const FDFLAGS_APPEND: i32 = 1;

/// Memory layout of the guests below: 16 = a descriptor stored by path_open, 20 = a byte
/// count, 32.. = iovecs, 256.. = file names, 4096.. = data.
const FD_AT: i32 = 16;
const COUNT_AT: i32 = 20;
const IOVECS_AT: i32 = 32;
const DATA_AT: i32 = 4096;

/// A WASI command with the calls these tests use, `pages` of memory, helper functions
/// `$open` (name, len, oflags, fdflags → fd, trapping on failure) and `$try_open`
/// (→ errno, fd stored at 16), and `body` as `_start`.
fn guest(pages: u32, data: &str, body: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pread" (func $fd_pread (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $fd_renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $fd_filestat_set_size (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_sync" (func $fd_sync (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  {data}
  (func $try_open (param $name i32) (param $len i32) (param $oflags i32) (param $fdflags i32) (result i32)
    (call $path_open (i32.const 4) (i32.const 0) (local.get $name) (local.get $len) (local.get $oflags)
                     (i64.const 0x1fffffff) (i64.const 0x1fffffff) (local.get $fdflags) (i32.const {FD_AT})))
  (func $open (param $name i32) (param $len i32) (param $oflags i32) (param $fdflags i32) (result i32)
    (if (call $try_open (local.get $name) (local.get $len) (local.get $oflags) (local.get $fdflags))
      (then unreachable))
    (i32.load (i32.const {FD_AT})))
  (func $iovec (param $index i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.add (i32.const {IOVECS_AT}) (i32.mul (local.get $index) (i32.const 8))) (local.get $ptr))
    (i32.store (i32.add (i32.const {IOVECS_AT}) (i32.add (i32.mul (local.get $index) (i32.const 8)) (i32.const 4))) (local.get $len)))
  (func $expect (param $got i32) (param $want i32) (param $code i32)
    (if (i32.ne (local.get $got) (local.get $want)) (then (call $proc_exit (local.get $code)))))
  (func (export "_start") {body}))"#
    )
}

/// A run in its own workspace.
fn in_workspace(workspace: &Workspace, edit: impl FnOnce(&mut dvm::Limits)) -> RunInput {
    let mut input = limits(edit);
    input.workspace = Some(workspace.clone());
    input
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Runs `wat` while another thread samples this process's open descriptors; returns the
/// outcome and the most descriptors seen above the count before the run.
fn run_counting_fds(wat: &str, input: &RunInput) -> (dvm::Outcome, usize) {
    let program = program(wat);
    let before = open_descriptors();
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(before));
    let sampler = {
        let (stop, most) = (stop.clone(), most.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                most.fetch_max(open_descriptors(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let outcome = program.run(input).expect("the run starts");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let most = most.load(Ordering::Relaxed);
    (outcome, most.saturating_sub(before))
}

mod descriptors {
    use super::*;

    /// The guest opens a file, renumbers it onto itself, and repeats, then sleeps so that
    /// descriptors it still holds can be seen.
    #[test]
    fn renumbering_onto_itself_cannot_hold_more_than_the_open_files_limit() {
        let workspace = Workspace::new().unwrap();
        let body = format!(
            "(local $i i32) (local $fd i32)
             (loop $again
               (local.set $fd (call $open (i32.const 256) (i32.const 1) (i32.const {OFLAGS_CREAT}) (i32.const 0)))
               (drop (call $fd_renumber (local.get $fd) (local.get $fd)))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $i) (i32.const 3000))))
             {}",
            sleep_body(300_000_000)
        );
        let wat = guest(1, r#"(data (i32.const 256) "f")"#, &body);
        let input = in_workspace(&workspace, |l| l.open_files = 64);
        let (outcome, extra) = run_counting_fds(&wat, &input);
        expect_limit(&outcome, LimitKind::Files, "renumber(fd, fd) loop");
        // 64 for the guest, the rest for whatever else this process opened meanwhile.
        assert!(
            extra < 64 + 200,
            "{extra} more host descriptors during the run"
        );
    }

    fn renumber_loop(step: &str) -> String {
        let body = format!(
            "(local $i i32) (local $a i32) (local $b i32)
             (loop $again
               {step}
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $i) (i32.const 500))))"
        );
        guest(1, r#"(data (i32.const 256) "f")"#, &body)
    }

    const OPEN_A: &str =
        "(local.set $a (call $open (i32.const 256) (i32.const 1) (i32.const 1) (i32.const 0)))";
    const OPEN_B: &str =
        "(local.set $b (call $open (i32.const 256) (i32.const 1) (i32.const 1) (i32.const 0)))";

    #[test]
    fn every_renumber_case_keeps_the_count_exact() {
        let leak = |step: String, what: &str| {
            let workspace = Workspace::new().unwrap();
            let outcome = run(
                &renumber_loop(&step),
                &in_workspace(&workspace, |l| l.open_files = 64),
            );
            expect_limit(&outcome, LimitKind::Files, what);
        };
        // Onto another open one: that one closes, one more stays open each time.
        leak(
            format!("{OPEN_A} {OPEN_B} (drop (call $fd_renumber (local.get $a) (local.get $b)))"),
            "a onto b",
        );
        // To or from a descriptor that does not exist: nothing changes.
        leak(
            format!("{OPEN_A} (drop (call $fd_renumber (local.get $a) (i32.const 9999)))"),
            "onto a bad fd",
        );
        leak(
            format!("{OPEN_A} (drop (call $fd_renumber (i32.const 9999) (local.get $a)))"),
            "from a bad fd",
        );
        leak(
            format!("{OPEN_A} (drop (call $fd_renumber (i32.const -1) (local.get $a)))"),
            "from fd -1",
        );
        // Stdin onto the file, then back onto 0, which no longer exists (EBADF): every
        // second round leaves one file open for real.
        leak(
            format!(
                "{OPEN_A} (drop (call $fd_renumber (i32.const 0) (local.get $a))) \
                 (drop (call $fd_renumber (local.get $a) (i32.const 0)))"
            ),
            "stdin onto the file and back",
        );

        let holds = |step: String, what: &str| {
            let workspace = Workspace::new().unwrap();
            let outcome = run(
                &renumber_loop(&step),
                &in_workspace(&workspace, |l| l.open_files = 64),
            );
            assert_eq!(outcome.status, Status::Ok, "{what}: {}", describe(&outcome));
        };
        // Onto stdout: the file takes its place, the previous one there closes.
        holds(
            format!("{OPEN_A} (drop (call $fd_renumber (local.get $a) (i32.const 1)))"),
            "onto stdout",
        );
        // Onto stdin: the file takes its place, the previous one there closes.
        holds(
            format!("{OPEN_A} (drop (call $fd_renumber (local.get $a) (i32.const 0)))"),
            "onto stdin",
        );
        // Open and close, renumbering in between.
        holds(
            format!(
                "{OPEN_A} {OPEN_B} (drop (call $fd_renumber (local.get $a) (local.get $b))) \
                 (drop (call $fd_close (local.get $b)))"
            ),
            "renumber then close",
        );
    }
}

mod iovecs {
    use super::*;

    /// 256 MiB of memory: room for 2^25 iovecs, which a walk of a 2^31 count would visit.
    const PAGES: u32 = 4096;

    #[test]
    fn counts_past_1024_are_einval_and_1024_works() {
        let workspace = Workspace::new().unwrap();
        let body = format!(
            "(local $fd i32)
             (local.set $fd (call $open (i32.const 256) (i32.const 1) (i32.const {OFLAGS_CREAT}) (i32.const 0)))
             (call $expect (call $fd_write (local.get $fd) (i32.const 0) (i32.const 0x80000000) (i32.const {COUNT_AT})) (i32.const {EINVAL}) (i32.const 10))
             (call $expect (call $fd_write (i32.const 99) (i32.const 0) (i32.const 0x80000000) (i32.const {COUNT_AT})) (i32.const {EINVAL}) (i32.const 11))
             (call $expect (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1025) (i32.const {COUNT_AT})) (i32.const {EINVAL}) (i32.const 12))
             (call $expect (call $fd_pwrite (local.get $fd) (i32.const 0) (i32.const -1) (i64.const 0) (i32.const {COUNT_AT})) (i32.const {EINVAL}) (i32.const 13))
             (call $expect (call $fd_read (i32.const 0) (i32.const 0) (i32.const 0x7fffffff) (i32.const {COUNT_AT})) (i32.const {EINVAL}) (i32.const 14))
             (call $expect (call $fd_pread (local.get $fd) (i32.const 0) (i32.const 1025) (i64.const 0) (i32.const {COUNT_AT})) (i32.const {EINVAL}) (i32.const 15))
             ;; 1024 iovecs (32..8224) of one byte each, all of the 'x' at 9000: 1024 bytes.
             (i32.store8 (i32.const 9000) (i32.const 120))
             (loop $fill
               (call $iovec (i32.load (i32.const 9004)) (i32.const 9000) (i32.const 1))
               (i32.store (i32.const 9004) (i32.add (i32.load (i32.const 9004)) (i32.const 1)))
               (br_if $fill (i32.lt_u (i32.load (i32.const 9004)) (i32.const 1024))))
             (call $expect (call $fd_write (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1024) (i32.const {COUNT_AT})) (i32.const 0) (i32.const 16))
             (call $expect (i32.load (i32.const {COUNT_AT})) (i32.const 1024) (i32.const 17))
             ;; An iovec array or a buffer outside memory: EFAULT, nothing written.
             (call $expect (call $fd_write (local.get $fd) (i32.const -8) (i32.const 2) (i32.const {COUNT_AT})) (i32.const 21) (i32.const 18))
             (call $iovec (i32.const 0) (i32.const -16) (i32.const 32))
             (call $expect (call $fd_write (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1) (i32.const {COUNT_AT})) (i32.const 21) (i32.const 19))"
        );
        let wat = guest(2, r#"(data (i32.const 256) "f")"#, &body);
        let outcome = run(&wat, &in_workspace(&workspace, |_| {}));
        expect_status(&outcome, Status::Ok);
        let written = std::fs::read(workspace.path().join("f")).unwrap();
        assert_eq!(written, vec![b'x'; 1024]);
    }

    #[test]
    fn a_2_pow_31_iovec_count_cannot_stretch_a_200ms_deadline() {
        let workspace = Workspace::new().unwrap();
        // Against a file and a bad descriptor (both went through the quota walk), forever.
        let body = format!(
            "(local $fd i32)
             (local.set $fd (call $open (i32.const 256) (i32.const 1) (i32.const {OFLAGS_CREAT}) (i32.const 0)))
             (loop $again
               (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 0x80000000) (i32.const {COUNT_AT})))
               (drop (call $fd_write (i32.const 99) (i32.const 0) (i32.const 0x80000000) (i32.const {COUNT_AT})))
               (drop (call $fd_pwrite (local.get $fd) (i32.const 0) (i32.const 0x7fffffff) (i64.const 0) (i32.const {COUNT_AT})))
               (br $again))"
        );
        let wat = guest(PAGES, r#"(data (i32.const 256) "f")"#, &body);
        let input = in_workspace(&workspace, |l| l.deadline = Duration::from_millis(200));
        let started = Instant::now();
        let outcome = run(&wat, &input);
        let took = started.elapsed();
        expect_limit(&outcome, LimitKind::Deadline, "iovec count 2^31");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn a_64_gib_writev_to_stdout_ends_at_the_deadline() {
        // 1024 iovecs, each the whole 64 MiB memory: 64 GiB in one call.
        let body = format!(
            "(local $i i32)
             (loop $fill
               (call $iovec (local.get $i) (i32.const 0) (i32.const 0x4000000))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $fill (i32.lt_u (local.get $i) (i32.const 1024))))
             (drop (call $fd_write (i32.const 1) (i32.const {IOVECS_AT}) (i32.const 1024) (i32.const {COUNT_AT})))"
        );
        let wat = guest(1024, "", &body);
        let input = limits(|l| l.deadline = Duration::from_millis(200));
        let started = Instant::now();
        let outcome = run(&wat, &input);
        let took = started.elapsed();
        expect_limit(&outcome, LimitKind::Deadline, "64 GiB writev");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn random_get_of_all_memory_ends_at_the_deadline() {
        let body = "(loop $again
               (drop (call $random_get (i32.const 0) (i32.const 0x10000000)))
               (br $again))";
        let wat = guest(4096, "", body);
        let input = limits(|l| l.deadline = Duration::from_millis(200));
        let started = Instant::now();
        let outcome = run(&wat, &input);
        let took = started.elapsed();
        expect_limit(&outcome, LimitKind::Deadline, "random_get 256 MiB");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn reads_and_writes_span_chunks_and_iovecs() {
        // A 3 MiB + 5 file read through two 2 MiB iovecs, then written back at an offset
        // through the same two iovecs: every byte moves, in order.
        let workspace = Workspace::new().unwrap();
        let size = (3 << 20) + 5;
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        workspace.write("in.bin", &bytes).unwrap();
        let body = format!(
            "(local $in i32) (local $out i32)
             (local.set $in (call $open (i32.const 256) (i32.const 6) (i32.const 0) (i32.const 0)))
             (call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const 0x200000))
             (call $iovec (i32.const 1) (i32.const {}) (i32.const 0x200000))
             (call $expect (call $fd_read (local.get $in) (i32.const {IOVECS_AT}) (i32.const 2) (i32.const {COUNT_AT})) (i32.const 0) (i32.const 10))
             (call $expect (i32.load (i32.const {COUNT_AT})) (i32.const {size}) (i32.const 11))
             (call $iovec (i32.const 1) (i32.const {}) (i32.const {}))
             (local.set $out (call $open (i32.const 264) (i32.const 7) (i32.const {OFLAGS_CREAT}) (i32.const 0)))
             (call $expect (call $fd_pwrite (local.get $out) (i32.const {IOVECS_AT}) (i32.const 2) (i64.const 3) (i32.const {COUNT_AT})) (i32.const 0) (i32.const 12))
             (call $expect (i32.load (i32.const {COUNT_AT})) (i32.const {size}) (i32.const 13))
             ;; pread the tail back over the first bytes and compare one.
             (call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const 16))
             (call $expect (call $fd_pread (local.get $in) (i32.const {IOVECS_AT}) (i32.const 1) (i64.const {}) (i32.const {COUNT_AT})) (i32.const 0) (i32.const 14))
             (call $expect (i32.load (i32.const {COUNT_AT})) (i32.const 5) (i32.const 15))",
            DATA_AT + 0x200000,
            DATA_AT + 0x200000,
            size - 0x200000,
            size - 5,
        );
        let wat = guest(
            128,
            r#"(data (i32.const 256) "in.bin") (data (i32.const 264) "out.bin")"#,
            &body,
        );
        let outcome = run(&wat, &in_workspace(&workspace, |_| {}));
        expect_status(&outcome, Status::Ok);
        let out = std::fs::read(workspace.path().join("out.bin")).unwrap();
        assert_eq!(out.len(), size + 3);
        assert!(out[..3].iter().all(|&b| b == 0));
        assert!(out[3..] == bytes[..], "the copy differs");
    }
}

mod blocking {
    use super::*;

    #[test]
    fn opening_a_fifo_is_refused_instead_of_blocking() {
        let workspace = Workspace::new().unwrap();
        let fifo = workspace.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let body = format!(
            "(call $expect (call $try_open (i32.const 256) (i32.const 4) (i32.const 0) (i32.const 0)) (i32.const {EACCES}) (i32.const 10))
             (call $expect (call $try_open (i32.const 256) (i32.const 4) (i32.const {OFLAGS_CREAT}) (i32.const 0)) (i32.const {EACCES}) (i32.const 11))"
        );
        let wat = guest(1, r#"(data (i32.const 256) "fifo")"#, &body);
        let input = in_workspace(&workspace, |l| l.deadline = Duration::from_secs(2));
        // A blocked open would never return: wait on another thread.
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(run(&wat, &input));
        });
        let outcome = result
            .recv_timeout(Duration::from_secs(20))
            .expect("the run blocked opening a FIFO");
        expect_status(&outcome, Status::Ok);
    }

    #[test]
    fn a_megabyte_path_is_refused_before_it_is_resolved() {
        // "a/../" 200,000 times: a path the host would resolve step by step.
        const ENOMEM: i32 = 48;
        let body = format!(
            "(local $i i32)
             (loop $fill
               (i32.store (i32.add (i32.const {DATA_AT}) (i32.mul (local.get $i) (i32.const 5))) (i32.const 0x2e2e2f61))
               (i32.store8 (i32.add (i32.const {DATA_AT}) (i32.add (i32.mul (local.get $i) (i32.const 5)) (i32.const 4))) (i32.const 0x2f))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $fill (i32.lt_u (local.get $i) (i32.const 200000))))
             (loop $again
               (call $expect (call $try_open (i32.const {DATA_AT}) (i32.const 1000000) (i32.const {OFLAGS_CREAT}) (i32.const 0)) (i32.const {ENOMEM}) (i32.const 10))
               (br $again))"
        );
        let wat = guest(32, "", &body);
        let input = limits(|l| l.deadline = Duration::from_millis(200));
        let started = Instant::now();
        let outcome = run(&wat, &input);
        let took = started.elapsed();
        expect_limit(&outcome, LimitKind::Deadline, "1 MB paths");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn listing_a_huge_directory_cannot_stretch_the_deadline() {
        // One fd_readdir call looks at every entry: 100,000 of them take seconds.
        let workspace = Workspace::new().unwrap();
        let dir = workspace.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..100_000 {
            std::fs::File::create(dir.join(format!("entry-{i}"))).unwrap();
        }
        let body = "(local $fd i32)
             ;; O_DIRECTORY with the right to list only.
             (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 256) (i32.const 1) (i32.const 2)
                                  (i64.const 0x4000) (i64.const 0x4000) (i32.const 0) (i32.const 16))
               (then unreachable))
             (local.set $fd (i32.load (i32.const 16)))
             (loop $again
               (drop (call $fd_readdir (local.get $fd) (i32.const 1024) (i32.const 64) (i64.const 99000) (i32.const 20)))
               (br $again))";
        let wat = guest(1, r#"(data (i32.const 256) "d")"#, body);
        let input = in_workspace(&workspace, |l| l.deadline = Duration::from_millis(100));
        // The run's own time: listing the workspace before and after it is not the guest's.
        let outcome = run(&wat, &input);
        expect_limit(&outcome, LimitKind::Deadline, "readdir of 100,000 entries");
        let took = outcome.duration;
        assert!(took < Duration::from_millis(1500), "took {took:?}");
    }

    #[test]
    fn sync_answers_at_once_and_checks_its_descriptor() {
        let workspace = Workspace::new().unwrap();
        let body = format!(
            "(local $fd i32)
             (local.set $fd (call $open (i32.const 256) (i32.const 1) (i32.const {OFLAGS_CREAT}) (i32.const 0)))
             (call $expect (call $fd_sync (local.get $fd)) (i32.const 0) (i32.const 10))
             (call $expect (call $fd_sync (i32.const 1)) (i32.const {EBADF}) (i32.const 11))
             (call $expect (call $fd_sync (i32.const 4)) (i32.const {EBADF}) (i32.const 12))
             (call $expect (call $fd_sync (i32.const 999)) (i32.const {EBADF}) (i32.const 13))"
        );
        let wat = guest(1, r#"(data (i32.const 256) "f")"#, &body);
        expect_status(&run(&wat, &in_workspace(&workspace, |_| {})), Status::Ok);
    }
}

mod sparse {
    use super::*;

    const GIB: i64 = 1 << 30;
    const QUOTA: u64 = 10 << 20;

    /// Runs `steps` against file "s" (descriptor in `$fd`, opened with `fdflags`) under a
    /// 10 MiB disk quota; returns the outcome and the file's length and allocated bytes.
    fn against_file(fdflags: i32, steps: &str) -> (dvm::Outcome, u64, u64) {
        let workspace = Workspace::new().unwrap();
        let body = format!(
            "(local $fd i32)
             (local.set $fd (call $open (i32.const 256) (i32.const 1) (i32.const {}) (i32.const {fdflags})))
             (call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const 1))
             {steps}",
            OFLAGS_CREAT | OFLAGS_TRUNC
        );
        let wat = guest(256, r#"(data (i32.const 256) "s")"#, &body);
        let outcome = run(&wat, &in_workspace(&workspace, |l| l.disk_bytes = QUOTA));
        let meta = std::fs::metadata(workspace.path().join("s")).unwrap();
        (outcome, meta.len(), meta.blocks() * 512)
    }

    fn write_one() -> String {
        format!(
            "(drop (call $fd_write (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1) (i32.const {COUNT_AT})))"
        )
    }

    fn set_size(size: i64) -> String {
        format!(
            "(call $expect (call $fd_filestat_set_size (local.get $fd) (i64.const {size})) (i32.const 0) (i32.const 20))"
        )
    }

    fn seek(offset: i64) -> String {
        format!(
            "(call $expect (call $fd_seek (local.get $fd) (i64.const {offset}) (i32.const 0) (i32.const 8)) (i32.const 0) (i32.const 21))"
        )
    }

    #[track_caller]
    fn refused(fdflags: i32, steps: &str, len: u64, what: &str) {
        let (outcome, size, allocated) = against_file(fdflags, steps);
        expect_limit(&outcome, LimitKind::Disk, what);
        assert_eq!(size, len, "{what}: the file's length");
        assert!(allocated <= QUOTA, "{what}: {allocated} bytes allocated");
    }

    #[test]
    fn one_byte_at_one_gib_costs_one_gib() {
        let pwrite = format!(
            "(drop (call $fd_pwrite (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1) (i64.const {GIB}) (i32.const {COUNT_AT})))"
        );
        refused(0, &pwrite, 0, "pwrite at 1 GiB");
        refused(
            0,
            &format!("{} {}", seek(GIB), write_one()),
            0,
            "seek then write",
        );
        refused(0, &set_size(GIB), 0, "set_size 1 GiB");
        // Appending past the quota: the end moves from 8 MiB by 3 MiB.
        let append = format!(
            "{} (call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const 0x300000)) {}",
            set_size(8 << 20),
            write_one()
        );
        refused(FDFLAGS_APPEND, &append, 8 << 20, "append");
        // A pwrite on a file opened to append lands at the end, whatever its offset.
        let append_at = format!(
            "{} (call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const 0x300000)) \
             (drop (call $fd_pwrite (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1) (i64.const 0) (i32.const {COUNT_AT})))",
            set_size(8 << 20)
        );
        refused(
            FDFLAGS_APPEND,
            &append_at,
            8 << 20,
            "pwrite on an appending file",
        );
    }

    #[test]
    fn truncate_then_extend_pays_for_every_extension() {
        let steps = format!(
            "{} {} {}",
            set_size(6 << 20),
            set_size(0),
            set_size(6 << 20)
        );
        refused(0, &steps, 0, "truncate then extend");
        let by_writes = [
            seek(6 << 20),
            write_one(),
            set_size(0),
            seek(6 << 20),
            write_one(),
        ]
        .join(" ");
        refused(0, &by_writes, 0, "write, truncate, write");
    }

    #[test]
    fn rewriting_inside_a_file_costs_nothing_more() {
        // 4 MiB written ten times over at offset 0, then once more one byte further on:
        // 4 MiB + 1 charged under a 10 MiB quota.
        let mut steps =
            format!("(call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const 0x400000))");
        for _ in 0..10 {
            steps.push_str(&seek(0));
            steps.push_str(&write_one());
        }
        let pwrite_inside = format!(
            "(call $expect (call $fd_pwrite (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1) (i64.const 1) (i32.const {COUNT_AT})) (i32.const 0) (i32.const 22))"
        );
        steps.push_str(&pwrite_inside);
        let (outcome, size, _) = against_file(0, &steps);
        expect_status(&outcome, Status::Ok);
        assert_eq!(size, (4 << 20) + 1);
    }

    /// One operation of the property test below.
    #[derive(Debug, Clone)]
    enum FileOp {
        Write(u32),
        Pwrite(u32, u32),
        Seek(u32),
        SetSize(u32),
    }

    fn file_op() -> impl Strategy<Value = FileOp> {
        prop_oneof![
            (0u32..200_000).prop_map(FileOp::Write),
            (0u32..2_000_000, 0u32..200_000).prop_map(|(at, n)| FileOp::Pwrite(at, n)),
            (0u32..2_000_000).prop_map(FileOp::Seek),
            (0u32..2_000_000).prop_map(FileOp::SetSize),
        ]
    }

    /// The quota model: each call costs how far it moves the file's end; the call that would
    /// cross the quota stops the run before it changes anything.
    fn model(ops: &[FileOp], quota: u64) -> (bool, u64) {
        let (mut size, mut pos, mut charged) = (0u64, 0u64, 0u64);
        for op in ops {
            let end = match *op {
                FileOp::Write(n) => pos + u64::from(n),
                FileOp::Pwrite(at, n) => u64::from(at) + u64::from(n),
                FileOp::Seek(at) => {
                    pos = u64::from(at);
                    continue;
                }
                FileOp::SetSize(n) => u64::from(n),
            };
            // Moving no bytes moves no end.
            let moves = !matches!(*op, FileOp::Write(0) | FileOp::Pwrite(_, 0));
            let growth = if moves { end.saturating_sub(size) } else { 0 };
            if charged + growth > quota {
                return (false, size);
            }
            charged += growth;
            match *op {
                FileOp::SetSize(n) => size = u64::from(n),
                FileOp::Write(n) => {
                    pos += u64::from(n);
                    if n > 0 {
                        size = size.max(pos);
                    }
                }
                _ if moves => size = size.max(end),
                _ => {}
            }
        }
        (true, size)
    }

    fn steps(ops: &[FileOp]) -> String {
        ops.iter()
            .map(|op| match *op {
                FileOp::Write(n) => format!(
                    "(call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const {n})) {}",
                    write_one()
                ),
                FileOp::Pwrite(at, n) => format!(
                    "(call $iovec (i32.const 0) (i32.const {DATA_AT}) (i32.const {n})) \
                     (call $expect (call $fd_pwrite (local.get $fd) (i32.const {IOVECS_AT}) (i32.const 1) (i64.const {at}) (i32.const {COUNT_AT})) (i32.const 0) (i32.const 23))"
                ),
                FileOp::Seek(at) => seek(i64::from(at)),
                FileOp::SetSize(n) => set_size(i64::from(n)),
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn the_disk_charge_follows_the_end_of_file_model(
            ops in proptest::collection::vec(file_op(), 1..12),
            quota in 0u64..3_000_000,
        ) {
            let workspace = Workspace::new().unwrap();
            let body = format!(
                "(local $fd i32)
                 (local.set $fd (call $open (i32.const 256) (i32.const 1) (i32.const {OFLAGS_CREAT}) (i32.const 0)))
                 {}",
                steps(&ops)
            );
            let wat = guest(64, r#"(data (i32.const 256) "s")"#, &body);
            let outcome = run(&wat, &in_workspace(&workspace, |l| l.disk_bytes = quota));
            let (completes, size) = model(&ops, quota);
            if completes {
                prop_assert_eq!(outcome.status, Status::Ok, "{}", describe(&outcome));
            } else {
                prop_assert_eq!(outcome.limit, Some(LimitKind::Disk), "{}", describe(&outcome));
            }
            let on_disk = std::fs::metadata(workspace.path().join("s")).unwrap().len();
            prop_assert_eq!(on_disk, size);
        }
    }
}
