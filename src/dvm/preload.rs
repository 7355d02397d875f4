//! Preloaded runtimes: snapshots with modules already imported, the default standard-library
//! snapshot every `python` sandbox starts from, and the warm start a job gets from its imports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Dvm, Runtime, lock};
use crate::engine::WarmBuilds;
use crate::error::Error;
use crate::fs::Scratch;
use crate::guest::catalog::{Role, RuntimeSpec};
use crate::guest::install::{Installed, Progress};
use crate::guest::warm::{self, Published};
use crate::guest::{self, Abi, snapshot};
use crate::sandbox::{self, RunInput};
use crate::store::BlobStore;

/// A script's set of library imports is built into a snapshot once it has been seen this
/// many times (and again every [`RETRY_EVERY`] sightings while none exists).
const BUILD_AFTER_SIGHTINGS: u64 = 2;
const RETRY_EVERY: u64 = 16;
/// Sightings stop being counted past this (the file stays tiny).
const MAX_SIGHTINGS: u64 = 1024;

impl Dvm {
    /// The runtime `id` started from a snapshot with `modules` (and the standard-library set
    /// every `python` sandbox has) already imported, made on first use (by instrumenting the
    /// runtime's module with wasmtime-wizer, importing the modules in a sandbox laid out like
    /// every run, and snapshotting it) and kept content-addressed under `$DVM_HOME`. Sandboxes
    /// from it skip the imports. Only `python` supports it; no modules means
    /// [`Dvm::runtime_with_progress`].
    pub fn runtime_preloaded(
        &self,
        id: &str,
        modules: &[String],
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        if modules.is_empty() {
            return self.runtime_with_progress(id, progress);
        }
        let spec = Self::spec(id)?;
        if !spec.capabilities().preload {
            return Err(Error::InvalidInput(format!(
                "--preload needs the python runtime; {id} cannot be snapshotted"
            )));
        }
        let mut expanded = Vec::new();
        for module in modules {
            match warm::named_group(module) {
                Some(group) => expanded.extend(group.iter().map(|m| m.to_string())),
                None => expanded.push(module.clone()),
            }
        }
        if let Some(bad) = expanded.iter().find(|m| !snapshot::valid_module_name(m)) {
            return Err(Error::InvalidInput(format!(
                "`{bad}` is not a Python module name (letters, digits, `_`, dotted)"
            )));
        }
        self.snapshot_runtime(id, &warm::with_stdlib(&expanded), progress)
    }

    /// The runtime `id` without any snapshot of dvm's: the catalogue's module as installed
    /// (`--no-preload`). Runs behave the same; they only start slower.
    pub fn runtime_cold(&self, id: &str, progress: &Progress) -> Result<Runtime, Error> {
        let label = cold_label(id);
        if let Some(runtime) = lock(&self.inner.runtimes).get(&label) {
            return Ok(runtime.clone());
        }
        let (spec, installed, _) = self.installed(id, progress)?;
        self.open_runtime(spec, installed, &label, progress)
    }

    /// The runtime a job runs in when it names no preload: for `python`, the published
    /// snapshot holding most of the libraries the script imports (read from its text), else
    /// the default one. A set of imports with no snapshot of its own is counted and, once
    /// seen repeatedly, built in the background as [`crate::Config::warm_builds`] says.
    fn runtime_for_script(&self, default: Runtime, source: &[u8], memory_limit: u64) -> Runtime {
        if !default.supports_preload() {
            return default;
        }
        let libraries = warm::library_imports(source);
        if libraries.is_empty() {
            return default;
        }
        let base = default.base.to_hex().to_string();
        let listing = self.listing();
        let chosen = warm::pick(&listing, &base, &libraries, memory_limit)
            .filter(|published| !published.libraries().is_empty())
            .and_then(|published| self.open_published(&default, published));
        let wanted = warm::with_stdlib(&libraries);
        let exact = chosen
            .as_ref()
            .is_some_and(|runtime| runtime.warm.as_deref() == Some(wanted.as_slice()));
        if !exact {
            self.saw(
                default.id(),
                &default.base,
                &libraries,
                &wanted,
                BUILD_AFTER_SIGHTINGS,
            );
        }
        chosen.unwrap_or(default)
    }

