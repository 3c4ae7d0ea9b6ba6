//! Connector type name → factory: the only place the engine names concrete connectors.

use crate::config::{PipelineConfig, SinkKind, SnapshotMode, SourceConfig};
use crate::datagen::Datagen;
use crate::runtime::{SinkFactory, SinkSpec, SourceFactory};
use crate::snapshot::SnapshotOptions;
use async_trait::async_trait;
use std::sync::Arc;
use weir_api::{Sink, SinkContext, Source, SourceInfo};

/// One line of `weir check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Whether the pipeline cannot run with it.
    pub fatal: bool,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The source factory for a pipeline.
pub fn source(cfg: &PipelineConfig) -> Arc<dyn SourceFactory> {
    match &cfg.source {
        SourceConfig::Postgres(_) => Arc::new(PostgresFactory {
            cfg: postgres_config(cfg).expect("a postgres source"),
            pipeline: cfg.name.clone(),
            snapshot: weir_postgres::snapshot::SnapshotSettings {
                chunk_rows: match &cfg.source {
                    SourceConfig::Postgres(pg) => pg.snapshot_chunk_rows,
                    _ => 0,
                },
            },
        }),
        SourceConfig::Datagen(d) => Arc::new(DatagenFactory {
            cfg: d.clone(),
            pipeline: cfg.name.clone(),
        }),
        SourceConfig::Mysql(m) => Arc::new(MysqlFactory {
            cfg: m.clone(),
            pipeline: cfg.name.clone(),
        }),
    }
}

/// How the pipeline snapshots existing rows.
pub fn snapshot_options(cfg: &PipelineConfig) -> SnapshotOptions {
    match &cfg.source {
        SourceConfig::Postgres(pg) => SnapshotOptions {
            enabled: pg.snapshot != SnapshotMode::Never,
            only: pg.snapshot == SnapshotMode::Only,
            workers: pg.snapshot_workers as usize,
            ..SnapshotOptions::default()
        },
        SourceConfig::Mysql(m) => SnapshotOptions {
            enabled: m.snapshot != SnapshotMode::Never,
            only: m.snapshot == SnapshotMode::Only,
            workers: m.snapshot_workers as usize,
            ..SnapshotOptions::default()
        },
        SourceConfig::Datagen(_) => SnapshotOptions::default(),
    }
}

/// The sinks of a pipeline.
pub fn sinks(cfg: &PipelineConfig) -> Vec<SinkSpec> {
    cfg.sinks
        .iter()
        .map(|s| SinkSpec {
            name: s.name.clone(),
            factory: match &s.kind {
                SinkKind::File(f) => Arc::new(FileFactory(f.clone())) as Arc<dyn SinkFactory>,
                SinkKind::Postgres(p) => Arc::new(PostgresSinkFactory(p.clone())),
                SinkKind::Mysql(m) => Arc::new(MysqlSinkFactory(m.clone())),
                SinkKind::Kafka(k) => Arc::new(KafkaSinkFactory(k.clone())),
            },
        })
        .collect()
}

/// Preflight checks of the source and sinks (the file itself is already valid).
pub async fn check(cfg: &PipelineConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut writable = |what: String, dir: &std::path::Path| {
        let probe = dir.join(".weir-check");
        let result = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&probe, b"ok"))
            .and_then(|()| std::fs::remove_file(&probe));
        if let Err(e) = result {
            problems.push(Problem {
                fatal: true,
                message: format!(
                    "{what}: cannot write to {} ({e}); create it or fix its permissions",
                    dir.display()
                ),
            });
        }
    };
    writable("staging log".into(), &cfg.log_dir());
    for s in &cfg.sinks {
        if let SinkKind::File(f) = &s.kind {
            writable(format!("sink {}", s.name), &f.path);
        }
    }
    for s in &cfg.sinks {
        let findings: Vec<(bool, String)> = match &s.kind {
            SinkKind::File(_) => Vec::new(),
            SinkKind::Postgres(p) => weir_postgres::sink::check(p)
                .await
                .into_iter()
                .map(|f| (f.fatal, f.message))
                .collect(),
            SinkKind::Mysql(m) => weir_mysql::sink::check(m)
                .await
                .into_iter()
                .map(|f| (f.fatal, f.message))
                .collect(),
            SinkKind::Kafka(k) => weir_kafka::check::preflight(k, &cfg.name, &s.name, &[])
                .await
                .into_iter()
                .map(|f| (f.fatal, f.message))
                .collect(),
        };
        for (fatal, message) in findings {
            problems.push(Problem {
                fatal,
                message: format!("sink {}: {message}", s.name),
            });
        }
    }
    match &cfg.source {
        SourceConfig::Postgres(_) => {
            if let Some(pg) = postgres_config(cfg) {
                for f in weir_postgres::check::preflight(&pg).await {
                    problems.push(Problem {
                        fatal: f.fatal,
                        message: format!("source: {}", f.message),
                    });
                }
            }
        }
        SourceConfig::Mysql(m) => {
            for f in weir_mysql::check::preflight(&m.source, &cfg.name).await {
                problems.push(Problem {
                    fatal: f.fatal,
                    message: format!("source: {}", f.message),
                });
            }
        }
        SourceConfig::Datagen(d) => {
            if d.events == 0 {
                problems.push(Problem {
                    fatal: false,
                    message: "source: datagen events = 0, so the pipeline will stage nothing"
                        .into(),
                });
            }
        }
    }
    problems
}

