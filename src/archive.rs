//! Unpacking archives from outside (wheels, runtime packages, npm tarballs): every member name
//! goes through one validator, so nothing lands outside the extraction root.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Untrusted text as shown in an error: control characters escaped, at most 200 characters.
pub(crate) fn shown(text: &str) -> String {
    let escaped: String = text.trim().chars().flat_map(char::escape_debug).collect();
    match escaped.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &escaped[..at]),
        None => escaped,
    }
}

/// An archive member's name made into a path under the extraction root: relative, only
/// normal components (`.` parts dropped), no `..`, no root or drive, no NUL, no backslash
/// (so a name means the same on every host). `None` for the root itself.
pub fn member_path(name: &str) -> Result<Option<PathBuf>, String> {
    // A colon in the first part could be a drive (`C:x`); elsewhere it is a plain character.
    let first = name.split('/').next().unwrap_or_default();
    if name.contains(['\0', '\\']) || name.starts_with('/') || first.contains(':') {
        return Err(format!("member {} escapes its directory", shown(name)));
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("member {} escapes its directory", shown(name))),
            normal => path.push(normal),
        }
    }
    if path.components().count() > 64 || name.len() > 4096 {
        return Err(format!("member {} is nested too deeply", shown(name)));
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

/// Most members one zip may have (each becomes a file or directory).
const MAX_ZIP_MEMBERS: usize = 100_000;

/// Unpacks a zip into `dest`, refusing members whose names escape it, links, more than
/// [`MAX_ZIP_MEMBERS`] members and more than `max_total` bytes in all.
pub(crate) fn extract_zip(
    reader: impl Read + std::io::Seek,
    dest: &Path,
    max_total: u64,
) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| format!("bad zip: {e}"))?;
    if archive.len() > MAX_ZIP_MEMBERS {
        return Err(format!("the zip has more than {MAX_ZIP_MEMBERS} members"));
    }
    let mut total = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| format!("bad zip entry: {e}"))?;
        // One validator for every archive member name (`enclosed_name` would quietly make an
        // absolute name relative; refuse it instead).
        let name = entry
            .name()
            .map(|name| name.into_owned())
            .map_err(|e| format!("bad zip member name: {e}"))?;
        let relative = member_path(&name)
            .map_err(|_| format!("zip member {name:?} escapes its directory"))?
            .unwrap_or_default();
        if entry.is_symlink() {
            return Err(format!("zip member {name:?} is a link"));
        }
        let path = dest.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        let mut out = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let budget = max_total.saturating_sub(total) + 1;
        let copied = std::io::copy(&mut (&mut entry).take(budget), &mut out)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        total += copied;
        if total > max_total {
            return Err(format!("the zip unpacks to more than {max_total} bytes"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip holding one stored member.
    fn zip_of(name: &str, contents: &[u8]) -> std::io::Cursor<Vec<u8>> {
        use std::io::Write;
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut bytes);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        writer.start_file(name, options).unwrap();
        writer.write_all(contents).unwrap();
        writer.finish().unwrap();
        bytes
    }

    #[test]
    fn zip_members_that_escape_are_refused() {
        let mut bytes = zip_of("../escape.txt", b"out");
        let dest = tempfile::tempdir().unwrap();
        bytes.set_position(0);
        let error = extract_zip(bytes, &dest.path().join("x"), 1 << 20).unwrap_err();
        assert!(error.contains("escapes"), "{error}");
        assert!(!dest.path().join("escape.txt").exists());
    }

    #[test]
    fn a_zip_bomb_is_cut_off_at_the_cap() {
        let mut bytes = zip_of("big.bin", &vec![0u8; 4096]);
        let dest = tempfile::tempdir().unwrap();
        bytes.set_position(0);
        let error = extract_zip(bytes, dest.path(), 1000).unwrap_err();
        assert!(error.contains("more than 1000 bytes"), "{error}");
    }
}
