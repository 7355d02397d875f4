//! The validated names of the result cache: a [`CacheKey`], a [`Blake3Hex`] blob name and an
//! [`OutputPath`]. Every key, blob name and output path that comes from a user, a bundle or
//! the bus is parsed into one of these before a path or a bucket key is made from it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether `text` is exactly 64 lowercase hex digits.
fn is_lower_hex_64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A result-cache key: blake3 over a run's identity, 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Parses a key; anything but 64 lowercase hex digits is refused.
    pub fn parse(text: &str) -> Result<CacheKey, String> {
        if is_lower_hex_64(text) {
            Ok(CacheKey(text.to_string()))
        } else {
            Err(format!(
                "`{}` is not a result-cache key (64 lowercase hex digits, as `dvm cache ls` \
                 prints them)",
                text.escape_debug()
            ))
        }
    }

    pub(crate) fn from_hash(hash: blake3::Hash) -> CacheKey {
        CacheKey(hash.to_hex().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CacheKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CacheKey::parse(text)
    }
}

/// The name of an output-file blob: its blake3, 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blake3Hex([u8; 32]);

impl Blake3Hex {
    /// Parses a blob name; anything but 64 lowercase hex digits is refused.
    pub fn parse(text: &str) -> Result<Blake3Hex, String> {
        if !is_lower_hex_64(text) {
            return Err(format!(
                "`{}` is not a blake3 digest (64 lowercase hex digits)",
                text.escape_debug()
            ));
        }
        blake3::Hash::from_hex(text)
            .map(|hash| Blake3Hex(*hash.as_bytes()))
            .map_err(|e| format!("`{text}` is not a blake3 digest: {e}"))
    }

    pub fn of(bytes: &[u8]) -> Blake3Hex {
        Blake3Hex::from_hash(blake3::hash(bytes))
    }

    pub(crate) fn from_hash(hash: blake3::Hash) -> Blake3Hex {
        Blake3Hex(*hash.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex text (the blob's file or object name).
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for Blake3Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A path of an output file as a cache entry records it: relative to the workspace,
/// `/`-separated and normalised. No component is empty, `.`, `..` or holds a NUL byte, and
/// it neither starts nor ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutputPath(String);

/// Longest output path accepted (Linux's PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

impl OutputPath {
    pub fn parse(text: &str) -> Result<OutputPath, String> {
        let bad = |why: &str| {
            format!(
                "`{}` is not a relative workspace path ({why})",
                text.escape_debug()
            )
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(bad("it is too long"));
        }
        if text.starts_with('/') {
            return Err(bad("it is absolute"));
        }
        for part in text.split('/') {
            match part {
                "" => return Err(bad("it has an empty component")),
                "." | ".." => return Err(bad("it has a `.` or `..` component")),
                _ if part.contains('\0') => return Err(bad("it contains a NUL byte")),
                _ if part.len() > 255 => return Err(bad("a component is too long")),
                _ => {}
            }
        }
        Ok(OutputPath(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutputPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! text_serde {
    ($ty:ty, $to:expr) => {
        impl Serialize for $ty {
            #[allow(clippy::redundant_closure_call)]
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let text: String = ($to)(self);
                s.serialize_str(&text)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$ty>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_serde!(CacheKey, |k: &CacheKey| k.0.clone());
text_serde!(Blake3Hex, |h: &Blake3Hex| h.hex());
text_serde!(OutputPath, |p: &OutputPath| p.0.clone());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_paths_refuse_what_could_leave_their_directory() {
        assert!(CacheKey::parse(&"a".repeat(64)).is_ok());
        for bad in [
            "../../x",
            "",
            &"A".repeat(64),
            &"a".repeat(63),
            &format!("{}/", "a".repeat(63)),
        ] {
            assert!(CacheKey::parse(bad).is_err(), "{bad}");
        }
        assert!(OutputPath::parse("a/b.txt").is_ok());
        for bad in ["../x", "a/../b", "/etc/x", "a//b", "a/", "./a", "a\0b", ""] {
            assert!(OutputPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
