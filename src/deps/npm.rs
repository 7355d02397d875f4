//! JavaScript packages for sandboxes: pure-JS packages fetched with `npm pack` (no install
//! scripts ever run), checked against the registry's integrity hash, unpacked with the same
//! safety rules as wheels into a content-addressed store, and laid out as one read-only
//! `node_modules` mounted at [`GUEST_NODE_MODULES`]. The JavaScript guest resolves bare
//! specifiers there (see `guest-toolchains/quickjs/modules.py`), reading each package's entry
//! from the `.dvm-entry` file written at install.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::spec::{NpmName, NpmSpec, Sha256, check_npm_version, check_tarball_name, member_path};
use super::{
    InstalledPackage, LOCK_SCHEMA, Lock, LockedPackage, PackageRequest, PackageSet, PackageStore,
    ToolEnv, controlled_command, link_tree, make_read_only, package_io, remove_tree, set_key,
};
use crate::error::{DepsError, Error};

/// Where a JavaScript package set is mounted in the guest.
pub const GUEST_NODE_MODULES: &str = "/node_modules";
/// Most bytes one package may unpack to.
const MAX_PACKAGE_BYTES: u64 = 256 << 20;
/// Most files one package may hold.
const MAX_PACKAGE_FILES: usize = 50_000;
/// Most packages one request may pull in.
const MAX_PACKAGES: usize = 500;

/// The JavaScript package store of one home: the Python store's layout (trees, remembered
/// installs, sets, temp files, lock) under `packages/v1/npm/`.
pub struct NpmStore {
    store: PackageStore,
}

fn npm_error(message: impl std::fmt::Display) -> Error {
    Error::Packages(message.to_string())
}

/// What `npm pack --json` reports for one package.
#[derive(Deserialize)]
struct Packed {
    name: String,
    version: String,
    filename: String,
    integrity: String,
}

impl Packed {
    /// Checks what npm (or a local tarball) reports before any of it names a file: the
    /// package asked for, a semver version, a plain tarball file name.
    fn check(&self, spec: &NpmSpec) -> Result<(), Error> {
        let checked = NpmName::parse(&self.name)
            .and_then(|name| {
                if &name == spec.name() {
                    Ok(())
                } else {
                    Err(format!("it is {name}, not {}", spec.name()))
                }
            })
            .and_then(|()| check_npm_version(&self.version))
            .and_then(|()| check_tarball_name(&self.filename));
        checked.map_err(|why| {
            npm_error(format!(
                "`npm pack {spec}` gave a package dvm refuses: {why}"
            ))
        })
    }
}

/// `package.json`, as far as dvm reads it.
#[derive(Deserialize, Default)]
struct Manifest {
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
    #[serde(default)]
    exports: Option<serde_json::Value>,
    #[serde(default)]
    module: Option<String>,
    #[serde(default)]
    main: Option<String>,
}

/// The requirements of an uploaded `package.json`: its `dependencies` as `name@range`, each
/// validated as an [`NpmSpec`] (no `file:`, `link:`, git, URL, alias or workspace specs).
pub fn parse_package_json(text: &str) -> Result<Vec<String>, Error> {
    let manifest: Manifest = serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("package.json is not valid JSON: {e}")))?;
    manifest
        .dependencies
        .into_iter()
        .map(|(name, range)| {
            NpmSpec::parse(&format!("{name}@{range}"))
                .map(|spec| spec.to_string())
                .map_err(|e| super::spec::from_origin(e, "package.json dependencies"))
        })
        .collect()
}

/// The ES-module entry of a package, relative to its directory.
fn entry_of(manifest: &Manifest) -> String {
    fn from_exports(value: &serde_json::Value) -> Option<String> {
        match value {
            serde_json::Value::String(path) => Some(path.clone()),
            serde_json::Value::Object(map) => {
                if let Some(root) = map.get(".") {
                    return from_exports(root);
                }
                ["import", "module", "default", "browser", "require"]
                    .iter()
                    .find_map(|condition| map.get(*condition).and_then(from_exports))
            }
            serde_json::Value::Array(items) => items.iter().find_map(from_exports),
            _ => None,
        }
    }
    let entry = manifest
        .exports
        .as_ref()
        .and_then(from_exports)
        .or_else(|| manifest.module.clone())
        .or_else(|| manifest.main.clone())
        .unwrap_or_else(|| "index.js".to_string());
    entry.trim_start_matches("./").to_string()
}

