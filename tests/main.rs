//! weir's end-to-end tests: the `weir` binary and the engine, through the interfaces users
//! have (pipeline files, the CLI, the files a sink writes).

mod admin;
mod backfill;
mod common;
mod config_errors;
mod connectors;
mod e2e;
mod kafka_acceptance;
mod log_crash;
mod mysql_acceptance;
mod outage;
mod pg_acceptance;
mod postgres;
mod schemas;
mod source_faults;
mod sql_sinks;
mod status_page;
