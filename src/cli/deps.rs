//! `dvm deps`: install, lock, list and clean Python and JavaScript packages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::output::{print_json, progress_display, render_error};
use crate::{Config, Dvm, Error};

#[derive(Debug, clap::Args)]
pub(super) struct DepsInstallArgs {
    /// Requirements: PEP 508 for Python (`tabulate>=0.9`), `name@range` for JavaScript
    /// (`lodash-es@4`).
    specs: Vec<String>,
    /// The runtime to install for (a Python one: wheels; `javascript`: npm packages).
    #[arg(long, value_name = "ID", default_value = "python")]
    runtime: String,
    /// Also read requirements from this requirements.txt.
    #[arg(short = 'r', long, value_name = "FILE")]
    requirements: Option<PathBuf>,
    /// Take wheels from this directory instead of the package index (offline).
    #[arg(long, value_name = "DIR")]
    find_links: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum DepsCommand {
    /// Install packages into the store (a later run with the same set is a store hit).
    Install {
        #[command(flatten)]
        args: DepsInstallArgs,
        /// Write the installed set to FILE; with --locked, install exactly FILE's set.
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Install exactly the --lock FILE's packages, checking every wheel's hash.
        #[arg(long, requires = "lock")]
        locked: bool,
    },
    /// Resolve and install packages and write the lock (name, version, sha256 of each wheel).
    Lock {
        #[command(flatten)]
        args: DepsInstallArgs,
        /// Where to write the lock.
        #[arg(long, value_name = "FILE", required = true)]
        lock: PathBuf,
    },
    /// List the wheels unpacked in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove wheels no remembered install refers to, merged sets and temp files; --all
    /// empties the store.
    Gc {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn deps(command: DepsCommand, config: Config) -> ExitCode {
    let (result, json) = match command {
        DepsCommand::Install { args, lock, locked } => {
            let json = args.json;
            (deps_install(args, lock.as_deref(), locked, config), json)
        }
        DepsCommand::Lock { args, lock } => {
            let json = args.json;
            (deps_install(args, Some(&lock), false, config), json)
        }
        DepsCommand::List { json } => (
            Dvm::new(config).map(|dvm| {
                let home = &dvm.config().home;
                let python = crate::deps::PackageStore::new(home).list();
                let javascript = crate::deps::PackageStore::npm(home).list();
                if json {
                    print_json(&serde_json::json!({ "python": python, "javascript": javascript }));
                    return;
                }
                let mut out = std::io::stdout().lock();
                for (language, packages) in [("python", python), ("javascript", javascript)] {
                    for package in packages {
                        let _ = writeln!(
                            out,
                            "{language:<10} {:<32} {:<12} {} {:>10} bytes",
                            package.name,
                            package.version,
                            &package.sha256[..12.min(package.sha256.len())],
                            package.bytes
                        );
                    }
                }
            }),
            json,
        ),
        DepsCommand::Gc { all, json } => (
            Dvm::new(config).and_then(|dvm| {
                let home = &dvm.config().home;
                let mut removed = crate::deps::PackageStore::new(home).gc(all)?;
                removed.extend(crate::deps::PackageStore::npm(home).gc(all)?);
                if json {
                    print_json(&removed);
                } else {
                    let bytes: u64 = removed.iter().map(|w| w.bytes).sum();
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "removed {} wheels ({bytes} bytes)",
                        removed.len()
                    );
                }
                Ok(())
            }),
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}

fn deps_install(
    args: DepsInstallArgs,
    lock: Option<&Path>,
    locked: bool,
    config: Config,
) -> Result<(), Error> {
    let dvm = Dvm::new(config)?;
    let runtime = dvm.runtime_with_progress(&args.runtime, &progress_display(args.json))?;
    let mut request = crate::PackageRequest {
        requirements: args.specs,
        find_links: args.find_links,
        locked: None,
    };
    if let Some(path) = &args.requirements {
        request
            .requirements
            .extend(crate::deps::read_requirements_path(path)?);
    }
    match (lock, locked) {
        (Some(path), true) => request.locked = Some(crate::deps::Lock::read(path)?),
        _ if request.requirements.is_empty() => {
            return Err(Error::InvalidInput(
                "name the packages to install (e.g. `dvm deps install tabulate`), or give \
                 -r requirements.txt or --lock FILE --locked"
                    .into(),
            ));
        }
        _ => {}
    }
    let packages = runtime.install_packages(&request)?;
    if let (Some(path), false) = (lock, locked) {
        packages.lock.write(path)?;
    }
    if args.json {
        print_json(&packages);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for package in &packages.installed {
        let _ = writeln!(
            out,
            "{} {} ({})",
            package.name,
            package.version,
            if package.from_store {
                "from the store"
            } else {
                "installed"
            }
        );
    }
    for built_in in &packages.built_in {
        let _ = writeln!(out, "{built_in} (built into {})", runtime.id());
    }
    Ok(())
}
