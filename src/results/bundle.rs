//! Bundles: stored runs and their output files in one `.tar.zst`, to move results between
//! machines. Import reads a bundle as a stream with bounded memory: every member's declared
//! size is checked before it is read, blobs go to temp files hashed on the way, and each
//! entry is checked (signature by a trusted key, key, output paths, blobs) before anything of
//! it is stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write as _};
use std::path::Path;

use serde::Serialize;

use super::{Blake3Hex, CacheKey, Entry, PublicKey, ResultCache, SCHEMA, open_entry};
use crate::error::{CacheError, Error};

/// What `export` wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub entries: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// What `import` took and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub imported: u64,
    /// Entries refused, each with why.
    pub rejected: Vec<String>,
}

/// The bundle's own description, last in the archive.
const BUNDLE_MANIFEST: &str = "dvm-results-bundle.json";
/// Most bytes a bundle may unpack to.
const MAX_BUNDLE_BYTES: u64 = 16 << 30;
/// Largest entry member: an entry holds a run's stdout and stderr in base64.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;
/// Largest output-file member (a run's disk quota is at most this in practice).
pub const MAX_BLOB_BYTES: u64 = 8 << 30;
/// Largest manifest member.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

impl ResultCache {
    /// Writes `keys` (every entry when empty) with their output files to a `.tar.zst`
    /// bundle. Entries that do not verify are left out.
    pub fn export(&self, keys: &[CacheKey], to: &Path) -> Result<ExportReport, Error> {
        let keys: Vec<CacheKey> = if keys.is_empty() {
            self.backend
                .entries()?
                .into_iter()
                .map(|(key, _, _)| key)
                .collect()
        } else {
            keys.to_vec()
        };
        let mut archive = tar::Builder::new(Vec::new());
        let add = |archive: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive
                .append_data(&mut header, name, bytes)
                .map_err(|source| {
                    Error::from(CacheError::Bundle {
                        action: "build the bundle",
                        source,
                    })
                })
        };
        let trust = &self.keys()?.trust;
        let mut report = ExportReport::default();
        let mut blobs = BTreeSet::new();
        let mut exported = Vec::new();
        for key in &keys {
            let Some(sealed) = self.backend.get_entry(key)? else {
                return Err(Error::InvalidInput(format!(
                    "no cached result has the key {key}; `dvm cache ls` lists them"
                )));
            };
            let entry = match open_entry(key, &sealed, trust) {
                Ok(entry) => entry,
                Err(why) => {
                    tracing::warn!("result cache: the entry {key} is not exported: {why}");
                    continue;
                }
            };
            for file in &entry.outcome.files {
                if blobs.insert(file.blake3) {
                    let bytes = self.backend.get_blob(&file.blake3, file.size)?;
                    let bytes = bytes.ok_or_else(|| {
                        CacheError::Inconsistent(format!("output blob {} is missing", file.blake3))
                    })?;
                    add(&mut archive, &format!("blobs/{}", file.blake3), &bytes)?;
                    report.blobs += 1;
                }
            }
            add(&mut archive, &format!("entries/{key}.json"), &sealed)?;
            exported.push(key.to_string());
            report.entries += 1;
        }
        let manifest = serde_json::json!({ "schema": SCHEMA, "entries": exported });
        add(
            &mut archive,
            BUNDLE_MANIFEST,
            manifest.to_string().as_bytes(),
        )?;
        let tarball = archive.into_inner().map_err(|source| CacheError::Bundle {
            action: "build the bundle",
            source,
        })?;
        let compressed = ruzstd::encoding::compress_to_vec(
            tarball.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        report.bytes = compressed.len() as u64;
        std::fs::write(to, compressed).map_err(|e| {
            Error::InvalidInput(format!("cannot write the bundle {}: {e}", to.display()))
        })?;
        Ok(report)
    }

