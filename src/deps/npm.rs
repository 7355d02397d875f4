//! JavaScript packages for sandboxes: pure-JS packages fetched with `npm pack` (no install
//! scripts ever run), checked against the registry's integrity hash, unpacked with the same
//! safety rules as wheels into a content-addressed store, and laid out as one read-only
//! `node_modules` mounted at [`GUEST_NODE_MODULES`]. The JavaScript guest resolves bare
//! specifiers there (see `guest-toolchains/quickjs/modules.py`), reading each package's entry
//! from the `.dvm-entry` file written at install.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use super::{
    InstalledPackage, LOCK_SCHEMA, Lock, LockedPackage, PackageRequest, PackageSet, PackageStore,
    link_tree, make_read_only, remove_tree, set_key,
};
use crate::error::Error;

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

/// `name@range` split into name and range (`latest` when none); scoped names keep their `@`.
fn split_spec(spec: &str) -> Result<(String, String), Error> {
    let spec = spec.trim();
    let at = spec
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '@')
        .map(|(i, _)| i);
    let (name, range) = match at {
        Some(i) => (&spec[..i], &spec[i + 1..]),
        None => (spec, "latest"),
    };
    let valid = !name.is_empty()
        && name.len() <= 214
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~@/".contains(c))
        && name.matches('/').count() <= usize::from(name.starts_with('@'))
        && !name.contains("..");
    if !valid || range.is_empty() {
        return Err(Error::InvalidInput(format!(
            "`{spec}` is not an npm package name with an optional @version, e.g. \
             `lodash-es@4`"
        )));
    }
    Ok((name.to_string(), range.to_string()))
}

