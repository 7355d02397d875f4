//! Every limit, each as an obeyed/violated pair, plus the crash cases and many sandboxes at
//! once.

use std::time::Duration;

use dvm::{CancelHandle, LimitKind, OutputOverflow, RunInput, Status};

use crate::support::*;

#[test]
fn fuel_obeyed_counts_what_the_guest_used() {
    let wat = command(1, "", &counting_loop(Some(1000)));
    let outcome = run(&wat, &limits(|l| l.fuel = Some(1_000_000)));
    expect_status(&outcome, Status::Ok);
    assert!(
        outcome.fuel_used > 1000 && outcome.fuel_used < 1_000_000,
        "{}",
        describe(&outcome)
    );
}

#[test]
fn fuel_violated_stops_an_infinite_loop() {
    let wat = command(1, "", &counting_loop(None));
    let outcome = run(&wat, &limits(|l| l.fuel = Some(1_000_000)));
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Fuel));
    assert_eq!(outcome.fuel_used, 1_000_000);
    assert_eq!(outcome.exit_code, None);
}

#[test]
fn deadline_obeyed_by_a_short_loop() {
    let wat = command(1, "", &counting_loop(Some(10_000)));
    let outcome = run(&wat, &limits(|l| l.deadline = Duration::from_secs(5)));
    expect_status(&outcome, Status::Ok);
}

#[test]
fn deadline_violated_stops_an_infinite_loop() {
    let wat = command(1, "", &counting_loop(None));
    let deadline = Duration::from_millis(300);
    let outcome = run(&wat, &limits(|l| l.deadline = deadline));
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Deadline));
    assert!(outcome.duration >= deadline, "{}", describe(&outcome));
    assert!(outcome.duration < GENEROUS, "{}", describe(&outcome));
}

#[test]
fn sleep_within_the_deadline_really_sleeps() {
    let wat = command(1, "", &sleep_body(50_000_000));
    let outcome = run(&wat, &limits(|l| l.deadline = Duration::from_secs(5)));
    expect_status(&outcome, Status::Ok);
    assert!(
        outcome.duration >= Duration::from_millis(50),
        "{}",
        describe(&outcome)
    );
}

#[test]
fn sleep_of_30s_under_a_1s_deadline_ends_at_the_deadline() {
    let outcome = shared()
        .load_file(&fixture("wat/sleep.wat"))
        .unwrap()
        .run(&limits(|l| l.deadline = Duration::from_secs(1)))
        .unwrap();
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Deadline));
    assert!(
        outcome.duration >= Duration::from_secs(1),
        "{}",
        describe(&outcome)
    );
    assert!(outcome.duration < GENEROUS, "{}", describe(&outcome));
}

#[test]
fn sleep_with_an_absolute_wake_time_past_the_deadline_ends_at_the_deadline() {
    // flags = 1: absolute monotonic time, 60 s after the sandbox's clock zero.
    let body = sleep_body(60_000_000_000).replace(
        "(i32.store16 (i32.const 40) (i32.const 0))",
        "(i32.store16 (i32.const 40) (i32.const 1))",
    );
    let outcome = run(
        &command(1, "", &body),
        &limits(|l| l.deadline = Duration::from_millis(300)),
    );
    assert_eq!(
        outcome.limit,
        Some(LimitKind::Deadline),
        "{}",
        describe(&outcome)
    );
    assert!(outcome.duration < GENEROUS, "{}", describe(&outcome));
}

#[test]
fn cancel_wakes_a_sleeping_guest() {
    let cancel = CancelHandle::new();
    let input = RunInput {
        cancel: Some(cancel.clone()),
        ..limits(|l| l.deadline = Duration::from_secs(30))
    };
    let program = program(&command(1, "", &sleep_body(30_000_000_000)));
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.cancel();
    });
    let outcome = program.run(&input).unwrap();
    canceller.join().unwrap();
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Cancelled));
    assert!(outcome.duration < GENEROUS, "{}", describe(&outcome));
}

#[test]
fn cancel_stops_a_spinning_guest() {
    let cancel = CancelHandle::new();
    cancel.cancel();
    let input = RunInput {
        cancel: Some(cancel),
        ..RunInput::default()
    };
    let outcome = program(&command(1, "", &counting_loop(None)))
        .run(&input)
        .unwrap();
    assert_eq!(
        outcome.limit,
        Some(LimitKind::Cancelled),
        "{}",
        describe(&outcome)
    );
}

const MIB: u64 = 1 << 20;

/// Grows memory by `pages` pages; traps if refused.
fn grow_body(pages: u32) -> String {
    format!("(if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))")
}

#[test]
fn memory_obeyed_reports_the_peak() {
    // 1 page + 31 pages = 2 MiB, under a 4 MiB cap.
    let outcome = run(
        &command(1, "", &grow_body(31)),
        &limits(|l| l.memory_bytes = 4 * MIB),
    );
    expect_status(&outcome, Status::Ok);
    assert_eq!(outcome.memory_peak_bytes, 2 * MIB);
}

