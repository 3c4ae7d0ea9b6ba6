//! Issue 5's SQL sinks end to end, through the `weir` binary against the real servers
//! scripts/services.sh starts (PostgreSQL 15 at 127.0.0.1:5432, MariaDB 10.11 at
//! 127.0.0.1:3306): PostgreSQL → MariaDB, MariaDB → MariaDB, and the crash/audit test
//! (PostgreSQL → PostgreSQL with 20+ SIGKILLs). PostgreSQL → PostgreSQL with the bank check
//! and MariaDB → PostgreSQL are in tests/connectors.rs.
//!
//! Tests streaming the MariaDB binlog are named `mariadb_*`: .config/nextest.toml runs them
//! in the `mariadb-binlog` group (one at a time with the binlog purge test).

use crate::common::{Rng, TempDir, write_pipeline};
use crate::connectors::{
    Defer, first_differences, kill_loop, load_script, mariadb, mariadb_command, mariadb_database,
    pg_source_cleanup, pg_target_database, psql, psql_command, run_once, run_once_within, unique,
};
use std::time::{Duration, Instant};

/// Drops MariaDB database `db` (a sink's target, which the sink creates) and the pipeline's
/// row in `_weir.positions`, when dropped.
fn mariadb_target_cleanup(db: &str, pipeline: &str) -> Defer {
    let (db, pipeline) = (db.to_owned(), pipeline.to_owned());
    Defer::new(move || {
        let _ = mariadb_command()
            .args([
                "-e",
                &format!(
                    "DROP DATABASE IF EXISTS `{db}`; \
                     DELETE FROM `_weir`.`positions` WHERE pipeline = '{pipeline}'"
                ),
            ])
            .output();
    })
}

/// The sink's position row in MariaDB's `_weir.positions`: a sequence number.
fn assert_mariadb_position(pipeline: &str, sink: &str) {
    let seq = mariadb(&format!(
        "SELECT seq FROM `_weir`.`positions` WHERE pipeline = '{pipeline}' AND sink = '{sink}'"
    ));
    assert!(
        seq.parse::<u64>().is_ok(),
        "no position row in _weir.positions for {pipeline}/{sink}: {seq:?}"
    );
}

// ---------------------------------------------------------------- 1. PostgreSQL → MariaDB

/// Normalization of one row of tab-separated text (both sides print `NULL` for NULL):
///
/// - `id` bigint → BIGINT, `amount` numeric(20,4) → DECIMAL(20,4): compared as text (both
///   print the fixed scale: `12.5000`).
/// - `at` timestamptz → DATETIME(6) holding UTC (the sink's session is `+00:00`):
///   PostgreSQL renders `at AT TIME ZONE 'UTC'` and MariaDB `DATE_FORMAT` both as
///   `YYYY-MM-DD HH:MM:SS.ffffff`.
/// - `note` text → LONGTEXT utf8mb4: compared byte for byte (4-byte UTF-8, quotes,
///   backslashes; no tabs or newlines, which the clients' batch output would not keep apart).
/// - `doc` jsonb → JSON: parsed on both sides and compared as JSON values (MariaDB keeps
///   the text it was given, PostgreSQL prints its own canonical form).
/// - `flag` bool → TINYINT(1): PostgreSQL renders `flag::int`, so `1`/`0` on both sides.
fn parse_pg_maria_rows(text: &str) -> Vec<Vec<serde_json::Value>> {
    const DOC: usize = 4;
    text.lines()
        .map(|l| {
            l.split('\t')
                .enumerate()
                .map(|(i, v)| match (i, v) {
                    (DOC, "NULL") => serde_json::Value::Null,
                    (DOC, v) => {
                        serde_json::from_str(v).unwrap_or_else(|e| panic!("json {v:?}: {e}"))
                    }
                    (_, v) => serde_json::Value::String(v.to_owned()),
                })
                .collect()
        })
        .collect()
}

