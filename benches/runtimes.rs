//! Fresh sandboxes per catalogue runtime, in process: hello in each runtime, a small pandas
//! script cold and from the `--preload numpy,pandas` snapshot, and each fast-start lever on
//! and off (the instance pool, the `turn` entry, prestarted sandboxes). Uses `$DVM_HOME` (or
//! the platform cache) and installs the runtimes and the snapshot there on first use.

use criterion::{Criterion, criterion_group, criterion_main};
use dvm::{Config, Dvm, Progress, RunInput, Workspace};

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

/// What a workspace adds to a run: javascript hello (the cheapest runtime) with a fresh
/// private workspace, then in a prepared workspace holding 100 small files or one 50 MB
/// file (the run lists it before and after to report changes), then uploading those inputs
/// from the host for each run.
fn workspace(c: &mut Criterion) {
    let dvm = Dvm::new(Config::default()).expect("dvm starts");
    let js = dvm.runtime("javascript").expect("runtime installs");
    let inputs = tempfile::tempdir().expect("temp dir");
    let small = inputs.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    for i in 0..100 {
        std::fs::write(small.join(format!("f{i:03}.txt")), format!("file {i}\n")).expect("write");
    }
    let large = inputs.path().join("large.bin");
    std::fs::write(&large, vec![7u8; 50 << 20]).expect("write");

    let mut group = c.benchmark_group("workspace");
    group.sample_size(20);
    let source = b"console.log(1)";
    let fresh = RunInput::default();
    group.bench_function("fresh, empty", |b| {
        b.iter(|| js.run_script("hello.js", source, &fresh).expect("runs"))
    });
    for (label, host, guest) in [
        ("100 small files", &small, "small"),
        ("one 50 MB file", &large, "large.bin"),
    ] {
        let prepared = Workspace::new().expect("workspace");
        prepared.upload(host, guest).expect("upload");
        let input = RunInput {
            workspace: Some(prepared),
            ..RunInput::default()
        };
        group.bench_function(format!("prepared, {label}"), |b| {
            b.iter(|| js.run_script("hello.js", source, &input).expect("runs"))
        });
        group.bench_function(format!("uploaded per run, {label}"), |b| {
            b.iter(|| {
                let workspace = Workspace::new().expect("workspace");
                workspace.upload(host, guest).expect("upload");
                let input = RunInput {
                    workspace: Some(workspace),
                    ..RunInput::default()
                };
                js.run_script("hello.js", source, &input).expect("runs")
            })
        });
    }
    group.finish();
}

/// Installing a small set of pure packages (tabulate + attrs for python-lite) from a local
/// wheel directory: cold (an empty store: pip resolves, dvm checks and unpacks) and warm (the
/// same set again: a store hit, no pip call).
fn packages(c: &mut Criterion) {
    let wheels = tempfile::tempdir().expect("temp dir");
    let fetched = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
        ])
        .args([
            "--implementation",
            "cp",
            "--abi",
            "none",
            "--platform",
            "any",
            "-d",
        ])
        .arg(wheels.path())
        .args(["tabulate", "attrs"])
        .status()
        .expect("pip runs");
    assert!(fetched.success(), "pip download failed");
    let request = dvm::PackageRequest {
        requirements: vec!["tabulate".into(), "attrs".into()],
        find_links: Some(wheels.path().to_path_buf()),
        locked: None,
    };
    let built_in = std::collections::BTreeMap::new();
    let install = |home: &std::path::Path| {
        dvm::deps::PackageStore::new(home)
            .install("python-lite", "3.12.0", &built_in, &request)
            .expect("installs")
    };
    let mut group = c.benchmark_group("packages");
    group.sample_size(10);
    group.bench_function("cold install", |b| {
        b.iter(|| {
            let home = tempfile::tempdir().expect("temp dir");
            install(home.path())
        })
    });
    let warm = tempfile::tempdir().expect("temp dir");
    install(warm.path());
    group.bench_function("warm install (store hit)", |b| {
        b.iter(|| install(warm.path()))
    });
    group.finish();
}

/// The result cache: a deterministic run answered from the cache against the same run
/// computed (cache off), for python hello and the DataFrame script from the preload
/// snapshot.
fn results(c: &mut Criterion) {
    let dvm = Dvm::new(Config::default()).expect("dvm starts");
    let quiet: Progress = std::sync::Arc::new(|_| {});
    let python = dvm.runtime("python").expect("runtime installs");
    let preloaded = dvm
        .runtime_preloaded("python", &["numpy".into(), "pandas".into()], &quiet)
        .expect("snapshot is made");
    let cached = RunInput {
        deterministic: Some(dvm::Determinism::default()),
        ..RunInput::default()
    };
    let computed = RunInput {
        cache: dvm::results::CacheMode::Off,
        ..cached.clone()
    };
    let mut group = c.benchmark_group("results");
    group.sample_size(20);
    for (label, runtime, name, source) in [
        ("hello", &python, "hello.py", "print(1)"),
        ("dataframe", &preloaded, "df.py", DATAFRAME),
    ] {
        runtime
            .run_script(name, source.as_bytes(), &cached)
            .expect("runs");
        group.bench_function(format!("{label} hit"), |b| {
            b.iter(|| {
                runtime
                    .run_script(name, source.as_bytes(), &cached)
                    .expect("runs")
            })
        });
        group.bench_function(format!("{label} computed"), |b| {
            b.iter(|| {
                runtime
                    .run_script(name, source.as_bytes(), &computed)
                    .expect("runs")
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches, hello, dataframe, levers, workspace, packages, results
);
criterion_main!(benches);