impl NpmStore {
    pub fn new(home: &Path) -> Self {
        NpmStore {
            store: PackageStore::npm(home),
        }
    }

    /// The same store with npm given `tools` ([`crate::Config::package_tools`]; default
    /// [`ToolEnv::from_env`], as [`crate::Config::default`]).
    pub fn with_tools(mut self, tools: &ToolEnv) -> Self {
        self.store = self.store.with_tools(tools);
        self
    }

    fn tree(&self, sha256: &Sha256) -> PathBuf {
        self.store.tree(sha256)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.store.dir().join(relative)
    }

    /// Installs `request` (requirements `name@range`) for the JavaScript runtime `runtime`.
    pub fn install(&self, runtime: &str, request: &PackageRequest) -> Result<PackageSet, Error> {
        let _lock = self.store.lock()?;
        let mut fresh = BTreeSet::new();
        let (lock, resolved_from_store) = match &request.locked {
            Some(lock) => {
                lock.validate().map_err(|why| {
                    Error::InvalidInput(format!(
                        "the lock is not valid ({why}); nothing was installed. Write it again \
                         with --lock"
                    ))
                })?;
                if lock.runtime != runtime || !lock.python.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "the lock is for {}, not {runtime}; lock again for this runtime",
                        lock.runtime
                    )));
                }
                for package in &lock.packages {
                    if !self.tree(&package.sha256).is_dir() {
                        let name = NpmName::parse(&package.name).map_err(Error::InvalidInput)?;
                        let spec = NpmSpec::from_parts(name, &package.version)?;
                        let (_, sha256, _) =
                            self.fetch(&spec, request.find_links.as_deref(), &mut fresh)?;
                        if sha256 != package.sha256 {
                            return Err(Error::PackageHash {
                                package: spec.to_string(),
                                expected: package.sha256.to_string(),
                                actual: sha256.to_string(),
                            });
                        }
                    }
                }
                (lock.clone(), true)
            }
            None => self.resolve(
                runtime,
                &request.requirements,
                request.find_links.as_deref(),
                &mut fresh,
            )?,
        };
        let installed = lock
            .packages
            .iter()
            .map(|package| InstalledPackage {
                name: package.name.clone(),
                version: package.version.clone(),
                sha256: package.sha256.clone(),
                from_store: !fresh.contains(&package.sha256),
            })
            .collect();
        let site = if lock.packages.is_empty() {
            None
        } else {
            Some(self.merged(&lock)?)
        };
        Ok(PackageSet {
            lock,
            installed,
            built_in: Vec::new(),
            site,
            resolved_from_store,
        })
    }

    /// Resolves `requirements` and everything they depend on (breadth first; the first
    /// version of a name wins, in one flat `node_modules`), remembering the result.
    fn resolve(
        &self,
        runtime: &str,
        requirements: &[String],
        find_links: Option<&Path>,
        fresh: &mut BTreeSet<Sha256>,
    ) -> Result<(Lock, bool), Error> {
        // Every spec, from whichever surface, is parsed here before npm sees it.
        let mut wanted: Vec<NpmSpec> = requirements
            .iter()
            .map(|spec| NpmSpec::parse(spec))
            .collect::<Result<_, _>>()?;
        wanted.sort();
        wanted.dedup();
        let key = {
            let mut hasher = blake3::Hasher::new();
            hasher.update(runtime.as_bytes());
            if let Some(dir) = find_links {
                hasher.update(format!("\nfind-links {}", dir.display()).as_bytes());
            }
            for spec in &wanted {
                hasher.update(format!("\n{spec}").as_bytes());
            }
            hasher.finalize().to_hex().to_string()
        };
        let remembered = self.path("resolved").join(format!("{key}.json"));
        if let Ok(text) = std::fs::read_to_string(&remembered)
            && let Ok(lock) = serde_json::from_str::<Lock>(&text)
            && lock.packages.iter().all(|p| self.tree(&p.sha256).is_dir())
        {
            return Ok((lock, true));
        }
        let mut queue: VecDeque<NpmSpec> = wanted.into_iter().collect();
        let mut resolved: BTreeMap<NpmName, LockedPackage> = BTreeMap::new();
        while let Some(spec) = queue.pop_front() {
            if resolved.contains_key(spec.name()) {
                continue;
            }
            if resolved.len() >= MAX_PACKAGES {
                return Err(npm_error(format!(
                    "the request pulls in more than {MAX_PACKAGES} packages"
                )));
            }
            let (packed, sha256, manifest) = self.fetch(&spec, find_links, fresh)?;
            for (dependency, range) in manifest.dependencies {
                // A published package's dependencies are as untrusted as an upload's.
                let dependency = NpmName::parse(&dependency)
                    .map_err(|why| super::spec::refused(&dependency, why, super::spec::NPM_INSTEAD))
                    .and_then(|name| NpmSpec::from_parts(name, &range))
                    .map_err(|e| {
                        super::spec::from_origin(
                            e,
                            &format!("a dependency of {} {}", packed.name, packed.version),
                        )
                    })?;
                queue.push_back(dependency);
            }
            resolved.insert(
                spec.name().clone(),
                LockedPackage {
                    name: packed.name,
                    version: packed.version,
                    file: packed.filename,
                    sha256,
                },
            );
        }
        let lock = Lock {
            schema: LOCK_SCHEMA,
            runtime: runtime.to_string(),
            python: String::new(),
            packages: resolved.into_values().collect(),
        };
        if let Ok(text) = serde_json::to_vec(&lock) {
            let _ = crate::home::publish(&remembered, &text, crate::home::Durability::Synced);
        }
        Ok((lock, false))
    }

    /// Packs one `name@range` with npm, checks it against the registry's integrity hash and
    /// installs it; returns what npm reported, the tarball's sha256 and its manifest.
    fn fetch(
        &self,
        spec: &NpmSpec,
        find_links: Option<&Path>,
        fresh: &mut BTreeSet<Sha256>,
    ) -> Result<(Packed, Sha256, Manifest), Error> {
        if let Some(dir) = find_links {
            let (packed, path) = pick_local(dir, spec.name().as_str(), spec.range())?;
            packed.check(spec)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| package_io(format!("cannot read {}", path.display()), e))?;
            let sha256 = digest(&bytes)?;
            let manifest = self.unpack(&bytes, &packed.filename, &sha256, fresh)?;
            return Ok((packed, sha256, manifest));
        }
        let temp = self.store.temp_dir()?;
        let packs = temp.path().join("packs");
        let output = npm_pack(
            std::ffi::OsStr::new("npm"),
            temp.path(),
            &packs,
            spec,
            &self.store.tools,
        )?;
        let mut packed: Vec<Packed> = serde_json::from_slice(&output.stdout)
            .map_err(|e| npm_error(format!("`npm pack {spec}` printed no package list ({e})")))?;
        let packed = packed
            .pop()
            .ok_or_else(|| npm_error(format!("`npm pack {spec}` packed nothing")))?;
        packed.check(spec)?;
        let tarball = packs.join(&packed.filename);
        let is_file = std::fs::symlink_metadata(&tarball).is_ok_and(|m| m.file_type().is_file());
        if !is_file {
            return Err(npm_error(format!(
                "`npm pack {spec}` left no tarball {}",
                packed.filename
            )));
        }
        let bytes = std::fs::read(&tarball)
            .map_err(|e| package_io(format!("cannot read {}", packed.filename), e))?;
        check_integrity(&bytes, &packed.integrity)
            .map_err(|why| npm_error(format!("{}: {why}", packed.filename)))?;
        let sha256 = digest(&bytes)?;
        let manifest = self.unpack(&bytes, &packed.filename, &sha256, fresh)?;
        Ok((packed, sha256, manifest))
    }

    /// Unpacks a package tarball into the store under its sha256 (once), checking every
    /// member, and writes its entry into `.dvm-entry`.
    fn unpack(
        &self,
        tarball: &[u8],
        file: &str,
        sha256: &Sha256,
        fresh: &mut BTreeSet<Sha256>,
    ) -> Result<Manifest, Error> {
        let target = self.tree(sha256);
        let read_manifest = |dir: &Path| -> Manifest {
            std::fs::read_to_string(dir.join("package.json"))
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default()
        };
        if target.is_dir() {
            return Ok(read_manifest(&target));
        }
        let temp = self.store.temp_dir()?;
        let unpacked = temp.path().join("tree");
        extract_tarball(tarball, &unpacked)
            .map_err(|why| npm_error(format!("{file}: refused: {why}")))?;
        let manifest = read_manifest(&unpacked);
        std::fs::write(unpacked.join(".dvm-entry"), entry_of(&manifest))
            .map_err(|e| package_io(file.to_string(), e))?;
        make_read_only(&unpacked).map_err(|e| package_io(file.to_string(), e))?;
        std::fs::create_dir_all(self.path("trees")).map_err(|e| package_io(file.to_string(), e))?;
        match std::fs::rename(&unpacked, &target) {
            Ok(()) => {
                fresh.insert(sha256.clone());
            }
            Err(_) if target.is_dir() => {}
            Err(e) => return Err(package_io(format!("{file}: cannot store it"), e)),
        }
        Ok(manifest)
    }

    /// One `node_modules` with every package of `lock`, hard-linked from the store.
    fn merged(&self, lock: &Lock) -> Result<PathBuf, Error> {
        if let Ok(text) = serde_json::to_vec(lock) {
            let kept = self
                .path("installed")
                .join(format!("{}.json", set_key(lock)));
            let _ = crate::home::publish(&kept, &text, crate::home::Durability::Synced);
        }
        let set = self.path("sets").join(set_key(lock));
        if set.is_dir() {
            return Ok(set);
        }
        let temp = self.store.temp_dir()?;
        let modules = temp.path().join("node_modules");
        for package in &lock.packages {
            // The lock was validated; the name is parsed again so that the path is made from
            // the type, never from the string.
            let name = NpmName::parse(&package.name).map_err(Error::InvalidInput)?;
            link_tree(
                &self.tree(&package.sha256),
                &modules.join(name.relative_path()),
            )
            .map_err(|e| package_io(format!("cannot lay out {name}"), e))?;
        }
        std::fs::create_dir_all(self.path("sets")).map_err(|source| DepsError::Store {
            action: "create the set directory".into(),
            source,
        })?;
        match std::fs::rename(&modules, &set) {
            Ok(()) => Ok(set),
            Err(_) if set.is_dir() => Ok(set),
            Err(e) => {
                remove_tree(&modules);
                Err(DepsError::Store {
                    action: "store the package set".into(),
                    source: e,
                }
                .into())
            }
        }
    }
}