    /// Reads a bundle made by [`ResultCache::export`] with bounded memory. Each entry is
    /// stored (signed again with this cache's key) only if it is signed by a key this cache
    /// trusts or one of `trust`, is filed under its own key, every output path in it is a
    /// relative workspace path and every output file it names is in the bundle with the right
    /// blake3 and size; the rest are reported as rejected. A member larger than its kind
    /// allows makes the bundle refused.
    pub fn import(&self, from: &Path, trust: &[PublicKey]) -> Result<ImportReport, Error> {
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "{} is not a dvm results bundle: {why}",
                from.display()
            ))
        };
        let keys = self.keys()?;
        let signer = keys.signer.clone();
        let mut trusted = keys.trust.clone();
        for key in trust {
            trusted.add(*key);
        }
        let file = std::fs::File::open(from).map_err(|source| Error::ReadInput {
            path: from.to_path_buf(),
            source,
        })?;
        let decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
            .map_err(|e| bad(format!("not zstd ({e})")))?;
        let mut archive = tar::Archive::new(Read::take(decoder, MAX_BUNDLE_BYTES));
        let staging = tempfile::tempdir().map_err(|source| CacheError::Bundle {
            action: "make a staging directory",
            source,
        })?;
        let stage_error = |source: std::io::Error| {
            Error::from(CacheError::Bundle {
                action: "stage the bundle",
                source,
            })
        };
        let mut entries: BTreeMap<CacheKey, std::path::PathBuf> = BTreeMap::new();
        // Blobs whose contents matched their name, with their size; and those that did not.
        let mut blobs: HashMap<Blake3Hex, (std::path::PathBuf, u64)> = HashMap::new();
        let mut mismatched: BTreeSet<Blake3Hex> = BTreeSet::new();
        let mut report = ImportReport::default();
        // Raw: extension headers (long names, pax records, sparse maps) come as members of
        // their own, size-checked like any other, instead of being read whole by the reader.
        for (index, member) in archive
            .entries()
            .map_err(|e| bad(e.to_string()))?
            .raw(true)
            .enumerate()
        {
            let mut member = member.map_err(|e| bad(e.to_string()))?;
            let name = member
                .path()
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            let declared = member.header().size().map_err(|e| bad(e.to_string()))?;
            let regular = member.header().entry_type().is_file();
            let entry_key = name
                .strip_prefix("entries/")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|k| CacheKey::parse(k).ok());
            let blob = name
                .strip_prefix("blobs/")
                .and_then(|h| Blake3Hex::parse(h).ok());
            let known =
                regular && (entry_key.is_some() || blob.is_some() || name == BUNDLE_MANIFEST);
            let cap = match (&entry_key, &blob) {
                _ if !known => MAX_MANIFEST_BYTES,
                (Some(_), _) => MAX_ENTRY_BYTES,
                (_, Some(_)) => MAX_BLOB_BYTES,
                _ => MAX_MANIFEST_BYTES,
            };
            if declared > cap {
                return Err(bad(format!(
                    "its member {} declares {declared} bytes, over the {cap}-byte cap; \
                     nothing was imported",
                    name.escape_debug()
                )));
            }
            if !known {
                report.rejected.push(format!(
                    "{}: not a part of a results bundle",
                    name.escape_debug()
                ));
                continue;
            }
            // Read at most what was declared (and the cap), whatever the stream holds.
            let mut limited = (&mut member).take(declared.min(cap));
            if let Some(key) = entry_key {
                let path = staging.path().join(format!("entry-{index}"));
                let mut out = std::fs::File::create(&path).map_err(stage_error)?;
                std::io::copy(&mut limited, &mut out).map_err(|e| bad(e.to_string()))?;
                entries.insert(key, path);
            } else if let Some(hash) = blob {
                let path = staging.path().join(format!("blob-{index}"));
                let mut out = std::fs::File::create(&path).map_err(stage_error)?;
                let mut hasher = blake3::Hasher::new();
                let mut buffer = vec![0u8; 64 << 10];
                let mut size = 0u64;
                loop {
                    let read = limited.read(&mut buffer).map_err(|e| bad(e.to_string()))?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                    out.write_all(&buffer[..read]).map_err(stage_error)?;
                    size += read as u64;
                }
                if Blake3Hex::from_hash(hasher.finalize()) == hash {
                    mismatched.remove(&hash);
                    blobs.insert(hash, (path, size));
                } else {
                    drop(out);
                    let _ = std::fs::remove_file(&path);
                    if !blobs.contains_key(&hash) {
                        mismatched.insert(hash);
                    }
                }
            }
        }
        for (key, path) in entries {
            let bytes = std::fs::read(&path).map_err(stage_error)?;
            let checked = open_entry(&key, &bytes, &trusted)
                .map_err(|why| why.to_string())
                .and_then(|entry| check_blobs(&entry, &blobs, &mismatched).map(|()| entry));
            match checked {
                Ok(entry) => {
                    for file in &entry.outcome.files {
                        self.backend
                            .put_blob_file(&file.blake3, &blobs[&file.blake3].0)?;
                    }
                    // Checked, it is signed again with this home's key: trusting a key for
                    // one import does not make it trusted for later reads.
                    self.backend
                        .put_entry(&key, &super::seal(&entry, &signer)?)?;
                    report.imported += 1;
                }
                Err(why) => report.rejected.push(format!("{key}: {why}")),
            }
        }
        self.evict_if_over()?;
        Ok(report)
    }
}

/// Checks that every output file of `entry` came in the bundle with its blake3 and size.
fn check_blobs(
    entry: &Entry,
    blobs: &HashMap<Blake3Hex, (std::path::PathBuf, u64)>,
    mismatched: &BTreeSet<Blake3Hex>,
) -> Result<(), String> {
    for file in &entry.outcome.files {
        match blobs.get(&file.blake3) {
            Some((_, size)) if *size == file.size => {}
            Some(_) => {
                return Err(format!(
                    "output blob {} does not match its size",
                    file.blake3
                ));
            }
            None if mismatched.contains(&file.blake3) => {
                return Err(format!(
                    "output blob {} does not match its hash",
                    file.blake3
                ));
            }
            None => return Err(format!("output blob {} is missing", file.blake3)),
        }
    }
    Ok(())
}
