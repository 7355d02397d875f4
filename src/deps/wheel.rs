//! Checks on the wheels pip downloads: the file itself and its RECORD.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::spec::WheelFilename;
use super::store::install_error;
use crate::error::Error;

/// A file pip left in its download directory, accepted only as a regular file with a valid
/// wheel file name.
pub(super) fn downloaded_wheel(entry: &std::fs::DirEntry) -> Result<WheelFilename, Error> {
    let name = entry.file_name();
    let shown = name.to_string_lossy().into_owned();
    let not_a_wheel = |why: String| {
        install_error(
            &shown,
            format!("pip left something that is not a wheel ({why}); nothing was installed"),
        )
    };
    let kind = entry.file_type().map_err(|e| not_a_wheel(e.to_string()))?;
    if !kind.is_file() {
        return Err(not_a_wheel("not a regular file".into()));
    }
    let name = name
        .to_str()
        .ok_or_else(|| not_a_wheel("the name is not UTF-8".into()))?;
    WheelFilename::parse(name).map_err(not_a_wheel)
}

/// A wheel's RECORD (CSV rows of path, hash, size; quoted when a path holds a comma or a
/// quote) as path → (hash, size).
pub(super) fn parse_record(record: &str) -> Result<BTreeMap<String, (String, String)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(record.as_bytes());
    let mut listed = BTreeMap::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("RECORD is not valid CSV: {e}"))?;
        if row.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        let [path, hash, size] = [0, 1, 2].map(|at| row.get(at));
        let (Some(path), Some(hash), Some(size), 3) = (path, hash, size, row.len()) else {
            let line = row.position().map_or(0, |at| at.line());
            return Err(format!(
                "RECORD line {line} is not path,hash,size: {:?}",
                row.iter().collect::<Vec<_>>()
            ));
        };
        listed.insert(path.to_string(), (hash.to_string(), size.to_string()));
    }
    Ok(listed)
}

/// Checks an unpacked wheel against its `*.dist-info/RECORD`: every file listed with a
/// sha256 and size that match, and no file that is not listed.
pub(super) fn check_record(tree: &Path) -> Result<(), String> {
    use base64::Engine;
    let dist_info = std::fs::read_dir(tree)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".dist-info"))
        .ok_or("the wheel has no .dist-info directory")?;
    let record_path = format!("{dist_info}/RECORD");
    let record = std::fs::read_to_string(tree.join(&record_path))
        .map_err(|_| "the wheel has no RECORD".to_string())?;
    let listed = parse_record(&record)?;
    let mut seen = BTreeSet::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(tree.join(&relative)).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = relative.join(entry.file_name());
            if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path.to_string_lossy().replace('\\', "/");
            if name == record_path
                || name.ends_with(".dist-info/RECORD.jws")
                || name.ends_with(".dist-info/RECORD.p7s")
            {
                continue;
            }
            let Some((hash, size)) = listed.get(&name) else {
                return Err(format!("{name} is not in the wheel's RECORD"));
            };
            let Some(expected) = hash.strip_prefix("sha256=") else {
                return Err(format!("RECORD has no sha256 for {name}"));
            };
            let mut bytes = Vec::new();
            std::fs::File::open(tree.join(&path))
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|e| e.to_string())?;
            use sha2::Digest;
            let actual = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(&bytes));
            if actual != expected || size.parse::<usize>().ok() != Some(bytes.len()) {
                return Err(format!("{name} does not match the wheel's RECORD"));
            }
            seen.insert(name);
        }
    }
    if let Some(absent) = listed.keys().find(|path| {
        **path != record_path
            && !path.ends_with(".jws")
            && !path.ends_with(".p7s")
            && !seen.contains(*path)
    }) {
        return Err(format!("{absent} is in the RECORD but not in the wheel"));
    }
    Ok(())
}
