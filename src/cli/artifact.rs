//! `dvm artifact`: store, version and fetch code artifacts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::output::{print_json, render_error};
use crate::{Config, Dvm};

#[derive(Debug, Subcommand)]
pub(super) enum ArtifactCommand {
    /// Store files and directories as a new version of NAME; a tree identical to the latest
    /// version keeps that version.
    Put {
        name: String,
        /// Files land under their own names, directories' contents at the artifact's root
        /// (as `tar -C DIR .` would store them).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the stored names with their latest version.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List the versions of NAME.
    Versions {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Write NAME[@VERSION] (a number or a root prefix of 8+ hex digits) into DIR, checking
    /// every file's hash.
    Get {
        spec: String,
        dir: PathBuf,
        /// Replace files that already exist in DIR.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove NAME@VERSION, or every version of NAME (`dvm artifact gc` frees the space).
    Rm {
        spec: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete blobs and manifests no stored version refers to.
    Gc {
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn artifact(command: ArtifactCommand, config: Config) -> ExitCode {
    let store = match Dvm::new(config) {
        Ok(dvm) => dvm.artifacts(),
        Err(error) => return render_error(&error, false),
    };
    let short = |root: &str| root.chars().take(12).collect::<String>();
    let mut out = std::io::stdout().lock();
    let (result, json) = match command {
        ArtifactCommand::Put { name, paths, json } => (
            store.put(&name, &paths).map(|version| {
                if json {
                    print_json(&version);
                } else {
                    let _ = writeln!(
                        out,
                        "{name}@{} {} ({} files, {} bytes)",
                        version.version,
                        short(&version.root),
                        version.files,
                        version.bytes
                    );
                }
            }),
            json,
        ),
        ArtifactCommand::List { json } => (
            store.list().map(|names| {
                if json {
                    print_json(&names);
                    return;
                }
                for artifact in names {
                    let _ = writeln!(
                        out,
                        "{:<32} @{:<6} {} {:>4} versions {:>12} bytes",
                        artifact.name,
                        artifact.latest_version,
                        short(&artifact.latest_root),
                        artifact.version_count,
                        artifact.bytes
                    );
                }
            }),
            json,
        ),
        ArtifactCommand::Versions { name, json } => (
            store.versions(&name).map(|versions| {
                if json {
                    print_json(&versions);
                    return;
                }
                for version in versions {
                    let _ = writeln!(
                        out,
                        "{name}@{:<6} {} {:>6} files {:>12} bytes  created {}",
                        version.version,
                        short(&version.root),
                        version.files,
                        version.bytes,
                        version.created_rfc3339()
                    );
                }
            }),
            json,
        ),
        ArtifactCommand::Get {
            spec,
            dir,
            force,
            json,
        } => {
            let overwrite = if force {
                crate::artifact::Overwrite::Replace
            } else {
                crate::artifact::Overwrite::Refuse
            };
            (
                store.get(&spec, &dir, overwrite).map(|resolved| {
                    if json {
                        print_json(&resolved);
                    } else {
                        let _ = writeln!(out, "{resolved} written to {}", dir.display());
                    }
                }),
                json,
            )
        }
        ArtifactCommand::Rm { spec, json } => (
            store.rm(&spec).map(|removed| {
                if json {
                    print_json(&removed);
                    return;
                }
                for version in removed {
                    let _ = writeln!(out, "removed version {}", version.version);
                }
            }),
            json,
        ),
        ArtifactCommand::Gc { json } => (
            store.gc().map(|report| {
                if json {
                    print_json(&report);
                } else {
                    let _ = writeln!(
                        out,
                        "removed {} blobs and {} manifests, freed {} bytes",
                        report.blobs_removed, report.manifests_removed, report.bytes_freed
                    );
                }
            }),
            json,
        ),
    };
    drop(out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}
