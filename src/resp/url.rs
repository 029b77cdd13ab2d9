//! `redis[s]://[user:pass@]host:port[/db]` as the replication client needs it.

use zeroize::Zeroizing;

/// A Redis URL that cannot be used, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad Redis URL: {0}")]
pub struct UrlError(String);

#[derive(Clone)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Zeroizing<String>>,
    /// `rediss://`: the link is TLS.
    pub tls: bool,
}

impl RedisUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let u = url::Url::parse(s).map_err(|e| UrlError(e.to_string()))?;
        let tls = match u.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(UrlError(format!(
                    "scheme {other}, expected redis:// or rediss:// (TLS)"
                )))
            }
        };
        let host = u
            .host_str()
            .ok_or_else(|| UrlError("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |p: &str| {
            url::form_urlencoded::parse(format!("x={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = (!u.username().is_empty()).then(|| decode(u.username()));
        let password = u.password().map(|p| Zeroizing::new(decode(p)));
        Ok(RedisUrl {
            host,
            port: u.port().unwrap_or(6379),
            user,
            password,
            tls,
        })
    }

    /// host:port, for connecting and for messages (never the password).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A default source name: host and port, safe as a path segment.
    pub fn source_name(&self) -> String {
        format!("{}-{}", self.host, self.port)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", if self.tls { "rediss://" } else { "redis://" })?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.addr())
    }
}
