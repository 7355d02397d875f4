//! Execution profiles and the configuration file.
//!
//! A profile names a runtime, limits and packages for a kind of work, so a caller says
//! `--profile data` instead of six flags. Profiles are TOML files:
//!
//! ```toml
//! description = "Data work with pandas: more memory and time"
//! runtime = "python"
//! packages = ["tabulate>=0.9"]
//!
//! [limits]
//! timeout = "60s"
//! memory = "2GiB"
//! ```
//!
//! `--profile NAME` looks, in order, at `./profiles/NAME.toml`, `$DVM_HOME/profiles/NAME.toml`,
//! a `[profiles.NAME]` table of the configuration file, and the profiles built into dvm
//! (the repository's `profiles/` directory). A value with a `/` or ending in `.toml` is a path.
//! Flags given on the command line override the profile; the profile overrides dvm's defaults.
//!
//! The configuration file is `$DVM_CONFIG`, else `$DVM_HOME/config.toml`. Besides profiles it
//! holds the `[model]` the agent asks when no `--model` is given:
//!
//! ```toml
//! [model]
//! name = "qwen2.5-coder:7b"
//! base_url = "http://127.0.0.1:11434/v1"
//! api_key_env = "OLLAMA_KEY"   # or api_key = "…"
//! timeout = "120s"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::{LimitOverrides, Limits, OutputOverflow};

/// Profiles shipped with dvm: (name, TOML text).
const BUILT_IN: &[(&str, &str)] = &[
    ("default", include_str!("../profiles/default.toml")),
    ("quick", include_str!("../profiles/quick.toml")),
    ("data", include_str!("../profiles/data.toml")),
    ("judge", include_str!("../profiles/judge.toml")),
    ("javascript", include_str!("../profiles/javascript.toml")),
];

/// A named set of run settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Where the profile came from (a path, `config`, or `built-in`); not read from TOML.
    #[serde(skip_deserializing)]
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The runtime id, e.g. `python` or `javascript`.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Requirements installed for every run (PEP 508, or `name@range` for JavaScript).
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub limits: LimitSettings,
    /// Hosts runs may reach over HTTP, each `HOST[:PORT]` (`*.example.com` wildcards),
    /// parsed into `AllowedHost`s where a run is made (see `NetPolicy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_net: Vec<String>,
}

/// Limits as a profile writes them; each one left out keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// A duration such as `500ms` or `30s`.
    pub timeout: Option<String>,
    pub fuel: Option<u64>,
    /// A size such as `512MiB`, or a number of bytes.
    pub memory: Option<Size>,
    /// The cap on each of stdout and stderr.
    pub max_output: Option<Size>,
    pub disk: Option<Size>,
    pub files: Option<u64>,
    pub open_files: Option<u64>,
    /// `truncate` or `stop`.
    pub output_overflow: Option<String>,
}

/// A size written as a number of bytes or as text with a unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, what: &str) -> Result<u64, Error> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(text) => parse_size(text)
                .map_err(|e| Error::InvalidInput(format!("the profile's {what} `{text}`: {e}"))),
        }
    }
}

/// Parses `64MiB`, `1GiB`, `1000`… (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| format!("`{text}` is not a size such as 64MiB or 1GiB ({e})"))
}

/// Parses `500ms`, `10s`, `2m`…; zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 500ms or 10s ({e})"))?;
    if duration.is_zero() {
        return Err("a timeout must be greater than zero".into());
    }
    Ok(duration)
}

/// Parses `truncate` or `stop`.
pub fn parse_overflow(text: &str) -> Result<OutputOverflow, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not `truncate` or `stop`"))
}

