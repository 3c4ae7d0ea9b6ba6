//! Preflight checks of a PostgreSQL source: everything that would make logical replication
//! fail (or lose changes) that can be found out before starting, each finding saying what is
//! wrong and how to fix it. Messages never contain the password.

use crate::source::{PgUrl, PostgresSourceConfig, glob_match, parse_url, quote_ident, sql_config};

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

/// Quotes an SQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The server's error (severity, SQLSTATE, message, detail, hint), or the client's error
/// with its causes: `tokio_postgres::Error`'s own text is only "db error" for server errors.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        cause = c.source();
    }
    s
}

/// `schema.table`, both quoted.
fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The raw (still percent-encoded) password in a URL, for redaction when it does not parse.
fn raw_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    (!pw.is_empty()).then_some(pw)
}

/// Removes every occurrence of the password (decoded and raw) from the findings.
fn redact(findings: &mut [Finding], secrets: &[&str]) {
    for f in findings {
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            if f.message.contains(s) {
                f.message = f.message.replace(s, "<redacted>");
            }
        }
    }
}

/// Checks that `cfg` can be used: connection, server settings, role, tables, slot.
/// An empty result (or warnings only) means the source should start.
pub async fn preflight(cfg: &PostgresSourceConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let url = match parse_url(&cfg.url) {
        Ok(u) => u,
        Err(e) => {
            findings.push(Finding::fatal(format!(
                "bad url: {e}; write it as postgres://user:password@host:port/database"
            )));
            redact(&mut findings, &[raw_password(&cfg.url).unwrap_or("")]);
            return findings;
        }
    };
    check(cfg, &url, &mut findings).await;
    let decoded = url.password.clone().unwrap_or_default();
    redact(
        &mut findings,
        &[&decoded, raw_password(&cfg.url).unwrap_or("")],
    );
    findings
}

