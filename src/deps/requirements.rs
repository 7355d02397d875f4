//! `requirements.txt` files from an upload or a project: requirement lines validated as
//! [`PythonRequirement`]s, `-r`/`-c` includes resolved only inside the upload's root, and
//! pip options refused (none is ever passed to pip).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::spec::{PythonRequirement, from_origin, refused};
use crate::error::Error;

/// Most files one requirements file may pull in through `-r`/`-c`.
const MAX_FILES: usize = 32;
/// Deepest `-r` chain.
const MAX_DEPTH: usize = 8;
/// Largest requirements file read.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Options that change nothing dvm does and are left out: dvm always asks pip for pure
/// wheels only and passes it no option from a file.
const IGNORED_OPTIONS: &[&str] = &[
    "--pre",
    "--prefer-binary",
    "--only-binary",
    "--no-binary",
    "--require-hashes",
];

const OPTION_INSTEAD: &str = "remove it: dvm passes pip no options from files and resolves from \
     its package index, or from a wheel directory the operator passes with --find-links";
const INCLUDE_INSTEAD: &str = "keep included requirement files inside the project or upload and \
     name them by a relative path";

/// How lines naming the project itself (`-e .`, `./subpackage`) are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalPaths {
    /// Refused: an uploaded file may not point pip at a directory.
    Refuse,
    /// Left out when they stay inside the root: `dvm review` uploads the project as it is.
    SkipInsideRoot,
}

/// Reads a file of the upload by its path relative to the root (only normal components):
/// `Ok(None)` when there is no such regular file.
pub type ReadFile<'a> = dyn FnMut(&Path) -> Result<Option<String>, Error> + 'a;

/// The requirements of `start` (a path relative to the root) and the files it includes, each
/// validated; `Ok(empty)` when `start` does not exist.
pub fn read_requirements(
    start: &str,
    read: &mut ReadFile<'_>,
    local: LocalPaths,
) -> Result<Vec<String>, Error> {
    let start =
        resolve(Path::new(""), start).map_err(|reason| refused(start, reason, INCLUDE_INSTEAD))?;
    let mut reader = Reader {
        read,
        local,
        seen: BTreeSet::new(),
        found: Vec::new(),
    };
    let Some(text) = (reader.read)(&start)? else {
        return Ok(Vec::new());
    };
    reader.seen.insert(start.clone());
    reader.file(&start, &text, 0, false)?;
    Ok(reader.found)
}

/// The requirements of one file's text, which may include no other file.
pub fn parse_requirements_text(text: &str, local: LocalPaths) -> Result<Vec<String>, Error> {
    let mut no_includes = |path: &Path| -> Result<Option<String>, Error> {
        Err(refused(
            &format!("-r {}", path.display()),
            "this requirements file is read on its own and cannot include others",
            "list the requirements in one file",
        ))
    };
    let mut reader = Reader {
        read: &mut no_includes,
        local,
        seen: BTreeSet::new(),
        found: Vec::new(),
    };
    reader.file(Path::new("requirements.txt"), text, 0, false)?;
    Ok(reader.found)
}

/// Reads requirement files of a host directory through a capability handle, so a symlink
/// cannot lead outside it.
pub fn read_directory_requirements(
    root: &Path,
    start: &str,
    local: LocalPaths,
) -> Result<Vec<String>, Error> {
    use std::io::Read;
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority()).map_err(
        |source| Error::ReadInput {
            path: root.to_path_buf(),
            source,
        },
    )?;
    let mut read = |relative: &Path| -> Result<Option<String>, Error> {
        // Only regular files are opened: opening a FIFO would block, a device could be
        // endless. (The check follows links, within the project only.)
        match dir.metadata(relative) {
            Ok(meta) if !meta.is_file() => return Ok(None),
            _ => {}
        }
        let file = match dir.open(relative) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(refused(
                    &relative.display().to_string(),
                    format!(
                        "it cannot be read inside the project ({e}); a symlink may lead out of it"
                    ),
                    INCLUDE_INSTEAD,
                ));
            }
        };
        let meta = file.metadata().map_err(|source| Error::ReadInput {
            path: root.join(relative),
            source,
        })?;
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::InvalidInput(format!(
                "{} is {} bytes, over the {MAX_FILE_BYTES}-byte cap for a requirements file",
                relative.display(),
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        file.into_std()
            .take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|source| Error::ReadInput {
                path: root.join(relative),
                source,
            })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    };
    read_requirements(start, &mut read, local)
}

