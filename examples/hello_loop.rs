//! Runs a script in one runtime many times in a loop, for profiling the path of a run:
//! `cargo build --release --example hello_loop && perf record -g target/release/examples/hello_loop python`
//! Arguments: RUNTIME [RUNS] [PRELOAD,MODULES] [SCRIPT]. `THREADS=N` runs the loop on N
//! threads at once and also prints the runs per second of all of them together.
//! `KEEP_RESIDENT_MIB=N` and `FILL_GAPS=0` change the pool's slot reset.

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
    let mut config = dvm::Config::default();
    // `KEEP_RESIDENT_MIB=N`: bytes of each pool slot reset in place (for measuring the lever).
    if let (Some(pool), Some(mib)) = (
        config.pool.as_mut(),
        std::env::var("KEEP_RESIDENT_MIB")
            .ok()
            .and_then(|n| n.parse::<usize>().ok()),
    ) {
        pool.keep_resident_bytes = mib << 20;
    }
    // `FILL_GAPS=0`: leave wasmtime's slot reset as it is (for measuring the lever).
    if let (Some(pool), Ok("0")) = (config.pool.as_mut(), std::env::var("FILL_GAPS").as_deref()) {
        pool.fill_resident_gaps = false;
    }
    let dvm = dvm::Dvm::new(config)?;
    let quiet: dvm::Progress = std::sync::Arc::new(|_| {});
    let runtime = dvm.runtime_preloaded(&id, &preload, &quiet)?;
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let input = dvm::RunInput::default();
    for _ in 0..10 {
        runtime.run_script(name, source.as_bytes(), &input)?;
    }
    let started_all = Instant::now();
    let mut times = std::thread::scope(|scope| {
        let loops: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut times = Vec::with_capacity(runs);
                    for _ in 0..runs {
                        let started = Instant::now();
                        runtime.run_script(name, source.as_bytes(), &input)?;
                        times.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok::<_, dvm::Error>(times)
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in loops {
            all.extend(handle.join().expect("a loop thread")?);
        }
        Ok::<_, dvm::Error>(all)
    })?;
    let elapsed = started_all.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!(
        "{id}: p50 {:.3} ms over {} runs on {threads} thread(s), {:.0} runs/s",
        times[times.len() / 2],
        times.len(),
        times.len() as f64 / elapsed
    );
    Ok(())
}
