//! Streaming of in-progress transactions (pgoutput v2+, `streaming on`): a role whose
//! `logical_decoding_work_mem` is the minimum (64kB) makes PostgreSQL stream every
//! transaction larger than that while it is still running.

use super::{Names, env, names, sql, with_cleanup};
use std::time::{Duration, Instant};
use weir_api::{Op, Source, SourceItem, Value};
use weir_postgres::source::{PostgresSource, PostgresSourceConfig, proto_for_server};

const ROLE: &str = "weir_stream_test";

/// Items until `commits` transactions have been committed (heartbeats skipped).
async fn until_commits(source: &mut PostgresSource, commits: usize) -> Vec<SourceItem> {
    let mut items = Vec::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < commits {
        let item = tokio::time::timeout_at(deadline.into(), source.next())
            .await
            .expect("timed out waiting for transactions")
            .expect("next");
        match &item {
            SourceItem::Commit(_) | SourceItem::Transaction(_) => seen += 1,
            SourceItem::Heartbeat(_) => continue,
            _ => {}
        }
        items.push(item);
    }
    items
}

/// The changes of each committed transaction, in order, as (op, id) pairs.
fn transactions(items: &[SourceItem]) -> Vec<Vec<(Op, i64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let id = |e: &weir_api::ChangeEvent| match e.after.as_ref().or(e.before.as_ref()) {
        Some(r) => match r.0[0] {
            Value::Int(i) => i,
            ref v => panic!("id {v:?}"),
        },
        None => -1,
    };
    for item in items {
        match item {
            SourceItem::Changes(c) => cur.extend(c.iter().map(|e| (e.op, id(e)))),
            SourceItem::Commit(_) => out.push(std::mem::take(&mut cur)),
            SourceItem::Transaction(t) => {
                assert!(cur.is_empty());
                out.push(t.changes.iter().map(|e| (e.op, id(e))).collect());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn protocol_follows_the_server_version() {
    assert_eq!(proto_for_server("15.19 (Debian 15.19-0+deb12u1)"), 3);
    assert_eq!(proto_for_server("14.2"), 2);
    assert_eq!(proto_for_server("16.1"), 4);
    assert_eq!(proto_for_server("13.9"), 1);
    assert_eq!(proto_for_server(""), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transactions_arrive_whole_at_commit_without_aborted_parts() {
    let n = names("stream");
    let table = n.table.clone();
    let e = env();
    let admin = sql().await;
    // A role whose walsenders stream everything over 64kB.
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN \
               CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD 'stream'; END IF; END $$; \
             ALTER ROLE {ROLE} SET logical_decoding_work_mem = '64kB'"
        ))
        .await
        .unwrap();
    let cfg = PostgresSourceConfig {
        url: format!(
            "postgres://{ROLE}:stream@{}:{}/{}",
            e.host, e.port, e.database
        ),
        tables: vec![format!("public.{table}")],
        exclude: Vec::new(),
        slot: n.slot.clone(),
        publication: n.publication.clone(),
    };
    let names_for_body = Names {
        table: n.table.clone(),
        publication: n.publication.clone(),
        slot: n.slot.clone(),
    };
    with_cleanup(&n, async move {
        let n = names_for_body;
        let client = sql().await;
        client
            .batch_execute(&format!(
                "CREATE TABLE public.\"{}\" (id bigint PRIMARY KEY, pad text)",
                n.table
            ))
            .await
            .unwrap();
        let mut source = PostgresSource::new(cfg, "stream");
        source.start(None).await.expect("start");
        let t = format!("public.\"{}\"", n.table);
        // Big transaction A (streamed): 3,000 rows, a savepoint rolled back in the middle
        // (ids 1,000..1,999 gone), open while a small transaction B commits.
        let a = sql().await;
        a.batch_execute(&format!(
            "BEGIN; INSERT INTO {t} SELECT g, repeat('a', 100) FROM generate_series(0, 999) g; \
             SAVEPOINT s; INSERT INTO {t} SELECT g, repeat('b', 100) FROM generate_series(1000, 1999) g; \
             ROLLBACK TO SAVEPOINT s; \
             INSERT INTO {t} SELECT g, repeat('c', 100) FROM generate_series(2000, 2999) g"
        ))
        .await
        .unwrap();
        client
            .batch_execute(&format!("INSERT INTO {t} VALUES (-1, 'small')"))
            .await
            .unwrap();
        // Big transaction C (streamed), aborted: nothing of it may arrive.
        let c = sql().await;
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO {t} SELECT g, repeat('x', 100) FROM generate_series(10000, 12999) g; ROLLBACK"
        ))
        .await
        .unwrap();
        a.batch_execute("COMMIT").await.unwrap();
        client
            .batch_execute(&format!("DELETE FROM {t} WHERE id = -1"))
            .await
            .unwrap();
        let items = until_commits(&mut source, 3).await;
        let txns = transactions(&items);
        assert_eq!(txns.len(), 3);
        assert_eq!(txns[0], vec![(Op::Insert, -1)], "the small one committed first");
        let expected: Vec<(Op, i64)> = (0..1000)
            .chain(2000..3000)
            .map(|i| (Op::Insert, i))
            .collect();
        assert_eq!(txns[1], expected, "the streamed one whole, without the rolled-back savepoint");
        assert_eq!(txns[2], vec![(Op::Delete, -1)]);
        // Positions: commits in order.
        let commits: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Commit(c) => Some(c.position.clone()),
                SourceItem::Transaction(t) => Some(t.commit.position.clone()),
                _ => None,
            })
            .collect();
        assert!(commits.windows(2).all(|w| w[0] < w[1]));
        // It really was streamed: the server's counters for the slot say so.
        let streamed: i64 = client
            .query_one(
                "SELECT coalesce(stream_txns, 0) FROM pg_stat_replication_slots WHERE slot_name = $1",
                &[&n.slot],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        assert!(streamed >= 1, "no transaction was streamed (stream_txns = {streamed})");
    })
    .await;
}
