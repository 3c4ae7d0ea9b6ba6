//! Preflight checks of a MySQL / MariaDB source (`weir check`): everything that would make
//! binlog streaming fail or lose changes that can be found out before starting, each
//! finding saying what is wrong and the exact fix. Messages never contain the password.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::config::{MysqlSourceConfig, opts, redact_text};

/// One problem found by [`preflight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Whether the source cannot work until it is fixed (otherwise a warning).
    pub fatal: bool,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Finding {
    fn fatal(message: impl Into<String>) -> Self {
        Finding {
            fatal: true,
            message: message.into(),
        }
    }

    fn warning(message: impl Into<String>) -> Self {
        Finding {
            fatal: false,
            message: message.into(),
        }
    }
}

/// Checks that `cfg` can be used by pipeline `pipeline` (for the default server id):
/// connection, binlog settings, replica id, privileges and tables. An empty result (or
/// warnings only) means the source should start.
pub async fn preflight(cfg: &MysqlSourceConfig, pipeline: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    match opts(&cfg.url) {
        Ok(o) => {
            let host = format!("{}:{}", o.ip_or_hostname(), o.tcp_port());
            let user = o.user().unwrap_or_default().to_owned();
            match Conn::new(o).await {
                Ok(mut conn) => {
                    check(cfg, pipeline, &user, &mut conn, &mut findings).await;
                    let _ = conn.disconnect().await;
                }
                Err(e) => findings.push(Finding::fatal(format!(
                    "cannot connect to MySQL/MariaDB at {host} as {user:?}: {e}; check the \
                     host, port, user and password in the url and that the server is running"
                ))),
            }
        }
        Err(e) => findings.push(Finding::fatal(e)),
    }
    for f in &mut findings {
        f.message = redact_text(&f.message, &cfg.url);
    }
    findings
}

