//! weir's end-to-end tests: the `weir` binary and the engine, through the interfaces users
//! have (pipeline files, the CLI, the files a sink writes).

mod common;
mod config_errors;
mod e2e;
mod log_crash;
mod postgres;
mod schemas;