#[test]
fn postgres_to_mariadb_types_snapshot_writes_and_kills_converge() {
    let started = Instant::now();
    let tag = unique("pm");
    let name = format!("pg{tag}");
    let table = format!("weir_pm_{tag}");
    let target = format!("weir_tgt_{tag}");
    let _source = pg_source_cleanup(&name, &[&table]);
    let _target = mariadb_target_cleanup(&target, &name);

    const ROWS: u64 = 5_000;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, amount numeric(20,4), \
               at timestamptz, note text, doc jsonb, flag bool); \
             INSERT INTO public.\"{table}\" SELECT g, g * 1.0001 - 2500, \
               timestamptz '2024-02-29 13:45:01.250001+01' + g * interval '1.5 second', \
               CASE WHEN g % 500 = 0 THEN NULL ELSE 'row ' || g || ' caf\u{e9} \u{1F600} it''s \\ ok' END, \
               CASE WHEN g % 700 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'e', '\u{1F680}', \
                 'tags', jsonb_build_array('a', g, null, 1.5)) END, \
               CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END \
               FROM generate_series(1, {ROWS}) g; \
             INSERT INTO public.\"{table}\" VALUES \
               (9223372036854775807, 9999999999999999.9999, '9999-12-31 23:59:59.999999+00', \
                '\u{1F9EA}\u{1F600}', '{{\"nested\": {{\"a\": [true, false, {{}}]}}}}', true), \
               (-9223372036854775808, -9999999999999999.9999, '1970-01-01 00:00:00+00', '', \
                '[]', false), \
               (0, NULL, NULL, NULL, NULL, NULL);"
        ),
    );
    let dir = TempDir::new("pg-maria");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}\"]\n\
             snapshot_workers = 1\nsnapshot_chunk_rows = 500\n\n\
             [[sinks]]\nname = \"replica\"\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/\"\nschema = \"{target}\"\n"
        ),
    );

    // Writers: small transactions of updates (every column, NULLs both ways), inserts past
    // the key range, deletes, and a key change now and then.
    let mut rng = Rng(0x5eed_0501);
    let mut script = String::new();
    for t in 0..300u64 {
        let (a, b, d) = (rng.range(1, ROWS), rng.range(1, ROWS), rng.range(1, ROWS));
        let n = ROWS + 1 + t;
        script.push_str(&format!(
            "BEGIN; UPDATE public.\"{table}\" SET amount = amount + 0.0001, \
               note = 'upd {t} \u{1F680} \"q\"', doc = jsonb_set(coalesce(doc, '{{}}'), '{{t}}', '{t}'), \
               at = at + interval '1 microsecond', flag = NOT coalesce(flag, false) \
               WHERE id IN ({a}, {b}); \
             INSERT INTO public.\"{table}\" VALUES ({n}, {t}.5, now(), NULL, '{{\"new\": \"\u{1F600}\"}}', NULL); \
             DELETE FROM public.\"{table}\" WHERE id = {d}; COMMIT;\n"
        ));
        if t % 40 == 7 {
            let k = rng.range(1, ROWS);
            script.push_str(&format!(
                "UPDATE public.\"{table}\" SET id = id + 1000000, amount = NULL, doc = NULL \
                 WHERE id = {k};\n"
            ));
        }
        if t % 10 == 0 {
            script.push_str("SELECT pg_sleep(0.05);\n");
        }
    }
    let load = load_script(psql_command("postgres"), script, dir.path());
    kill_loop(&pipeline, 3, &mut rng);
    load.join().unwrap();
    run_once_within(&pipeline, Duration::from_secs(60));

    let pg_rows = || {
        psql(
            "postgres",
            &format!(
                "SELECT id, amount, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
                   note, doc, flag::int FROM public.\"{table}\" ORDER BY id"
            ),
        )
    };
    let maria_rows = || {
        mariadb(&format!(
            "SET time_zone = '+00:00'; \
             SELECT id, amount, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), note, doc, flag \
             FROM `{target}`.`{table}` ORDER BY id"
        ))
    };
    let compare = |when: &str| {
        let (src, dst) = (pg_rows(), maria_rows());
        if parse_pg_maria_rows(&src) != parse_pg_maria_rows(&dst) {
            panic!(
                "{when}: the MariaDB target differs from the PostgreSQL source:\n{}",
                first_differences(&src, &dst)
            );
        }
        src.lines().count()
    };
    let rows = compare("after the kills and --once");
    assert!(rows as u64 >= ROWS, "rows: {rows}");
    let columns = mariadb(&format!(
        "SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ' ', COLUMN_TYPE) ORDER BY ORDINAL_POSITION \
           SEPARATOR ', ') FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = '{target}' AND TABLE_NAME = '{table}'"
    ));
    for expected in [
        "id bigint(20)",
        "amount decimal(20,4)",
        "at datetime(6)",
        "flag tinyint(1)",
    ] {
        assert!(columns.contains(expected), "{expected} not in {columns}");
    }
    assert_mariadb_position(&name, "replica");

    // Nothing new: unchanged.
    run_once_within(&pipeline, Duration::from_secs(45));
    compare("after a run with nothing new");
    eprintln!(
        "postgres → mariadb took {:?}: {rows} rows equal; target columns: {columns}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- 2. MariaDB → MariaDB

/// One row of `items` as text, for the digest and the dump: the same SQL on both sides. DECIMAL and INT UNSIGNED print exactly; DATETIME(6) through
/// `DATE_FORMAT`; VARCHAR utf8mb4 as it is; BLOB as hex; NULL as `\N`.
const MARIA_ITEMS_ROW: &str = "CONCAT_WS('|', id, IFNULL(amount, '\\\\N'), \
       IFNULL(DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), '\\\\N'), IFNULL(note, '\\\\N'), \
       IFNULL(HEX(data), '\\\\N'))";

fn maria_items_digest(db: &str) -> String {
    mariadb(&format!(
        "SET SESSION group_concat_max_len = 1073741824; \
         SELECT COUNT(*), MD5(GROUP_CONCAT({} ORDER BY id SEPARATOR '\\n')) FROM `{db}`.`items`",
        MARIA_ITEMS_ROW
    ))
}

fn maria_items_dump(db: &str) -> String {
    mariadb(&format!(
        "SELECT {} FROM `{db}`.`items` ORDER BY id",
        MARIA_ITEMS_ROW
    ))
}

#[test]
fn mariadb_to_mariadb_snapshot_writes_and_kills_converge() {
    let started = Instant::now();
    let tag = unique("mm");
    let name = format!("my{tag}");
    let db = format!("weir_{tag}");
    let target = format!("weir_tgt_{tag}");
    let _db = mariadb_database(&db);
    let _target = mariadb_target_cleanup(&target, &name);
    const ROWS: u64 = 10_000;
    mariadb(&format!(
        "USE `{db}`; \
         CREATE TABLE items (id INT UNSIGNED NOT NULL PRIMARY KEY, amount DECIMAL(65,30), \
           at DATETIME(6), note VARCHAR(200) CHARACTER SET utf8mb4, data BLOB) ENGINE=InnoDB; \
         INSERT INTO items SELECT seq, \
           CAST(CONCAT('12345678901234567890123456789', LPAD(seq, 6, '0'), '.', RPAD(seq, 30, '7')) AS DECIMAL(65,30)), \
           TIMESTAMP('2024-02-29 13:45:01.250001') + INTERVAL seq SECOND, \
           IF(seq % 1000 = 0, NULL, CONCAT('row ', seq, ' caf\u{e9} \u{1F600} it''s \\\\ ok')), \
           IF(seq % 777 = 0, NULL, CONCAT(X'00FF', UNHEX(MD5(seq)), X'0A09')) \
           FROM seq_1_to_{ROWS}; \
         INSERT INTO items VALUES (4294967295, \
           -99999999999999999999999999999999999.999999999999999999999999999999, \
           '1000-01-01 00:00:00.000001', '\u{1F9EA}\u{1F600} max', X''), \
           (0, 0, '9999-12-31 23:59:59.999999', '', NULL);"
    ));
    let dir = TempDir::new("maria-maria");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/{db}\"\ntables = [\"{db}.items\"]\n\
             snapshot_workers = 1\nsnapshot_chunk_rows = 1000\n\n\
             [[sinks]]\nname = \"replica\"\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/\"\nschema = \"{target}\"\n"
        ),
    );
    let mut rng = Rng(0x5eed_0502);
    let mut script = format!("USE `{db}`;\n");
    for t in 0..300u64 {
        let (a, b, d) = (rng.range(1, ROWS), rng.range(1, ROWS), rng.range(1, ROWS));
        script.push_str(&format!(
            "BEGIN; UPDATE items SET note = 'upd {t} \u{1F680}', \
               amount = amount + 0.000000000000000000000000000001, \
               at = at + INTERVAL 1 MICROSECOND, data = CONCAT(IFNULL(data, X''), X'{t:04X}') \
               WHERE id IN ({a}, {b}); \
             INSERT INTO items VALUES ({}, {t}.5, '2030-01-01 00:00:00.{t:06}', NULL, UNHEX(SHA2('{t}', 256))); \
             DELETE FROM items WHERE id = {d}; COMMIT;\n",
            ROWS + 1 + t
        ));
        if t % 50 == 9 {
            let k = rng.range(1, ROWS);
            script.push_str(&format!(
                "UPDATE items SET id = id + 100000, note = NULL WHERE id = {k};\n"
            ));
        }
        if t % 10 == 0 {
            script.push_str("DO SLEEP(0.05);\n");
        }
    }
    let load = load_script(mariadb_command(), script, dir.path());
    kill_loop(&pipeline, 3, &mut rng);
    load.join().unwrap();
    run_once_within(&pipeline, Duration::from_secs(60));

    let (src, dst) = (maria_items_digest(&db), maria_items_digest(&target));
    if src != dst {
        panic!(
            "target differs from source (count, md5: {src} vs {dst}):\n{}",
            first_differences(&maria_items_dump(&db), &maria_items_dump(&target))
        );
    }
    let count: u64 = src.split('\t').next().unwrap().parse().unwrap();
    assert!(count >= ROWS, "rows: {count}");
    let columns = |schema: &str| {
        mariadb(&format!(
            "SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ' ', COLUMN_TYPE, ' ', IS_NULLABLE, ' ', \
               COLUMN_KEY) ORDER BY ORDINAL_POSITION SEPARATOR ', ') FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = 'items'"
        ))
    };
    // The same types, VARCHAR(200) with its length.
    assert_eq!(columns(&target), columns(&db), "target column types");
    assert_mariadb_position(&name, "replica");
    run_once_within(&pipeline, Duration::from_secs(45));
    assert_eq!(maria_items_digest(&target), src, "a run with nothing new");
    eprintln!(
        "mariadb → mariadb took {:?}: {count} rows equal (count, md5: {src})",
        started.elapsed()
    );
}

