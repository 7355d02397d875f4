//! One run, as every surface asks for it: "run this code in runtime R with these files and
//! packages". The CLI, the HTTP and Judge0 endpoints, MCP, the NATS worker and the agent
//! translate their input into a [`Job`] and the [`JobOutcome`] into their output, so a
//! script's PEP 723 block, a `requirements.txt` or `package.json` among its files and
//! `auto-deps` behave the same wherever the job comes from.

use std::path::{Path, PathBuf};

use crate::deps::{self, PackageRequest, PackageSet};
use crate::dvm::{Dvm, Runtime};
use crate::error::Error;
use crate::guest::catalog::Language;
use crate::guest::install::Progress;
use crate::outcome::Outcome;
use crate::sandbox::RunInput;

/// The largest script an entry path may name.
pub const MAX_SCRIPT_BYTES: u64 = 64 << 20;

/// The largest `package.json` read for its dependencies.
const MAX_PACKAGE_JSON_BYTES: u64 = 1 << 20;

/// What a job runs.
#[derive(Debug, Clone)]
pub enum JobSource {
    /// Inline code; `name` is its file name in the workspace, the language's default
    /// script (`main.py`, `main.mjs`) when `None`.
    Code { code: Vec<u8>, name: Option<String> },
    /// A script already in the job's workspace (e.g. from an artifact), by its path there.
    Entry(String),
}

/// Where a job looks for packages beyond its explicit requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovery {
    /// The script's PEP 723 `# /// script` block (Python).
    pub pep723: bool,
    /// `requirements.txt` in the workspace, with `-r`/`-c` includes read from the workspace
    /// only (Python).
    pub requirements_txt: bool,
    /// `package.json`'s dependencies in the workspace (JavaScript).
    pub package_json: bool,
    /// What the script imports that the runtime lacks, read with the guest's own parser
    /// (Python). Off unless asked for: it spends a sandbox run before the real one.
    pub auto_deps: bool,
}

impl Discovery {
    /// Nothing beyond the job's explicit requirements: for a surface that already decided
    /// the packages (e.g. review, from the project's own files).
    pub const NONE: Discovery = Discovery {
        pep723: false,
        requirements_txt: false,
        package_json: false,
        auto_deps: false,
    };
}

impl Default for Discovery {
    /// Files and inline metadata are read on every surface; imports only when asked.
    fn default() -> Discovery {
        Discovery {
            pep723: true,
            requirements_txt: true,
            package_json: true,
            auto_deps: false,
        }
    }
}

/// A lock file a job writes or installs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockFile {
    /// Write the installed set here.
    Write(PathBuf),
    /// Install exactly this lock's set, checking every wheel's hash (`--locked`).
    Install(PathBuf),
}

/// One run: a script in a runtime, its packages and its input.
#[derive(Clone)]
pub struct Job {
    /// The runtime's catalogue id (`python`, `python-lite`, `javascript`…).
    pub runtime: String,
    pub source: JobSource,
    /// Requirements given explicitly (PEP 508 for Python, `name@range` for JavaScript).
    pub requirements: Vec<String>,
    pub discovery: Discovery,
    /// Take wheels from this directory instead of the package index.
    pub find_links: Option<PathBuf>,
    pub lock: Option<LockFile>,
    /// Modules imported ahead into a snapshot the run starts from (python only; made on
    /// first use). Empty: the runtime picks a snapshot that exists from the script's imports
    /// (see [`Dvm::run`]).
    pub preload: Vec<String>,
    /// Start from the catalogue module itself: no snapshot of dvm's, not even the default
    /// standard-library one (`--no-preload`).
    pub no_preload: bool,
    /// Arguments, environment, stdin, limits, determinism, cache policy, workspace, grants,
    /// cancel handle and output callback. Packages already in `input.packages` stay
    /// installed; what the job adds is installed beside them.
    pub input: RunInput,
}

impl Job {
    /// A job running `code` in `runtime` under its default script name, with default
    /// discovery and input.
    pub fn code(runtime: &str, code: impl Into<Vec<u8>>) -> Job {
        Job {
            runtime: runtime.to_string(),
            source: JobSource::Code {
                code: code.into(),
                name: None,
            },
            requirements: Vec::new(),
            discovery: Discovery::default(),
            find_links: None,
            lock: None,
            preload: Vec::new(),
            no_preload: false,
            input: RunInput::default(),
        }
    }

    /// Whether the job asks for packages itself (not by discovery).
    fn asks_for_packages(&self) -> bool {
        !self.requirements.is_empty()
            || self.discovery.auto_deps
            || matches!(self.lock, Some(LockFile::Install(_)))
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("runtime", &self.runtime)
            .field("source", &self.source)
            .field("requirements", &self.requirements)
            .field("discovery", &self.discovery)
            .field("find_links", &self.find_links)
            .field("lock", &self.lock)
            .field("preload", &self.preload)
            .field("no_preload", &self.no_preload)
            .finish_non_exhaustive()
    }
}

