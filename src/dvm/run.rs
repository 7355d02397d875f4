//! Running in a workspace: the mounts every sandbox has, grants, output files and the
//! result cache.

use super::Dvm;
use crate::deps;
use crate::error::Error;
use crate::fs::{Mount, Scratch, WORKSPACE};
use crate::outcome::Outcome;
use crate::sandbox::RunInput;
use crate::workspace::Workspace;

/// The mounts every sandbox has: a private `/tmp` and the workspace, at `/workspace` and at
/// `/`. WASI has no working directory: wasi-libc starts every guest at `/`, so mounting the
/// workspace there as well makes relative paths and `os.getcwd()`-based paths land in it,
/// while longer mounts (the runtime's own, grants) still win.
pub(super) fn sandbox_mounts(scratch: &Scratch) -> Vec<Mount> {
    vec![
        Mount::read_write(scratch.tmp(), "/tmp"),
        Mount::read_write(scratch.workspace(), WORKSPACE),
        Mount::read_write(scratch.workspace(), "/"),
    ]
}

/// Guest paths a grant may not take.
const RESERVED: &[&str] = &[
    WORKSPACE,
    "/tmp",
    "/usr",
    "/usr/local",
    "/usr/local/lib",
    "/packages",
    deps::GUEST_SITE,
    deps::npm::GUEST_NODE_MODULES,
];

/// Runs in the input's workspace (or a fresh one, removed afterwards) with `script` written
/// into it first, passes `run` the grants' mounts, and reports the regular files the run
/// created or changed there. A deterministic run without grants is looked up in the result
/// cache under `identity` plus everything else it depends on, and stored after it ran.
pub(super) fn in_workspace(
    dvm: &Dvm,
    input: &RunInput,
    script: Option<(&str, &[u8])>,
    identity: crate::results::KeyBuilder,
    run: impl FnOnce(&Workspace, Vec<Mount>) -> Result<Outcome, Error>,
) -> Result<Outcome, Error> {
    input.limits.validate()?;
    if input.deterministic.is_some()
        && input
            .net
            .as_ref()
            .is_some_and(|net| net.replay_hash().is_none())
    {
        return Err(Error::InvalidInput(
            "a deterministic run cannot use the network: what a host answers is not part of \
             the run, so it would not repeat. Drop the determinism (--seed/--deterministic), \
             the allowed hosts, or replay a recording of the exchanges (--net-replay)"
                .into(),
        ));
    }
    let grants = input
        .grants
        .iter()
        .map(|grant| {
            let grant = grant.validated(RESERVED)?;
            Ok(Mount {
                host: grant.host,
                guest: grant.guest,
                writable: grant.writable,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let workspace = match &input.workspace {
        Some(workspace) => workspace.clone(),
        None => Workspace::new()?,
    };
    if let Some((name, source)) = script {
        workspace.write(name, source)?;
    }
    let results = &dvm.inner.results;
    let key = match (input.deterministic, &input.cache) {
        // A run with host tools or the network depends on what they answer: never cached,
        // unless it replays recorded exchanges (their hash is in the key).
        (Some(determinism), crate::results::CacheMode::Auto)
            if grants.is_empty()
                && input.tools.is_none()
                && input.net.as_ref().is_none_or(|net| net.repeats()) =>
        {
            Some(result_key(
                identity,
                input,
                script,
                &workspace,
                determinism,
            )?)
        }
        _ => None,
    };
    if let Some(key) = &key
        && let Some(hit) = results.get(key)
    {
        for (file, bytes) in &hit.files {
            workspace.write(&file.path, bytes)?;
        }
        return Ok(hit.outcome);
    }
    let before = workspace.state()?;
    let mut outcome = run(&workspace, grants)?;
    outcome.files = workspace.changes(&before, input.limits.disk_bytes)?;
    if let Some(key) = key {
        outcome.cache = crate::results::CacheStatus::Miss;
        // Output files are read whole into memory to be stored: a run whose hashed outputs
        // are over the bound is not stored (a later run recomputes it).
        let kept: u64 = outcome
            .files
            .iter()
            .filter(|file| file.blake3.is_some())
            .fold(0, |total, file| total.saturating_add(file.size));
        if kept > MAX_CACHED_OUTPUT_BYTES {
            tracing::info!(
                "result cache: not storing this run: its output files are {kept} bytes, over \
                 the {MAX_CACHED_OUTPUT_BYTES}-byte bound for one entry"
            );
        } else if crate::results::storable(&outcome) {
            let read =
                |file: &crate::OutputFile| workspace.read(&file.path, MAX_CACHED_OUTPUT_BYTES).ok();
            // A cache that cannot be written costs only a later recomputation.
            if let Err(e) = results.put(&key, &outcome, read) {
                tracing::warn!("{e}");
            }
        }
        outcome.cache_key = Some(key);
    }
    Ok(outcome)
}

/// Bytes of output files one result-cache entry may hold (they pass through memory).
const MAX_CACHED_OUTPUT_BYTES: u64 = 64 << 20;

/// The result-cache key of a run: `identity`, then the script, the workspace before the
/// run, the packages, argv, environment, stdin, limits and seed.
fn result_key(
    mut key: crate::results::KeyBuilder,
    input: &RunInput,
    script: Option<(&str, &[u8])>,
    workspace: &Workspace,
    determinism: crate::Determinism,
) -> Result<String, Error> {
    if let Some((name, source)) = script {
        key.str(10, name).bytes(11, source);
    }
    key.str(12, &workspace.tree_root()?);
    let lock = match &input.packages {
        Some(packages) => serde_json::to_string(&packages.lock).map_err(|source| {
            crate::error::HostError::Encode {
                what: "the package lock",
                source,
            }
        })?,
        None => String::new(),
    };
    key.str(13, &lock).strings(14, &input.args);
    key.u64(15, input.env.len() as u64);
    for (name, value) in &input.env {
        key.str(16, name).str(17, value);
    }
    key.bytes(18, &input.stdin)
        .limits(&input.limits)
        .u64(50, determinism.seed);
    if let Some(net) = &input.net {
        // Only a replaying policy gets here; what it answers is its recording's.
        key.str(60, net.replay_hash().unwrap_or_default());
        let allowed: Vec<String> = net.allowed().iter().map(ToString::to_string).collect();
        key.strings(61, &allowed);
    }
    Ok(key.finish())
}