/// What `npm pack --json` reports for one package.
#[derive(Deserialize)]
struct Packed {
    name: String,
    version: String,
    filename: String,
    integrity: String,
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

/// The requirements of an uploaded `package.json`: its `dependencies` as `name@range`.
pub fn parse_package_json(text: &str) -> Result<Vec<String>, Error> {
    let manifest: Manifest = serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("package.json is not valid JSON: {e}")))?;
    Ok(manifest
        .dependencies
        .into_iter()
        .map(|(name, range)| format!("{name}@{range}"))
        .collect())
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

    fn tree(&self, sha256: &str) -> PathBuf {
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
                if lock.runtime != runtime {
                    return Err(Error::InvalidInput(format!(
                        "the lock is for {}, not {runtime}; lock again for this runtime",
                        lock.runtime
                    )));
                }
                for package in &lock.packages {
                    if !self.tree(&package.sha256).is_dir() {
                        let spec = format!("{}@{}", package.name, package.version);
                        let (_, sha256, _) =
                            self.fetch(&spec, request.find_links.as_deref(), &mut fresh)?;
                        if sha256 != package.sha256 {
                            return Err(Error::PackageHash {
                                package: spec,
                                expected: package.sha256.clone(),
                                actual: sha256,
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
        fresh: &mut BTreeSet<String>,
    ) -> Result<(Lock, bool), Error> {
        let mut wanted: Vec<(String, String)> = requirements
            .iter()
            .map(|spec| split_spec(spec))
            .collect::<Result<_, _>>()?;
        wanted.sort();
        wanted.dedup();
        let key = {
            let mut hasher = blake3::Hasher::new();
            hasher.update(runtime.as_bytes());
            if let Some(dir) = find_links {
                hasher.update(format!("\nfind-links {}", dir.display()).as_bytes());
            }
            for (name, range) in &wanted {
                hasher.update(format!("\n{name}@{range}").as_bytes());
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
        let mut queue: VecDeque<(String, String)> = wanted.into_iter().collect();
        let mut resolved: BTreeMap<String, LockedPackage> = BTreeMap::new();
        while let Some((name, range)) = queue.pop_front() {
            if resolved.contains_key(&name) {
                continue;
            }
            if resolved.len() >= MAX_PACKAGES {
                return Err(npm_error(format!(
                    "the request pulls in more than {MAX_PACKAGES} packages"
                )));
            }
            let (packed, sha256, manifest) =
                self.fetch(&format!("{name}@{range}"), find_links, fresh)?;
            for (dependency, range) in manifest.dependencies {
                queue.push_back((dependency, range));
            }
            resolved.insert(
                name,
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
            let _ = crate::engine::cache::publish(&remembered, &text);
        }
        Ok((lock, false))
    }

    /// Packs one `name@range` with npm, checks it against the registry's integrity hash and
    /// installs it; returns what npm reported, the tarball's sha256 and its manifest.
    fn fetch(
        &self,
        spec: &str,
        find_links: Option<&Path>,
        fresh: &mut BTreeSet<String>,
    ) -> Result<(Packed, String, Manifest), Error> {
        if let Some(dir) = find_links {
            let (name, range) = split_spec(spec)?;
            let (packed, path) = pick_local(dir, &name, &range)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| npm_error(format!("cannot read {}: {e}", path.display())))?;
            use sha2::Digest;
            let sha256 = crate::store::hex(&sha2::Sha256::digest(&bytes));
            let manifest = self.unpack(&bytes, &packed.filename, &sha256, fresh)?;
            return Ok((packed, sha256, manifest));
        }
        let temp = self.store.temp_dir()?;
        let output = Command::new("npm")
            .args([
                "pack",
                "--json",
                "--silent",
                "--ignore-scripts",
                "--pack-destination",
            ])
            .arg(temp.path())
            .arg(spec)
            .current_dir(temp.path())
            .stdin(Stdio::null())
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
                crate::guest::install::tail(&output.stderr, 10)
            )));
        }
        let mut packed: Vec<Packed> = serde_json::from_slice(&output.stdout)
            .map_err(|e| npm_error(format!("`npm pack {spec}` printed no package list ({e})")))?;
        let packed = packed
            .pop()
            .ok_or_else(|| npm_error(format!("`npm pack {spec}` packed nothing")))?;
        let tarball = temp.path().join(&packed.filename);
        let bytes = std::fs::read(&tarball)
            .map_err(|e| npm_error(format!("cannot read {}: {e}", packed.filename)))?;
        check_integrity(&bytes, &packed.integrity)
            .map_err(|why| npm_error(format!("{}: {why}", packed.filename)))?;
        use sha2::Digest;
        let sha256 = crate::store::hex(&sha2::Sha256::digest(&bytes));
        let manifest = self.unpack(&bytes, &packed.filename, &sha256, fresh)?;
        Ok((packed, sha256, manifest))
    }

    /// Unpacks a package tarball into the store under its sha256 (once), checking every
    /// member, and writes its entry into `.dvm-entry`.
    fn unpack(
        &self,
        tarball: &[u8],
        file: &str,
        sha256: &str,
        fresh: &mut BTreeSet<String>,
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
            .map_err(|e| npm_error(format!("{file}: {e}")))?;
        make_read_only(&unpacked).map_err(|e| npm_error(format!("{file}: {e}")))?;
        std::fs::create_dir_all(self.path("trees"))
            .map_err(|e| npm_error(format!("{file}: {e}")))?;
        match std::fs::rename(&unpacked, &target) {
            Ok(()) => {
                fresh.insert(sha256.to_string());
            }
            Err(_) if target.is_dir() => {}
            Err(e) => return Err(npm_error(format!("{file}: cannot store it: {e}"))),
        }
        Ok(manifest)
    }

    /// One `node_modules` with every package of `lock`, hard-linked from the store.
    fn merged(&self, lock: &Lock) -> Result<PathBuf, Error> {
        if let Ok(text) = serde_json::to_vec(lock) {
            let kept = self
                .path("installed")
                .join(format!("{}.json", set_key(lock)));
            let _ = crate::engine::cache::publish(&kept, &text);
        }
        let set = self.path("sets").join(set_key(lock));
        if set.is_dir() {
            return Ok(set);
        }
        let temp = self.store.temp_dir()?;
        let modules = temp.path().join("node_modules");
        for package in &lock.packages {
            link_tree(&self.tree(&package.sha256), &modules.join(&package.name))
                .map_err(|e| npm_error(format!("cannot lay out {}: {e}", package.name)))?;
        }
        std::fs::create_dir_all(self.path("sets"))
            .map_err(|e| Error::Internal(format!("cannot create the set directory: {e}")))?;
        match std::fs::rename(&modules, &set) {
            Ok(()) => Ok(set),
            Err(_) if set.is_dir() => Ok(set),
            Err(e) => {
                remove_tree(&modules);
                Err(Error::Internal(format!(
                    "cannot store the package set: {e}"
                )))
            }
        }
    }
}

/// Whether `version` satisfies an npm `range` (`^4.17`, `~1.2`, `1.x`, `>=1 <2`, `latest`);
/// ranges this does not understand match any version.
fn satisfies(version: &str, range: &str) -> bool {
    let Ok(version) = semver::Version::parse(version) else {
        return false;
    };
    if range == "latest" || range == "*" || range.is_empty() {
        return true;
    }
    // npm reads a bare version as exact and a partial one as an x-range (`1.2` = 1.2.x);
    // Rust's semver reads both as caret ranges, so give them their operators.
    let npm_comparator = |token: &str| -> String {
        if !token.starts_with(|c: char| c.is_ascii_digit()) || token.contains(['x', '*']) {
            return token.to_string();
        }
        match token.matches('.').count() {
            0 => format!("^{token}"),
            1 => format!("~{token}"),
            _ => format!("={token}"),
        }
    };
    range.split("||").any(|alternative| {
        let comparators: Vec<String> = alternative.split_whitespace().map(npm_comparator).collect();
        match semver::VersionReq::parse(&comparators.join(", ")) {
            Ok(req) => req.matches(&version),
            Err(_) => true,
        }
    })
}

/// The newest tarball in `dir` whose package is `name` and whose version satisfies `range`.
fn pick_local(dir: &Path, name: &str, range: &str) -> Result<(Packed, PathBuf), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::ReadInput {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut best: Option<(semver::Version, Packed, PathBuf)> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "tgz") {
            continue;
        }
        let Some((found, version)) = tarball_identity(&path) else {
            continue;
        };
        let Ok(parsed) = semver::Version::parse(&version) else {
            continue;
        };
        if found != name || !satisfies(&version, range) {
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
        let raw = member
            .path()
            .map_err(|e| format!("bad member name: {e}"))?
            .into_owned();
        let mut parts = raw.components();
        // npm puts everything under one top directory (`package/`, sometimes another name).
        match parts.next() {
            Some(Component::Normal(_)) => {}
            _ => return Err(format!("member {} escapes the package", raw.display())),
        }
        let mut relative = PathBuf::new();
        for part in parts {
            match part {
                Component::Normal(name) => relative.push(name),
                Component::CurDir => {}
                _ => return Err(format!("member {} escapes the package", raw.display())),
            }
        }
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
    fn specs_split_into_name_and_range() {
        assert_eq!(
            split_spec("lodash-es").unwrap(),
            ("lodash-es".into(), "latest".into())
        );
        assert_eq!(
            split_spec("lodash-es@^4.17").unwrap(),
            ("lodash-es".into(), "^4.17".into())
        );
        assert_eq!(
            split_spec("@scope/pkg@1").unwrap(),
            ("@scope/pkg".into(), "1".into())
        );
        for bad in ["", "../x", "a/b/c", "UPPER", "x@", "a b"] {
            assert!(split_spec(bad).is_err(), "{bad}");
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

    #[test]
    fn npm_ranges_are_matched() {
        assert!(satisfies("4.17.21", "^4.17.0"));
        assert!(!satisfies("5.0.0", "^4.17.0"));
        assert!(satisfies("1.2.9", "~1.2"));
        assert!(satisfies("1.5.0", ">=1 <2"));
        assert!(!satisfies("2.0.0", ">=1 <2"));
        assert!(satisfies("3.0.0", "^1 || ^3"));
        assert!(satisfies("9.9.9", "latest"));
        assert!(satisfies("1.0.0", "1.0.0") && !satisfies("1.2.0", "1.0.0"));
        assert!(satisfies("1.2.7", "1.2") && !satisfies("1.3.0", "1.2"));
        assert!(satisfies("1.9.0", "1") && !satisfies("2.0.0", "1"));
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
