//! Link settings for the `dvm` executable.
//!
//! A `dvm run` is a short process, and the dynamic loader's share of it is mostly applying the
//! executable's ~150,000 relative relocations (a position-independent executable must, to
//! keep its address random). Where the linker supports it, they are packed
//! (`-z pack-relative-relocs`, glibc 2.36's DT_RELR): the table the loader reads shrinks from
//! megabytes to kilobytes, and the executable stays position-independent, so ASLR is kept.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu && linker_packs_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the system linker knows `-z pack-relative-relocs` (binutils 2.38 and later).
fn linker_packs_relocations() -> bool {
    Command::new("ld")
        .arg("--help")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("pack-relative-relocs"))
}
