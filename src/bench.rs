//! Hooks for the criterion benches: each stage of the path of a run, alone. Not a stable API.

use std::path::Path;

use crate::dvm::{Dvm, Program};
use crate::error::Error;

impl Dvm {
    /// Compiles wasm without touching any cache; returns the serialized module.
    #[doc(hidden)]
    pub fn bench_compile(&self, wasm: &[u8]) -> Result<Vec<u8>, Error> {
        let module =
            wasmtime::Module::new(self.wasm_engine(), wasm).map_err(|e| Error::InvalidModule {
                what: "bench".into(),
                message: e.to_string(),
            })?;
        module
            .serialize()
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Loads a serialized module from a file by mmap, as the module cache does.
    #[doc(hidden)]
    pub fn bench_load_precompiled(&self, path: &Path) -> Result<(), Error> {
        // SAFETY: benches only pass files made by `bench_compile` with this engine.
        unsafe { wasmtime::Module::deserialize_file(self.wasm_engine(), path) }
            .map(drop)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

impl Program {
    /// Instantiates the program in a fresh store with default limits and drops it, without
    /// running the guest.
    #[doc(hidden)]
    pub fn bench_instantiate(&self) -> Result<(), Error> {
        self.instantiate_only()
    }
}