/// Runs `npm pack SPEC` into `packs` with a controlled environment
/// ([`controlled_command`](super::controlled_command)): empty user and global configuration,
/// a cache and working directory of its own under `scratch`, `--ignore-scripts`, and `--`
/// before the spec, which is a validated [`NpmSpec`].
fn npm_pack(
    program: &std::ffi::OsStr,
    scratch: &Path,
    packs: &Path,
    spec: &NpmSpec,
    env: &ToolEnv,
) -> Result<std::process::Output, Error> {
    // npm refuses one file as both its user and its global configuration.
    let npmrc = scratch.join("npmrc");
    let global_npmrc = scratch.join("npmrc-global");
    let created = std::fs::create_dir_all(packs)
        .and_then(|()| std::fs::write(&npmrc, b""))
        .and_then(|()| std::fs::write(&global_npmrc, b""))
        .and_then(|()| std::fs::create_dir_all(scratch.join("work")))
        // The working directory is a project of its own, so npm does not look above it for
        // a package.json or .npmrc.
        .and_then(|()| std::fs::write(scratch.join("work/package.json"), b"{}"));
    created.map_err(|source| DepsError::Store {
        action: "prepare npm's directory".into(),
        source,
    })?;
    let mut command = controlled_command(program, scratch, env)?;
    let output = command
        .env("npm_config_userconfig", &npmrc)
        .env("npm_config_globalconfig", &global_npmrc)
        .env("npm_config_cache", scratch.join("cache"))
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false")
        .args([
            "pack",
            "--json",
            "--silent",
            "--ignore-scripts",
            "--userconfig",
        ])
        .arg(&npmrc)
        .args(env.npm_registry_args())
        .arg("--pack-destination")
        .arg(packs)
        .arg("--")
        .arg(spec.to_string())
        .output()
        .map_err(|e| {
            npm_error(format!(
                "cannot start `npm` ({e}); dvm fetches JavaScript packages with `npm pack`. \
                 Install Node.js with npm"
            ))
        })?;
    if !output.status.success() {
        return Err(npm_error(format!(
            "`npm pack {spec}` failed ({}):\n{}",
            output.status,
            crate::tool::tail(&output.stderr, 10)
        )));
    }
    Ok(output)
}