    /// Opens the default runtime of a preload-capable spec: its standard-library snapshot
    /// when one is published (made now when `make` is set, e.g. right after installing),
    /// else `None`.
    pub(super) fn open_default_snapshot(
        &self,
        spec: &'static RuntimeSpec,
        installed: &Installed,
        make: bool,
        progress: &Progress,
    ) -> Option<Runtime> {
        let base = base_digest(spec, installed).ok()?;
        let modules = warm::with_stdlib(&[]);
        let listing = self.listing();
        let hex = base.to_hex().to_string();
        if let Some(published) = listing
            .iter()
            .find(|p| p.base == hex && p.modules == modules)
            && let Some(runtime) = self.open_published_spec(spec, installed, base, published)
        {
            return Some(runtime);
        }
        if make {
            return match self.snapshot_runtime(&spec.id, &modules, progress) {
                Ok(runtime) => Some(runtime),
                Err(e) => {
                    tracing::warn!(
                        runtime = %spec.id,
                        "the standard-library snapshot could not be made ({e}); sandboxes start cold"
                    );
                    None
                }
            };
        }
        // An install made before this dvm had the snapshot: build it once, in the background
        // (counted once per process: a cold default is looked at again on every open).
        if lock(&self.inner.default_requested).insert(spec.id.clone()) {
            self.saw(&spec.id, &base, &[], &modules, 1);
        }
        None
    }

    /// The installed spec of `id` (installing it when missing): whether it was just installed.
    pub(super) fn installed(
        &self,
        id: &str,
        progress: &Progress,
    ) -> Result<(&'static RuntimeSpec, Installed, bool), Error> {
        let spec = Self::spec(id)?;
        Ok(match self.inner.installer.installed(spec) {
            Some(installed) => (spec, installed, false),
            None => (
                spec,
                self.inner.installer.install(
                    spec,
                    &crate::guest::install::PackageSource::Fetch,
                    false,
                    progress,
                )?,
                true,
            ),
        })
    }

    fn listing_dir(&self) -> PathBuf {
        crate::home::snapshots(&self.inner.config.home).join("sets")
    }

    /// The published snapshots, read again only when the listing directory changed (a
    /// publish renames a new entry into it), so a run pays one `stat` for it.
    fn listing(&self) -> Arc<Vec<Published>> {
        let dir = self.listing_dir();
        let Ok(modified) = std::fs::metadata(&dir).and_then(|m| m.modified()) else {
            return Arc::default();
        };
        if let Some((seen, listing)) = lock(&self.inner.warm_listing).as_ref()
            && *seen == modified
        {
            return listing.clone();
        }
        let listing = Arc::new(warm::read_listing(&dir));
        *lock(&self.inner.warm_listing) = Some((modified, listing.clone()));
        listing
    }

    /// Opens a published snapshot of `default`'s runtime if its compiled module is at hand
    /// (never compiling: a run does not wait for that).
    fn open_published(&self, default: &Runtime, published: &Published) -> Option<Runtime> {
        self.open_published_spec(default.spec, &default.installed, default.base, published)
    }

    fn open_published_spec(
        &self,
        spec: &'static RuntimeSpec,
        installed: &Installed,
        base: blake3::Hash,
        published: &Published,
    ) -> Option<Runtime> {
        let key = snapshot::key(&base, &published.modules);
        if let Some(runtime) = lock(&self.inner.runtimes).get(&label_of(&spec.id, &key)) {
            return Some(runtime.clone());
        }
        let digest = self.recorded_snapshot(&key)?;
        if !self.inner.modules.contains(&digest)
            && !lock(&self.inner.loaded).contains_key(digest.as_bytes())
        {
            return None;
        }
        self.open_snapshot(spec, installed, base, &published.modules, digest, &|| {})
            .ok()
    }

    /// The snapshot of `id` with exactly `modules` imported: made (and compiled) now when
    /// missing, then published in the listing.
    fn snapshot_runtime(
        &self,
        id: &str,
        modules: &[String],
        progress: &Progress,
    ) -> Result<Runtime, Error> {
        let (spec, installed, _) = self.installed(id, progress)?;
        let base = base_digest(spec, &installed)?;
        let key = snapshot::key(&base, modules);
        if let Some(runtime) = lock(&self.inner.runtimes).get(&label_of(id, &key)) {
            return Ok(runtime.clone());
        }
        let dir = crate::home::snapshots(&self.inner.config.home);
        let digest = match self.recorded_snapshot(&key) {
            Some(digest) => digest,
            None => {
                let _lock = crate::home::lock(
                    &dir,
                    key.to_hex().as_str(),
                    crate::home::LockMode::Exclusive,
                )
                .map_err(|e| Error::Home {
                    path: e.path,
                    source: e.source,
                })?;
                match self.recorded_snapshot(&key) {
                    Some(digest) => digest,
                    None => self.build_snapshot(id, modules, &key, progress)?,
                }
            }
        };
        let bytes = BlobStore::new(&self.inner.config.home)
            .path(&digest)
            .metadata()
            .map_or(0, |m| m.len());
        let on_compile = || {
            progress(&crate::InstallStep::Compiling {
                runtime: format!("{id} snapshot"),
                bytes,
            })
        };
        let runtime = self.open_snapshot(spec, &installed, base, modules, digest, &on_compile)?;
        self.publish_listing(&key, &runtime);
        Ok(runtime)
    }

