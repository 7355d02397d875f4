//! `dvm bench`: fresh-sandbox latency and throughput per runtime.

use std::io::Write;
use std::process::ExitCode;

use super::output::{progress_display, render_error};
use crate::{Catalog, Config, Dvm};

#[derive(Debug, clap::Args)]
pub(super) struct BenchArgs {
    /// Runtimes to measure [default: every runtime of the catalogue].
    ids: Vec<String>,
    /// In-process runs per runtime (whole-process runs are a fifth of it, 5 to 40).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    runs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn bench(args: BenchArgs, config: Config) -> ExitCode {
    let ids: Vec<String> = if args.ids.is_empty() {
        Catalog::embedded().all_ids()
    } else {
        args.ids
    };
    let home = config.home.clone();
    let result = Dvm::new(config).and_then(|dvm| {
        for id in &ids {
            dvm.runtime_with_progress(id, &progress_display(args.json))?;
        }
        let mut report = crate::bench::measure(&dvm, &ids, args.runs as usize)?;
        if let Some(position) = report
            .evals
            .iter()
            .position(|r| r.how.starts_with("native"))
        {
            let rounds = (args.runs as usize / 40).clamp(1, 10);
            report
                .evals
                .insert(position, serve_evals(&home, rounds, 1)?);
            // One sandbox worker process per core (`dvm serve --processes N`).
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            if cores > 1 {
                report
                    .evals
                    .insert(position + 1, serve_evals(&home, rounds, cores)?);
            }
        }
        Ok(report)
    });
    match result {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string(&report).unwrap_or_default()
            } else {
                report.render()
            };
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Err(error) => render_error(&error, args.json),
    }
}

/// The eval suite through `dvm serve`: a server of this executable on a loopback port (with
/// `processes` sandbox worker processes when more than one), one HTTP client per thread
/// sending each program to `POST /execute`.
fn serve_evals(
    home: &std::path::Path,
    rounds: usize,
    processes: usize,
) -> Result<crate::bench::evals::EvalRow, crate::Error> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let io = |action: &str| {
        let action = action.to_string();
        move |source| crate::error::HostError::Io { action, source }
    };
    let exe = std::env::current_exe().map_err(io("find the dvm executable"))?;
    let mut server = Command::new(exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--no-warm"])
        .args(["--processes", &processes.to_string()])
        .env("DVM_HOME", home)
        .env("DVM_WARM_BUILDS", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("start dvm serve"))?;
    /// Stops the server however the measurement ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = server.stderr.take();
    let server = Stop(server);
    let mut address = None;
    if let Some(stderr) = stderr {
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.map_err(io("read dvm serve's output"))?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                address = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
    }
    let address = address.ok_or_else(|| {
        crate::error::HostError::Guest("dvm serve did not say where it listens".into())
    })?;
    let url = format!("{address}/execute");
    // reqwest takes its TLS from rustls with ring; another part of the process may have
    // installed a provider already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let programs = crate::bench::evals::suite();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let label = match processes {
        1 => "dvm serve, python".to_string(),
        n => format!("dvm serve --processes {n}, python"),
    };
    let row = crate::bench::evals::throughput(&label, &programs, rounds, threads, &|program| {
        thread_local! {
            static CLIENT: Option<reqwest::blocking::Client> =
                reqwest::blocking::Client::builder().build().ok();
        }
        let body = serde_json::json!({"runtime": "python", "code": program.source});
        let reply = CLIENT
            .with(|client| -> Result<serde_json::Value, String> {
                let client = client.as_ref().ok_or("cannot make an HTTP client")?;
                let send = || -> Result<serde_json::Value, reqwest::Error> {
                    client
                        .post(&url)
                        .json(&body)
                        .send()?
                        .error_for_status()?
                        .json()
                };
                send().map_err(|e| e.to_string())
            })
            .map_err(|e| crate::error::HostError::Guest(format!("POST {url}: {e}")))?;
        Ok(reply["status"] == "ok" && reply["exit_code"] == 0)
    })?;
    drop(server);
    Ok(row)
}
