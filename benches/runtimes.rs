//! A fresh sandbox running hello, per catalogue runtime, in process. Uses `$DVM_HOME` (or the
//! platform cache) and installs the runtimes there on first use.

use criterion::{Criterion, criterion_group, criterion_main};
use dvm::{Config, Dvm, RunInput};

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

criterion_group!(benches, hello);
criterion_main!(benches);
