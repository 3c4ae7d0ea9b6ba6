//! weir: change-data-capture from database change logs to SQL, Kafka and file sinks, through
//! an embedded, durable staging log.
//!
//! - [`config`]: the pipeline file.
//! - [`log`]: the RocksDB staging log.
//! - [`runtime`]: source task → log → sink tasks.
//! - [`snapshot`]: the initial snapshot (parallel chunks staged as `op = r`).
//! - [`registry`]: connector type names → factories.
//! - [`datagen`]: the synthetic source.
//! - [`admin`]: the operations plane (metrics, health, status page).
//! - [`cli`]: the `weir` command line.

pub mod admin;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod datagen;
pub mod log;
pub mod registry;
pub mod runtime;
pub mod snapshot;