/// The requirements of a requirements file on the host and the files it includes, which
/// resolve only inside the file's own directory.
pub fn read_requirements_path(path: &Path) -> Result<Vec<String>, Error> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{} is not a file name", path.display())))?;
    let root = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let found = read_directory_requirements(root, name, LocalPaths::Refuse)?;
    if found.is_empty() && !path.is_file() {
        return Err(Error::ReadInput {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Ok(found)
}

/// `target` as written in a file at `from` (relative to the root), resolved lexically:
/// relative only, no URL, no climbing above the root.
fn resolve(from: &Path, target: &str) -> Result<PathBuf, String> {
    if target.is_empty() {
        return Err("it names no file".into());
    }
    if target.contains([':', '\\', '\0']) {
        return Err("it is a URL or a path dvm does not read".into());
    }
    if target.starts_with('/') || target.starts_with('~') {
        return Err("it is an absolute path, outside the project".into());
    }
    let mut path: Vec<&std::ffi::OsStr> = from
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if path.pop().is_none() {
                    return Err("it leads outside the project".into());
                }
            }
            normal => path.push(std::ffi::OsStr::new(normal)),
        }
    }
    if path.is_empty() {
        return Err("it names the project's root, not a file".into());
    }
    Ok(path.into_iter().collect())
}

struct Reader<'r, 'a> {
    read: &'r mut ReadFile<'a>,
    local: LocalPaths,
    seen: BTreeSet<PathBuf>,
    found: Vec<String>,
}