#[test]
fn memory_violated_is_refused_at_the_cap() {
    let program = shared().load_file(&fixture("wat/grow.wat")).unwrap();
    let outcome = program.run(&limits(|l| l.memory_bytes = 4 * MIB)).unwrap();
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Memory));
    assert_eq!(outcome.memory_peak_bytes, 4 * MIB);
}

#[test]
fn memory_refused_but_handled_is_not_a_limit() {
    // Asks for 100 MiB under a 4 MiB cap, sees -1, and exits 0 anyway.
    let body = "(drop (memory.grow (i32.const 1600)))";
    let outcome = run(&command(1, "", body), &limits(|l| l.memory_bytes = 4 * MIB));
    expect_status(&outcome, Status::Ok);
    assert_eq!(outcome.memory_peak_bytes, 64 * 1024);
}

#[test]
fn memory_declared_over_the_cap_is_a_memory_limit() {
    // 100 pages (6.25 MiB) of initial memory under a 1 MiB cap.
    let outcome = run(&command(100, "", ""), &limits(|l| l.memory_bytes = MIB));
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Memory));
}

fn table_program() -> String {
    command(
        1,
        "(table $t 1 funcref)",
        "(loop $more
           (br_if $more (i32.ne (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))))
         unreachable",
    )
}

#[test]
fn table_obeyed_when_growth_stays_under_the_cap() {
    let body = "(if (i32.eq (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))
                  (then unreachable))";
    let outcome = run(
        &command(1, "(table $t 1 funcref)", body),
        &limits(|l| l.table_elements = 10_000),
    );
    expect_status(&outcome, Status::Ok);
}

#[test]
fn table_violated_is_refused_at_the_cap() {
    let outcome = run(&table_program(), &limits(|l| l.table_elements = 10_000));
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Table));
}

#[test]
fn output_under_the_cap_is_kept_whole() {
    let outcome = shared()
        .load_file(&fixture("wat/hello.wat"))
        .unwrap()
        .run(&limits(|l| l.stdout_bytes = 15))
        .unwrap();
    expect_status(&outcome, Status::Ok);
    assert_eq!(outcome.stdout, b"hello from dvm\n");
    assert!(!outcome.truncated.stdout);
}

#[test]
fn output_flood_is_truncated_at_exactly_the_cap() {
    let program = shared().load_file(&fixture("wat/flood.wat")).unwrap();
    let outcome = program.run(&limits(|l| l.stdout_bytes = MIB)).unwrap();
    // The guest saw every write succeed and finished normally.
    expect_status(&outcome, Status::Ok);
    assert_eq!(outcome.stdout.len() as u64, MIB);
    assert_eq!(outcome.stdout_bytes, 4 * MIB);
    assert!(outcome.truncated.stdout);
    assert!(!outcome.truncated.stderr);
    assert!(outcome.stdout.iter().all(|&b| b == b'x'));
}

#[test]
fn output_flood_under_stop_ends_the_run() {
    let program = shared().load_file(&fixture("wat/flood.wat")).unwrap();
    let outcome = program
        .run(&limits(|l| {
            l.stdout_bytes = 100_000;
            l.output_overflow = OutputOverflow::Stop;
        }))
        .unwrap();
    expect_status(&outcome, Status::Limit);
    assert_eq!(outcome.limit, Some(LimitKind::Output));
    assert_eq!(outcome.stdout.len(), 100_000);
    assert!(outcome.truncated.stdout);
}

#[test]
fn unreachable_is_a_crash_with_its_trap() {
    let outcome = shared()
        .load_file(&fixture("wat/unreachable.wat"))
        .unwrap()
        .run(&RunInput::default())
        .unwrap();
    expect_status(&outcome, Status::Crashed);
    assert!(outcome.trap.as_deref().unwrap().contains("unreachable"));
    assert_eq!(outcome.limit, None);
}

#[test]
fn deep_recursion_is_a_crash_and_the_host_survives() {
    let program = shared().load_file(&fixture("wat/recurse.wat")).unwrap();
    for _ in 0..3 {
        let outcome = program.run(&RunInput::default()).unwrap();
        expect_status(&outcome, Status::Crashed);
        assert!(
            outcome.trap.as_deref().unwrap().contains("stack"),
            "{}",
            describe(&outcome)
        );
    }
    let hello = shared().load_file(&fixture("wat/hello.wat")).unwrap();
    expect_status(&hello.run(&RunInput::default()).unwrap(), Status::Ok);
}

#[test]
fn two_hundred_spinning_sandboxes_all_end_near_their_deadline() {
    let program = program(&command(1, "", &counting_loop(None)));
    let deadline = Duration::from_secs(1);
    let input = limits(|l| l.deadline = deadline);
    let started = std::time::Instant::now();
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..200)
            .map(|_| scope.spawn(|| program.run(&input).expect("run starts")))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        assert_eq!(
            outcome.limit,
            Some(LimitKind::Deadline),
            "{}",
            describe(outcome)
        );
        assert!(outcome.duration >= deadline);
        assert!(
            outcome.duration < deadline + GENEROUS,
            "{}",
            describe(outcome)
        );
    }
    assert!(started.elapsed() < deadline + GENEROUS * 2);
}
