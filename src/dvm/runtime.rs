//! [`Runtime`]: an installed language runtime, what it is and how it runs a script.

use std::sync::{Arc, Mutex};

use super::Program;
use super::prestart::Prestarts;
use super::run::{in_workspace, sandbox_mounts};
use crate::deps;
use crate::error::Error;
use crate::fs::{Mount, Scratch, WORKSPACE};
use crate::guest::catalog::{Capabilities, Language, Role, RuntimeSpec};
use crate::guest::install::Installed;
use crate::guest::{self, Abi};
use crate::outcome::Outcome;
use crate::sandbox::{GuestSetup, RunInput};

/// An installed, compiled language runtime (see `runtime/catalog.toml`).
#[derive(Clone)]
pub struct Runtime {
    pub(super) spec: &'static RuntimeSpec,
    pub(super) installed: Installed,
    pub(super) program: Program,
    /// blake3 of the catalogue's module, which snapshots are made from: runs from any of its
    /// snapshots behave the same, so result-cache keys and snapshot keys name this.
    pub(super) base: blake3::Hash,
    /// The modules imported in the dvm-made snapshot `program` is (the standard-library set
    /// at least; its runner is defined in `__main__`); `None` for the catalogue module.
    pub(super) warm: Option<Arc<[String]>>,
    /// `python`: the script runner as the guest compiled it (marshal data in hex), made on
    /// the first run; `None` inside when the guest could not make it.
    pub(super) runner: Arc<std::sync::OnceLock<Option<String>>>,
    /// Sandboxes started ahead of demand (see [`Runtime::prestart`]).
    pub(super) prestarts: Arc<Mutex<Prestarts>>,
    /// The guest's own distributions (normalised name → version), asked once.
    pub(super) built_in: Arc<std::sync::OnceLock<std::collections::BTreeMap<String, String>>>,
}

/// The environment a sandbox's guest gets: the runtime's own, with the run's variables
/// replacing and following it (as the sandbox builds it).
pub(crate) fn guest_env(
    runtime: &[(String, String)],
    run: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = runtime
        .iter()
        .filter(|(key, _)| !run.iter().any(|(user, _)| user == key))
        .cloned()
        .collect();
    env.extend(run.iter().cloned());
    env
}

/// What `dvm runtimes list` shows about one runtime.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeStatus {
    pub id: String,
    pub language: Language,
    pub version: String,
    /// What the runtime supports (sessions, preload, prestart).
    pub capabilities: Capabilities,
    pub installed: bool,
    pub compiled: bool,
    /// Bytes of the runtime's files on disk (0 when not installed).
    pub size_on_disk: u64,
    pub package: String,
}

impl Runtime {
    pub(crate) fn program(&self) -> &Program {
        &self.program
    }

    /// The modules imported ahead in the snapshot sandboxes of this runtime start from; empty
    /// for a cold runtime.
    pub fn preloaded_modules(&self) -> &[String] {
        self.warm.as_deref().unwrap_or_default()
    }

    /// Size of the runtime's wasm module.
    pub(crate) fn module_bytes(&self) -> u64 {
        self.spec.artifact(Role::Module).map_or(0, |a| a.size)
    }

    /// Pool slots one instance of this runtime takes of the scarcest kind: the pool has as
    /// many tables and memories as instances; each defined one takes a slot, and a store's
    /// GC heap (made when the guest first throws a wasm exception) takes a memory slot too.
    #[cfg(feature = "server")]
    pub(crate) fn pool_units(&self) -> usize {
        let needs = self.program.pre.module().resources_required();
        needs.num_tables.max(needs.num_memories + 1).max(1) as usize
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// What this runtime supports beyond one-shot runs, from its ABI and language.
    pub fn capabilities(&self) -> Capabilities {
        self.spec.capabilities()
    }

    /// Whether [`Dvm::runtime_preloaded`] can snapshot this runtime.
    pub fn supports_preload(&self) -> bool {
        self.capabilities().preload
    }

    pub fn version(&self) -> &str {
        &self.spec.version
    }

    pub fn language(&self) -> Language {
        self.spec.language
    }

    /// The mounts and environment every script run (and every snapshot) of this runtime
    /// gets, in one fixed order; the argv is the python turn's (others replace it). A
    /// `python` sandbox always has its package directory mounted (`site`, or an empty one):
    /// a snapshot's guest knows the directories it was made with and no others.
    pub(crate) fn script_setup(&self, scratch: &Scratch) -> GuestSetup {
        self.script_setup_with(scratch, None)
    }

    /// [`Runtime::script_setup`] with the run's installed packages at the package directory.
    pub(crate) fn script_setup_with(
        &self,
        scratch: &Scratch,
        site: Option<&std::path::Path>,
    ) -> GuestSetup {
        let mut mounts = match self.program.abi {
            Abi::PythonReactor => {
                let mut mounts = guest::python::mounts(&self.spec.version, &self.installed.tree());
                mounts.push(Mount::read_only(
                    site.unwrap_or(scratch.empty()),
                    deps::GUEST_SITE,
                ));
                mounts
            }
            Abi::Command => Vec::new(),
        };
        mounts.extend(sandbox_mounts(scratch));
        let env = self
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        GuestSetup {
            argv: guest::python::turn_argv(),
            env,
            mounts,
        }
    }

    /// Where the answer this runtime's guest module gave to `question` (a program) is kept,
    /// so later processes read it instead of asking again.
    pub(super) fn guest_answer_path(&self, question: &str, suffix: &str) -> std::path::PathBuf {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.program.digest.as_bytes());
        hasher.update(question.as_bytes());
        let name = format!("{}{suffix}", hasher.finalize().to_hex());
        let home = &self.program.dvm.inner.config.home;
        crate::home::runners(home).join(name)
    }