/// CHAR/VARCHAR keep their declared length in characters (the TABLE_MAP gives bytes; the
/// source divides by the charset's bytes a character), BINARY/VARBINARY theirs in bytes, in
/// the snapshot (information_schema) and the stream (TABLE_MAP with FULL metadata) alike: a
/// sink creating the table makes the source's types, values of the full length (4-byte UTF-8
/// included) fit, and a sink with the table already there (same definition) changes nothing.
#[test]
fn mariadb_to_mariadb_char_and_binary_lengths_kept() {
    let tag = unique("ml");
    let name = format!("my{tag}");
    let db = format!("weir_{tag}");
    let fresh = format!("weir_tgt_{tag}");
    let preloaded = format!("weir_pre_{tag}");
    let _db = mariadb_database(&db);
    let _fresh = mariadb_target_cleanup(&fresh, &name);
    let _preloaded = mariadb_target_cleanup(&preloaded, &name);
    let ddl = "CREATE TABLE s (id INT NOT NULL PRIMARY KEY, \
         c CHAR(10) CHARACTER SET utf8mb4 NOT NULL, v VARCHAR(64) CHARACTER SET utf8mb4, \
         l VARCHAR(20) CHARACTER SET latin1, lc CHAR(3) CHARACTER SET latin1, \
         u3 VARCHAR(30) CHARACTER SET utf8mb3, big CHAR(255) CHARACTER SET utf8mb4, \
         b BINARY(4), vb VARBINARY(16)) ENGINE=InnoDB";
    // Full-length values: 4-byte characters fill CHAR(10) and VARCHAR(64) (256 bytes).
    let row = |id: u32, ch: char| {
        let one = ch.to_string();
        let c = one.repeat(5) + "abcde";
        let v = one.repeat(64);
        let l = "\u{e9}".repeat(20);
        let u3 = "\u{20ac}".repeat(30);
        let big = one.repeat(254) + "z";
        let vb = format!("{id:02X}").repeat(16);
        format!(
            "({id}, '{c}', '{v}', '{l}', '\u{e9}\u{e9}\u{e9}', '{u3}', '{big}', X'00FF{id:04X}', X'{vb}')"
        )
    };
    mariadb(&format!(
        "USE `{db}`; {ddl}; INSERT INTO s VALUES {}, {}, \
           (3, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
        row(1, '\u{1F600}'),
        row(2, '\u{1F9EA}')
    ));
    mariadb(&format!(
        "CREATE DATABASE `{preloaded}`; USE `{preloaded}`; {ddl} DEFAULT CHARSET=utf8mb4;"
    ));
    // CREATE_TIME has a resolution of a second: a rebuild by the sink must show.
    std::thread::sleep(Duration::from_millis(1100));
    let dir = TempDir::new("maria-len");
    let sink = |n: &str, schema: &str| {
        format!(
            "[[sinks]]\nname = \"{n}\"\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/\"\nschema = \"{schema}\"\n\n"
        )
    };
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/{db}\"\ntables = [\"{db}.s\"]\n\n{}{}",
            sink("fresh", &fresh),
            sink("preloaded", &preloaded)
        ),
    );
    let columns = |schema: &str| {
        mariadb(&format!(
            "SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ' ', COLUMN_TYPE, ' ', IS_NULLABLE, ' ', \
               COLUMN_KEY) ORDER BY ORDINAL_POSITION SEPARATOR ', ') FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = 's'"
        ))
    };
    // Text as utf8mb4 bytes (the target is utf8mb4 whatever the source's charset), with its
    // length in characters; binary as hex.
    let rows = |schema: &str| {
        let text = |c: &str| {
            format!(
                "IFNULL(CONCAT(CHAR_LENGTH({c}), ':', HEX(CONVERT({c} USING utf8mb4))), 'NULL')"
            )
        };
        mariadb(&format!(
            "SELECT id, {}, {}, {}, {}, {}, {}, IFNULL(HEX(b), 'NULL'), IFNULL(HEX(vb), 'NULL') \
             FROM `{schema}`.`s` ORDER BY id",
            text("c"),
            text("v"),
            text("l"),
            text("lc"),
            text("u3"),
            text("big")
        ))
    };
    let created = |schema: &str| {
        mariadb(&format!(
            "SELECT CREATE_TIME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{schema}' \
             AND TABLE_NAME = 's'"
        ))
    };
    let preloaded_created = created(&preloaded);
    let once_log = pipeline.with_extension("once.log");
    let check = |when: &str| {
        let src = columns(&db);
        assert!(
            src.contains("c char(10) NO") && src.contains("v varchar(64) YES"),
            "{src}"
        );
        for target in [&fresh, &preloaded] {
            assert_eq!(columns(target), src, "{when}: column types of {target}");
            assert_eq!(rows(target), rows(&db), "{when}: rows of {target}");
        }
        assert_eq!(
            created(&preloaded),
            preloaded_created,
            "{when}: the preloaded target table was rebuilt (ALTER)"
        );
        let log = std::fs::read_to_string(&once_log).unwrap_or_default();
        assert!(
            !log.contains("keeping the target type"),
            "{when}: the sink saw a type change:\n{log}"
        );
    };

    run_once(&pipeline);
    check("after the snapshot");
    let fresh_created = created(&fresh);
    // The stream: new rows and updates of the full length, through the TABLE_MAP.
    mariadb(&format!(
        "USE `{db}`; INSERT INTO s VALUES {}; \
         UPDATE s SET c = REPEAT('\u{1F680}', 10), v = REPEAT('\u{1F680}', 64), \
           l = REPEAT('\u{fe}', 20), lc = 'xyz', u3 = REPEAT('\u{2603}', 30), \
           big = REPEAT('\u{1F680}', 255), b = X'01020304', \
           vb = X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF' WHERE id = 3; \
         UPDATE s SET v = 'short', c = 'x' WHERE id = 1; DELETE FROM s WHERE id = 2;",
        row(4, '\u{1F9F5}')
    ));
    run_once(&pipeline);
    check("after the stream");
    // Nothing new: nothing changes.
    run_once(&pipeline);
    check("after a run with nothing new");
    assert_eq!(
        created(&fresh),
        fresh_created,
        "the created target table was rebuilt (ALTER)"
    );
    assert_eq!(rows(&fresh).lines().count(), 3);
}

