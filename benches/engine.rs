//! The stages of a run, each alone: compile, load precompiled, instantiate from
//! `InstancePre`, and a whole hello run; for a tiny guest and a 4,000-function one.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dvm::{Config, Dvm, RunInput};

const HELLO: &str = include_str!("../fixtures/wat/hello.wat");

/// A module with many small functions, so compile and load times are not all fixed cost.
fn wide_module(functions: usize) -> String {
    let mut wat = String::from(
        "(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n\
         (memory (export \"memory\") 1)\n",
    );
    for i in 0..functions {
        wat.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (i32.add (i32.mul (local.get 0) (i32.const {i})) (i32.const 7)))\n"
        ));
    }
    wat.push_str(
        "(func (export \"_start\") (call $exit (i32.and (call $f1 (i32.const 3)) (i32.const 0)))))",
    );
    wat
}

fn stages(c: &mut Criterion) {
    let home = tempfile::tempdir().expect("temp home");
    let dvm = Dvm::new(Config {
        home: home.path().to_path_buf(),
        ..Config::default()
    })
    .expect("dvm starts");
    let guests = [
        ("hello", wat::parse_str(HELLO).expect("hello parses")),
        (
            "wide4k",
            wat::parse_str(wide_module(4000)).expect("wide parses"),
        ),
    ];
    for (name, wasm) in &guests {
        let mut group = c.benchmark_group(*name);
        group.sample_size(20);
        group.bench_function("compile", |b| {
            b.iter(|| dvm.bench_compile(black_box(wasm)).expect("compiles"))
        });

        let precompiled = dvm.bench_precompile(wasm).expect("compiles");
        group.bench_function("load_precompiled", |b| {
            b.iter(|| dvm.bench_load_precompiled(&precompiled).expect("loads"))
        });

        let program = dvm.load_bytes(name, wasm).expect("loads");
        group.bench_function("instantiate", |b| {
            b.iter(|| program.bench_instantiate().expect("instantiates"))
        });
        group.bench_function("run", |b| {
            let input = RunInput::default();
            b.iter(|| program.run(&input).expect("runs"))
        });
        group.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