    /// Has the guest compile the python script runner once, so later turns load it instead
    /// of compiling it. Falls back to compiling it per run if anything goes wrong.
    fn compile_runner(&self) -> Option<String> {
        let (code, runner) = guest::python::runner_compile_turn();
        // Kept per guest module and runner text, so a one-shot process reads it instead of
        // spending a turn on it.
        let cached = self.guest_answer_path(runner, "");
        if let Ok(hex) = std::fs::read_to_string(&cached)
            && guest::python::is_compiled_runner(&hex)
        {
            return Some(hex);
        }
        let scratch = Scratch::new().ok()?;
        let input = RunInput {
            stdin: runner.as_bytes().to_vec(),
            ..RunInput::default()
        };
        let outcome = self
            .program
            .run_entry(
                self.script_setup(&scratch),
                &input,
                guest::python::turn_entry(code),
            )
            .ok()?;
        let hex = String::from_utf8(outcome.stdout).ok()?;
        if outcome.status != crate::Status::Ok || !guest::python::is_compiled_runner(&hex) {
            return None;
        }
        // A cache that cannot be written only costs the next process this turn again.
        let _ = crate::home::publish(&cached, hex.as_bytes(), crate::home::Durability::Synced);
        Some(hex)
    }

    /// Runs a python-reactor script through `run()` and the argv, the guest's own entry.
    pub(crate) fn run_via_argv(
        &self,
        name: &str,
        source: &[u8],
        input: &RunInput,
    ) -> Result<Outcome, Error> {
        if self.program.abi != Abi::PythonReactor {
            return self.run_script(name, source, input);
        }
        let scratch = Scratch::new()?;
        scratch.write(name, source)?;
        let mut setup = self.script_setup(&scratch);
        setup.argv.push(format!("{WORKSPACE}/{name}"));
        setup.argv.extend(input.args.iter().cloned());
        self.program.run_with(setup, input)
    }

    /// Runs a script in a fresh sandbox: the script is written to a private working
    /// directory mounted at `/workspace` and run from there, with a private writable `/tmp`.
    /// `name` is its file name (`main.py`, `app.mjs`…); it picks module mode for `.mjs`.
    pub fn run_script(
        &self,
        name: &str,
        source: &[u8],
        input: &RunInput,
    ) -> Result<Outcome, Error> {
        if self.supports_prestart()
            && let Some(ran) = self.run_prestarted(name, source, input)
        {
            return ran;
        }
        // A snapshot's guest knows only the directories it was made with: a run that mounts
        // host directories of its own starts from the catalogue module.
        if self.warm.is_some() && !input.grants.is_empty() {
            let quiet: crate::Progress = Arc::new(|_| {});
            return self
                .program
                .dvm
                .runtime_cold(self.id(), &quiet)?
                .run_script(name, source, input);
        }
        let identity = self.program.key_identity(Some(self.spec), &self.base);
        in_workspace(
            &self.program.dvm,
            input,
            Some((name, source)),
            identity,
            |workspace, grants| {
                let script = crate::workspace::guest_path(name)?;
                let site = self.package_site(input)?;
                let reactor = self.program.abi == Abi::PythonReactor;
                let mut setup = match (&site, reactor) {
                    (Some((site, _)), true) => {
                        self.script_setup_with(workspace.scratch(), Some(site))
                    }
                    _ => self.script_setup(workspace.scratch()),
                };
                setup.mounts.extend(grants);
                if let Some((site, guest)) = &site
                    && !reactor
                {
                    setup.mounts.push(Mount::read_only(site, *guest));
                    if self.spec.language == Language::Python {
                        setup
                            .env
                            .push(("PYTHONPATH".to_string(), deps::GUEST_SITE.to_string()));
                    }
                }
                match self.program.abi {
                    // The cheapest way into the python guest: one turn on a fresh instance, with
                    // the same behaviour as `python SCRIPT ARGS…` (see `python::script_turn`).
                    Abi::PythonReactor => {
                        let runner = match &self.warm {
                            // The snapshot's guest read its environment when it was made:
                            // the runner sets the run's.
                            Some(_) => guest::python::Runner::InSnapshot {
                                env: guest_env(&setup.env, &input.env),
                            },
                            None => match self.runner.get_or_init(|| self.compile_runner()) {
                                Some(hex) => guest::python::Runner::Compiled(hex),
                                None => guest::python::Runner::Source,
                            },
                        };
                        let mut code =
                            guest::python::script_turn(&script, source, &input.args, &runner);
                        if site.is_some() {
                            code = format!(
                                "__import__(\"sys\").path.append({:?})\n{code}",
                                deps::GUEST_SITE
                            );
                        }
                        if input.tools.is_some() {
                            code = format!("{}{code}", guest::python::TOOLS_INSTALL);
                        }
                        if input.net.is_some() {
                            code = format!("{}{code}", guest::python::NET_INSTALL);
                        }
                        self.program
                            .run_entry(setup, input, guest::python::turn_entry(code))
                    }
                    Abi::Command => {
                        let template = match (&self.spec.module_argv, name.ends_with(".mjs")) {
                            (Some(module_argv), true) => module_argv,
                            _ => &self.spec.argv,
                        };
                        setup.argv = template
                            .iter()
                            .map(|arg| arg.replace("{script}", &script))
                            .chain(input.args.iter().cloned())
                            .collect();
                        self.program.run_with(setup, input)
                    }
                }
            },
        )
    }
}