/// Which local tarball versions a spec's range selects.
#[derive(Debug)]
enum Wanted {
    /// The `latest` dist-tag: the newest version there is.
    Newest,
    /// An npm range, with npm's semantics (prereleases only where the range names one).
    Range(nodejs_semver::Range),
}

impl Wanted {
    /// Reads `range` as npm would; dist-tags other than `latest` name whatever the registry
    /// says, which a directory of tarballs cannot tell, so they are refused, as is anything
    /// npm's grammar does not accept (never read as "any version").
    fn parse(name: &str, range: &str) -> Result<Wanted, Error> {
        if range == "latest" {
            return Ok(Wanted::Newest);
        }
        match super::spec::npm_range(range) {
            Some(parsed) => Ok(Wanted::Range(parsed)),
            None => Err(npm_error(format!(
                "{name}@{range}: `{range}` is not an npm version range that dvm can match \
                 against local tarballs; give a version or range such as `^1.2.0`, or `latest`"
            ))),
        }
    }

    fn matches(&self, version: &nodejs_semver::Version) -> bool {
        match self {
            Wanted::Newest => !version.is_prerelease(),
            Wanted::Range(range) => range.satisfies(version),
        }
    }
}

/// The newest tarball in `dir` whose package is `name` and whose version satisfies `range`.
fn pick_local(dir: &Path, name: &str, range: &str) -> Result<(Packed, PathBuf), Error> {
    let wanted = Wanted::parse(name, range)?;
    let entries = std::fs::read_dir(dir).map_err(|source| Error::ReadInput {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut best: Option<(nodejs_semver::Version, Packed, PathBuf)> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "tgz") {
            continue;
        }
        let Some((found, version)) = tarball_identity(&path) else {
            continue;
        };
        let Ok(parsed) = nodejs_semver::Version::parse(&version) else {
            continue;
        };
        if found != name || !wanted.matches(&parsed) {
            continue;
        }
        if best.as_ref().is_none_or(|(newest, _, _)| parsed > *newest) {
            let packed = Packed {
                name: found,
                version,
                filename: entry.file_name().to_string_lossy().into_owned(),
                integrity: String::new(),
            };
            best = Some((parsed, packed, path));
        }
    }
    best.map(|(_, packed, path)| (packed, path)).ok_or_else(|| {
        npm_error(format!(
            "no tarball of {name}@{range} in {}: it holds `npm pack` files (NAME-VERSION.tgz)",
            dir.display()
        ))
    })
}

