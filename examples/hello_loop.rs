//! Runs a script in one runtime many times in a loop, for profiling the path of a run:
//! `cargo build --release --example hello_loop && perf record -g target/release/examples/hello_loop python`
//! Arguments: RUNTIME [RUNS] [PRELOAD,MODULES] [SCRIPT].

use std::time::Instant;

fn main() -> Result<(), dvm::Error> {
    let mut args = std::env::args().skip(1);
    let id = args.next().unwrap_or_else(|| "python".into());
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(300);
    let preload: Vec<String> = args
        .next()
        .map(|list| {
            list.split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let (name, default_source) = match id.as_str() {
        "javascript" => ("hello.js", "console.log(1)"),
        _ => ("hello.py", "print(1)"),
    };
    let source = args.next().unwrap_or_else(|| default_source.to_string());
    let dvm = dvm::Dvm::new(dvm::Config::default())?;
    let quiet: dvm::Progress = std::sync::Arc::new(|_| {});
    let runtime = dvm.runtime_preloaded(&id, &preload, &quiet)?;
    let input = dvm::RunInput::default();
    for _ in 0..10 {
        runtime.run_script(name, source.as_bytes(), &input)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        runtime.run_script(name, source.as_bytes(), &input)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!("{id}: p50 {:.3} ms over {runs} runs", times[runs / 2]);
    Ok(())
}
