//! Fresh sandboxes per catalogue runtime, in process: hello in each runtime, a small pandas
//! script cold and from the `--preload numpy,pandas` snapshot, and each fast-start lever on
//! and off (the instance pool, the `turn` entry, prestarted sandboxes). Uses `$DVM_HOME` (or
//! the platform cache) and installs the runtimes and the snapshot there on first use.

use criterion::{Criterion, criterion_group, criterion_main};
use dvm::{Config, Dvm, Progress, RunInput};

const DATAFRAME: &str = "import numpy as np, pandas as pd\n\
    df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': np.array([1.0, 2.0, 3.0])})\n\
    print(df.groupby('k').v.sum().to_dict())\n";

fn hello(c: &mut Criterion) {
    let dvm = Dvm::new(Config::default()).expect("dvm starts");
    let input = RunInput::default();
    let mut group = c.benchmark_group("hello");
    group.sample_size(20);
    for (id, name, source) in [
        ("python", "hello.py", "print(1)"),
        ("python-lite", "hello.py", "print(1)"),
        ("javascript", "hello.js", "console.log(1)"),
    ] {
        let runtime = dvm.runtime(id).expect("runtime installs");
        group.bench_function(id, |b| {
            b.iter(|| {
                runtime
                    .run_script(name, source.as_bytes(), &input)
                    .expect("runs")
            })
        });
    }
    group.finish();
}

fn dataframe(c: &mut Criterion) {
    let dvm = Dvm::new(Config::default()).expect("dvm starts");
    let quiet: Progress = std::sync::Arc::new(|_| {});
    let preloaded = dvm
        .runtime_preloaded("python", &["numpy".into(), "pandas".into()], &quiet)
        .expect("snapshot is made");
    let cold = dvm.runtime("python").expect("runtime installs");
    let input = RunInput::default();
    let mut group = c.benchmark_group("dataframe");
    group.sample_size(10);
    group.bench_function("preloaded", |b| {
        b.iter(|| {
            preloaded
                .run_script("df.py", DATAFRAME.as_bytes(), &input)
                .expect("runs")
        })
    });
    group.bench_function("cold", |b| {
        b.iter(|| {
            cold.run_script("df.py", DATAFRAME.as_bytes(), &input)
                .expect("runs")
        })
    });
    group.finish();
}

/// Each fast-start lever against the same run without it.
fn levers(c: &mut Criterion) {
    let input = RunInput::default();
    let mut group = c.benchmark_group("levers");
    group.sample_size(20);

    // Pooling allocator with copy-on-write images, against on-demand allocation.
    let pooled = Dvm::new(Config::default()).expect("dvm starts");
    let unpooled = Dvm::new(Config {
        pool: None,
        ..Config::default()
    })
    .expect("dvm starts");
    for (label, dvm) in [("python pooled", &pooled), ("python unpooled", &unpooled)] {
        let runtime = dvm.runtime("python").expect("runtime installs");
        group.bench_function(label, |b| {
            b.iter(|| {
                runtime
                    .run_script("hello.py", b"print(1)", &input)
                    .expect("runs")
            })
        });
    }

    // One `turn` on a fresh instance, against the guest's own `run()` over the argv.
    let python = pooled.runtime("python").expect("runtime installs");
    group.bench_function("python via argv and run()", |b| {
        b.iter(|| {
            python
                .bench_run_via_argv("hello.py", b"print(1)", &input)
                .expect("runs")
        })
    });

    // python-lite cold, against a sandbox started ahead of demand. Each timed run finds one
    // ready: the pool refills between iterations, outside the timing.
    let lite = Dvm::new(Config::default())
        .expect("dvm starts")
        .runtime("python-lite")
        .expect("runtime installs");
    group.bench_function("python-lite cold", |b| {
        b.iter(|| {
            lite.run_script("hello.py", b"print(1)", &input)
                .expect("runs")
        })
    });
    lite.prestart(1).expect("python-lite prestarts");
    group.bench_function("python-lite prestarted", |b| {
        b.iter_custom(|iterations| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iterations {
                std::thread::sleep(std::time::Duration::from_millis(80));
                let started = std::time::Instant::now();
                lite.run_script("hello.py", b"print(1)", &input)
                    .expect("runs");
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, hello, dataframe, levers);
criterion_main!(benches);