/// `name` and `version` from a tarball's top-level `package.json`.
fn tarball_identity(path: &Path) -> Option<(String, String)> {
    let file = std::fs::File::open(path).ok()?;
    let decoder = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut archive = tar::Archive::new(decoder.take(MAX_PACKAGE_BYTES));
    for member in archive.entries().ok()? {
        let mut member = member.ok()?;
        let member_path = member.path().ok()?.into_owned();
        let parts: Vec<_> = member_path.components().collect();
        if parts.len() == 2 && parts[1].as_os_str() == "package.json" {
            let mut text = String::new();
            (&mut member).take(1 << 20).read_to_string(&mut text).ok()?;
            let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
            return Some((
                manifest["name"].as_str()?.to_string(),
                manifest["version"].as_str()?.to_string(),
            ));
        }
    }
    None
}

/// The sha256 of a tarball's bytes.
fn digest(bytes: &[u8]) -> Result<Sha256, Error> {
    use sha2::Digest;
    Sha256::parse(&crate::store::hex(&sha2::Sha256::digest(bytes))).map_err(Error::Internal)
}

/// Checks `bytes` against an npm integrity string (`sha512-<base64>`).
fn check_integrity(bytes: &[u8], integrity: &str) -> Result<(), String> {
    use sha2::Digest;
    let expected = integrity
        .split_whitespace()
        .find_map(|part| part.strip_prefix("sha512-"))
        .ok_or("the registry gave no sha512 integrity")?;
    let actual = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes));
    if actual != expected {
        return Err(format!(
            "the tarball does not match its integrity hash (expected sha512-{expected}, got \
             sha512-{actual})"
        ));
    }
    Ok(())
}

