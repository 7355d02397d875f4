//! Validated forms of every package string dvm takes from outside: requirements (PEP 508
//! without URLs, npm `name@range`), package names (PEP 503, npm), versions, wheel and tarball
//! file names and sha256 digests. Each type has one constructor that parses; pip and npm
//! arguments and package-store paths are only ever built from these types.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{Pep508ErrorSource, Requirement, VersionOrUrl};
use serde::{Deserialize, Serialize};

pub use crate::archive::member_path;
use crate::archive::shown;
use crate::error::Error;

/// Longest requirement text dvm reads.
const MAX_REQUIREMENT_CHARS: usize = 1000;

/// What to write instead of a Python requirement dvm refuses.
pub(crate) const PYTHON_INSTEAD: &str = "use a registry name with a version specifier (e.g. \
     `tabulate>=0.9`), or pass a directory of wheels with --find-links";
/// What to write instead of an npm spec dvm refuses.
pub(crate) const NPM_INSTEAD: &str = "use a registry name with a version or range (e.g. \
     `lodash-es@^4.17`), or `npm pack` it and pass the directory with --find-links";

pub(crate) fn refused(text: &str, reason: impl Into<String>, instead: &str) -> Error {
    Error::UnsupportedRequirement {
        requirement: shown(text),
        origin: String::new(),
        reason: reason.into(),
        instead: instead.to_string(),
    }
}

/// Adds where a refused requirement was read (` (requirements.txt)`) to its error.
pub(crate) fn from_origin(error: Error, origin: &str) -> Error {
    match error {
        Error::UnsupportedRequirement {
            requirement,
            origin: _,
            reason,
            instead,
        } => Error::UnsupportedRequirement {
            requirement,
            origin: format!(" ({origin})"),
            reason,
            instead,
        },
        other => other,
    }
}

/// The URL type handed to the PEP 508 parser: it accepts no URL, so `name @ anything` fails
/// in the parser itself, before any URL or path is looked at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NoUrl;

impl fmt::Display for NoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(no URL)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("direct URL and path requirements are not supported")]
pub struct UrlRefused;

impl pep508_rs::Pep508Url for NoUrl {
    type Err = UrlRefused;

    fn parse_url(_url: &str, _working_dir: Option<&std::path::Path>) -> Result<Self, UrlRefused> {
        Err(UrlRefused)
    }
}

/// A Python distribution name, PEP 503-normalised (lower case, runs of `-_.` as one `-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyName(String);

