//! Calls a host tool from guest code in a loop and reports the time per call, in python and
//! in javascript: `cargo run --release --example host_tools [CALLS]` (default 1,000).

use std::sync::Arc;

fn main() -> Result<(), dvm::Error> {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let dvm = dvm::Dvm::new(dvm::Config::default())?;
    let echo = dvm::HostTool::new(
        "echo",
        "Returns its arguments.",
        serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        Ok,
    )?;
    let mut tools = dvm::HostTools::new().with(echo)?;
    tools.max_calls = calls;
    let input = dvm::RunInput {
        tools: Some(Arc::new(tools)),
        ..dvm::RunInput::default()
    };
    let programs = [
        (
            "python",
            "calls.py",
            format!(
                "import time\nfrom dvm_tools import echo\nstart = time.perf_counter()\n\
                 for i in range({calls}):\n    echo(i)\n\
                 print(round((time.perf_counter() - start) / {calls} * 1e6, 1))"
            ),
        ),
        (
            "javascript",
            "calls.mjs",
            format!(
                "import {{ echo }} from 'dvm:tools';\nconst start = performance.now();\n\
                 for (let i = 0; i < {calls}; i++) echo(i);\n\
                 console.log(((performance.now() - start) / {calls} * 1000).toFixed(1));"
            ),
        ),
    ];
    for (runtime, name, code) in programs {
        let outcome = dvm
            .runtime(runtime)?
            .run_script(name, code.as_bytes(), &input)?;
        println!(
            "{runtime}: {calls} host tool calls, {} µs each in the guest's clock; {} recorded, \
             run {:.1} ms, status {}",
            String::from_utf8_lossy(&outcome.stdout).trim(),
            outcome.tool_calls.len(),
            outcome.duration.as_secs_f64() * 1000.0,
            outcome.status.as_str(),
        );
    }
    Ok(())
}
