//! `dvm cache`: inspect and manage the execution result cache and its signing keys.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::output::{print_json, render_error};
use crate::profile::parse_size as parse_bytes;
use crate::{Config, Error};

#[derive(Debug, Subcommand)]
pub(super) enum CacheCommand {
    /// Entries, blobs and bytes in the cache.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Every stored run, most recently used first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One stored outcome (checked) as JSON.
    Show { key: crate::results::CacheKey },
    /// Remove one stored run.
    Rm { key: crate::results::CacheKey },
    /// Remove every stored run.
    Clear,
    /// Write stored runs (every one when no KEY is given) with their output files to a
    /// .tar.zst bundle.
    Export {
        keys: Vec<crate::results::CacheKey>,
        #[arg(long, value_name = "FILE", required = true)]
        to: PathBuf,
    },
    /// Check and store the runs of a bundle; entries not signed by a trusted key, changed
    /// since, or naming output files that are missing, changed or outside the workspace are
    /// rejected.
    Import {
        bundle: PathBuf,
        /// Also accept entries signed by this public key (repeatable).
        #[arg(long = "trust", value_name = "PUBKEY")]
        trust: Vec<crate::results::PublicKey>,
    },
    /// Print the public key this home signs its entries with (give it to whoever should
    /// trust them), or the public key of a key file.
    Key {
        /// A key file (e.g. a deployment's --cache-key-file) instead of the home's key.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Make a new signing key file (mode 0600) for a deployment's nodes to share and print
    /// its public key.
    Keygen { file: PathBuf },
    /// Trust entries signed by PUBKEY from now on (recorded in $DVM_HOME/keys/trusted).
    Trust { key: crate::results::PublicKey },
    /// Evict least recently used runs down to the size bound and drop unreferenced blobs.
    Gc {
        /// The bound [default: 1GiB].
        #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
        cache_size: Option<u64>,
    },
}

pub(super) fn cache(command: CacheCommand, config: Config) -> ExitCode {
    let bound = match &command {
        CacheCommand::Gc {
            cache_size: Some(size),
        } => *size,
        _ => config.result_cache_bytes,
    };
    let results = crate::results::ResultCache::of_config(&config, bound);
    let json = matches!(
        command,
        CacheCommand::Stats { json: true } | CacheCommand::Ls { json: true }
    );
    let mut out = std::io::stdout().lock();
    let result = match command {
        CacheCommand::Stats { json } => results.stats().map(|stats| {
            if json {
                print_json(&stats);
            } else {
                let _ = writeln!(
                    out,
                    "{} entries ({} bytes), {} output blobs ({} bytes), bound {} bytes",
                    stats.entries,
                    stats.entry_bytes,
                    stats.blobs,
                    stats.blob_bytes,
                    stats.max_bytes
                );
            }
        }),
        CacheCommand::Ls { json } => results.list().map(|entries| {
            if json {
                print_json(&entries);
                return;
            }
            for entry in entries {
                let status = entry.status.map_or("damaged", |s| s.as_str());
                let _ = writeln!(
                    out,
                    "{}  {:<8} {:>3} files {:>10} bytes",
                    entry.key, status, entry.files, entry.bytes
                );
            }
        }),
        CacheCommand::Show { key } => results.show(&key).map(|value| print_json(&value)),
        CacheCommand::Key { file } => match file {
            Some(file) => crate::results::SigningKey::load(&file).map(|key| key.public()),
            None => results.keys().map(|keys| keys.signer.public()),
        }
        .map(|key| {
            let _ = writeln!(out, "{key}");
        }),
        CacheCommand::Keygen { file } => crate::results::SigningKey::create(&file).map(|key| {
            let _ = writeln!(out, "{}", key.public());
        }),
        CacheCommand::Trust { key } => crate::results::signing::trust_in_home(&config.home, key)
            .map(|added| {
                let _ = match added {
                    true => writeln!(out, "trusted {key}"),
                    false => writeln!(out, "{key} was trusted already"),
                };
            }),
        CacheCommand::Rm { key } => results.remove(&key).and_then(|removed| {
            if removed {
                let _ = writeln!(out, "removed {key}");
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "no cached result has the key {key}; `dvm cache ls` lists them"
                )))
            }
        }),
        CacheCommand::Clear => results.clear().map(|count| {
            let _ = writeln!(out, "removed {count} entries");
        }),
        CacheCommand::Export { keys, to } => results.export(&keys, &to).map(|report| {
            let _ = writeln!(
                out,
                "exported {} entries and {} output files to {} ({} bytes)",
                report.entries,
                report.blobs,
                to.display(),
                report.bytes
            );
        }),
        CacheCommand::Import { bundle, trust } => {
            results.import(&bundle, &trust).and_then(|report| {
                let _ = writeln!(out, "imported {} entries", report.imported);
                if report.rejected.is_empty() {
                    return Ok(());
                }
                Err(Error::InvalidInput(format!(
                    "rejected {} entries of {}:\n  {}",
                    report.rejected.len(),
                    bundle.display(),
                    report.rejected.join("\n  ")
                )))
            })
        }
        CacheCommand::Gc { .. } => results.gc(bound).map(|evicted| {
            let _ = writeln!(out, "evicted {evicted} entries");
        }),
    };
    drop(out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => render_error(&error, json),
    }
}
