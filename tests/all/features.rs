//! The library without default features is the sandbox core: an embedder that turns the
//! features off compiles no HTTP server, MCP SDK, NATS client or HTTP client. Checked on the
//! dependency graph cargo resolves from the lock file (offline), so it costs no build.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates only the surfaces need; none may be in the core's graph.
const SURFACE_ONLY: &[&str] = &[
    "axum",
    "tower-http",
    "rmcp",
    "schemars",
    "async-nats",
    "nkeys",
    "reqwest",
    "pulldown-cmark",
    "clap",
    "indicatif",
    "tracing-subscriber",
    "utoipa",
    "prometheus-client",
];

/// The names of the crates in dvm's normal (non-dev, non-build) dependency graph with
/// `features` (e.g. `--no-default-features`).
fn normal_dependencies(features: &[&str]) -> BTreeSet<String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--manifest-path", manifest])
        .args(features)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree {features:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_core_compiles_no_surface_crates() {
    let core = normal_dependencies(&["--no-default-features"]);
    // The graph is really there: dvm and its engine.
    for needed in ["dvm", "wasmtime", "wasmtime-wasi"] {
        assert!(core.contains(needed), "{needed} missing from {core:?}");
    }
    let leaked: Vec<&str> = SURFACE_ONLY
        .iter()
        .copied()
        .filter(|name| core.contains(*name))
        .collect();
    assert!(
        leaked.is_empty(),
        "the library without default features depends on {leaked:?}; make them optional \
         under the surface feature that uses them (see [features] in Cargo.toml)"
    );

    // Each surface feature brings its own crates, and the default (the `dvm` command) all.
    let server = normal_dependencies(&["--no-default-features", "--features", "server"]);
    assert!(server.contains("axum") && server.contains("rmcp"));
    // The server reaches MCP upstreams over streamable HTTP through rmcp's reqwest client.
    assert!(!server.contains("async-nats") && !server.contains("pulldown-cmark"));
    let net = normal_dependencies(&["--no-default-features", "--features", "net"]);
    assert!(net.contains("reqwest") && !net.contains("axum") && !net.contains("rmcp"));
    let nats = normal_dependencies(&["--no-default-features", "--features", "nats"]);
    assert!(nats.contains("async-nats") && !nats.contains("axum"));
    let agent = normal_dependencies(&["--no-default-features", "--features", "agent"]);
    assert!(agent.contains("reqwest") && !agent.contains("async-nats"));
    let all = normal_dependencies(&[]);
    for name in SURFACE_ONLY {
        assert!(all.contains(*name), "the default build lacks {name}");
    }
}