// ---------------------------------------------------------------- 3. crash/audit

/// Issue 5's crash test: each source transaction moves money between two of 50 accounts and
/// inserts one audit row per change (unique `change_id`), while weir is SIGKILLed 22 times.
/// The target audit table is pre-created with the source's definition plus a trigger that
/// logs every row write the sink makes (`INSERT`/`UPDATE`/`DELETE`, in the sink's own
/// transaction): exactly-once means one `INSERT` per change id and nothing else — a batch
/// applied twice would show up as `UPDATE`s (upserts of rows already there), even though the
/// primary key keeps the table itself free of duplicates.
#[test]
fn postgres_crash_audit_one_application_per_change_under_kills() {
    let started = Instant::now();
    let tag = unique("ca");
    let name = format!("pg{tag}");
    let audit = format!("weir_audit_{tag}");
    let accounts = format!("weir_acct_{tag}");
    let target = format!("weir_tgt_{tag}");
    let _source = pg_source_cleanup(&name, &[&audit, &accounts]);
    let _target = pg_target_database(&target);

    const ACCOUNTS: u64 = 50;
    const TXNS: u64 = 2_000;
    const KILLS: usize = 22;
    let audit_ddl = format!(
        "CREATE TABLE public.\"{audit}\" (change_id bigint PRIMARY KEY, account int NOT NULL, \
           delta bigint NOT NULL, balance_after bigint NOT NULL, txn int NOT NULL)"
    );
    psql(
        "postgres",
        &format!(
            "{audit_ddl}; \
             CREATE TABLE public.\"{accounts}\" (id int PRIMARY KEY, balance bigint NOT NULL); \
             INSERT INTO public.\"{accounts}\" SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g; \
             INSERT INTO public.\"{audit}\" SELECT -g, g, 1000, 1000, -1 FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    );
    psql(
        &target,
        &format!(
            "{audit_ddl}; \
             CREATE TABLE public.weir_applied (n bigserial, change_id bigint, op text); \
             CREATE FUNCTION public.weir_log_applied() RETURNS trigger LANGUAGE plpgsql AS $$ \
               BEGIN \
                 INSERT INTO public.weir_applied (change_id, op) \
                   VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.change_id ELSE NEW.change_id END, TG_OP); \
                 RETURN NULL; \
               END $$; \
             CREATE TRIGGER weir_log_applied AFTER INSERT OR UPDATE OR DELETE ON public.\"{audit}\" \
               FOR EACH ROW EXECUTE FUNCTION public.weir_log_applied(); \
             ALTER TABLE public.\"{audit}\" ENABLE ALWAYS TRIGGER weir_log_applied;"
        ),
    );
    let dir = TempDir::new("crash-audit");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{audit}\", \"public.{accounts}\"]\n\n\
             [[sinks]]\nname = \"replica\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/{target}\"\nschema = \"public\"\n"
        ),
    );

    // About 25 s of load: 2,000 transfers, a 50 ms pause every 4.
    let mut rng = Rng(0x5eed_0503);
    let mut script = String::new();
    for t in 0..TXNS {
        let from = rng.range(1, ACCOUNTS + 1);
        let to = (from + rng.range(1, ACCOUNTS)) % ACCOUNTS + 1;
        let amount = rng.range(1, 100);
        let (c1, c2) = (2 * t, 2 * t + 1);
        script.push_str(&format!(
            "BEGIN; \
             UPDATE public.\"{accounts}\" SET balance = balance - {amount} WHERE id = {from}; \
             INSERT INTO public.\"{audit}\" SELECT {c1}, id, -{amount}, balance, {t} \
               FROM public.\"{accounts}\" WHERE id = {from}; \
             UPDATE public.\"{accounts}\" SET balance = balance + {amount} WHERE id = {to}; \
             INSERT INTO public.\"{audit}\" SELECT {c2}, id, {amount}, balance, {t} \
               FROM public.\"{accounts}\" WHERE id = {to}; \
             COMMIT;\n"
        ));
        if t % 4 == 3 {
            script.push_str("SELECT pg_sleep(0.05);\n");
        }
    }
    let load = load_script(psql_command("postgres"), script, dir.path());
    let kills_started = Instant::now();
    kill_loop(&pipeline, KILLS, &mut rng);
    let kills_took = kills_started.elapsed();
    let load_was_running = !load.is_finished();
    load.join().unwrap();
    run_once_within(&pipeline, Duration::from_secs(45));

    let digest = |db: &str, t: &str, key: &str| {
        psql(
            db,
            &format!(
                "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY {key})) FROM public.\"{t}\" t"
            ),
        )
    };
    let dump = |db: &str, t: &str, key: &str| {
        psql(
            db,
            &format!("SELECT t::text FROM public.\"{t}\" t ORDER BY {key}"),
        )
    };
    for (t, key) in [(&audit, "change_id"), (&accounts, "id")] {
        let (src, dst) = (digest("postgres", t, key), digest(&target, t, key));
        if src != dst {
            panic!(
                "{t}: target differs from source ({src} vs {dst}):\n{}",
                first_differences(&dump("postgres", t, key), &dump(&target, t, key))
            );
        }
    }
    let expected_changes = 2 * TXNS + ACCOUNTS;
    assert_eq!(
        psql(&target, &format!("SELECT count(*) FROM public.\"{audit}\"")),
        expected_changes.to_string(),
        "one audit row per source change"
    );
    assert_eq!(
        psql(
            &target,
            &format!("SELECT count(*), sum(balance) FROM public.\"{accounts}\"")
        ),
        format!("{ACCOUNTS}\t{}", ACCOUNTS * 1000),
        "accounts (count, sum)"
    );
    // Every change applied once: one INSERT per change id, no UPDATE or DELETE.
    let applied = psql(
        &target,
        "SELECT op, count(*), count(DISTINCT change_id) FROM public.weir_applied \
         GROUP BY op ORDER BY op",
    );
    assert_eq!(
        applied,
        format!("INSERT\t{expected_changes}\t{expected_changes}"),
        "row writes of the sink to the audit table (op, writes, distinct change ids)"
    );
    let position = psql(
        &target,
        &format!(
            "SELECT seq FROM _weir.positions WHERE pipeline = '{name}' AND sink = 'replica' \
               AND seq IS NOT NULL"
        ),
    );
    assert!(
        position.parse::<u64>().is_ok(),
        "no position row in _weir.positions: {position:?}"
    );
    eprintln!(
        "crash/audit took {:?}: {KILLS} kills in {kills_took:?} (load still running after \
         them: {load_was_running}), {expected_changes} audit rows applied once each, \
         position {position}",
        started.elapsed()
    );
}
