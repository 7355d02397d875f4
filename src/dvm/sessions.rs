//! Sessions: one interpreter of a runtime kept alive across calls.

use super::Runtime;
use crate::deps;
use crate::engine;
use crate::error::Error;
use crate::fs::Scratch;
use crate::guest::{self, Abi};
use crate::sandbox::{self, RunInput};
use crate::workspace::Workspace;

/// A started session, the package site it mounts, and the runtime's environment under the
/// user's.
type StartedSession = (
    crate::session::Session,
    Option<(std::path::PathBuf, &'static str)>,
    Vec<(String, String)>,
);

impl Runtime {
    /// Whether [`Runtime::session`] works for this runtime (it needs a guest with a `turn`
    /// export: `python`'s and `javascript`'s).
    pub fn supports_sessions(&self) -> bool {
        self.capabilities().sessions
    }

    /// Opens a session: one interpreter kept alive across calls (see [`crate::session`]).
    pub fn session(
        &self,
        options: crate::session::SessionOptions,
    ) -> Result<crate::session::Session, Error> {
        if !self.supports_sessions() {
            return Err(Error::InvalidInput(format!(
                "`{}` has no sessions: its guest is a WASI command that exits after one \
                 program; use the `python` or `javascript` runtime for a session, or run \
                 one-shot",
                self.spec.id
            )));
        }
        let workspace = match options.workspace {
            Some(workspace) => workspace,
            None => Workspace::new()?,
        };
        let (session, site, setup_env) =
            self.start_session(workspace, &options.env, options.packages.clone(), None)?;
        if self.program.abi != Abi::PythonReactor {
            // The javascript guest needs no set-up call: its first turn sets the runtime up,
            // and packages resolve from the mounted /node_modules.
            return Ok(session);
        }
        let env_for_setup = options.env.clone();
        // A first, silent call: display is set up (figures, rich values), the packages go on
        // sys.path; a session started from a dvm snapshot reseeds the random generators the snapshot holds and drops the script
        // runner it defines, so the session's namespace is what a cold one has.
        let mut setup_call = String::new();
        if site.is_some() {
            setup_call.push_str(&format!(
                "__import__('sys').path.append({:?})\n",
                deps::GUEST_SITE
            ));
        }
        if self.warm.is_some() {
            setup_call.push_str(&guest::python::session_from_snapshot(
                &super::runtime::guest_env(&setup_env, &env_for_setup),
            ));
        }
        setup_call.push_str(guest::python::session_display_setup());
        {
            let outcome = session.run(&setup_call, &RunInput::default())?;
            if outcome.status != crate::Status::Ok {
                return Err(crate::error::HostError::Guest(format!(
                    "the session could not be set up: {}",
                    String::from_utf8_lossy(&outcome.stderr)
                ))
                .into());
            }
            session.forget_calls();
        }
        Ok(session)
    }

    /// Starts a session's thread on `workspace`, from `image` when one is given (a fork or a
    /// resumed snapshot, which needs no setup call). Returns the session, the package site it
    /// mounts and the runtime's environment under the user's.
    pub(super) fn start_session(
        &self,
        workspace: Workspace,
        env: &[(String, String)],
        packages: Option<deps::PackageSet>,
        image: Option<std::sync::Arc<sandbox::session::Image>>,
    ) -> Result<StartedSession, Error> {
        let input = RunInput {
            packages: packages.clone(),
            ..RunInput::default()
        };
        let site = self.package_site(&input)?;
        let setup = self.script_setup_with(
            workspace.scratch(),
            site.as_ref().map(|(site, _)| site.as_path()),
        );
        let setup_env = setup.env.clone();
        // A session with installed packages is not copied: its copies would need the same
        // packages mounted (not yet recorded in a snapshot).
        let copies = packages.is_none().then(|| {
            let (resumer, storer) = (self.clone(), self.clone());
            let (resume_env, store_env) = (env.to_vec(), env.to_vec());
            std::sync::Arc::new(crate::session::Copies {
                resume: Box::new(move |workspace, image| {
                    resumer
                        .start_session(workspace, &resume_env, None, Some(image))
                        .map(|(session, _, _)| session)
                }),
                store: Box::new(move |image, workspace| {
                    storer.store_snapshot(image, workspace, &store_env)
                }),
            })
        });
        let (pre, shared) = self.program.session_pre();
        let dvm = self.program.dvm.clone();
        let env = env.to_vec();
        let hooks = match self.program.abi {
            Abi::PythonReactor => sandbox::session::Hooks {
                after_turn: guest::python::DISPLAY_FLUSH,
                before_capture: guest::python::BEFORE_CAPTURE,
                tools_setup: guest::python::TOOLS_INSTALL,
                net_setup: guest::python::NET_INSTALL,
            },
            Abi::Command => sandbox::session::Hooks::default(),
        };
        let session = crate::session::Session::start(
            &self.spec.id,
            workspace,
            (copies, guest::has_door(self.program.pre.module())),
            move |ready, turns| {
                sandbox::session::serve(
                    (&pre, shared),
                    &setup,
                    &env,
                    (hooks, image.as_deref()),
                    ready,
                    turns,
                    || {
                        dvm.activate_session(shared)
                            .map(|active| Box::new(active) as Box<dyn Send>)
                    },
                )
            },
        )?;
        Ok((session, site, setup_env))
    }

    /// Keeps `count` python instances alive after one turn of `code` each (what an idle
    /// session holds) and calls `measure` while they are all held. For `dvm bench`.
    pub(crate) fn with_idle_turns(
        &self,
        count: usize,
        code: &str,
        measure: impl FnOnce(),
    ) -> Result<(), Error> {
        if self.program.abi != Abi::PythonReactor {
            return Err(Error::InvalidInput(format!(
                "`{}` has no turns to keep an instance between",
                self.spec.id
            )));
        }
        let (ready, turned) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut releases = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let (release, released) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            let scratch = Scratch::new()?;
            let setup = self.script_setup(&scratch);
            let pre = self.program.pre.clone();
            let entry = guest::python::turn_entry(code.to_string());
            let ready = ready.clone();
            let thread = std::thread::Builder::new()
                .stack_size(engine::RUN_THREAD_STACK_BYTES)
                .spawn(move || {
                    let held = sandbox::with_instance(
                        &pre,
                        &setup,
                        &RunInput::default(),
                        |store, instance| {
                            let code = entry(store, instance)?;
                            let _ = ready.send(Ok(()));
                            let _ = released.recv();
                            Ok(code)
                        },
                    );
                    if !matches!(held, Ok(Ok(0))) {
                        let _ =
                            ready.send(Err(format!("{:?}", held.map(|r| r.map_err(|o| o.status)))));
                    }
                    drop(scratch);
                })
                .map_err(|source| crate::error::HostError::Thread {
                    what: "a thread",
                    source,
                })?;
            threads.push(thread);
        }
        let mut failed = None;
        for _ in 0..count {
            match turned.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some("a held instance ended early".into()),
            }
            if failed.is_some() {
                break;
            }
        }
        if failed.is_none() {
            measure();
        }
        drop(releases);
        for thread in threads {
            let _ = thread.join();
        }
        match failed {
            Some(e) => {
                Err(crate::error::HostError::Guest(format!("an idle turn failed: {e}")).into())
            }
            None => Ok(()),
        }
    }
}
