//! Fresh sandboxes per catalogue runtime, in process: hello in each runtime, and a small
//! pandas script cold and from the `--preload numpy,pandas` snapshot. Uses `$DVM_HOME` (or
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

criterion_group!(benches, hello, dataframe);
criterion_main!(benches);
