//! A runtime's packages: its built-in distributions, installs, import detection.

use super::{Dvm, Runtime};
use crate::deps;
use crate::error::Error;
use crate::guest::catalog::{Catalog, Language};
use crate::sandbox::RunInput;

impl Runtime {
    /// The package set's directory to mount and where, checking this runtime can use it.
    pub(super) fn package_site(
        &self,
        input: &RunInput,
    ) -> Result<Option<(std::path::PathBuf, &'static str)>, Error> {
        let Some(packages) = &input.packages else {
            return Ok(None);
        };
        if packages.lock.runtime != self.spec.id {
            return Err(Error::InvalidInput(format!(
                "these packages were installed for `{}`, not `{}`",
                packages.lock.runtime, self.spec.id
            )));
        }
        let guest = match self.spec.language {
            Language::Python => deps::GUEST_SITE,
            Language::JavaScript | Language::Wasm => deps::npm::GUEST_NODE_MODULES,
        };
        Ok(packages.site().map(|site| (site.to_path_buf(), guest)))
    }

    /// Runs a small Python program in a fresh sandbox of this runtime and returns its
    /// stdout, or an error naming `what`.
    fn ask_guest(&self, what: &str, code: &str, stdin: &[u8]) -> Result<String, Error> {
        let input = RunInput {
            stdin: stdin.to_vec(),
            ..RunInput::default()
        };
        let outcome = self.run_script("__dvm_ask__.py", code.as_bytes(), &input)?;
        if outcome.status != crate::Status::Ok {
            return Err(crate::error::HostError::Guest(format!(
                "the {} guest could not {what}: {}",
                self.spec.id,
                String::from_utf8_lossy(&outcome.stderr)
            ))
            .into());
        }
        Ok(String::from_utf8_lossy(&outcome.stdout).into_owned())
    }

    /// The distributions this runtime has built in (normalised name → version).
    pub fn built_in_packages(&self) -> Result<std::collections::BTreeMap<String, String>, Error> {
        if let Some(known) = self.built_in.get() {
            return Ok(known.clone());
        }
        let mut known = std::collections::BTreeMap::new();
        if self.spec.language == Language::Python {
            // Kept per guest module, so a one-shot process reads it instead of asking.
            let cached = self.guest_answer_path(deps::LIST_DISTRIBUTIONS, ".dists");
            let listing = match std::fs::read_to_string(&cached) {
                Ok(listing) => listing,
                Err(_) => {
                    let listing =
                        self.ask_guest("list its packages", deps::LIST_DISTRIBUTIONS, b"")?;
                    let _ = crate::home::publish(
                        &cached,
                        listing.as_bytes(),
                        crate::home::Durability::Synced,
                    );
                    listing
                }
            };
            for line in listing.lines() {
                if let Some((name, version)) = line.split_once("==") {
                    known.insert(deps::normalize(name), version.to_string());
                }
            }
        }
        Ok(self.built_in.get_or_init(|| known).clone())
    }

    /// Installs packages for this runtime: Python wheels (see [`crate::deps`]) or npm
    /// packages (see [`crate::deps::npm`]); pass the set in [`RunInput::packages`] to runs.
    pub fn install_packages(
        &self,
        request: &deps::PackageRequest,
    ) -> Result<deps::PackageSet, Error> {
        let config = &self.program.dvm.inner.config;
        let home = &config.home;
        match self.spec.language {
            Language::Python => {}
            Language::JavaScript => {
                return deps::npm::NpmStore::new(home)
                    .with_tools(&config.package_tools)
                    .install(&self.spec.id, request);
            }
            other @ Language::Wasm => {
                return Err(Error::InvalidInput(format!(
                    "dvm installs Python and JavaScript packages; `{}` is a {other} runtime",
                    self.spec.id
                )));
            }
        }
        let built_in = self.built_in_packages()?;
        let python = &config.python;
        let installed = deps::PackageStore::new(home)
            .with_python(python)
            .with_tools(&config.package_tools)
            .install(&self.spec.id, &self.spec.version, &built_in, request);
        match installed {
            Err(Error::Deps(crate::DepsError::NoPureWheel {
                packages, python, ..
            })) => Err(crate::DepsError::NoPureWheel {
                packages,
                python,
                elsewhere: self.built_in_elsewhere(request),
            }
            .into()),
            other => other,
        }
    }

    /// Which other installed Python runtime has some of the requested packages built in, one
    /// sentence each, for a "no pure wheel" error.
    fn built_in_elsewhere(&self, request: &deps::PackageRequest) -> Vec<String> {
        let dvm = &self.program.dvm;
        Catalog::embedded()
            .all_ids()
            .into_iter()
            .filter(|id| *id != self.spec.id)
            .filter_map(|id| {
                let spec = Dvm::spec(&id).ok()?;
                if spec.language != Language::Python
                    || dvm.inner.installer.installed(spec).is_none()
                {
                    return None;
                }
                let built_in = dvm.runtime(&id).ok()?.built_in_packages().ok()?;
                let names: Vec<String> = request
                    .requirements
                    .iter()
                    .filter_map(|text| {
                        let name = deps::normalize(
                            text.split(['<', '>', '=', '!', '~', ';', '[', ' '])
                                .next()?,
                        );
                        built_in
                            .get(&name)
                            .map(|version| format!("{name} {version}"))
                    })
                    .collect();
                (!names.is_empty()).then(|| {
                    format!(
                        "The `{id}` runtime has {} built in: use --runtime {id}",
                        names.join(", ")
                    )
                })
            })
            .collect()
    }

    /// The modules a Python script imports that this runtime cannot import yet: not the
    /// standard library, not its built-in packages, not `local` modules (files and
    /// directories beside the script), each with the distribution that provides it.
    pub fn detect_imports(
        &self,
        source: &[u8],
        local: &[String],
    ) -> Result<Vec<deps::DetectedImport>, Error> {
        if self.spec.language != Language::Python {
            return Ok(Vec::new());
        }
        let found = self.ask_guest("read the script's imports", deps::DETECT_IMPORTS, source)?;
        Ok(deps::parse_detected(&found)
            .into_iter()
            .filter(|import| !local.contains(&import.module))
            .collect())
    }
}
