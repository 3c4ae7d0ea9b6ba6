//! The JSON Schemas in schemas/ validate real output, so they cannot drift.

use crate::common::*;
use std::path::Path;
use weir::config::{DatagenConfig, Mix};

pub fn compile(name: &str) -> (boon::Schemas, boon::SchemaIndex) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let url = format!("file://{}", path.display());
    compiler.add_resource(&url, value).unwrap();
    let index = compiler
        .compile(&url, &mut schemas)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (schemas, index)
}

#[test]
fn file_sink_output_matches_the_change_event_schema() {
    let (schemas, index) = compile("change-event.schema.json");
    let dir = TempDir::new("schema-events");
    let cfg = DatagenConfig::new(2, 3_000, 50, 40, Mix::Mixed, 4);
    let pipeline = datagen_pipeline(dir.path(), &cfg, "");
    run_once_ok(&pipeline);
    let mut ops = std::collections::BTreeSet::new();
    for t in ["t0", "t1"] {
        let text =
            std::fs::read_to_string(dir.path().join(format!("out/datagen.{t}.jsonl"))).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Err(e) = schemas.validate(&v, index) {
                panic!("{line}\ndoes not match schemas/change-event.schema.json: {e}");
            }
            ops.insert(v["op"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ops.into_iter().collect::<Vec<_>>(), ["c", "d", "u"]);
    // And the schema is not vacuous: a wrong envelope fails.
    let bad =
        serde_json::json!({"op": "x", "before": null, "after": null, "source": {}, "ts_ms": 1});
    assert!(schemas.validate(&bad, index).is_err());
}

#[test]
fn example_pipeline_files_match_the_pipeline_schema_and_are_accepted() {
    let (schemas, index) = compile("pipeline.schema.json");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let json = serde_json::to_value(&value).unwrap();
        if let Err(e) = schemas.validate(&json, index) {
            panic!(
                "{} does not match schemas/pipeline.schema.json: {e}",
                path.display()
            );
        }
        weir::config::parse(&path, &text)
            .unwrap_or_else(|e| panic!("weir rejects {}: {e}", path.display()));
        // A typo'd key fails both weir and the schema.
        let typo = text.replacen("[source]\n", "[source]\ntabel_cont = 1\n", 1);
        let typo_json =
            serde_json::to_value(toml::from_str::<toml::Value>(&typo).unwrap()).unwrap();
        assert!(schemas.validate(&typo_json, index).is_err());
        assert!(weir::config::parse(&path, &typo).is_err());
        n += 1;
    }
    assert!(n >= 1, "no example pipeline files found");
}
