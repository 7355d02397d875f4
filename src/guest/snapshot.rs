//! Pre-initialized snapshots made by dvm with wasmtime-wizer: instrument the runtime's
//! module, instantiate it in a sandbox laid out exactly like a run's, drive the guest (e.g.
//! one `turn("import numpy, pandas")`), and write the instance's memory and globals out as a
//! new module. Sandboxes started from it skip that work.
//!
//! What a snapshot must not carry into sandboxes: host handles (none live in wasm state; the
//! guest's table of preopened directories does, which is why the snapshot is made with the
//! same mounts in the same order as every run), clocks (read live through WASI at every call)
//! and random state (Python seeds `random` and `numpy.random` when they are imported: every
//! script turn reseeds them from the sandbox's own entropy before the script starts).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Version of the recipe below; part of every snapshot key.
const RECIPE_VERSION: &[u8] = b"dvm python preload snapshot v5";

/// The content key of a snapshot: the base module, the preloaded module names, the wizer
/// version, this recipe and the code it runs (so a change to the code makes new snapshots).
pub(crate) fn key(base: &blake3::Hash, modules: &[String]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let code = preload_code(modules);
    for field in [
        RECIPE_VERSION,
        base.as_bytes(),
        crate::engine::WASMTIME_VERSION.as_bytes(),
        code.as_bytes(),
    ] {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.update(&(modules.len() as u64).to_le_bytes());
    for module in modules {
        hasher.update(&(module.len() as u64).to_le_bytes());
        hasher.update(module.as_bytes());
    }
    hasher.finalize()
}

/// The Python that a preload turn runs: imports `modules` without binding their names in
/// `__main__` (a script that forgets an import fails as it would in a cold sandbox), then
/// defines the script runner there, so runs from the snapshot call it directly.
///
/// A snapshot of the standard-library set alone must hold nothing seeded from the process
/// ([`super::warm::EXCLUDED`]): the turn fails, and the snapshot is not made, if an import
/// pulled one of those in.
pub(crate) fn preload_code(modules: &[String]) -> String {
    let names = serde_json::to_string(modules).unwrap_or_else(|_| "[]".into());
    let check = if super::warm::libraries_of(modules).is_empty() {
        let excluded = serde_json::to_string(super::warm::EXCLUDED).unwrap_or_else(|_| "[]".into());
        format!(
            "    import sys\n    held = [m for m in {excluded} if m in sys.modules]\n    \
             if held:\n        raise ImportError(f'the standard-library snapshot would hold {{held}}')\n"
        )
    } else {
        String::new()
    };
    // matplotlib does most of its one-time work (fonts, the Agg renderer) on the first
    // figure it draws: draw one, off pyplot's figure list, so no figure number is taken.
    // The fonts it opened read their files lazily through descriptors of the build's
    // sandbox, which a run's sandbox does not have: drop them (as matplotlib itself does in
    // a forked child), so each run opens its own.
    let warm_up = if modules
        .iter()
        .any(|m| m.split('.').next() == Some("matplotlib"))
    {
        "    import io\n    from matplotlib.figure import Figure\n    \
         from matplotlib.backends.backend_agg import FigureCanvasAgg\n    \
         figure = Figure(figsize=(3, 2))\n    axes = figure.add_subplot()\n    \
         axes.plot([0, 1, 2], [1, 0, 2], label='line')\n    axes.bar([0, 1], [1, 2])\n    \
         axes.set_title('title')\n    axes.set_xlabel('x')\n    axes.legend()\n    \
         FigureCanvasAgg(figure).print_png(io.BytesIO())\n    \
         import matplotlib.font_manager\n    matplotlib.font_manager._get_font.cache_clear()\n"
    } else {
        ""
    };
    format!(
        "def __dvm_preload():\n    import importlib\n    for name in {names}:\n        \
         importlib.import_module(name)\n{check}{warm_up}__dvm_preload()\ndel __dvm_preload\n{}",
        super::python::runner_source()
    )
}

/// Checks module names before they reach Python source: dotted identifiers only.
pub(crate) fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Drives a future that never waits on anything outside this thread (wizer's snapshot of a
/// wasmtime instance reads memory and globals synchronously).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::yield_now();
    }
}

/// Lets wizer read a live sandbox: exported globals and memories, by name. A name that is
/// missing (which would mean the instrumented module is not the one instantiated) is
/// recorded instead of panicking, and fails the snapshot afterwards.
pub(crate) struct LiveInstance<'a> {
    pub store: &'a mut wasmtime::Store<crate::sandbox::SandboxState>,
    pub instance: wasmtime::Instance,
    pub missing: Option<String>,
}

impl wasmtime_wizer::InstanceState for LiveInstance<'_> {
    async fn global_get(
        &mut self,
        name: &str,
        _: wasmtime_wizer::ValType,
    ) -> wasmtime_wizer::SnapshotVal {
        use wasmtime::Val;
        use wasmtime_wizer::SnapshotVal;
        let value = self
            .instance
            .get_global(&mut *self.store, name)
            .map(|global| global.get(&mut *self.store));
        match value {
            Some(Val::I32(x)) => SnapshotVal::I32(x),
            Some(Val::I64(x)) => SnapshotVal::I64(x),
            Some(Val::F32(x)) => SnapshotVal::F32(x),
            Some(Val::F64(x)) => SnapshotVal::F64(x),
            Some(Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            _ => {
                self.missing.get_or_insert_with(|| format!("global {name}"));
                SnapshotVal::I32(0)
            }
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(memory) => contents(memory.data(&*self.store)),
            None => {
                self.missing.get_or_insert_with(|| format!("memory {name}"));
                contents(&[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_checked_before_they_become_source() {
        assert!(valid_module_name("numpy"));
        assert!(valid_module_name("matplotlib.pyplot"));
        assert!(valid_module_name("_private2"));
        for bad in [
            "",
            "os; import shutil",
            "1abc",
            "a..b",
            "a b",
            "a-b",
            "a.",
            "__import__('os')",
        ] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn keys_separate_module_lists() {
        let base = blake3::hash(b"base");
        let a = key(&base, &["ab".into(), "c".into()]);
        let b = key(&base, &["a".into(), "bc".into()]);
        assert_ne!(a, b);
        assert_eq!(a, key(&base, &["ab".into(), "c".into()]));
    }
}