impl Profile {
    /// Parses a profile's TOML text; `source` says where it came from in errors and reports.
    pub fn parse(text: &str, source: &str) -> Result<Profile, Error> {
        let mut profile: Profile = toml::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("the profile {source} is not valid: {e}")))?;
        profile.source = source.to_string();
        profile.limits(Limits::default())?;
        Ok(profile)
    }

    /// Finds a profile by name or path (see the module documentation for the order).
    pub fn find(name: &str, home: &Path) -> Result<Profile, Error> {
        Profile::find_in(name, home, &ConfigFile::path(home))
    }

    /// [`Profile::find`] with the configuration file at `config_file` (where
    /// [`ConfigFile::path_in`] says it is) instead of the one the environment names.
    pub fn find_in(name: &str, home: &Path, config_file: &Path) -> Result<Profile, Error> {
        if name.contains('/') || name.ends_with(".toml") {
            return Profile::read(Path::new(name));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::InvalidInput(format!(
                "`{name}` is not a profile name (letters, digits, `-`, `_`), nor a path to a .toml file"
            )));
        }
        for dir in [PathBuf::from("profiles"), crate::home::profiles(home)] {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                return Profile::read(&path);
            }
        }
        let config = ConfigFile::load_from(config_file)?;
        if let Some(profile) = config.profiles.get(name) {
            let mut profile = profile.clone();
            profile.source = format!("[profiles.{name}] of {}", config.source);
            profile.limits(Limits::default())?;
            return Ok(profile);
        }
        if let Some((_, text)) = BUILT_IN.iter().find(|(built_in, _)| *built_in == name) {
            return Profile::parse(text, &format!("built-in `{name}`"));
        }
        Err(Error::InvalidInput(format!(
            "no profile `{name}`: looked for ./profiles/{name}.toml, {}, [profiles.{name}] in {}, \
             and the built-in profiles ({})",
            crate::home::profiles(home)
                .join(format!("{name}.toml"))
                .display(),
            config.source,
            Profile::built_in_names().join(", ")
        )))
    }

    /// The names of the profiles built into dvm.
    pub fn built_in_names() -> Vec<&'static str> {
        BUILT_IN.iter().map(|(name, _)| *name).collect()
    }

    fn read(path: &Path) -> Result<Profile, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(&text, &path.display().to_string())
    }

    /// `base` with the profile's limits applied.
    pub fn limits(&self, base: Limits) -> Result<Limits, Error> {
        let settings = &self.limits;
        let within =
            |what: &str, e: String| Error::InvalidInput(format!("the profile's {what}: {e}"));
        LimitOverrides {
            deadline: settings
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| within("timeout", e))?,
            fuel: settings.fuel,
            memory_bytes: settings
                .memory
                .as_ref()
                .map(|m| m.bytes("memory"))
                .transpose()?,
            output_bytes: settings
                .max_output
                .as_ref()
                .map(|m| m.bytes("max_output"))
                .transpose()?,
            disk_bytes: settings
                .disk
                .as_ref()
                .map(|d| d.bytes("disk"))
                .transpose()?,
            files: settings.files,
            open_files: settings.open_files,
            output_overflow: settings
                .output_overflow
                .as_deref()
                .map(parse_overflow)
                .transpose()
                .map_err(|e| within("output_overflow", e))?,
        }
        .apply(base)
    }
}

/// The model the agent asks by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// The key itself (prefer `api_key_env`).
    pub api_key: Option<String>,
    /// The environment variable holding the key.
    pub api_key_env: Option<String>,
    /// Per answer, e.g. `120s`.
    pub timeout: Option<String>,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The file read, or a note that there was none; not read from TOML.
    #[serde(skip)]
    pub source: String,
    #[serde(default)]
    pub model: ModelSettings,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// `[cache]`: keys whose result-cache entries are trusted.
    #[serde(default)]
    pub cache: CacheSettings,
    /// `[mcp_upstream]`: `NAME = "COMMAND ARGS…"` or `NAME = "https://…/mcp"`, the MCP
    /// servers whose tools `dvm serve` and `dvm mcp` give guest code (code mode), besides
    /// those of `--mcp-upstream`.
    #[serde(default)]
    pub mcp_upstream: BTreeMap<String, String>,
}

