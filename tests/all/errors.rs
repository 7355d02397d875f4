//! Bad input is a clear, typed error, never a panic.

use std::time::Duration;

use dvm::{Config, Dvm, Error, RunInput};

use crate::support::*;

#[test]
fn a_missing_file_names_the_path() {
    let error = shared()
        .load_file(std::path::Path::new("/nonexistent/prog.wasm"))
        .err()
        .unwrap();
    assert!(matches!(error, Error::ReadInput { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/prog.wasm"));
    assert!(error.is_user_error());
}

#[test]
fn a_directory_is_not_a_module() {
    let error = shared().load_file(&fixture("wat")).err().unwrap();
    assert!(matches!(error, Error::ReadInput { .. }), "{error:?}");
}

#[test]
fn a_corrupt_module_is_invalid() {
    let error = shared()
        .load_file(&fixture("malformed/corrupt.wasm"))
        .err()
        .unwrap();
    assert!(matches!(error, Error::InvalidModule { .. }), "{error:?}");
}

#[test]
fn bytes_that_are_not_wasm_say_so() {
    let error = shared()
        .load_file(&fixture("malformed/not_wasm.wasm"))
        .err()
        .unwrap();
    assert!(matches!(error, Error::NotWasm { .. }), "{error:?}");
    let error = shared().load_bytes("junk", &[0xff; 64]).err().unwrap();
    assert!(matches!(error, Error::NotWasm { .. }), "{error:?}");
}

#[test]
fn broken_wat_reports_the_parse_error() {
    let error = shared()
        .load_bytes("bad.wat", b"(module (func $f (i32.bogus)))")
        .err()
        .unwrap();
    assert!(matches!(error, Error::InvalidWat { .. }), "{error:?}");
}

#[test]
fn an_unknown_import_is_named() {
    let error = shared()
        .load_file(&fixture("malformed/unknown_import.wat"))
        .err()
        .unwrap();
    match &error {
        Error::UnknownImport { module, name, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "launch_missiles"));
        }
        other => panic!("expected UnknownImport, got {other:?}"),
    }
    assert!(error.to_string().contains("env::launch_missiles"));
}

#[test]
fn an_unknown_wasi_function_is_named() {
    let wat = r#"(module (import "wasi_snapshot_preview1" "teleport" (func))
                 (memory (export "memory") 1) (func (export "_start")))"#;
    let error = shared().load_bytes("t.wat", wat.as_bytes()).err().unwrap();
    assert!(
        error
            .to_string()
            .contains("wasi_snapshot_preview1::teleport"),
        "{error}"
    );
}

#[test]
fn an_import_with_the_wrong_type_is_refused() {
    let wat = r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64)))
                 (memory (export "memory") 1) (func (export "_start")))"#;
    let error = shared().load_bytes("t.wat", wat.as_bytes()).err().unwrap();
    assert!(
        matches!(error, Error::IncompatibleImport { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("fd_write"), "{error}");
}

#[test]
fn a_module_without_start_is_refused() {
    let error = shared()
        .load_file(&fixture("malformed/no_start.wat"))
        .err()
        .unwrap();
    assert!(matches!(error, Error::NoEntryPoint { .. }), "{error:?}");
    let wrong_type =
        r#"(module (memory (export "memory") 1) (func (export "_start") (param i32)))"#;
    let error = shared()
        .load_bytes("t.wat", wrong_type.as_bytes())
        .err()
        .unwrap();
    assert!(matches!(error, Error::NoEntryPoint { .. }), "{error:?}");
}

#[test]
fn a_module_over_the_size_cap_is_refused_before_parsing() {
    let home = tempfile::tempdir().unwrap();
    let dvm = Dvm::new(Config {
        home: home.path().to_path_buf(),
        pool: None,
        max_module_bytes: 64,
        ..Config::default()
    })
    .unwrap();
    let error = dvm.load_file(&fixture("wat/hello.wat")).err().unwrap();
    assert!(
        matches!(error, Error::ModuleTooLarge { limit: 64, .. }),
        "{error:?}"
    );
    let error = dvm.load_bytes("big", &[0u8; 65]).err().unwrap();
    assert!(matches!(error, Error::ModuleTooLarge { .. }), "{error:?}");
}

#[test]
fn limits_that_cannot_be_enforced_are_refused() {
    let program = shared().load_file(&fixture("wat/hello.wat")).unwrap();
    for input in [
        limits(|l| l.deadline = Duration::ZERO),
        limits(|l| l.memory_bytes = 5 << 30),
        limits(|l| l.fuel = Some(0)),
        limits(|l| l.deadline = Duration::MAX),
        limits(|l| l.stdout_bytes = u64::MAX),
    ] {
        let error = program.run(&input).err().unwrap();
        assert!(matches!(error, Error::InvalidLimits(_)), "{error:?}");
    }
    assert!(program.run(&RunInput::default()).is_ok());
}
