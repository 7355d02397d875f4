//! `dvm worker`: pull runs from NATS JetStream and run them here.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::common::{async_runtime, shutdown_signal};
use super::nats::{NatsArgs, nats_dvm};
use super::output::{progress_display, render_error};
use crate::profile::{parse_duration, parse_size as parse_bytes};
use crate::{Config, Error, Limits};

#[derive(Debug, clap::Args)]
pub(super) struct WorkerArgs {
    /// The NATS server(s), e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL", required = true)]
    nats: String,
    /// Runs at once [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: Option<u64>,
    /// This worker's name in outcomes, logs and metrics [default: host name and process id].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// After Ctrl-C or SIGTERM, how long in-flight runs may finish before they are handed
    /// back to the queue.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    drain_grace: Duration,
    /// Longest deadline a request may ask for; longer ones are cut to it [default: the
    /// default deadline].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_timeout: Option<Duration>,
    /// Largest memory cap a request may ask for [default: the default memory cap].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// Largest disk quota a request may ask for [default: the default disk quota].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_disk: Option<u64>,
    /// Largest stdout and stderr caps a request may ask for [default: the default caps].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_output: Option<u64>,
    /// Most fuel a request may ask for; requests without a fuel limit get this one [default:
    /// no fuel limit].
    #[arg(long, value_name = "N")]
    max_fuel: Option<u64>,
    #[command(flatten)]
    queue: NatsArgs,
}

impl WorkerArgs {
    /// The most a request may ask for: the flags, else the defaults.
    fn maxima(&self) -> Limits {
        let defaults = Limits::default();
        let output = self.max_output;
        Limits {
            deadline: self.max_timeout.unwrap_or(defaults.deadline),
            memory_bytes: self.max_memory.unwrap_or(defaults.memory_bytes),
            disk_bytes: self.max_disk.unwrap_or(defaults.disk_bytes),
            stdout_bytes: output.unwrap_or(defaults.stdout_bytes),
            stderr_bytes: output.unwrap_or(defaults.stderr_bytes),
            fuel: self.max_fuel,
            ..defaults
        }
    }
}

pub(super) fn worker(args: WorkerArgs, dvm_config: Config) -> ExitCode {
    let result = (|| -> Result<(), Error> {
        let runtime = async_runtime()?;
        let nats = args.queue.config(&args.nats, &dvm_config)?;
        let max = args.maxima();
        max.validate()?;
        let name = args.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        let concurrency = args.concurrency.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            |n| n as usize,
        );
        runtime.block_on(async move {
            let dvm = nats_dvm(dvm_config, &nats, args.queue.local_cache).await?;
            {
                let dvm = dvm.clone();
                tokio::task::spawn_blocking(move || {
                    for id in ["python", "javascript"] {
                        dvm.runtime_with_progress(id, &progress_display(false))?;
                    }
                    Ok::<(), Error>(())
                })
                .await
                .map_err(|e| crate::error::HostError::Task {
                    what: "warming up",
                    source: Box::new(e),
                })??;
            }
            let stats = std::sync::Arc::new(crate::nats::WorkerStats::default());
            if let Some(addr) = args.metrics {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::InvalidInput(format!("cannot listen on {addr}: {e}")))?;
                let (stats, name) = (stats.clone(), name.clone());
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let text = stats.render(&name);
                        async move { text }
                    }),
                );
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
            note!(
                "dvm worker {name}: pulling runs from {} ({concurrency} at once)",
                args.nats
            );
            let config = crate::nats::WorkerConfig {
                nats,
                concurrency,
                name: name.clone(),
                drain_grace: args.drain_grace,
                max,
            };
            crate::nats::work(dvm, config, stats, shutdown_signal()).await?;
            note!("dvm worker {name}: drained");
            Ok(())
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, false),
    }
}
