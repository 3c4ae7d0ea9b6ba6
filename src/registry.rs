//! Connector type name → factory: the only place the engine names concrete connectors.

use crate::config::{PipelineConfig, SinkKind, SourceConfig};
use crate::datagen::Datagen;
use crate::runtime::{SinkFactory, SinkSpec, SourceFactory};
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
        }),
        SourceConfig::Datagen(d) => Arc::new(DatagenFactory {
            cfg: d.clone(),
            pipeline: cfg.name.clone(),
        }),
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
        match &s.kind {
            SinkKind::File(f) => writable(format!("sink {}", s.name), &f.path),
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
