//! Snapshot reader against the real server: chunk bounds, coverage, consistency with the
//! slot's consistent point.

use super::{Names, env, names, sql, with_cleanup};
use std::collections::BTreeMap;
use weir_api::{Op, Snapshot, SnapshotPlan, SourcePosition, Value};
use weir_postgres::snapshot::{PostgresSnapshot, SnapshotSettings};
use weir_postgres::source::PostgresSourceConfig;

fn config(n: &Names, tables: Vec<String>) -> PostgresSourceConfig {
    let e = env();
    PostgresSourceConfig {
        url: format!(
            "postgres://{}:{}@{}:{}/{}",
            e.user, e.password, e.host, e.port, e.database
        ),
        tables,
        exclude: Vec::new(),
        slot: n.slot.clone(),
        publication: n.publication.clone(),
    }
}

/// Reads every chunk of `plan` with `workers` readers; rows per chunk, in chunk order.
async fn read_all(
    snap: &mut PostgresSnapshot,
    plan: &SnapshotPlan,
    workers: usize,
) -> Vec<Vec<weir_api::Row>> {
    let mut readers = Vec::new();
    for _ in 0..workers {
        readers.push(snap.reader().await.expect("reader"));
    }
    snap.readers_ready().await.expect("readers_ready");
    let mut out = vec![Vec::new(); plan.chunks.len()];
    for (i, chunk) in plan.chunks.iter().enumerate() {
        let reader = &mut readers[i % workers];
        reader.open(chunk).await.expect("open");
        while let Some(batch) = reader.next_batch(37).await.expect("batch") {
            assert!(batch.len() <= 37);
            for e in batch {
                assert_eq!(e.op, Op::Read);
                assert_eq!(e.position, plan.stream_from);
                out[i].push(e.after.expect("row"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_text_keys_are_cut_into_exact_chunks() {
    let n = names("snapchunks");
    let table = n.table.clone();
    let cfg = config(&n, vec![format!("public.{table}")]);
    with_cleanup(&n, async move {
        let client = sql().await;
        client
            .batch_execute(&format!(
                "CREATE TABLE public.\"{table}\" (a int, b text, v numeric, PRIMARY KEY (a, b)); \
                 INSERT INTO public.\"{table}\" \
                   SELECT g % 7, 'k''\\ ' || g || ' é😀', g / 3.0 FROM generate_series(1, 2500) g"
            ))
            .await
            .unwrap();
        let mut snap = PostgresSnapshot::new(cfg, "t", SnapshotSettings { chunk_rows: 100 });
        let plan = snap.plan().await.expect("plan");
        assert!(matches!(plan.stream_from, SourcePosition::Postgres(_)));
        assert_eq!(plan.schemas.len(), 1);
        assert_eq!(plan.schemas[0].primary_key, vec![0, 1]);
        // 25 full chunks and the (empty) rest after the last bound.
        assert_eq!(plan.chunks.len(), 26, "{:#?}", &plan.chunks[..3]);
        for (i, c) in plan.chunks.iter().enumerate() {
            assert_eq!(c.index as usize, i);
            assert_eq!(
                c.after,
                if i == 0 {
                    None
                } else {
                    plan.chunks[i - 1].upto.clone()
                }
            );
        }
        // Rows inserted after the consistent point are not in the snapshot.
        client
            .batch_execute(&format!(
                "INSERT INTO public.\"{table}\" VALUES (100, 'late', 1)"
            ))
            .await
            .unwrap();
        let rows = read_all(&mut snap, &plan, 3).await;
        for (i, chunk) in rows.iter().enumerate().take(25) {
            assert_eq!(chunk.len(), 100, "chunk {i}");
        }
        assert!(rows[25].is_empty());
        let mut seen = BTreeMap::new();
        for r in rows.iter().flatten() {
            let key = format!("{:?}", &r.0[..2]);
            *seen.entry(key).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2500, "every row once");
        assert!(seen.values().all(|&c| c == 1));
        assert!(!seen.keys().any(|k| k.contains("late")));
        let one = rows
            .iter()
            .flatten()
            .find(|r| r.0[1] == Value::Text("k'\\ 3 é😀".into()))
            .expect("row 3");
        assert_eq!(one.0[0], Value::Int(3));
        assert_eq!(one.0[2], Value::Decimal("1.00000000000000000000".into()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reads_in_a_fresh_view_and_a_missing_slot_is_definite() {
    let n = names("snapresume");
    let table = n.table.clone();
    let cfg = config(&n, vec![format!("public.{table}")]);
    let slot = n.slot.clone();
    with_cleanup(&n, async move {
        let client = sql().await;
        client
            .batch_execute(&format!(
                "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, v text); \
                 INSERT INTO public.\"{table}\" SELECT g, 'v' || g FROM generate_series(1, 500) g"
            ))
            .await
            .unwrap();
        let mut first =
            PostgresSnapshot::new(cfg.clone(), "t", SnapshotSettings { chunk_rows: 64 });
        let plan = first.plan().await.expect("plan");
        assert_eq!(plan.chunks.len(), 8);
        assert_eq!(plan.chunks[0].upto, Some(vec!["64".to_string()]));
        drop(first); // a crash: the exported snapshot is gone
        client
            .batch_execute(&format!(
                "UPDATE public.\"{table}\" SET v = 'changed' WHERE id = 1"
            ))
            .await
            .unwrap();
        let mut second =
            PostgresSnapshot::new(cfg.clone(), "t", SnapshotSettings { chunk_rows: 64 });
        second.resume(&plan).await.expect("resume");
        let rows = read_all(&mut second, &plan, 2).await;
        let total: usize = rows.iter().map(Vec::len).sum();
        assert_eq!(total, 500);
        // The fresh view is newer than the consistent point: it shows the update.
        let row1 = rows[0]
            .iter()
            .find(|r| r.0[0] == Value::Int(1))
            .expect("id 1");
        assert_eq!(row1.0[1], Value::Text("changed".into()));

        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .unwrap();
        let mut third = PostgresSnapshot::new(cfg, "t", SnapshotSettings { chunk_rows: 64 });
        let err = third.resume(&plan).await.expect_err("slot is gone");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("is gone"), "{err}");
    })
    .await;
}