async fn check(cfg: &PostgresSourceConfig, url: &PgUrl, findings: &mut Vec<Finding>) {
    let client = match sql_config(url).connect(tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Err(e) => {
            findings.push(Finding::fatal(format!(
                "cannot connect to PostgreSQL at {}:{} (database {:?}, user {:?}): {}; check \
                 the host, port, database, user and password in the url, that the server is \
                 running and that pg_hba.conf lets this user in from here",
                url.host,
                url.port,
                url.database,
                url.user,
                describe(&e)
            )));
            return;
        }
    };
    let query_failed = |what: &str, e: tokio_postgres::Error| {
        Finding::fatal(format!(
            "could not {what}: {}; the preflight could not finish, fix this first",
            describe(&e)
        ))
    };

    // Server settings and capacity.
    let slot_exists;
    match client
        .query_one(
            "SELECT current_setting('wal_level'), \
             current_setting('max_replication_slots')::int8, \
             current_setting('max_wal_senders')::int8, \
             (SELECT count(*) FROM pg_catalog.pg_replication_slots), \
             (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'walsender'), \
             EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
            &[&cfg.slot],
        )
        .await
    {
        Ok(row) => {
            let wal_level: String = row.get(0);
            let max_slots: i64 = row.get(1);
            let max_senders: i64 = row.get(2);
            let slots: i64 = row.get(3);
            let senders: i64 = row.get(4);
            slot_exists = row.get::<_, bool>(5);
            if wal_level != "logical" {
                findings.push(Finding::fatal(format!(
                    "wal_level is {wal_level}; set wal_level = logical and restart PostgreSQL \
                     (ALTER SYSTEM SET wal_level = logical, or edit postgresql.conf)"
                )));
            }
            if !slot_exists {
                let free = max_slots - slots;
                let msg = format!(
                    "max_replication_slots is {max_slots} and {slots} slots exist, so {} free \
                     for the new slot {:?}; drop unused slots (SELECT slot_name, active FROM \
                     pg_replication_slots; SELECT pg_drop_replication_slot('name')) or raise it \
                     (ALTER SYSTEM SET max_replication_slots = {}) and restart PostgreSQL",
                    free.max(0),
                    cfg.slot,
                    slots + 2
                );
                if free <= 0 {
                    findings.push(Finding::fatal(msg));
                } else if free == 1 {
                    findings.push(Finding::warning(format!(
                        "only one replication slot left: {msg}"
                    )));
                }
            }
            let free = max_senders - senders;
            let msg = format!(
                "max_wal_senders is {max_senders} and {senders} WAL senders are running, so {} \
                 free for weir's replication connection; stop unused replication clients or \
                 raise it (ALTER SYSTEM SET max_wal_senders = {}) and restart PostgreSQL",
                free.max(0),
                senders + 2
            );
            if free <= 0 {
                findings.push(Finding::fatal(msg));
            } else if free == 1 {
                findings.push(Finding::warning(format!("only one WAL sender left: {msg}")));
            }
        }
        Err(e) => {
            findings.push(query_failed("read the server settings", e));
            return;
        }
    }

    // Role attributes.
    let mut superuser = false;
    match client
        .query_one(
            "SELECT rolsuper, rolreplication FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
            &[],
        )
        .await
    {
        Ok(row) => {
            superuser = row.get(0);
            let replication: bool = row.get(1);
            if !superuser && !replication {
                findings.push(Finding::fatal(format!(
                    "user {:?} lacks the REPLICATION attribute; as a superuser run: ALTER ROLE {} \
                     REPLICATION;",
                    url.user,
                    quote_ident(&url.user)
                )));
            }
        }
        Err(e) => findings.push(query_failed("read the user's attributes", e)),
    }

    // Tables.
    let tables = match client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, \
             EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                     WHERE i.indrelid = c.oid AND i.indisprimary), \
             has_table_privilege(c.oid, 'SELECT'), \
             pg_catalog.pg_has_role(c.relowner, 'USAGE') \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY 1, 2",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            findings.push(query_failed("list the tables", e));
            Vec::new()
        }
    };
    let selected: Vec<_> = tables
        .iter()
        .filter(|r| {
            let full = format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1));
            cfg.tables.iter().any(|g| glob_match(g, &full))
                && !cfg.exclude.iter().any(|g| glob_match(g, &full))
        })
        .collect();
    if selected.is_empty() {
        findings.push(Finding::fatal(format!(
            "no table matches the globs {:?} (excluding {:?}) in database {:?}; check `tables` \
             (globs are over schema.table, e.g. public.*) and `exclude`",
            cfg.tables, cfg.exclude, url.database
        )));
    }
    let mut not_owned = Vec::new();
    for row in &selected {
        let schema: String = row.get(0);
        let name: String = row.get(1);
        let replident: String = row.get(2);
        let has_pk: bool = row.get(3);
        let can_select: bool = row.get(4);
        let owns: bool = row.get(5);
        let q = qualified(&schema, &name);
        if !can_select {
            findings.push(Finding::fatal(format!(
                "user {:?} cannot read {schema}.{name}; run: GRANT SELECT ON {q} TO {};",
                url.user,
                quote_ident(&url.user)
            )));
        }
        if replident == "n" {
            findings.push(Finding::fatal(format!(
                "{schema}.{name} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot \
                 be replicated; run: ALTER TABLE {q} REPLICA IDENTITY FULL; (or DEFAULT once it \
                 has a primary key)"
            )));
        } else if replident == "d" && !has_pk {
            findings.push(Finding::warning(format!(
                "{schema}.{name} has no primary key: updates and deletes need REPLICA IDENTITY \
                 FULL: ALTER TABLE {q} REPLICA IDENTITY FULL; (or add a primary key)"
            )));
        }
        if !owns {
            not_owned.push(q);
        }
    }

    // Publication.
    match client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
    {
        Ok(Some(_)) => match client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1",
                &[&cfg.publication],
            )
            .await
        {
            Ok(rows) => {
                let published: Vec<(String, String)> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                let missing: Vec<String> = selected
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                    .filter(|t| !published.contains(t))
                    .map(|(s, t)| qualified(&s, &t))
                    .collect();
                if !missing.is_empty() {
                    findings.push(Finding::fatal(format!(
                        "publication {:?} exists but does not publish {}, so their changes would \
                         be missed; run: ALTER PUBLICATION {} ADD TABLE {};",
                        cfg.publication,
                        missing.join(", "),
                        quote_ident(&cfg.publication),
                        missing.join(", ")
                    )));
                }
            }
            Err(e) => findings.push(query_failed("read the publication's tables", e)),
        },
        Ok(None) => {
            if !superuser && !not_owned.is_empty() {
                findings.push(Finding::fatal(format!(
                    "publication {:?} does not exist and user {:?} cannot create it (only the \
                     owner of {} may publish it); as a superuser run: CREATE PUBLICATION {} FOR \
                     TABLE {};",
                    cfg.publication,
                    url.user,
                    not_owned.join(", "),
                    quote_ident(&cfg.publication),
                    selected
                        .iter()
                        .map(|r| qualified(&r.get::<_, String>(0), &r.get::<_, String>(1)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Err(e) => findings.push(query_failed("look up the publication", e)),
    }

    // The configured slot, when it already exists.
    if slot_exists {
        match client
            .query_opt(
                "SELECT plugin::text, database::text, wal_status::text, active \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&cfg.slot],
            )
            .await
        {
            Ok(Some(row)) => {
                let plugin: Option<String> = row.get(0);
                let database: Option<String> = row.get(1);
                let wal_status: Option<String> = row.get(2);
                let active: bool = row.get(3);
                let drop = format!(
                    "SELECT pg_drop_replication_slot({});",
                    quote_literal(&cfg.slot)
                );
                if plugin.as_deref() != Some("pgoutput") {
                    findings.push(Finding::fatal(format!(
                        "replication slot {:?} exists with plugin {} instead of pgoutput; choose \
                         another slot name or drop it with {drop}",
                        cfg.slot,
                        plugin.as_deref().unwrap_or("none (a physical slot)")
                    )));
                } else if database.as_deref() != Some(&url.database) {
                    findings.push(Finding::fatal(format!(
                        "replication slot {:?} belongs to database {:?}, not {:?}; choose \
                         another slot name or drop it with {drop}",
                        cfg.slot,
                        database.as_deref().unwrap_or(""),
                        url.database
                    )));
                }
                if wal_status.as_deref() == Some("lost") {
                    findings.push(Finding::fatal(format!(
                        "replication slot {:?} is invalidated (wal_status = 'lost': the WAL it \
                         needed was removed, so changes were lost); drop it with {drop} and \
                         re-snapshot",
                        cfg.slot
                    )));
                }
                if active {
                    findings.push(Finding::warning(format!(
                        "replication slot {:?} is in use by another connection; weir will wait \
                         for it (see active_pid in pg_replication_slots)",
                        cfg.slot
                    )));
                }
            }
            Ok(None) => {}
            Err(e) => findings.push(query_failed("look up the replication slot", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_redaction() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(qualified("s\"x", "t"), "\"s\"\"x\".\"t\"");
        assert_eq!(raw_password("postgres://u:p%41w@h/db"), Some("p%41w"));
        assert_eq!(raw_password("postgres://u@h/db"), None);
        let mut f = vec![Finding::fatal("x secret y")];
        redact(&mut f, &["secret", ""]);
        assert_eq!(f[0].message, "x <redacted> y");
    }
}