    /// The blob a snapshot key was recorded as, when the blob is there.
    fn recorded_snapshot(&self, key: &blake3::Hash) -> Option<blake3::Hash> {
        let index = crate::home::snapshots(&self.inner.config.home).join(key.to_hex().as_str());
        let blobs = BlobStore::new(&self.inner.config.home);
        crate::fs::read_regular_file(&index, 128)
            .ok()
            .and_then(Result::ok)
            .and_then(|bytes| blake3::Hash::from_hex(String::from_utf8_lossy(&bytes).trim()).ok())
            .filter(|digest| blobs.path(digest).is_file())
    }

    /// Makes the snapshot, stores it by content and records it under its key.
    fn build_snapshot(
        &self,
        id: &str,
        modules: &[String],
        key: &blake3::Hash,
        progress: &Progress,
    ) -> Result<blake3::Hash, Error> {
        let base = self.runtime_cold(id, progress)?;
        // Fail fast, before minutes of snapshotting, if an import fails.
        let probe = base.run_script(
            "preload.py",
            snapshot::preload_code(modules).as_bytes(),
            &RunInput::default(),
        )?;
        if probe.status != crate::Status::Ok {
            return Err(Error::InvalidInput(format!(
                "cannot preload {}:\n{}",
                warm::libraries_of(modules).join(", "),
                String::from_utf8_lossy(&probe.stderr).trim_end()
            )));
        }
        progress(&crate::InstallStep::Snapshotting {
            runtime: id.to_string(),
            modules: modules.to_vec(),
        });
        let wasm = self.make_snapshot(&base, modules)?;
        let dir = crate::home::snapshots(&self.inner.config.home);
        let home_error = |source| Error::Home {
            path: dir.clone(),
            source,
        };
        let added = BlobStore::new(&self.inner.config.home)
            .add(&mut wasm.as_slice(), wasm.len() as u64)
            .map_err(home_error)?;
        crate::home::publish(
            &dir.join(key.to_hex().as_str()),
            added.blake3.to_hex().as_bytes(),
            crate::home::Durability::Synced,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(added.blake3)
    }

    /// Loads (compiling on first use) and links a snapshot stored as blob `digest`.
    fn open_snapshot(
        &self,
        spec: &'static RuntimeSpec,
        installed: &Installed,
        base: blake3::Hash,
        modules: &[String],
        digest: blake3::Hash,
        on_compile: &dyn Fn(),
    ) -> Result<Runtime, Error> {
        let label = snapshot_label(&spec.id, &base, modules);
        let path = BlobStore::new(&self.inner.config.home).path(&digest);
        let what = format!("runtime {} snapshot", spec.id);
        let read = || -> Result<Vec<u8>, Error> {
            let wasm = std::fs::read(&path).map_err(|source| crate::error::HostError::Io {
                action: "read the snapshot".into(),
                source,
            })?;
            if blake3::hash(&wasm) != digest {
                return Err(Error::Damaged {
                    runtime: spec.id.clone(),
                    message: format!("the {what} no longer matches its hash"),
                });
            }
            Ok(wasm)
        };
        let (module, source) = self.module(&digest, &what, &read, on_compile)?;
        let program = self.link(&spec.id, &what, module, digest, source, Abi::PythonReactor)?;
        let runtime = Runtime {
            spec,
            installed: installed.clone(),
            program,
            base,
            warm: Some(Arc::from(modules.to_vec())),
            runner: Arc::default(),
            prestarts: Arc::default(),
            built_in: Arc::default(),
        };
        lock(&self.inner.runtimes).insert(label, runtime.clone());
        Ok(runtime)
    }

    /// Lists a compiled snapshot so runs can choose it.
    fn publish_listing(&self, key: &blake3::Hash, runtime: &Runtime) {
        let memory_bytes = runtime
            .program
            .pre
            .module()
            .exports()
            .find_map(|export| match export.ty() {
                wasmtime::ExternType::Memory(memory) => Some(memory.minimum() * 65536),
                _ => None,
            })
            .unwrap_or(0);
        let entry = Published {
            base: runtime.base.to_hex().to_string(),
            modules: runtime.warm.as_deref().unwrap_or_default().to_vec(),
            memory_bytes,
        };
        let path = self.listing_dir().join(format!("{}.json", key.to_hex()));
        if let Ok(json) = serde_json::to_vec(&entry)
            && std::fs::create_dir_all(self.listing_dir()).is_ok()
            && let Err(e) = crate::home::publish(&path, &json, crate::home::Durability::Renamed)
        {
            tracing::warn!("could not list the snapshot: {e}");
        }
    }

    /// Counts one sighting of a set of modules with no snapshot of its own (`libraries`
    /// beyond the standard set), and starts a build when the set has been seen `after` times
    /// (and every [`RETRY_EVERY`] sightings after that, in case a build was lost).
    fn saw(
        &self,
        id: &str,
        base: &blake3::Hash,
        libraries: &[String],
        modules: &[String],
        after: u64,
    ) {
        if self.inner.config.warm_builds == WarmBuilds::Off {
            return;
        }
        let key = snapshot::key(base, modules);
        let dir = crate::home::snapshots(&self.inner.config.home).join("seen");
        let count = count_sighting(&dir, &key.to_hex());
        if count == after || (count > after && count.is_multiple_of(RETRY_EVERY)) {
            self.schedule_build(id, libraries, modules);
        }
    }

    /// Starts building the snapshot of `id` with `modules` (`libraries` beyond the standard
    /// set) as the configuration says; returns at once.
    fn schedule_build(&self, id: &str, libraries: &[String], modules: &[String]) {
        match self.inner.config.warm_builds {
            WarmBuilds::Off => {}
            WarmBuilds::Thread => {
                let key = modules.join(",");
                if !lock(&self.inner.warm_building).insert(key.clone()) {
                    return;
                }
                let dvm = self.clone();
                let id = id.to_string();
                let building = key.clone();
                let modules = modules.to_vec();
                let spawned = std::thread::Builder::new()
                    .name("dvm-warm-build".into())
                    .spawn(move || {
                        let quiet: Progress = Arc::new(|_| {});
                        if let Err(e) = dvm.snapshot_runtime(&id, &modules, &quiet) {
                            tracing::warn!("building a warm snapshot failed: {e}");
                        }
                        lock(&dvm.inner.warm_building).remove(&building);
                    });
                if spawned.is_err() {
                    lock(&self.inner.warm_building).remove(&key);
                }
            }
            WarmBuilds::Process => {
                if let Err(e) = spawn_build_process(&self.inner.config.home, id, libraries) {
                    tracing::warn!("could not start a warm snapshot build: {e}");
                }
            }
        }
    }

    /// Instruments `base`'s module, imports `modules` in a sandbox laid out like a run, and
    /// returns the snapshot as a module.
    fn make_snapshot(&self, base: &Runtime, modules: &[String]) -> Result<Vec<u8>, Error> {
        let fail = |message: String| Error::Install {
            runtime: base.id().to_string(),
            message,
        };
        let path = base
            .installed
            .file(Role::Module)
            .ok_or_else(|| fail("the module file is missing".into()))?;
        let wasm = std::fs::read(&path).map_err(|source| crate::error::InstallError::Io {
            runtime: base.id().to_string(),
            action: "read the module".into(),
            source,
        })?;
        let scratch = Scratch::new()?;
        let setup = base.script_setup(&scratch);
        let input = RunInput {
            limits: crate::Limits {
                deadline: std::time::Duration::from_secs(600),
                memory_bytes: 2 << 30,
                ..crate::Limits::default()
            },
            ..RunInput::default()
        };
        let code = snapshot::preload_code(modules);
        let dvm = self.clone();
        let linker = self.inner.linkers[&Abi::PythonReactor].linker.clone();
        let runtime = base.id().to_string();
        let _active = self.inner.ticker.activate()?;
        // On a sandbox thread: the guest needs its deep wasm stack while it imports.
        let made = self.inner.threads.run(move || -> Result<_, Error> {
            let wizer = wasmtime_wizer::Wizer::new();
            let (context, instrumented) = wizer.instrument(&wasm).map_err(|e| {
                crate::error::InstallError::snapshot(&runtime, "instrument the module", e)
            })?;
            // Compiled through the module cache: every preload set of this runtime starts
            // from the same instrumented module.
            let digest = blake3::hash(&instrumented);
            let (module, _) = dvm.module(
                &digest,
                "the instrumented module",
                &|| Ok(instrumented.clone()),
                &|| {},
            )?;
            let pre = linker.instantiate_pre(&module).map_err(|e| {
                crate::error::InstallError::snapshot(&runtime, "link the instrumented module", e)
            })?;
            sandbox::with_instance(&pre, &setup, &input, |store, instance| {
                let status = guest::python::turn_entry(code)(store, instance)?;
                if status != 0 {
                    wasmtime::bail!("the preload turn exited with status {status}");
                }
                let mut live = snapshot::LiveInstance {
                    store,
                    instance,
                    missing: None,
                };
                let wasm = snapshot::block_on(wizer.snapshot(&context, &mut live))?;
                match live.missing {
                    Some(missing) => wasmtime::bail!("the instance has no {missing} to snapshot"),
                    None => Ok(wasm),
                }
            })
        })??;
        made.map_err(|outcome| {
            fail(format!(
                "importing {} failed ({:?}{}):\n{}",
                warm::libraries_of(modules).join(", "),
                outcome.status,
                outcome.trap.map(|t| format!(": {t}")).unwrap_or_default(),
                String::from_utf8_lossy(&outcome.stderr)
            ))
        })
    }
}

impl Runtime {
    /// This runtime, or the snapshot of it that exists holding most of the libraries
    /// `source` imports (read from its text; `python` only), fitting in `memory_limit`.
    /// Never waits for a build; a runtime already preloaded with libraries stays as it is.
    pub(crate) fn warmed_for_script(&self, source: &[u8], memory_limit: u64) -> Runtime {
        let has_libraries = self
            .warm
            .as_deref()
            .is_some_and(|modules| !warm::libraries_of(modules).is_empty());
        if !self.supports_preload() || has_libraries {
            return self.clone();
        }
        self.program
            .dvm
            .runtime_for_script(self.clone(), source, memory_limit)
    }
}

/// blake3 of the runtime's catalogue module, from its install record (nothing is read).
pub(super) fn base_digest(
    spec: &RuntimeSpec,
    installed: &Installed,
) -> Result<blake3::Hash, Error> {
    installed
        .record
        .files
        .iter()
        .find(|f| f.role == Role::Module)
        .and_then(|f| blake3::Hash::from_hex(&f.blake3).ok())
        .ok_or_else(|| Error::Damaged {
            runtime: spec.id.clone(),
            message: "the install record names no module with a good hash".into(),
        })
}

/// The name a process keeps a runtime's cold form under.
pub(super) fn cold_label(id: &str) -> String {
    format!("{id}~cold")
}

fn snapshot_label(id: &str, base: &blake3::Hash, modules: &[String]) -> String {
    label_of(id, &snapshot::key(base, modules))
}

/// The name a process keeps the snapshot with content key `key` under.
fn label_of(id: &str, key: &blake3::Hash) -> String {
    format!("{id}@{}", &key.to_hex()[..24])
}

/// Appends one byte to the set's sighting file and returns how many it holds.
fn count_sighting(dir: &Path, name: &str) -> u64 {
    use std::io::Write;
    if std::fs::create_dir_all(dir).is_err() {
        return 0;
    }
    let path = dir.join(name);
    let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return 0;
    };
    let before = file.metadata().map_or(0, |m| m.len());
    if before >= MAX_SIGHTINGS {
        return before;
    }
    if file.write_all(b".").is_err() {
        return before;
    }
    file.metadata().map_or(before + 1, |m| m.len())
}

/// Starts `dvm runtimes install ID --preload LIBS --quiet` in its own process group, detached
/// from this one's terminal and streams, at low priority (under `nice` where there is one).
fn spawn_build_process(home: &Path, id: &str, libraries: &[String]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe()?;
    let mut args: Vec<std::ffi::OsString> = ["runtimes", "install", id, "--quiet"]
        .iter()
        .map(Into::into)
        .collect();
    if !libraries.is_empty() {
        args.push("--preload".into());
        args.push(libraries.join(",").into());
    }
    let spawn = |program: &std::ffi::OsStr, prefix: &[std::ffi::OsString]| {
        Command::new(program)
            .args(prefix)
            .args(&args)
            .env("DVM_HOME", home)
            .env("DVM_WARM_BUILDS", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
    };
    match spawn(
        "nice".as_ref(),
        &["-n".into(), "10".into(), exe.clone().into()],
    ) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => spawn(exe.as_os_str(), &[]),
        other => other,
    }
}