impl PyName {
    /// A name as PEP 508 allows it (ASCII letters, digits, `-_.`, starting and ending with
    /// a letter or digit, at most 200 characters), normalised.
    pub fn parse(text: &str) -> Result<PyName, String> {
        let bytes = text.as_bytes();
        let edge = |b: &u8| b.is_ascii_alphanumeric();
        let valid = !text.is_empty()
            && text.len() <= 200
            && bytes.first().is_some_and(edge)
            && bytes.last().is_some_and(edge)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
        if !valid {
            return Err(format!(
                "`{}` is not a Python package name (ASCII letters, digits, `-`, `_` and `.`, \
                 starting and ending with a letter or digit)",
                shown(text)
            ));
        }
        Ok(PyName(super::normalize(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PEP 440 version as written (`1.0`, `2.0.0rc1`, `1!2.0+local`).
pub fn check_py_version(text: &str) -> Result<(), String> {
    let charset = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._+!-".contains(&b));
    if text.is_empty() || text.len() > 100 || !charset || Version::from_str(text).is_err() {
        return Err(format!("`{}` is not a PEP 440 version", shown(text)));
    }
    Ok(())
}

/// A wheel file name: `name-version(-build)?-python-abi-platform.whl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelFilename {
    file: String,
    name: PyName,
    version: String,
}

impl WheelFilename {
    pub fn parse(file: &str) -> Result<WheelFilename, String> {
        let bad = |why: &str| format!("`{}` is not a wheel file name: {why}", shown(file));
        let stem = file
            .strip_suffix(".whl")
            .ok_or_else(|| bad("it does not end in .whl"))?;
        if file.len() > 255 {
            return Err(bad("it is longer than 255 bytes"));
        }
        let parts: Vec<&str> = stem.split('-').collect();
        if !(5..=6).contains(&parts.len()) {
            return Err(bad("it does not have 5 or 6 `-`-separated fields"));
        }
        let field = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.+!".contains(&b))
        };
        if !parts.iter().all(field) {
            return Err(bad("a field is empty or has a character wheels do not use"));
        }
        if parts.len() == 6 && !parts[2].starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("its build tag does not start with a digit"));
        }
        let name = PyName::parse(parts[0]).map_err(|e| bad(&e))?;
        check_py_version(parts[1]).map_err(|e| bad(&e))?;
        Ok(WheelFilename {
            file: file.to_string(),
            name,
            version: parts[1].to_string(),
        })
    }

    pub fn name(&self) -> &PyName {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn as_str(&self) -> &str {
        &self.file
    }
}

/// A sha256 digest: exactly 64 lowercase hex digits. The only way a digest becomes a store
/// path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    pub fn parse(text: &str) -> Result<Sha256, String> {
        if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Sha256(text.to_string()))
        } else {
            Err(format!(
                "`{}` is not a sha256 (64 lowercase hex digits)",
                shown(text)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256 {
    type Error = String;

    fn try_from(text: String) -> Result<Sha256, String> {
        Sha256::parse(&text)
    }
}

impl From<Sha256> for String {
    fn from(sha: Sha256) -> String {
        sha.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Sha256 {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A Python requirement dvm will hand to pip: PEP 508 with a registry name, optional extras,
/// version specifiers and markers, and never a URL or path.
#[derive(Debug, Clone)]
pub struct PythonRequirement {
    requirement: Requirement<NoUrl>,
    name: PyName,
}

impl PythonRequirement {
    pub fn parse(text: &str) -> Result<PythonRequirement, Error> {
        let trimmed = text.trim();
        let refuse = |reason: String| refused(text, reason, PYTHON_INSTEAD);
        if trimmed.is_empty() {
            return Err(refuse("it is empty".into()));
        }
        if trimmed.len() > MAX_REQUIREMENT_CHARS {
            return Err(refuse(format!(
                "it is longer than {MAX_REQUIREMENT_CHARS} characters"
            )));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(refuse("it has control characters".into()));
        }
        if trimmed.starts_with('-') {
            return Err(refuse(
                "it is a pip option; dvm passes pip no options from requirements".into(),
            ));
        }
        // The leading name is checked before the PEP 508 parser sees it: pep508_rs panics on
        // some invalid names (`A../`) instead of returning an error.
        let name_end = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .unwrap_or(trimmed.len());
        if let Err(why) = PyName::parse(&trimmed[..name_end]) {
            let location = trimmed.contains("://")
                || trimmed.starts_with(['.', '/', '~'])
                || trimmed.contains(['/', '\\']);
            return Err(refuse(if location {
                "it is a URL, a path or a file, not a registry requirement".into()
            } else {
                format!("it is not a PEP 508 requirement ({why})")
            }));
        }
        let parsed = std::panic::catch_unwind(|| Requirement::<NoUrl>::from_str(trimmed))
            .map_err(|_| refuse("it is not a PEP 508 requirement".into()))?;
        let requirement = parsed.map_err(|e| match e.message {
            Pep508ErrorSource::UrlError(_) => refuse(
                "it names a direct URL or path (`name @ …`), which could run a build on the \
                 host"
                    .into(),
            ),
            Pep508ErrorSource::UnsupportedRequirement(_) => {
                refuse("it is a URL, a path or a file, not a registry requirement".into())
            }
            other => {
                let looks_like_location = trimmed.contains("://")
                    || trimmed.starts_with(['.', '/', '~'])
                    || trimmed.contains(['/', '\\'])
                    || trimmed.starts_with("git+");
                if looks_like_location {
                    refuse("it is a URL, a path or a file, not a registry requirement".into())
                } else {
                    refuse(format!("it is not a PEP 508 requirement ({other})"))
                }
            }
        })?;
        if let Some(VersionOrUrl::Url(_)) = requirement.version_or_url {
            return Err(refuse("it names a direct URL or path".into()));
        }
        let name = PyName::parse(requirement.name.as_ref()).map_err(refuse)?;
        Ok(PythonRequirement { requirement, name })
    }

    pub fn name(&self) -> &PyName {
        &self.name
    }

    pub fn requirement(&self) -> &Requirement<NoUrl> {
        &self.requirement
    }

    /// The requirement for pip: the same, without its marker (evaluated by dvm for the
    /// guest; pip would evaluate it for the host).
    pub fn for_pip(&self) -> String {
        let mut requirement = self.requirement.clone();
        requirement.marker = pep508_rs::MarkerTree::TRUE;
        requirement.to_string()
    }
}

impl fmt::Display for PythonRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.requirement.fmt(f)
    }
}

/// An npm package name: lower case URL-safe characters (`a-z0-9-._~`), at most 214
/// characters, optionally scoped (`@scope/name`), no part starting with `.`, `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NpmName(String);

impl NpmName {
    pub fn parse(text: &str) -> Result<NpmName, String> {
        let part_ok = |part: &str| {
            !part.is_empty()
                && !part.starts_with(['.', '_', '-'])
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
        };
        // npm reads `x.tgz@1` as a tarball path, whatever follows.
        let lower = text.to_ascii_lowercase();
        let tarball = [".tgz", ".tar", ".tar.gz"]
            .iter()
            .any(|ext| lower.ends_with(ext));
        let valid = text.len() <= 214
            && !tarball
            && match text.strip_prefix('@') {
                Some(scoped) => scoped
                    .split_once('/')
                    .is_some_and(|(scope, name)| part_ok(scope) && part_ok(name)),
                None => part_ok(text),
            };
        if !valid {
            return Err(format!(
                "`{}` is not an npm package name (lower case letters, digits, `-._~`, \
                 optionally `@scope/name`; no part may start with `.`, `_` or `-`)",
                shown(text)
            ));
        }
        Ok(NpmName(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the package sits in a `node_modules` directory: `name` or `@scope/name`.
    pub fn relative_path(&self) -> PathBuf {
        self.0.split('/').collect()
    }
}

impl fmt::Display for NpmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An exact npm version (semver).
pub fn check_npm_version(text: &str) -> Result<(), String> {
    let charset = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".+-".contains(&b));
    if text.len() > 256 || !charset || semver::Version::parse(text).is_err() {
        return Err(format!("`{}` is not a semver version", shown(text)));
    }
    Ok(())
}

/// An `npm pack` tarball file name: `[A-Za-z0-9._-]+.tgz`, not starting with `.`.
pub fn check_tarball_name(text: &str) -> Result<(), String> {
    let valid = text.len() <= 255
        && text.len() > 4
        && text.ends_with(".tgz")
        && !text.starts_with(['.', '-'])
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(format!("`{}` is not an npm tarball file name", shown(text)));
    }
    Ok(())
}

/// `range` as an npm version range (empty is `*`), or `None` when it is not one: every
/// comparator must be well-formed (which keeps stray words out, as npm does) and npm's grammar
/// (nodejs-semver) must accept the whole.
pub(crate) fn npm_range(range: &str) -> Option<nodejs_semver::Range> {
    let tokens_ok = range
        .split("||")
        .all(|alternative| alternative.split_whitespace().all(npm_range_token));
    if !tokens_ok {
        return None;
    }
    nodejs_semver::Range::parse(if range.trim().is_empty() { "*" } else { range }).ok()
}

/// One comparator token of an npm range: `^1.2`, `>=1.0.0-rc.1`, `~2`, `1.x`, `*`, or a
/// bare operator that the next token completes (`>= 1.2`).
fn npm_range_token(token: &str) -> bool {
    if token == "-" {
        // The middle of a hyphen range (`1.2.3 - 2.0.0`).
        return true;
    }
    let rest = ["<=", ">=", "~>", "<", ">", "=", "~", "^"]
        .iter()
        .find_map(|op| token.strip_prefix(op))
        .unwrap_or(token);
    if rest.is_empty() {
        // A bare operator (`>=` before ` 1.2`).
        return !token.is_empty();
    }
    let rest = rest.strip_prefix(['v', 'V']).unwrap_or(rest);
    let (core, label) = match rest.find(['-', '+']) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let core_ok = (1..=3).contains(&numbers.len())
        && numbers.iter().all(|n| {
            matches!(*n, "x" | "X" | "*")
                || (!n.is_empty() && n.len() <= 16 && n.bytes().all(|b| b.is_ascii_digit()))
        });
    let label_ok = rest.len() == core.len()
        || (!label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b)));
    core_ok && label_ok
}

/// An npm registry spec: `name`, `name@version`, `name@range` or `name@tag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NpmSpec {
    name: NpmName,
    range: String,
}

impl NpmSpec {
    /// Parses `name@range` (`latest` when no range is given).
    pub fn parse(text: &str) -> Result<NpmSpec, Error> {
        let trimmed = text.trim();
        let at = trimmed
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == '@')
            .map(|(i, _)| i);
        let (name, range) = match at {
            Some(i) => (&trimmed[..i], Some(&trimmed[i + 1..])),
            None => (trimmed, None),
        };
        // A name that is itself a location: a path, a tarball, a URL, `user/repo`.
        let location = |s: &str| {
            let lower = s.to_ascii_lowercase();
            [".tgz", ".tar", ".tar.gz"]
                .iter()
                .any(|ext| lower.ends_with(ext))
                || s.contains(':')
                || s.starts_with(['.', '/', '~'])
                || (s.contains('/') && !s.starts_with('@'))
                || s.contains('\\')
        };
        if location(name) {
            return Err(refused(
                text,
                "it is a path, a URL, a tarball or a git/GitHub spec, not a registry package",
                NPM_INSTEAD,
            ));
        }
        let name = NpmName::parse(name).map_err(|why| refused(text, why, NPM_INSTEAD))?;
        if range.is_some_and(|range| range.trim().is_empty()) {
            return Err(refused(text, "nothing follows its `@`", NPM_INSTEAD));
        }
        NpmSpec::from_parts(name, range.unwrap_or("latest")).map_err(|e| match e {
            Error::UnsupportedRequirement {
                reason, instead, ..
            } => Error::UnsupportedRequirement {
                requirement: shown(text),
                origin: String::new(),
                reason,
                instead,
            },
            other => other,
        })
    }

    /// A spec from a name and the range a manifest gives it.
    pub fn from_parts(name: NpmName, range: &str) -> Result<NpmSpec, Error> {
        let range = range.trim();
        let shown_spec = format!("{name}@{range}");
        let refuse = |reason: &str, instead: &str| refused(&shown_spec, reason, instead);
        let lower = range.to_ascii_lowercase();
        if lower.starts_with("npm:") {
            return Err(refuse(
                "`npm:` aliases install another package under this name",
                "name the real package with a version or range, e.g. `real-name@^1`",
            ));
        }
        if lower.starts_with("workspace:") {
            return Err(refuse(
                "`workspace:` specs point into a local monorepo",
                "upload the workspace package's files with the script instead",
            ));
        }
        if lower.starts_with("file:") || lower.starts_with("link:") {
            return Err(refuse(
                "`file:` and `link:` specs read host paths",
                NPM_INSTEAD,
            ));
        }
        if range.contains(':') || range.contains('/') || range.contains('\\') {
            return Err(refuse(
                "it is a URL, a path, or a git/GitHub spec, not a version range",
                NPM_INSTEAD,
            ));
        }
        let tarball = [".tgz", ".tar", ".tar.gz"]
            .iter()
            .any(|ext| lower.ends_with(ext));
        if range.starts_with('.') || range.starts_with("~/") || tarball {
            return Err(refuse("it names a tarball or a path", NPM_INSTEAD));
        }
        if range.len() > 256 || range.chars().any(char::is_control) {
            return Err(refuse(
                "the range is too long or has control characters",
                NPM_INSTEAD,
            ));
        }
        let tag = range
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && range
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        let is_range = npm_range(range).is_some();
        if !(tag || is_range) {
            return Err(refuse(
                "it is not a version, a version range or a dist-tag",
                NPM_INSTEAD,
            ));
        }
        let range = if range.is_empty() { "latest" } else { range };
        Ok(NpmSpec {
            name,
            range: range.to_string(),
        })
    }

    pub fn name(&self) -> &NpmName {
        &self.name
    }

    pub fn range(&self) -> &str {
        &self.range
    }
}

impl fmt::Display for NpmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(error: Error) -> &'static str {
        error.kind()
    }

    #[test]
    fn python_requirements_take_names_versions_extras_and_markers_only() {
        for good in [
            "tabulate",
            "tabulate>=0.9",
            "Typing_Extensions==4.12.2",
            "attrs[tests]>=21,<24",
            "a; python_version >= \"3.12\"",
            "humanize ~= 4.0",
            "x===1.0",
        ] {
            PythonRequirement::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(
            PythonRequirement::parse("Typing_Extensions>=4")
                .unwrap()
                .name()
                .as_str(),
            "typing-extensions"
        );
        for bad in [
            "evil @ file:///tmp/x",
            "evil@file:///tmp/x",
            "evil @ https://example.invalid/x.tar.gz",
            "evil @ git+https://example.invalid/x.git",
            "x @ file:///etc/shadow",
            "./local/project",
            "/abs/path",
            "../up",
            "https://example.invalid/x.whl",
            "git+https://example.invalid/x.git",
            "x.tar.gz",
            "-e .",
            "--index-url=https://example.invalid",
            "-r other.txt",
            "not a requirement!!",
            "",
            "a\nb",
        ] {
            let error = PythonRequirement::parse(bad).expect_err(bad);
            assert_eq!(kind(error), "unsupported_requirement", "{bad}");
        }
        let message = PythonRequirement::parse("evil @ file:///tmp/x")
            .unwrap_err()
            .to_string();
        assert!(message.contains("evil @ file:///tmp/x"), "{message}");
        assert!(message.contains("--find-links"), "{message}");
    }

    #[test]
    fn npm_specs_take_registry_names_and_ranges_only() {
        for (good, name, range) in [
            ("lodash-es", "lodash-es", "latest"),
            ("lodash-es@^4.17", "lodash-es", "^4.17"),
            ("@scope/pkg@1", "@scope/pkg", "1"),
            ("x@>=1 <2", "x", ">=1 <2"),
            ("x@>= 1.2.0", "x", ">= 1.2.0"),
            ("x@1.0.0-rc.1", "x", "1.0.0-rc.1"),
            ("x@^1 || ^3", "x", "^1 || ^3"),
            ("x@1.x", "x", "1.x"),
            ("x@*", "x", "*"),
            ("x@next", "x", "next"),
            ("x@1.2.3 - 2.0.0", "x", "1.2.3 - 2.0.0"),
        ] {
            let spec = NpmSpec::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(
                (spec.name().as_str(), spec.range()),
                (name, range),
                "{good}"
            );
        }
        for bad in [
            "pkg@file:/dir",
            "pkg@file:../x",
            "pkg@link:../x",
            "pkg@http://example.invalid/x.tgz",
            "pkg@https://example.invalid/x.tgz",
            "pkg@git+ssh://git@example.invalid/x.git",
            "pkg@github:user/repo",
            "pkg@user/repo",
            "user/repo",
            "pkg@npm:other@1",
            "pkg@workspace:*",
            "pkg@./dir",
            "pkg@~/dir",
            "pkg@x.tgz",
            "pkg@1.0.0-a.tgz",
            "./dir",
            "/abs/dir",
            "x.tgz",
            "../escape",
            "../../x",
            "a/b/c",
            "UPPER",
            "x@",
            "a b",
            "-x@1",
            "_x",
            ".x",
            "@scope/../x",
            "Not A Package!",
        ] {
            let error = NpmSpec::parse(bad).expect_err(bad);
            assert_eq!(kind(error), "unsupported_requirement", "{bad}");
        }
    }

    #[test]
    fn lock_fields_parse_strictly() {
        let sha = "a".repeat(64);
        assert!(Sha256::parse(&sha).is_ok());
        for bad in [
            "../../dir",
            &"A".repeat(64),
            &"a".repeat(63),
            "",
            &format!("{sha}/"),
        ] {
            assert!(Sha256::parse(bad).is_err(), "{bad}");
        }
        let wheel = WheelFilename::parse("typing_extensions-4.12.2-py3-none-any.whl").unwrap();
        assert_eq!(wheel.name().as_str(), "typing-extensions");
        assert_eq!(wheel.version(), "4.12.2");
        assert!(WheelFilename::parse("x-1.0-1build-py3-none-any.whl").is_ok());
        for bad in [
            "../x-1.0-py3-none-any.whl",
            "x-1.0-py3-none-any.tar.gz",
            "x-1.0.whl",
            "x-notaversion-py3-none-any.whl",
            "x/y-1.0-py3-none-any.whl",
            "x-1.0-py3-none-any/..whl",
        ] {
            assert!(WheelFilename::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            NpmName::parse("@s/p").unwrap().relative_path(),
            PathBuf::from("@s").join("p")
        );
        assert!(check_npm_version("1.2.3").is_ok());
        assert!(check_npm_version("../1").is_err());
        assert!(check_tarball_name("s-p-1.0.0.tgz").is_ok());
        assert!(check_tarball_name("../x.tgz").is_err());
    }

    #[test]
    fn member_paths_stay_under_the_root() {
        assert_eq!(
            member_path("a/./b/").unwrap(),
            Some(PathBuf::from("a").join("b"))
        );
        assert_eq!(member_path("./").unwrap(), None);
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "C:x",
            "a\\..\\x",
            "a\0b",
        ] {
            assert!(member_path(bad).is_err(), "{bad}");
        }
    }

    /// Every component of a path made from a validated value is a plain name.
    fn plain(path: &std::path::Path) -> bool {
        path.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    }

    proptest! {
        #[test]
        fn member_paths_never_leave_the_root(name in ".{0,80}", parts in proptest::collection::vec("(\\.\\.|\\.|/|a|b|\\\\|:|\\x00|[^/]{0,3})", 0..12)) {
            for candidate in [name, parts.concat(), parts.join("/")] {
                if let Ok(Some(path)) = member_path(&candidate) {
                    prop_assert!(path.is_relative());
                    prop_assert!(plain(&path), "{:?}", path);
                    let root = std::path::Path::new("/root-of-extraction");
                    prop_assert!(root.join(&path).starts_with(root));
                }
            }
        }

        #[test]
        fn zip_members_never_land_outside_the_destination(names in proptest::collection::vec("(\\.\\./|/|\\./|[a-z]{1,3}/|\\.\\.|\\\\|C:){0,5}[a-z.]{0,4}", 1..6)) {
            use std::io::Write;
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("a").join("b").join("dest");
            std::fs::create_dir_all(&dest).unwrap();
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            for name in &names {
                if zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).is_ok() {
                    zip.write_all(b"x").unwrap();
                }
            }
            let bytes = zip.finish().unwrap();
            let _ = crate::archive::extract_zip(std::io::Cursor::new(bytes.into_inner()), &dest, 1 << 20);
            let mut pending = vec![dir.path().to_path_buf()];
            while let Some(current) = pending.pop() {
                for entry in std::fs::read_dir(&current).unwrap().flatten() {
                    let path = entry.path();
                    prop_assert!(path.starts_with(&dest) || dest.starts_with(&path), "{path:?}");
                    if entry.file_type().unwrap().is_dir() {
                        pending.push(path);
                    }
                }
            }
        }

        #[test]
        fn python_requirements_never_carry_a_location(text in ".{0,60}", name in "[A-Za-z0-9][A-Za-z0-9._-]{0,10}", tail in "(@|://|file:|/|\\.\\./|git\\+)[ -~]{0,20}") {
            for candidate in [text, format!("{name} @ {tail}"), format!("{name}@{tail}"), format!("{name}{tail}")] {
                if let Ok(requirement) = PythonRequirement::parse(&candidate) {
                    let rendered = requirement.for_pip();
                    prop_assert!(!rendered.contains("://"), "{candidate:?} -> {rendered}");
                    prop_assert!(!rendered.contains(" @ "), "{candidate:?} -> {rendered}");
                    prop_assert!(!rendered.starts_with('-'), "{candidate:?} -> {rendered}");
                    prop_assert!(!rendered.contains('/'), "{candidate:?} -> {rendered}");
                    prop_assert!(plain(std::path::Path::new(requirement.name().as_str())));
                }
            }
        }

        #[test]
        fn npm_specs_never_carry_a_location(text in ".{0,60}", name in "(@?[a-z0-9._~-]{1,8}/)?[a-z0-9._~-]{1,8}", range in "(file:|link:|npm:|git\\+|http://|github:|workspace:|\\./|~/|/|[ -~]{0,3})[ -~]{0,16}") {
            for candidate in [text, format!("{name}@{range}"), range.clone()] {
                if let Ok(spec) = NpmSpec::parse(&candidate) {
                    let r = spec.range();
                    prop_assert!(!r.contains(':') && !r.contains('/') && !r.contains('\\'), "{candidate:?}");
                    prop_assert!(!r.starts_with('.') && !r.ends_with(".tgz") && !r.ends_with(".tar"), "{candidate:?}");
                    prop_assert!(!spec.name().as_str().starts_with(['-', '.']), "{candidate:?}");
                    let path = spec.name().relative_path();
                    prop_assert!(plain(&path) && path.components().count() <= 2, "{candidate:?}");
                }
            }
        }

        #[test]
        fn lock_field_parsers_give_plain_names(text in ".{0,70}", hexish in "[0-9a-fA-F./]{60,68}") {
            for candidate in [&text, &hexish] {
                if let Ok(sha) = Sha256::parse(candidate) {
                    prop_assert!(sha.as_str().len() == 64 && plain(std::path::Path::new(sha.as_str())));
                }
                if let Ok(name) = NpmName::parse(candidate) {
                    prop_assert!(plain(&name.relative_path()));
                }
                if let Ok(wheel) = WheelFilename::parse(candidate) {
                    prop_assert!(plain(std::path::Path::new(wheel.as_str())));
                    prop_assert!(!wheel.as_str().contains('/'));
                }
                if check_tarball_name(candidate).is_ok() {
                    prop_assert!(plain(std::path::Path::new(candidate.as_str())));
                }
            }
        }
    }
}