/// Unpacks an npm tarball (gzip'd tar, members under `package/`) into `dest`, refusing
/// members that escape, links and devices, and more than the size and file caps.
pub(crate) fn extract_tarball(tarball: &[u8], dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    let decoder = flate2::read::GzDecoder::new(tarball);
    let mut archive = tar::Archive::new(decoder.take(MAX_PACKAGE_BYTES * 2));
    let mut total = 0u64;
    let mut files = 0usize;
    for member in archive.entries().map_err(|e| format!("bad tarball: {e}"))? {
        let mut member = member.map_err(|e| format!("bad tarball: {e}"))?;
        let bytes = member.path_bytes().into_owned();
        let name = std::str::from_utf8(&bytes).map_err(|_| {
            format!(
                "member {} has a name that is not UTF-8",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        let raw = PathBuf::from(name);
        let checked =
            member_path(name).map_err(|why| why.replace("its directory", "the package"))?;
        // npm puts everything under one top directory (`package/`, sometimes another name).
        let Some(checked) = checked else {
            return Err(format!("member {} escapes the package", raw.display()));
        };
        let relative: PathBuf = checked.components().skip(1).collect();
        let kind = member.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(dest.join(&relative)).map_err(|e| e.to_string())?;
            continue;
        }
        if !kind.is_file() {
            return Err(format!(
                "member {} is a link or special file",
                raw.display()
            ));
        }
        if relative.as_os_str().is_empty() {
            continue;
        }
        files += 1;
        if files > MAX_PACKAGE_FILES {
            return Err(format!("more than {MAX_PACKAGE_FILES} files"));
        }
        let path = dest.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let budget = MAX_PACKAGE_BYTES.saturating_sub(total) + 1;
        let copied = std::io::copy(&mut (&mut member).take(budget), &mut out)
            .map_err(|e| format!("{}: {e}", raw.display()))?;
        total += copied;
        if total > MAX_PACKAGE_BYTES {
            return Err(format!(
                "the package unpacks to more than {MAX_PACKAGE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_runs_with_a_controlled_environment_and_validated_specs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let tool = crate::deps::tests::recording_tool(dir.path(), &out);
        let spec = NpmSpec::parse("lodash-es@^4.17").unwrap();
        let scratch = dir.path().join("scratch");
        let error = npm_pack(
            tool.as_os_str(),
            &scratch,
            &scratch.join("packs"),
            &spec,
            &ToolEnv::from_env(),
        )
        .unwrap_err();
        assert_eq!(error.kind(), "packages");
        let env = std::fs::read_to_string(out.join("env")).unwrap();
        for line in env.lines() {
            let name = line.split('=').next().unwrap();
            let ours = name.starts_with("npm_config_")
                || [
                    "HOME",
                    "XDG_CONFIG_HOME",
                    "XDG_CACHE_HOME",
                    "TMPDIR",
                    "PWD",
                    "SHLVL",
                    "_",
                ]
                .contains(&name);
            assert!(
                ours || crate::deps::KEPT_ENV.contains(&name),
                "npm saw {name} from the host environment"
            );
        }
        assert!(env.contains(&format!(
            "npm_config_userconfig={}\n",
            scratch.join("npmrc").display()
        )));
        assert_eq!(std::fs::read(scratch.join("npmrc")).unwrap(), b"");
        let pwd = std::fs::read_to_string(out.join("pwd")).unwrap();
        assert_eq!(pwd.trim(), scratch.join("work").to_str().unwrap());
        let args: Vec<String> = std::fs::read_to_string(out.join("args"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(args.iter().any(|a| a == "--ignore-scripts"), "{args:?}");
        assert_eq!(&args[args.len() - 2..], ["--", "lodash-es@^4.17"]);
    }

    #[test]
    fn package_json_dependencies_are_validated() {
        assert_eq!(
            parse_package_json(r#"{"dependencies": {"lodash-es": "^4.17"}}"#).unwrap(),
            ["lodash-es@^4.17"]
        );
        for bad in [
            r#"{"dependencies": {"evil": "file:../../x"}}"#,
            r#"{"dependencies": {"evil": "http://127.0.0.1:1/x.tgz"}}"#,
            r#"{"dependencies": {"evil": "user/repo"}}"#,
            r#"{"dependencies": {"evil": "npm:other@1"}}"#,
            r#"{"dependencies": {"../../x": "1"}}"#,
        ] {
            let error = parse_package_json(bad).unwrap_err();
            assert_eq!(error.kind(), "unsupported_requirement", "{bad}");
            assert!(error.to_string().contains("package.json"), "{error}");
        }
    }

    #[test]
    fn entries_come_from_exports_module_or_main() {
        let manifest = |json: &str| serde_json::from_str::<Manifest>(json).unwrap();
        assert_eq!(entry_of(&manifest(r#"{"exports": "./x.js"}"#)), "x.js");
        assert_eq!(
            entry_of(&manifest(
                r#"{"exports": {".": {"import": "./esm/i.mjs", "require": "./c.js"}}}"#
            )),
            "esm/i.mjs"
        );
        assert_eq!(
            entry_of(&manifest(r#"{"module": "m.js", "main": "c.js"}"#)),
            "m.js"
        );
        assert_eq!(entry_of(&manifest(r#"{"main": "lib/c.js"}"#)), "lib/c.js");
        assert_eq!(entry_of(&manifest("{}")), "index.js");
    }

    /// A gzip'd tar with `members`: (name, contents, kind).
    fn tarball(members: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, contents, kind) in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            // Names are set raw so that hostile ones get through the builder's own checks.
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if kind.is_symlink() {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *contents).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn hostile_tarballs_are_refused() {
        let file = tar::EntryType::Regular;
        let ok = tarball(&[("package/index.js", b"export default 1;", file)]);
        let dir = tempfile::tempdir().unwrap();
        extract_tarball(&ok, &dir.path().join("ok")).unwrap();
        assert!(dir.path().join("ok/index.js").is_file());
        let zeros = vec![0u8; 1 << 20];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "dotdot",
                tarball(&[("package/../../escaped.js", b"x", file)]),
                "escapes",
            ),
            (
                "absolute",
                tarball(&[("/tmp/dvm-npm-escaped.js", b"x", file)]),
                "escapes",
            ),
            (
                "symlink",
                tarball(&[("package/link.js", b"", tar::EntryType::Symlink)]),
                "link",
            ),
            (
                "hardlink",
                tarball(&[("package/hard.js", b"", tar::EntryType::Link)]),
                "link",
            ),
            (
                "device",
                tarball(&[("package/dev", b"", tar::EntryType::Char)]),
                "special",
            ),
            ("truncated", ok[..ok.len() / 2].to_vec(), "tarball"),
        ];
        for (label, bytes, says) in cases {
            let dest = dir.path().join(label);
            let error = extract_tarball(&bytes, &dest).expect_err(label);
            assert!(error.contains(says), "{label}: {error}");
        }
        assert!(!dir.path().join("escaped.js").exists());
        assert!(!Path::new("/tmp/dvm-npm-escaped.js").exists());
        // A bomb: 300 MiB of zeros in a few hundred KiB.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(300 << 20);
        header.set_mode(0o644);
        header.set_path("package/bomb.bin").unwrap();
        header.set_cksum();
        let reader = std::iter::repeat_n(zeros.as_slice(), 300)
            .flatten()
            .copied()
            .collect::<Vec<u8>>();
        builder.append(&header, reader.as_slice()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
        let bomb = gz.finish().unwrap();
        let error = extract_tarball(&bomb, &dir.path().join("bomb")).unwrap_err();
        assert!(error.contains("more than"), "{error}");
    }

    /// Every path under `root`, links not followed.
    fn everything_under(root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().unwrap().is_dir() {
                    pending.push(entry.path());
                }
                found.push(entry.path());
            }
        }
        found
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn tarball_members_never_land_outside_the_destination(
            names in proptest::collection::vec("(package/|\\.\\./|/|\\./|[a-z]{1,3}/|\\.\\.){0,5}[a-z.]{0,4}", 1..6),
            links in proptest::collection::vec(proptest::bool::ANY, 6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("a").join("b").join("dest");
            let kinds: Vec<tar::EntryType> = links
                .iter()
                .map(|link| if *link { tar::EntryType::Symlink } else { tar::EntryType::Regular })
                .collect();
            let members: Vec<(&str, &[u8], tar::EntryType)> = names
                .iter()
                .zip(&kinds)
                .filter(|(name, _)| name.len() < 100)
                .map(|(name, kind)| (name.as_str(), b"x".as_slice(), *kind))
                .collect();
            let _ = extract_tarball(&tarball(&members), &dest);
            for path in everything_under(dir.path()) {
                proptest::prop_assert!(
                    path.starts_with(&dest) || dest.starts_with(&path),
                    "{path:?} is outside {dest:?}"
                );
                let meta = std::fs::symlink_metadata(&path).unwrap();
                proptest::prop_assert!(!meta.file_type().is_symlink(), "{path:?} is a link");
            }
        }
    }

    fn satisfies(version: &str, range: &str) -> bool {
        let version = nodejs_semver::Version::parse(version).unwrap();
        Wanted::parse("pkg", range).unwrap().matches(&version)
    }

    #[test]
    fn npm_ranges_are_matched() {
        // (range, version, matches) as npm's own semver package answers them.
        let table: &[(&str, &str, bool)] = &[
            ("^4.17.0", "4.17.21", true),
            ("^4.17.0", "5.0.0", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.0.3", "0.0.4", false),
            ("~1.2", "1.2.9", true),
            ("~1.2", "1.3.0", false),
            ("~1.2.3", "1.2.4", true),
            ("~1", "1.9.0", true),
            (">=1 <2", "1.5.0", true),
            (">=1 <2", "2.0.0", false),
            (">= 1.2", "1.2.0", true),
            ("^1 || ^3", "3.0.0", true),
            ("^1 || ^3", "2.0.0", false),
            ("latest", "9.9.9", true),
            ("*", "9.9.9", true),
            ("", "0.0.1", true),
            ("1.0.0", "1.0.0", true),
            ("1.0.0", "1.2.0", false),
            ("=1.0.0", "1.0.0", true),
            ("v1.0.0", "1.0.0", true),
            ("1.2", "1.2.7", true),
            ("1.2", "1.3.0", false),
            ("1", "1.9.0", true),
            ("1", "2.0.0", false),
            ("1.x", "1.4.0", true),
            ("1.2.x", "1.3.0", false),
            ("1.X", "1.0.1", true),
            ("1.2.3 - 2.3.4", "2.3.4", true),
            ("1.2.3 - 2.3.4", "2.3.5", false),
            ("1.2 - 2.3", "2.3.9", true),
            ("1.2 - 2.3", "2.4.0", false),
            // Prereleases match only ranges that name one on the same major.minor.patch.
            ("^1.2.0", "1.3.0-beta.1", false),
            ("*", "2.0.0-rc.1", false),
            ("latest", "2.0.0-rc.1", false),
            (">=1.2.3-alpha.1", "1.2.3-alpha.7", true),
            (">=1.2.3-alpha.1", "1.2.4-alpha.1", false),
            ("^2.0.0-rc.1", "2.0.0", true),
            ("^2.0.0-rc.1", "2.0.0-rc.2", true),
        ];
        for &(range, version, expected) in table {
            assert_eq!(
                satisfies(version, range),
                expected,
                "{version} satisfies `{range}`"
            );
        }
    }

    #[test]
    fn unknown_ranges_match_nothing_and_say_so() {
        for range in ["next", "beta", "^^1", ">=1.2.3.4", "nonsense range"] {
            let Err(error) = Wanted::parse("pkg", range) else {
                panic!("`{range}` parsed as a range");
            };
            let message = error.to_string();
            assert!(
                message.contains(&format!("pkg@{range}")) && message.contains("`latest`"),
                "{range}: {message}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn caret_tilde_and_hyphen_ranges_bound_versions(
            major in 1u64..50,
            minor in 0u64..50,
            patch in 0u64..50,
        ) {
            let exact = format!("{major}.{minor}.{patch}");
            let next_patch = format!("{major}.{minor}.{}", patch + 1);
            let next_minor = format!("{major}.{}.0", minor + 1);
            let next_major = format!("{}.0.0", major + 1);
            let caret = format!("^{exact}");
            proptest::prop_assert!(satisfies(&exact, &caret));
            proptest::prop_assert!(satisfies(&next_minor, &caret));
            proptest::prop_assert!(!satisfies(&next_major, &caret));
            let tilde = format!("~{exact}");
            proptest::prop_assert!(satisfies(&next_patch, &tilde));
            proptest::prop_assert!(!satisfies(&next_minor, &tilde));
            let hyphen = format!("{exact} - {next_minor}");
            proptest::prop_assert!(satisfies(&exact, &hyphen));
            proptest::prop_assert!(satisfies(&next_minor, &hyphen));
            proptest::prop_assert!(!satisfies(&next_major, &hyphen));
            let either = format!("<{exact} || >={next_major}");
            proptest::prop_assert!(!satisfies(&exact, &either));
            proptest::prop_assert!(satisfies(&next_major, &either));
        }

        #[test]
        fn a_range_never_panics_and_garbage_never_matches_everything(range in "\\PC{0,24}") {
            if let Ok(Wanted::Range(parsed)) = Wanted::parse("pkg", &range) {
                // Whatever parsed is a real range: something lies outside it or it is `*`.
                let any = nodejs_semver::Range::parse("*").unwrap();
                let everything = parsed.allows_all(&any);
                let trimmed = range.trim();
                proptest::prop_assert!(
                    !everything
                        || trimmed.is_empty()
                        || trimmed.chars().all(|c| "*xX .|=>=v0".contains(c)),
                    "`{range}` matches every version"
                );
            }
        }
    }

    #[test]
    fn integrity_is_checked() {
        use sha2::Digest;
        let good = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(b"abc"))
        );
        assert!(check_integrity(b"abc", &good).is_ok());
        assert!(check_integrity(b"abd", &good).is_err());
        assert!(check_integrity(b"abc", "sha1-xyz").is_err());
    }
}
