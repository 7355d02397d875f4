//! Runs hello in one runtime many times in a loop, for profiling the path of a run:
//! `cargo build --release --example hello_loop && perf record -g target/release/examples/hello_loop python`

use std::time::Instant;

fn main() -> Result<(), dvm::Error> {
    let id = std::env::args().nth(1).unwrap_or_else(|| "python".into());
    let runs: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let (name, source) = match id.as_str() {
        "javascript" => ("hello.js", "console.log(1)"),
        _ => ("hello.py", "print(1)"),
    };
    let dvm = dvm::Dvm::new(dvm::Config::default())?;
    let runtime = dvm.runtime(&id)?;
    let input = dvm::RunInput::default();
    for _ in 0..20 {
        runtime.run_script(name, source.as_bytes(), &input)?;
    }
    let started = Instant::now();
    for _ in 0..runs {
        runtime.run_script(name, source.as_bytes(), &input)?;
    }
    let per_run = started.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    println!("{id}: {per_run:.3} ms per run over {runs} runs");
    Ok(())
}