/// What a job did: the run's outcome, the runtime that ran it and the packages it had.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub outcome: Outcome,
    pub runtime: String,
    pub version: String,
    /// The packages on the run's path, when it had any.
    pub packages: Option<PackageSet>,
}

/// Reads a script file for a job, refusing one over [`MAX_SCRIPT_BYTES`] (or a directory,
/// device or FIFO) before reading it.
pub fn read_script(path: &Path) -> Result<Vec<u8>, Error> {
    match crate::fs::read_regular_file(path, MAX_SCRIPT_BYTES) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(size)) => Err(Error::InvalidInput(format!(
            "{} is {size} bytes, over the {MAX_SCRIPT_BYTES}-byte cap for scripts",
            path.display()
        ))),
        Err(source) => Err(Error::ReadInput {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl Dvm {
    /// Runs a job: loads its runtime, installs its packages, runs its script. Install and
    /// compile steps are reported to `progress`.
    ///
    /// The runtime a `python` job starts from: the snapshot its `preload` names (made now if
    /// missing); with `no_preload`, the catalogue module alone; otherwise the snapshot that
    /// exists holding most of the libraries the script imports, else the standard-library
    /// one. Which one it is changes how fast the run starts, never what it outputs.
    pub fn run(&self, job: &Job, progress: &Progress) -> Result<JobOutcome, Error> {
        self.job_runtime(job, progress)?.run_job(job)
    }

    /// The runtime [`Dvm::run`] runs `job` in.
    pub fn job_runtime(&self, job: &Job, progress: &Progress) -> Result<Runtime, Error> {
        if !job.preload.is_empty() {
            if job.no_preload {
                return Err(Error::InvalidInput(
                    "--preload and --no-preload contradict each other; give one".into(),
                ));
            }
            return self.runtime_preloaded(&job.runtime, &job.preload, progress);
        }
        if job.no_preload {
            return self.runtime_cold(&job.runtime, progress);
        }
        Ok(self
            .runtime_with_progress(&job.runtime, progress)?
            .warmed_for(job))
    }
}

impl Runtime {
    /// This runtime, or the snapshot of it that exists holding most of the libraries `job`'s
    /// script imports (read from its text; `python` only). Never waits for a build.
    ///
    /// A library snapshot reseeds the random generators it holds per run, which draws the
    /// sandbox's entropy in another order than a cold start would, and libraries may read
    /// environment variables when imported (matplotlib's backend, numpy's settings): a run
    /// under a fixed seed or with variables of its own starts from the standard-library
    /// snapshot, which holds neither.
    pub fn warmed_for(&self, job: &Job) -> Runtime {
        if job.input.deterministic.is_some() || !job.input.env.is_empty() {
            return self.clone();
        }
        match self.job_script(job) {
            Ok((_, source)) => self.warmed_for_script(&source, job.input.limits.memory_bytes),
            Err(_) => self.clone(),
        }
    }

    /// Runs a job in this runtime (already loaded, with any preload the job names): its
    /// packages are installed, then its script runs.
    pub fn run_job(&self, job: &Job) -> Result<JobOutcome, Error> {
        let (name, source) = self.job_script(job)?;
        let mut input = job.input.clone();
        if let Some(packages) = self.job_packages_for(job, &name, &source)? {
            input.packages = Some(packages);
        }
        let outcome = self.run_script(&name, &source, &input)?;
        Ok(JobOutcome {
            outcome,
            runtime: self.id().to_string(),
            version: self.version().to_string(),
            packages: input.packages,
        })
    }

    /// The packages a job's run gets: those already in its input, plus its requirements and
    /// what discovery finds; or exactly its lock's. `None` when it has none.
    pub fn job_packages(&self, job: &Job) -> Result<Option<PackageSet>, Error> {
        let (name, source) = self.job_script(job)?;
        Ok(self
            .job_packages_for(job, &name, &source)?
            .or_else(|| job.input.packages.clone()))
    }

    /// The script's file name and bytes.
    pub(crate) fn job_script(&self, job: &Job) -> Result<(String, Vec<u8>), Error> {
        match &job.source {
            JobSource::Code { code, name } => {
                let name = match name {
                    Some(name) if !name.is_empty() => name.clone(),
                    _ => self.language().default_script().to_string(),
                };
                Ok((name, code.clone()))
            }
            JobSource::Entry(entry) => {
                let workspace = job.input.workspace.as_ref().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the entry `{entry}` names a file in the workspace, but the run has none"
                    ))
                })?;
                Ok((entry.clone(), workspace.read(entry, MAX_SCRIPT_BYTES)?))
            }
        }
    }

    /// Installs what the job adds to its input's packages; `None` when it adds nothing.
    fn job_packages_for(
        &self,
        job: &Job,
        name: &str,
        source: &[u8],
    ) -> Result<Option<PackageSet>, Error> {
        let language = self.language();
        if !language.has_packages() {
            if !job.asks_for_packages() {
                return Ok(None);
            }
            return Err(Error::InvalidInput(format!(
                "--with, --auto-deps and --locked install Python and JavaScript packages; `{}` \
                 is a {language} runtime",
                self.id()
            )));
        }
        let discovery = job.discovery;
        if discovery.auto_deps && language != Language::Python {
            return Err(Error::InvalidInput(
                "--auto-deps reads Python imports; for JavaScript, list packages with --with or \
                 in package.json"
                    .into(),
            ));
        }
        let workspace = job.input.workspace.as_ref();
        let mut request = PackageRequest {
            requirements: job.requirements.clone(),
            find_links: job.find_links.clone(),
            locked: None,
        };
        match (&job.lock, language) {
            (Some(LockFile::Install(path)), _) => {
                request.locked = Some(deps::Lock::read(path)?);
            }
            (_, Language::JavaScript) => {
                if discovery.package_json
                    && let Some(workspace) = workspace
                    && let Ok(listed) = workspace.read("package.json", MAX_PACKAGE_JSON_BYTES)
                {
                    request.requirements.extend(deps::npm::parse_package_json(
                        &String::from_utf8_lossy(&listed),
                    )?);
                }
            }
            (_, _) => {
                if discovery.pep723 {
                    let text = String::from_utf8_lossy(source);
                    request
                        .requirements
                        .extend(deps::parse_inline_metadata(&text)?);
                }
                if discovery.requirements_txt
                    && let Some(workspace) = workspace
                {
                    // `-r`/`-c` includes are read from the workspace only (it resolves no
                    // path outside it).
                    let mut read = |path: &std::path::Path| -> Result<Option<String>, Error> {
                        let guest = path.to_string_lossy().replace('\\', "/");
                        Ok(workspace
                            .read(&guest, deps::requirements::MAX_FILE_BYTES)
                            .ok()
                            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
                    };
                    request.requirements.extend(deps::read_requirements(
                        "requirements.txt",
                        &mut read,
                        deps::LocalPaths::Refuse,
                    )?);
                }
                if discovery.auto_deps {
                    let local = local_modules(workspace, name)?;
                    for import in self.detect_imports(source, &local)? {
                        if !import.optional {
                            request.requirements.push(import.distribution);
                        }
                    }
                }
            }
        }
        if request.requirements.is_empty() && request.locked.is_none() {
            return Ok(None);
        }
        // What is installed already stays: the new set is its pins plus the additions.
        if request.locked.is_none()
            && let Some(current) = &job.input.packages
        {
            let mut requirements = current.pinned();
            requirements.append(&mut request.requirements);
            request.requirements = requirements;
        }
        let packages = self.install_packages(&request)?;
        if let Some(LockFile::Write(path)) = &job.lock {
            packages.lock.write(path)?;
        }
        Ok(Some(packages))
    }
}

