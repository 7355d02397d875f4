//! dvm's integration tests: one harness binary, one module per concern.

mod agent;
mod artifact;
mod cache;
mod cli;
mod deps;
mod errors;
mod escape;
mod files;
mod guests;
mod install;
mod javascript;
mod limits;
mod llm;
mod nats;
mod preload;
mod prestart;
mod profiles;
mod python;
mod results;
mod review;
mod sdk;
mod sec_hostfs;
mod server;
mod session;
mod support;
mod validate;
