//! Running pip (and the environment every package tool runs with): a controlled command,
//! the operator's index as explicit flags, and `pip download` of pure wheels.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use super::spec::PythonRequirement;
use crate::error::{DepsError, Error};
use crate::tool::tail;

/// Host environment variables a package tool may see: where programs are, how to reach the
/// network (proxies, CA bundles) and the locale. Nothing else of the host's or the user's
/// environment (no `PIP_*`, `npm_config_*`, `NODE_OPTIONS`, `PYTHONPATH`…) reaches pip or npm.
pub(crate) const KEPT_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// What the operator's environment gives the package tools dvm runs (pip, npm): the
/// [`KEPT_ENV`] variables passed through, and the operator's package index and registry as
/// explicit flags, since `--isolated` pip and npm with empty configuration files read neither
/// their own variables nor config files, and a mirror the operator relies on must keep
/// working. Trusted settings: [`crate::Config::from_env`] reads them from the environment dvm
/// itself was started with; nothing from a script, upload or request reaches them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ToolEnv {
    /// The [`KEPT_ENV`] variables that are set, in that order: all of the host's
    /// environment a package tool sees.
    pub kept: Vec<(String, OsString)>,
    /// pip's `--index-url` (`PIP_INDEX_URL`).
    pub pip_index_url: Option<OsString>,
    /// pip's `--extra-index-url`s (`PIP_EXTRA_INDEX_URL`, space-separated).
    pub pip_extra_index_urls: Vec<String>,
    /// pip's `--trusted-host`s (`PIP_TRUSTED_HOST`, space-separated).
    pub pip_trusted_hosts: Vec<String>,
    /// pip's `--cert` (`PIP_CERT`).
    pub pip_cert: Option<OsString>,
    /// pip's `--client-cert` (`PIP_CLIENT_CERT`).
    pub pip_client_cert: Option<OsString>,
    /// npm's `--registry` (`NPM_CONFIG_REGISTRY`, else `npm_config_registry`).
    pub npm_registry: Option<OsString>,
}

/// Names only: proxy and index URLs may carry credentials.
impl std::fmt::Debug for ToolEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept: Vec<&str> = self.kept.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ToolEnv")
            .field("kept", &kept)
            .field("pip_index_flags", &self.pip_index_args().len())
            .field("npm_registry", &self.npm_registry.is_some())
            .finish()
    }
}

impl ToolEnv {
    /// Reads the settings from the environment of this process.
    pub fn from_env() -> ToolEnv {
        ToolEnv::from_vars(|name| std::env::var_os(name))
    }