impl Reader<'_, '_> {
    /// The lines of one file; `constraints` files are validated and not installed.
    fn file(
        &mut self,
        path: &Path,
        text: &str,
        depth: usize,
        constraints: bool,
    ) -> Result<(), Error> {
        let origin = path.display().to_string();
        let mut joined = String::new();
        for raw in text.lines() {
            // A trailing backslash continues the line, as pip reads it.
            if let Some(head) = raw.strip_suffix('\\') {
                joined.push_str(head);
                continue;
            }
            joined.push_str(raw);
            let line = std::mem::take(&mut joined);
            self.line(path, &line, depth, constraints)
                .map_err(|e| from_origin(e, &origin))?;
        }
        if !joined.is_empty() {
            self.line(path, &joined, depth, constraints)
                .map_err(|e| from_origin(e, &origin))?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        path: &Path,
        line: &str,
        depth: usize,
        constraints: bool,
    ) -> Result<(), Error> {
        let line = match line.find('#') {
            Some(0) => "",
            Some(at) if line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        let mut words = line.split_whitespace();
        let mut kept = Vec::new();
        while let Some(word) = words.next() {
            if word == "--hash" {
                words.next();
            } else if !word.starts_with("--hash=") {
                kept.push(word);
            }
        }
        let Some(&first) = kept.first() else {
            return Ok(());
        };
        let whole = kept.join(" ");
        if !first.starts_with('-') {
            if is_local_path(first) {
                return self.local_path(path, &whole, first);
            }
            let requirement = PythonRequirement::parse(&whole)?;
            if !constraints {
                self.found.push(requirement.to_string());
            }
            return Ok(());
        }
        let (option, value) = split_option(&kept);
        match option {
            "-r" | "--requirement" | "-c" | "--constraint" => {
                let value =
                    value.ok_or_else(|| refused(&whole, "it names no file", INCLUDE_INSTEAD))?;
                let include = resolve(path, value)
                    .map_err(|reason| refused(&whole, reason, INCLUDE_INSTEAD))?;
                self.include(
                    &whole,
                    &include,
                    depth,
                    matches!(option, "-c" | "--constraint") || constraints,
                )
            }
            "-e" | "--editable" => match value {
                Some(value) if is_local_path(value) => self.local_path(path, &whole, value),
                _ => Err(refused(
                    &whole,
                    "editable installs from URLs or VCS run a build on the host",
                    super::spec::PYTHON_INSTEAD,
                )),
            },
            _ if IGNORED_OPTIONS.contains(&option) => Ok(()),
            _ => Err(refused(
                &whole,
                "pip options in uploaded files are not passed to pip",
                OPTION_INSTEAD,
            )),
        }
    }

    /// `-e .`, `./pkg`: left out when it stays inside the root and the mode allows it.
    fn local_path(&mut self, path: &Path, whole: &str, target: &str) -> Result<(), Error> {
        let inside = target == "." || target == "./" || resolve(path, target).is_ok();
        match (self.local, inside) {
            (LocalPaths::SkipInsideRoot, true) => Ok(()),
            (LocalPaths::SkipInsideRoot, false) => Err(refused(
                whole,
                "it points outside the project",
                super::spec::PYTHON_INSTEAD,
            )),
            (LocalPaths::Refuse, _) => Err(refused(
                whole,
                "it installs a local directory, whose build would run on the host",
                super::spec::PYTHON_INSTEAD,
            )),
        }
    }

    fn include(
        &mut self,
        whole: &str,
        include: &Path,
        depth: usize,
        constraints: bool,
    ) -> Result<(), Error> {
        if depth + 1 > MAX_DEPTH {
            return Err(refused(
                whole,
                format!("includes nest deeper than {MAX_DEPTH} files"),
                INCLUDE_INSTEAD,
            ));
        }
        if !self.seen.insert(include.to_path_buf()) {
            return Ok(());
        }
        if self.seen.len() > MAX_FILES {
            return Err(refused(
                whole,
                format!("more than {MAX_FILES} requirement files are included"),
                INCLUDE_INSTEAD,
            ));
        }
        let Some(text) = (self.read)(include)? else {
            return Err(refused(
                whole,
                format!("{} is not a file of the project", include.display()),
                INCLUDE_INSTEAD,
            ));
        };
        self.file(include, &text, depth + 1, constraints)
    }
}

/// A line or `-e` value that names a directory or archive rather than a registry package.
fn is_local_path(word: &str) -> bool {
    word.starts_with(['.', '/', '~']) || word.contains('/') || word.contains('\\')
}

/// `-r file`, `-rfile`, `--requirement=file` → (`-r`/`--requirement`, `file`).
fn split_option<'w>(words: &[&'w str]) -> (&'w str, Option<&'w str>) {
    let first = words[0];
    let second = words.get(1).copied();
    if let Some((option, value)) = first.split_once('=')
        && option.starts_with("--")
    {
        return (option, Some(value));
    }
    if !first.starts_with("--") && first.len() > 2 {
        return (&first[..2], Some(&first[2..]));
    }
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
        entries
            .iter()
            .map(|(path, text)| (PathBuf::from(path), text.to_string()))
            .collect()
    }

    fn read_all(
        files: &BTreeMap<PathBuf, String>,
        local: LocalPaths,
    ) -> Result<Vec<String>, Error> {
        let mut read = |path: &Path| Ok(files.get(path).cloned());
        read_requirements("requirements.txt", &mut read, local)
    }

    #[test]
    fn includes_resolve_inside_the_root() {
        let tree = files(&[
            (
                "requirements.txt",
                "attrs>=22 --hash=sha256:00\n-r requirements/extra.txt\n-c constraints.txt\n# c\n",
            ),
            (
                "requirements/extra.txt",
                "-r base.txt\ntabulate \\\n  >=0.9\n",
            ),
            (
                "requirements/base.txt",
                "-r ../requirements/base.txt\nsix\n",
            ),
            ("constraints.txt", "six<2\n"),
        ]);
        assert_eq!(
            read_all(&tree, LocalPaths::Refuse).unwrap(),
            ["attrs>=22", "six", "tabulate>=0.9"]
        );
    }

    #[test]
    fn includes_and_options_that_leave_the_root_are_refused() {
        for text in [
            "-r ../outside.txt",
            "-r /etc/passwd",
            "-rsub/../../outside.txt",
            "--requirement=https://example.invalid/r.txt",
            "-c ../c.txt",
            "--index-url https://example.invalid/simple",
            "-i https://example.invalid/simple",
            "--extra-index-url=https://example.invalid/simple",
            "-f /tmp/wheels",
            "--find-links /tmp/wheels",
            "--trusted-host example.invalid",
            "-e git+https://example.invalid/x.git#egg=x",
            "-e .",
            "./local",
            "evil @ file:///tmp/x",
            "-r missing.txt",
        ] {
            let tree = files(&[("requirements.txt", text)]);
            let error = read_all(&tree, LocalPaths::Refuse).expect_err(text);
            assert_eq!(error.kind(), "unsupported_requirement", "{text}: {error}");
            assert!(error.to_string().contains("requirements.txt"), "{error}");
        }
        let project = files(&[("requirements.txt", "-e .\n./sub\nsix\n")]);
        assert_eq!(
            read_all(&project, LocalPaths::SkipInsideRoot).unwrap(),
            ["six"]
        );
        let outside = files(&[("requirements.txt", "-e ../other\n")]);
        assert!(read_all(&outside, LocalPaths::SkipInsideRoot).is_err());
    }

    #[test]
    fn include_cycles_end() {
        let tree = files(&[
            ("requirements.txt", "-r a.txt\nsix\n"),
            ("a.txt", "-r requirements.txt\nattrs\n"),
        ]);
        assert_eq!(
            read_all(&tree, LocalPaths::Refuse).unwrap(),
            ["attrs", "six"]
        );
    }

    proptest! {
        #[test]
        fn resolved_includes_stay_under_the_root(from in "([a-z.]{1,3}/){0,3}[a-z]{1,3}", target in "(\\.\\./|\\./|/|[a-z]{1,3}/|\\.\\.|:|~){0,6}[a-z.]{0,4}") {
            if let Ok(path) = resolve(Path::new(&from), &target) {
                prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))), "{path:?}");
                prop_assert!(path.is_relative());
            }
        }
    }
}
