//! `weir check` for a MySQL / MariaDB sink: the URL parses, the server answers, InnoDB is
//! there, and the user holds the privileges the sink needs on `_weir` and the target
//! database. Read-only: nothing is created. Messages never contain the password.

use super::{MysqlSinkConfig, cell_text};
use crate::check::Finding;
use crate::config::{opts, redact_text};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::collections::HashSet;
use std::time::Duration;

fn fatal(message: String) -> Finding {
    Finding {
        fatal: true,
        message,
    }
}

/// Checks that the sink can start; an empty result means it should.
pub async fn check(cfg: &MysqlSinkConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    run(cfg, &mut findings).await;
    for f in &mut findings {
        f.message = redact_text(&f.message, &cfg.url);
    }
    findings
}

async fn run(cfg: &MysqlSinkConfig, findings: &mut Vec<Finding>) {
    let o = match opts(&cfg.url) {
        Ok(o) => o,
        Err(e) => return findings.push(fatal(format!("mysql sink: {e}"))),
    };
    let target = match cfg.target_database(o.db_name()) {
        Ok(t) => t,
        Err(e) => return findings.push(fatal(e)),
    };
    let host = format!("{}:{}", o.ip_or_hostname(), o.tcp_port());
    let user = o.user().unwrap_or_default().to_owned();
    let o: mysql_async::Opts = OptsBuilder::from_opts(o).db_name(None::<String>).into();
    let mut conn = match tokio::time::timeout(Duration::from_secs(15), Conn::new(o)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return findings.push(fatal(format!(
                "mysql sink: cannot connect to {host} as {user:?}: {e}; check the host, port, \
                 user and password in the url and that the server is running"
            )));
        }
        Err(_) => {
            return findings.push(fatal(format!(
                "mysql sink: connecting to {host} timed out after 15 s; check the host and port \
                 and that no firewall drops the connection"
            )));
        }
    };
    let failed = |what: &str, e: mysql_async::Error| {
        fatal(format!(
            "mysql sink: could not {what}: {e}; the preflight could not finish, fix this first"
        ))
    };
    let innodb: Option<String> = match conn
        .query_first("SELECT SUPPORT FROM information_schema.ENGINES WHERE ENGINE = 'InnoDB'")
        .await
    {
        Ok(v) => v,
        Err(e) => {
            findings.push(failed("read the storage engines", e));
            let _ = conn.disconnect().await;
            return;
        }
    };
    if !matches!(innodb.as_deref(), Some("YES" | "DEFAULT")) {
        findings.push(fatal(format!(
            "mysql sink: the server at {host} has no InnoDB storage engine; the sink needs \
             transactional tables for its exactly-once position; enable InnoDB"
        )));
    }
    // Privileges: global ones and database-level grants (patterns with % and _).
    let grantee = "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                   SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')";
    let global: Vec<String> = match conn
        .query(format!(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {grantee}"
        ))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            findings.push(failed("read the user's privileges", e));
            let _ = conn.disconnect().await;
            return;
        }
    };
    let schema_rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
             WHERE GRANTEE = {grantee}"
        ))
        .await
        .unwrap_or_default();
    let _ = conn.disconnect().await;
    let global: HashSet<String> = global.into_iter().collect();
    let per_db: Vec<(String, String)> = schema_rows
        .iter()
        .filter_map(|r| Some((cell_text(r, 0)?, cell_text(r, 1)?)))
        .collect();
    let mut dbs = vec!["_weir".to_owned()];
    if !target.contains("{schema}") {
        dbs.push(target);
    }
    const NEEDED: &[&str] = &["CREATE", "ALTER", "SELECT", "INSERT", "UPDATE", "DELETE"];
    for db in dbs {
        let missing: Vec<&str> = NEEDED
            .iter()
            .copied()
            .filter(|p| {
                !global.contains(*p)
                    && !per_db
                        .iter()
                        .any(|(pat, priv_)| priv_ == p && like_match(pat, &db))
            })
            .collect();
        if !missing.is_empty() {
            findings.push(fatal(format!(
                "mysql sink: user {user:?} lacks {} on database {db:?}; run GRANT {} ON `{}`.* \
                 TO the sink's user (if the privilege comes through a role, make it a default \
                 role)",
                missing.join(", "),
                NEEDED.join(", "),
                db.replace('`', "``")
            )));
        }
    }
}

/// MySQL's grant-pattern match (`%`, `_`, `\` escapes).
fn like_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('%') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('_') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('\\') if p.len() > 1 => n.first() == p.get(1) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grant_patterns() {
        assert!(super::like_match("shop\\_%", "shop_eu"));
        assert!(!super::like_match("shop\\_%", "shopx"));
        assert!(super::like_match("sh_p", "shop"));
        assert!(super::like_match("%", "_weir"));
    }
}
