//! `dvm snapshots`: the session snapshots under $DVM_HOME, and their gc.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::output::{print_json, render_error};
use crate::profile::parse_duration;
use crate::{Config, Error};

#[derive(Debug, Subcommand)]
pub(super) enum SnapshotsCommand {
    /// Describe one session snapshot (checked: signed by a trusted key) as JSON.
    Show { id: String },
    /// Remove one session snapshot (its blobs go at the next gc if nothing else names them).
    Rm { id: String },
    /// Remove session snapshots older than --older-than (none without it), then every blob
    /// of the content store that no snapshot, installed runtime or warm runtime names
    /// (blobs younger than an hour stay: a write may be in progress).
    Gc {
        /// e.g. `7d`, `12h`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn snapshots(command: SnapshotsCommand, config: Config) -> ExitCode {
    let json = matches!(command, SnapshotsCommand::Gc { json: true, .. });
    let mut out = std::io::stdout().lock();
    let result = match command {
        SnapshotsCommand::Show { id } => {
            crate::session_snapshot_info(&config, &id).and_then(|info| match info {
                Some(info) => {
                    print_json(&info);
                    Ok(())
                }
                None => Err(Error::InvalidInput(format!("no session snapshot `{id}`"))),
            })
        }
        SnapshotsCommand::Rm { id } => {
            crate::delete_session_snapshot(&config.home, &id).and_then(|removed| match removed {
                true => Ok(()),
                false => Err(Error::InvalidInput(format!("no session snapshot `{id}`"))),
            })
        }
        SnapshotsCommand::Gc { older_than, json } => {
            crate::gc_session_snapshots(&config.home, older_than).map(|report| {
                if json {
                    print_json(&report);
                    return;
                }
                let _ = writeln!(
                    out,
                    "{} snapshots removed, {} blobs removed ({} bytes)",
                    report.snapshots_removed, report.blobs_removed, report.bytes_freed
                );
                for path in &report.unreadable {
                    let _ = writeln!(
                        out,
                        "kept every blob: {path} could not be read (fix or remove it)"
                    );
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}