/// Top-level module names the workspace itself provides: `NAME.py` files and directories,
/// and the script's own name.
fn local_modules(workspace: Option<&crate::Workspace>, script: &str) -> Result<Vec<String>, Error> {
    let mut local = Vec::new();
    if let Some(stem) = std::path::Path::new(script).file_stem() {
        local.push(stem.to_string_lossy().into_owned());
    }
    if let Some(workspace) = workspace {
        for entry in workspace.list()? {
            if entry.path.contains('/') {
                continue;
            }
            match entry.path.strip_suffix(".py") {
                Some(module) => local.push(module.to_string()),
                None if entry.kind == crate::workspace::EntryKind::Dir => local.push(entry.path),
                None => {}
            }
        }
    }
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_over_the_cap_or_missing_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("main.py");
        std::fs::write(&small, "print(1)\n").unwrap();
        assert_eq!(read_script(&small).unwrap(), b"print(1)\n");
        // Sparse: the size is checked before a byte is read.
        let big = dir.path().join("big.py");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_SCRIPT_BYTES + 1)
            .unwrap();
        let error = read_script(&big).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput(m) if m.contains("cap for scripts")),
            "{error}"
        );
        assert!(matches!(
            read_script(&dir.path().join("missing.py")),
            Err(Error::ReadInput { .. })
        ));
        assert!(matches!(
            read_script(dir.path()),
            Err(Error::ReadInput { .. })
        ));
    }

    #[test]
    fn discovery_reads_files_by_default_and_imports_only_when_asked() {
        let discovery = Discovery::default();
        assert!(discovery.pep723 && discovery.requirements_txt && discovery.package_json);
        assert!(!discovery.auto_deps);
    }

    #[test]
    fn a_job_asks_for_packages_only_explicitly() {
        let mut job = Job::code("python", "print(1)");
        assert!(!job.asks_for_packages());
        job.lock = Some(LockFile::Write("x.lock".into()));
        assert!(!job.asks_for_packages());
        job.lock = Some(LockFile::Install("x.lock".into()));
        assert!(job.asks_for_packages());
        let mut job = Job::code("python", "print(1)");
        job.requirements.push("tabulate".into());
        assert!(job.asks_for_packages());
    }

    #[test]
    fn local_modules_include_the_script_itself() {
        assert_eq!(local_modules(None, "app.py").unwrap(), ["app"]);
    }
}
