//! dvm's integration tests: one harness binary, one module per concern.

mod cache;
mod cli;
mod errors;
mod guests;
mod limits;
mod support;