async fn check(
    cfg: &MysqlSourceConfig,
    pipeline: &str,
    user: &str,
    conn: &mut Conn,
    findings: &mut Vec<Finding>,
) {
    let failed = |what: &str, e: mysql_async::Error| {
        Finding::fatal(format!(
            "could not {what}: {e}; the preflight could not finish, fix this first"
        ))
    };
    let version: String = match conn.query_first("SELECT VERSION()").await {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => return findings.push(failed("read the server version", e)),
    };
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let cnf = if mariadb {
        "the [mariadbd] section of my.cnf"
    } else {
        "the [mysqld] section of my.cnf"
    };

    // Binlog settings.
    let vars: Vec<(String, String)> = match conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
             'binlog_row_image', 'binlog_row_metadata', 'server_id', 'gtid_mode', \
             'binlog_row_value_options', 'log_bin_compress')",
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return findings.push(failed("read the server variables", e)),
    };
    let var = |name: &str| {
        vars.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if var("log_bin").as_deref() != Some("ON") {
        findings.push(Finding::fatal(format!(
            "log_bin is {}: the binary log is off; add log_bin = mysql-bin to {cnf} and \
             restart the server",
            var("log_bin").unwrap_or_else(|| "unknown".into())
        )));
    }
    let format = var("binlog_format").unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        findings.push(Finding::fatal(format!(
            "binlog_format is {format}; weir needs ROW: SET GLOBAL binlog_format = 'ROW' and \
             add binlog_format = ROW to {cnf} (sessions already open keep the old format)"
        )));
    }
    let image = var("binlog_row_image").unwrap_or_default();
    if !image.eq_ignore_ascii_case("FULL") {
        findings.push(Finding::fatal(format!(
            "binlog_row_image is {image}; weir needs FULL (complete before and after rows): \
             SET GLOBAL binlog_row_image = 'FULL' and add binlog_row_image = FULL to {cnf}"
        )));
    }
    match var("binlog_row_metadata") {
        Some(m) if m.eq_ignore_ascii_case("FULL") => {}
        Some(m) => findings.push(Finding::warning(format!(
            "binlog_row_metadata is {m}: column names and types come from information_schema, \
             so rows written before an ALTER TABLE that weir reads after it cannot be \
             decoded; SET GLOBAL binlog_row_metadata = 'FULL' and add binlog_row_metadata = \
             FULL to {cnf}"
        ))),
        None => findings.push(Finding::warning(format!(
            "the server has no binlog_row_metadata (MySQL before 8.0.1 / MariaDB before \
             10.5): column names come from information_schema, so an ALTER TABLE while weir \
             lags behind stops the pipeline; upgrade the server ({version})"
        ))),
    }
    if var("binlog_row_value_options")
        .is_some_and(|v| v.to_ascii_uppercase().contains("PARTIAL_JSON"))
    {
        findings.push(Finding::fatal(
            "binlog_row_value_options is PARTIAL_JSON: JSON updates are logged as diffs weir \
             cannot apply; SET GLOBAL binlog_row_value_options = ''",
        ));
    }
    if var("log_bin_compress").as_deref() == Some("ON") {
        findings.push(Finding::fatal(
            "log_bin_compress is ON: weir cannot read compressed binlog events yet; SET \
             GLOBAL log_bin_compress = OFF",
        ));
    }
    if !mariadb && var("gtid_mode").is_some_and(|v| !v.eq_ignore_ascii_case("ON")) {
        findings.push(Finding::warning(
            "gtid_mode is not ON: weir resumes by binlog file and position, which breaks when \
             the server fails over to a replica; consider enforce_gtid_consistency = ON and \
             gtid_mode = ON",
        ));
    }

    // Replica id.
    let server_id = cfg.effective_server_id(pipeline);
    if var("server_id").and_then(|v| v.parse::<u32>().ok()) == Some(server_id) {
        findings.push(Finding::fatal(format!(
            "server_id {server_id} is the source server's own id; set another server_id in \
             the pipeline's [source] section"
        )));
    }
    let hosts: std::result::Result<Vec<mysql_async::Row>, _> = conn
        .query(if mariadb {
            "SHOW SLAVE HOSTS"
        } else {
            "SHOW REPLICAS"
        })
        .await;
    if let Ok(rows) = hosts {
        for row in rows {
            let id: Option<u32> = row.get(0);
            let host: Option<String> = row.get(1);
            let host = host.unwrap_or_default();
            if id == Some(server_id) && host != format!("weir-{pipeline}") {
                findings.push(Finding::fatal(format!(
                    "server_id {server_id} is already used by the replica {host:?} connected \
                     to this server; two replicas with one id disconnect each other: set \
                     another server_id in the pipeline's [source] section"
                )));
            }
        }
    }

    // Privileges.
    let grants: Vec<String> = match conn.query("SHOW GRANTS").await {
        Ok(g) => g,
        Err(e) => return findings.push(failed("read the user's grants", e)),
    };
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(p))
    };
    let grant_to = format!("'{}'@'%'", user.replace('\'', "''"));
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        missing.push(("REPLICATION SLAVE", true));
    }
    let monitor = if mariadb {
        has("BINLOG MONITOR") || has("REPLICATION CLIENT")
    } else {
        has("REPLICATION CLIENT")
    };
    if !monitor {
        missing.push((
            if mariadb {
                "BINLOG MONITOR"
            } else {
                "REPLICATION CLIENT"
            },
            true,
        ));
    }
    if !has("RELOAD") {
        missing.push(("RELOAD", false));
    }
    for (p, fatal) in missing {
        let why = if fatal {
            "to read the binlog"
        } else {
            "for the consistent snapshot's brief global read lock (without it the snapshot \
             falls back to LOCK TABLES)"
        };
        let msg = format!(
            "user {user:?} lacks {p}, needed {why}; run: GRANT {p} ON *.* TO {grant_to}; \
             (adjust the host part to the account's)"
        );
        findings.push(if fatal {
            Finding::fatal(msg)
        } else {
            Finding::warning(msg)
        });
    }

    // Tables.
    let tables: Vec<(String, String, u8)> = match conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, \
             EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c \
                     WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
                     AND c.CONSTRAINT_TYPE = 'PRIMARY KEY') \
             FROM information_schema.TABLES t WHERE t.TABLE_TYPE = 'BASE TABLE' AND \
             t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY 1, 2",
        )
        .await
    {
        Ok(t) => t,
        Err(e) => return findings.push(failed("list the tables", e)),
    };
    let selected: Vec<&(String, String, u8)> = tables
        .iter()
        .filter(|(d, t, _)| cfg.selects(d, t))
        .collect();
    if selected.is_empty() {
        findings.push(Finding::fatal(format!(
            "no table matches the globs {:?} (excluding {:?}) on this server, or user {user:?} \
             cannot see them; check `tables` (globs over database.table, e.g. shop.*), \
             `exclude`, and GRANT SELECT ON <database>.* TO {grant_to};",
            cfg.tables, cfg.exclude
        )));
    }
    for (d, t, has_pk) in selected {
        if *has_pk == 0 {
            findings.push(Finding::warning(format!(
                "{d}.{t} has no primary key: its changes carry no key (Kafka key null) and SQL \
                 sinks cannot apply updates and deletes by key; add one: ALTER TABLE \
                 `{}`.`{}` ADD PRIMARY KEY (...);",
                d.replace('`', "``"),
                t.replace('`', "``")
            )));
        }
    }
}