/// The configuration file `$DVM_CONFIG` names, if it is set and not empty. Read by
/// `Config::from_env` (and the env-reading wrappers kept for embedders), nowhere deeper.
pub fn config_file_from_env() -> Option<PathBuf> {
    std::env::var_os("DVM_CONFIG")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

impl ConfigFile {
    /// Where the configuration file is: `$DVM_CONFIG`, else `HOME/config.toml`. The library
    /// itself uses [`ConfigFile::path_in`] with the file its `Config` names.
    pub fn path(home: &Path) -> PathBuf {
        ConfigFile::path_in(home, config_file_from_env().as_deref())
    }

    /// Where the configuration file is: `chosen` when given, else `HOME/config.toml`.
    pub fn path_in(home: &Path, chosen: Option<&Path>) -> PathBuf {
        match chosen {
            Some(path) if !path.as_os_str().is_empty() => path.to_path_buf(),
            _ => crate::home::config_file(home),
        }
    }

    /// Reads the configuration file `$DVM_CONFIG`, else `HOME/config.toml`; a missing file is
    /// an empty configuration. The library itself uses [`ConfigFile::load_from`].
    pub fn load(home: &Path) -> Result<ConfigFile, Error> {
        ConfigFile::load_from(&ConfigFile::path(home))
    }

    /// Reads the configuration file at `path`; a missing file is an empty configuration.
    pub fn load_from(path: &Path) -> Result<ConfigFile, Error> {
        let path = path.to_path_buf();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile {
                    source: format!("{} (absent)", path.display()),
                    ..ConfigFile::default()
                });
            }
            Err(source) => return Err(Error::ReadInput { path, source }),
        };
        let mut config: ConfigFile = toml::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "the configuration file {} is not valid: {e}",
                path.display()
            ))
        })?;
        config.source = path.display().to_string();
        Ok(config)
    }

    /// The model's API key: the configured key, else the configured variable's value.
    pub fn api_key(&self) -> Option<String> {
        self.model.api_key.clone().or_else(|| {
            let name = self.model.api_key_env.as_deref()?;
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }
}

/// `[cache]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Public keys (`ed25519:HEX`) whose entries are trusted besides the home's own.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_come_from_the_configuration_file_given() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("chosen.toml");
        std::fs::write(&file, "[profiles.mine]\nlimits = { timeout = \"2s\" }\n").unwrap();
        let profile = Profile::find_in("mine", home.path(), &file).unwrap();
        assert!(profile.source.contains("chosen.toml"), "{}", profile.source);
        let default = ConfigFile::path_in(home.path(), None);
        assert_eq!(default, crate::home::config_file(home.path()));
        assert!(Profile::find_in("mine", home.path(), &default).is_err());
        assert_eq!(ConfigFile::path_in(home.path(), Some(&file)), file);
    }

    #[test]
    fn built_in_profiles_parse_and_give_limits() {
        for (name, text) in BUILT_IN {
            let profile = Profile::parse(text, name).unwrap();
            assert!(profile.description.is_some(), "{name} has no description");
        }
        let judge = Profile::parse(BUILT_IN[3].1, "judge").unwrap();
        let limits = judge.limits(Limits::default()).unwrap();
        assert!(limits.deadline < Limits::default().deadline);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let unknown = Profile::parse("runtime = \"python\"\ncolour = 1\n", "t").unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let size = Profile::parse("[limits]\nmemory = \"lots\"\n", "t").unwrap_err();
        assert!(size.to_string().contains("lots"), "{size}");
        let time = Profile::parse("[limits]\ntimeout = \"0s\"\n", "t").unwrap_err();
        assert!(time.to_string().contains("timeout"), "{time}");
        let numeric = Profile::parse("[limits]\nmemory = 1048576\n", "t").unwrap();
        assert_eq!(
            numeric.limits(Limits::default()).unwrap().memory_bytes,
            1 << 20
        );
    }
}