struct DatagenFactory {
    cfg: crate::config::DatagenConfig,
    pipeline: String,
}

#[async_trait]
impl SourceFactory for DatagenFactory {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            connector: "datagen".into(),
            name: self.pipeline.clone(),
            db: "datagen".into(),
        }
    }
    async fn build(&self) -> weir_api::Result<Box<dyn Source>> {
        Ok(Box::new(Datagen::new(self.cfg.clone(), &self.pipeline)))
    }
}

fn postgres_config(cfg: &PipelineConfig) -> Option<weir_postgres::source::PostgresSourceConfig> {
    match &cfg.source {
        SourceConfig::Postgres(pg) => Some(weir_postgres::source::PostgresSourceConfig {
            url: pg.url.clone(),
            tables: pg.tables.clone(),
            exclude: pg.exclude.clone(),
            slot: pg.slot.clone(),
            publication: pg.publication.clone(),
        }),
        _ => None,
    }
}

struct PostgresFactory {
    cfg: weir_postgres::source::PostgresSourceConfig,
    pipeline: String,
    snapshot: weir_postgres::snapshot::SnapshotSettings,
}

#[async_trait]
impl SourceFactory for PostgresFactory {
    fn info(&self) -> SourceInfo {
        weir_postgres::source::PostgresSource::new(self.cfg.clone(), &self.pipeline).info()
    }
    async fn build(&self) -> weir_api::Result<Box<dyn Source>> {
        Ok(Box::new(weir_postgres::source::PostgresSource::new(
            self.cfg.clone(),
            &self.pipeline,
        )))
    }
    async fn snapshot(&self) -> weir_api::Result<Option<Box<dyn weir_api::Snapshot>>> {
        Ok(Some(Box::new(
            weir_postgres::snapshot::PostgresSnapshot::new(
                self.cfg.clone(),
                &self.pipeline,
                self.snapshot,
            ),
        )))
    }
    async fn backfill(&self) -> weir_api::Result<Option<Box<dyn weir_api::Backfill>>> {
        Ok(Some(Box::new(
            weir_postgres::backfill::PostgresBackfill::new(self.cfg.clone(), &self.pipeline),
        )))
    }
}

struct FileFactory(weir_file::FileSinkConfig);

#[async_trait]
impl SinkFactory for FileFactory {
    async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>> {
        let cfg = self.0.clone();
        let sink = tokio::task::spawn_blocking(move || weir_file::FileSink::open(&cfg, ctx))
            .await
            .map_err(|e| {
                weir_api::ConnectorError::transient_from("file sink open task failed", e)
            })??;
        Ok(Box::new(sink))
    }
}

struct MysqlFactory {
    cfg: crate::config::MysqlConfig,
    pipeline: String,
}

#[async_trait]
impl SourceFactory for MysqlFactory {
    fn info(&self) -> SourceInfo {
        weir_mysql::MysqlSource::new(self.cfg.source.clone(), &self.pipeline).info()
    }
    async fn build(&self) -> weir_api::Result<Box<dyn Source>> {
        Ok(Box::new(weir_mysql::MysqlSource::new(
            self.cfg.source.clone(),
            &self.pipeline,
        )))
    }
    async fn snapshot(&self) -> weir_api::Result<Option<Box<dyn weir_api::Snapshot>>> {
        Ok(Some(Box::new(weir_mysql::snapshot::MysqlSnapshot::new(
            self.cfg.source.clone(),
            &self.pipeline,
            weir_mysql::snapshot::SnapshotSettings {
                chunk_rows: self.cfg.snapshot_chunk_rows,
                workers: self.cfg.snapshot_workers as usize,
            },
        ))))
    }
    async fn backfill(&self) -> weir_api::Result<Option<Box<dyn weir_api::Backfill>>> {
        Ok(Some(Box::new(weir_mysql::backfill::MysqlBackfill::new(
            self.cfg.source.clone(),
            &self.pipeline,
        ))))
    }
}

struct PostgresSinkFactory(weir_postgres::sink::PostgresSinkConfig);

#[async_trait]
impl SinkFactory for PostgresSinkFactory {
    async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>> {
        Ok(Box::new(
            weir_postgres::sink::PostgresSink::connect(self.0.clone(), ctx).await?,
        ))
    }
}

struct KafkaSinkFactory(weir_kafka::KafkaSinkConfig);

#[async_trait]
impl SinkFactory for KafkaSinkFactory {
    async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>> {
        Ok(Box::new(
            weir_kafka::KafkaSink::connect(&self.0, ctx).await?,
        ))
    }
}

struct MysqlSinkFactory(weir_mysql::sink::MysqlSinkConfig);

#[async_trait]
impl SinkFactory for MysqlSinkFactory {
    async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>> {
        Ok(Box::new(
            weir_mysql::sink::MysqlSink::connect(self.0.clone(), ctx).await?,
        ))
    }
}