    /// Reads the settings through `var` (a variable's value by name); empty values count as
    /// unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> ToolEnv {
        let present = |name: &str| var(name).filter(|value| !value.is_empty());
        let words = |name: &str| -> Vec<String> {
            present(name)
                .map(|values| {
                    values
                        .to_string_lossy()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        ToolEnv {
            kept: KEPT_ENV
                .iter()
                .filter_map(|name| var(name).map(|value| (name.to_string(), value)))
                .collect(),
            pip_index_url: present("PIP_INDEX_URL"),
            pip_extra_index_urls: words("PIP_EXTRA_INDEX_URL"),
            pip_trusted_hosts: words("PIP_TRUSTED_HOST"),
            pip_cert: present("PIP_CERT"),
            pip_client_cert: present("PIP_CLIENT_CERT"),
            npm_registry: ["NPM_CONFIG_REGISTRY", "npm_config_registry"]
                .into_iter()
                .find_map(present),
        }
    }

    /// The operator's package index as pip flags.
    pub(crate) fn pip_index_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(url) = &self.pip_index_url {
            args.push("--index-url".into());
            args.push(url.clone());
        }
        for (values, flag) in [
            (&self.pip_extra_index_urls, "--extra-index-url"),
            (&self.pip_trusted_hosts, "--trusted-host"),
        ] {
            for value in values {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        for (path, flag) in [
            (&self.pip_cert, "--cert"),
            (&self.pip_client_cert, "--client-cert"),
        ] {
            if let Some(path) = path {
                args.push(flag.into());
                args.push(path.clone());
            }
        }
        args
    }

    /// The operator's npm registry as npm flags.
    pub(crate) fn npm_registry_args(&self) -> Vec<OsString> {
        self.npm_registry
            .iter()
            .flat_map(|registry| ["--registry".into(), registry.clone()])
            .collect()
    }
}

/// A package tool's command with a controlled environment: cleared but for `env`'s
/// [`KEPT_ENV`] variables,
/// a fresh `HOME`, config and cache under `scratch` (a new temp directory), and a fresh,
/// empty working directory, so nothing in the caller's directory or home is read as
/// configuration or code.
pub(crate) fn controlled_command(
    program: &std::ffi::OsStr,
    scratch: &Path,
    env: &ToolEnv,
) -> Result<Command, Error> {
    let home = scratch.join("home");
    let work = scratch.join("work");
    for dir in [&home, &work] {
        std::fs::create_dir_all(dir).map_err(|source| DepsError::Store {
            action: format!("make {}", dir.display()),
            source,
        })?;
    }
    let mut command = Command::new(program);
    command.env_clear();
    for (name, value) in &env.kept {
        command.env(name, value);
    }
    command
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("TMPDIR", scratch)
        .current_dir(&work)
        .stdin(Stdio::null());
    Ok(command)
}

/// The real interpreter behind `python3`/`$DVM_PYTHON` (version managers put shims on PATH
/// that need the user's HOME) and its user base (where a `pip install --user` pip lives).
fn resolve_python(python: &str, scratch: &Path) -> (std::ffi::OsString, Option<String>) {
    let asked = Command::new(python)
        .args([
            "-c",
            "import sys, site\nprint(sys.executable)\nprint(site.getuserbase())",
        ])
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(output) = asked
        && output.status.success()
    {
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        if let Some(executable) = lines.next().filter(|line| Path::new(line).is_absolute()) {
            let user_base = lines.next().map(str::to_string);
            return (executable.into(), user_base);
        }
    }
    (python.into(), None)
}

/// `pip download` for the guest's Python: pure wheels only, into `dest`. pip runs with a
/// controlled environment ([`controlled_command`]), `--isolated`, no configuration file
/// (`PIP_CONFIG_FILE` is the null device, which makes pip skip every config file) and no
/// cache; `--only-binary=:all:` means no build backend can ever run. The requirements
/// are [`PythonRequirement`]s rendered by dvm.
pub(super) fn pip_download<'a>(
    python: &str,
    short: &str,
    requirements: impl Iterator<Item = &'a str>,
    find_links: Option<&Path>,
    dest: &Path,
    no_deps: bool,
    env: &ToolEnv,
) -> Result<(), Error> {
    let requirements: Vec<&str> = requirements.collect();
    for requirement in &requirements {
        PythonRequirement::parse(requirement)?;
    }
    // pip runs in a directory of its own: every path it is given is absolute.
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|source| DepsError::Store {
            action: format!("resolve {}", path.display()),
            source,
        })
    };
    let dest = absolute(dest)?;
    let find_links = find_links.map(absolute).transpose()?;
    // A fresh scratch directory beside `dest` (in the store's own temp directory).
    let scratch = dest.with_file_name(".pip");
    std::fs::create_dir_all(&scratch).map_err(|source| DepsError::Store {
        action: "make a directory for pip".into(),
        source,
    })?;
    let (interpreter, user_base) = resolve_python(python, &scratch);
    let mut command = controlled_command(&interpreter, &scratch, env)?;
    if let Some(user_base) = user_base {
        command.env("PYTHONUSERBASE", user_base);
    }
    command
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-m", "pip", "--isolated", "download", "--only-binary=:all:"])
        .arg("--no-cache-dir")
        .args(["--python-version", short, "--implementation", "cp"])
        .args(["--abi", "none", "--platform", "any"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
        ])
        .arg(&dest);
    if no_deps {
        command.arg("--no-deps");
    }
    if let Some(dir) = find_links {
        command.args(["--no-index", "--find-links"]).arg(dir);
    } else {
        command.args(env.pip_index_args());
    }
    command.arg("--").args(&requirements);
    let output = command
        .output()
        .map_err(|source| crate::error::DepsError::PipStart {
            python: python.to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let unavailable: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("ERROR: No matching distribution found for "))
        .collect();
    if !unavailable.is_empty() {
        return Err(DepsError::NoPureWheel {
            packages: unavailable.join(", "),
            python: short.to_string(),
            elsewhere: Vec::new(),
        }
        .into());
    }
    Err(Error::Packages(format!(
        "`pip download {}` failed ({}):\n{}",
        requirements.join(" "),
        output.status,
        tail(&output.stderr, 15)
    )))
}
