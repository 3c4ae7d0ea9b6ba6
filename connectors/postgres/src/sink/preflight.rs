//! `weir check` for a PostgreSQL sink: reachable, and the user may create what the sink needs.

use super::{PostgresSinkConfig, describe, raw_password, redacted_url, scrub};
use crate::check::Finding;
use crate::source::{parse_url, sql_config};

fn fatal(message: String) -> Finding {
    Finding {
        fatal: true,
        message,
    }
}

/// Checks that the sink can start: the URL parses, the server answers, and the user can use
/// (or create) the target schema and `_weir`. Messages never contain the password.
pub async fn check(cfg: &PostgresSinkConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let raw = raw_password(&cfg.url).unwrap_or("").to_string();
    let url = match parse_url(&cfg.url) {
        Ok(u) => u,
        Err(e) => {
            findings.push(fatal(scrub(
                format!(
                    "postgres sink: bad url {}: {e}; write it as postgres://user:password@host:port/database",
                    redacted_url(&cfg.url)
                ),
                &[raw],
            )));
            return findings;
        }
    };
    let secrets = [url.password.clone().unwrap_or_default(), raw];
    let client = match sql_config(&url).connect(tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Err(e) => {
            findings.push(fatal(scrub(
                format!(
                    "postgres sink: cannot connect to {}:{} (database {:?}, user {:?}): {}; check \
                     the url, that the server runs and that pg_hba.conf lets this user in",
                    url.host,
                    url.port,
                    url.database,
                    url.user,
                    describe(&e)
                ),
                &secrets,
            )));
            return findings;
        }
    };
    let schemas: Vec<String> = if cfg.schema.contains("{schema}") {
        vec!["_weir".into()]
    } else {
        vec!["_weir".into(), cfg.schema.clone()]
    };
    for schema in schemas {
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), \
                 CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) \
                 THEN has_schema_privilege($1, 'CREATE, USAGE') ELSE false END, \
                 has_database_privilege(current_database(), 'CREATE')",
                &[&schema],
            )
            .await;
        match row.and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))) {
            Ok((true, true, _)) | Ok((false, _, true)) => {}
            Ok((true, false, _)) => findings.push(fatal(format!(
                "postgres sink: user {:?} may not create tables in schema {schema:?}; run GRANT \
                 USAGE, CREATE ON SCHEMA {schema} TO {}",
                url.user, url.user
            ))),
            Ok((false, _, false)) => findings.push(fatal(format!(
                "postgres sink: schema {schema:?} does not exist and user {:?} may not create it; \
                 create it (CREATE SCHEMA {schema} AUTHORIZATION {}) or GRANT CREATE ON DATABASE \
                 {} TO {}",
                url.user, url.user, url.database, url.user
            ))),
            Err(e) => findings.push(fatal(scrub(
                format!(
                    "postgres sink: could not check privileges on schema {schema:?}: {}",
                    describe(&e)
                ),
                &secrets,
            ))),
        }
    }
    findings
}
