#!/usr/bin/env bash
# Builds the Python package into a fresh venv under target/tmp and runs its pytest suite.
# The build uses the workspace's dev profile (dependencies optimised), so after `cargo test`
# it reuses the compiled engine and takes about half a minute. The tests use the test
# suite's dvm home (runtimes installed there by `cargo test`; a fresh one installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/tmp/python-binding
python3 -m venv --clear "$venv"
# The integrations are tested with the frameworks' real packages.
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin==1.15.0 pytest==9.2.0 \
    smolagents==1.26.0 langchain-core==1.8.1
# maturin's build hook runs the `maturin` command: the venv's, on PATH.
PATH="$PWD/$venv/bin:$PATH" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation ./bindings/python
DVM_HOME="${DVM_HOME:-$PWD/target/tmp/dvm-home-shared}" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider bindings/python/tests
