//! The `[source]` section of a pipeline file for `type = "mysql"`, URL handling (with the
//! password redacted everywhere it could be printed) and table selection.

use serde::Deserialize;

/// Settings of the MySQL / MariaDB binlog source, as written in the pipeline file's
/// `[source]` section (the engine strips `type` and `snapshot` before deserialising).
///
/// ```toml
/// [source]
/// type = "mysql"
/// url = "mysql://weir:${MYSQL_PASSWORD}@127.0.0.1:3306/"
/// tables = ["shop.*"]
/// exclude = ["shop.audit_*"]
/// server_id = 5701          # optional
/// ```
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    /// `mysql://user:password@host:port/[database]` (the database is only used for the
    /// envelope's `source.db`; tables are selected by `tables`).
    pub url: String,
    /// Globs (`*`, `?`) over `database.table`, e.g. `shop.*`.
    pub tables: Vec<String>,
    /// Globs of tables to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The replica server id weir registers with. Must differ from every other server and
    /// replica of the source. Default: [`default_server_id`] of the pipeline name.
    #[serde(default)]
    pub server_id: Option<u32>,
}

impl std::fmt::Debug for MysqlSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSourceConfig")
            .field("url", &redact_url(&self.url))
            .field("tables", &self.tables)
            .field("exclude", &self.exclude)
            .field("server_id", &self.server_id)
            .finish()
    }
}

impl MysqlSourceConfig {
    /// Whether `database.table` is selected by `tables` and not excluded.
    pub fn selects(&self, database: &str, table: &str) -> bool {
        let full = format!("{database}.{table}");
        self.tables.iter().any(|g| glob_match(g, &full))
            && !self.exclude.iter().any(|g| glob_match(g, &full))
    }

    /// The server id to register with: the configured one, else derived from the name.
    pub fn effective_server_id(&self, pipeline: &str) -> u32 {
        self.server_id
            .unwrap_or_else(|| default_server_id(pipeline))
    }
}

/// The default replica `server_id` of a pipeline: `0x4000_0000 | (FNV-1a-32(name) &
/// 0x3FFF_FFFF)`, i.e. a stable number in 1073741824..=2147483647 that is the same on every
/// run of the pipeline and unlikely to clash with hand-picked ids (which are usually small).
pub fn default_server_id(pipeline: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in pipeline.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x4000_0000 | (h & 0x3FFF_FFFF)
}

/// Whether `name` matches `glob` (`*`: any run of characters, `?`: one character).
pub fn glob_match(glob: &str, name: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g[gi.min(g.len())..].iter().all(|&c| c == '*')
}

/// The raw password in a URL (`scheme://user:PASSWORD@host`), if any.
pub(crate) fn raw_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    (!pw.is_empty()).then_some(pw)
}

/// The URL with its password replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    match raw_password(url) {
        Some(pw) => url.replacen(&format!(":{pw}@"), ":<redacted>@", 1),
        None => url.to_owned(),
    }
}

/// Replaces every occurrence of the URL's password (raw and percent-decoded) in `text`.
pub(crate) fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.to_owned();
    if let Some(pw) = raw_password(url) {
        let decoded = percent_decode(pw);
        for s in [pw.to_owned(), decoded] {
            if !s.is_empty() && out.contains(&s) {
                out = out.replace(&s, "<redacted>");
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = b.get(i + 1..i + 3)
            && let Ok(h) = std::str::from_utf8(h)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the URL into driver options (no TLS: see the crate docs). Errors never contain
/// the password.
pub(crate) fn opts(url: &str) -> Result<mysql_async::Opts, String> {
    if !url.starts_with("mysql://") {
        return Err(format!(
            "bad url {}: it must start with mysql:// (mysql://user:password@host:port/)",
            redact_url(url)
        ));
    }
    let opts = mysql_async::Opts::from_url(url).map_err(|e| {
        format!(
            "bad url {}: {}; write it as mysql://user:password@host:port/",
            redact_url(url),
            redact_text(&e.to_string(), url)
        )
    })?;
    Ok(mysql_async::OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .stmt_cache_size(0)
        .tcp_keepalive(Some(std::time::Duration::from_secs(30)))
        // The binlog connection reads events as large as the server sends (a row event
        // with a 20 MiB LONGBLOB, or bigger); the server side is limited by its own
        // max_allowed_packet / slave_max_allowed_packet.
        .max_allowed_packet(Some(1 << 30))
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let url = "mysql://weir:s%40cret@db:3306/shop";
        assert_eq!(redact_url(url), "mysql://weir:<redacted>@db:3306/shop");
        assert_eq!(redact_url("mysql://root@h/"), "mysql://root@h/");
        assert_eq!(
            redact_text("denied for s@cret and s%40cret", url),
            "denied for <redacted> and <redacted>"
        );
        let cfg = MysqlSourceConfig {
            url: url.into(),
            tables: vec!["shop.*".into()],
            exclude: vec![],
            server_id: None,
        };
        assert!(!format!("{cfg:?}").contains("cret"));
        let err = opts("postgres://a:secret@h/").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn selection_and_server_ids() {
        let cfg = MysqlSourceConfig {
            url: String::new(),
            tables: vec!["shop.*".into(), "crm.cust?mers".into()],
            exclude: vec!["shop.audit_*".into()],
            server_id: None,
        };
        assert!(cfg.selects("shop", "orders"));
        assert!(!cfg.selects("shop", "audit_log"));
        assert!(cfg.selects("crm", "customers"));
        assert!(!cfg.selects("crm", "custoomers"));
        assert!(!cfg.selects("other", "orders"));
        let a = default_server_id("shop");
        assert_eq!(a, default_server_id("shop"));
        assert_ne!(a, default_server_id("shop2"));
        assert!((0x4000_0000..=0x7FFF_FFFF).contains(&a));
        assert_eq!(cfg.effective_server_id("shop"), a);
    }
}
