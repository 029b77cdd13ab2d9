//! Which servers read which RDB versions.

/// The oldest servers that read (and write) an RDB version.
pub fn min_server_for(rdb_version: u32) -> &'static str {
    match rdb_version {
        12.. => "Redis 7.4",
        11 => "Redis 7.2 (or Valkey 7.2)",
        10 => "Redis 7.0",
        9 => "Redis 5.0",
        8 => "Redis 4.0",
        7 => "Redis 3.2",
        6 => "Redis 2.6",
        _ => "Redis 2.4",
    }
}

/// The newest RDB version a Redis version reads (for RESTORE payloads).
pub fn max_rdb_for(redis_version: &str) -> u32 {
    let mut it = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    match (major, minor) {
        (m, _) if m >= 8 => 12,
        (7, n) if n >= 4 => 12,
        (7, n) if n >= 2 => 11,
        (7, _) => 10,
        (5 | 6, _) => 9,
        (4, _) => 8,
        (3, n) if n >= 2 => 7,
        (2, n) if n >= 6 => 6,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::max_rdb_for;

    #[test]
    fn rdb_versions_each_redis_reads() {
        for (v, max) in [
            ("2.4.17", 5),
            ("2.8.24", 6),
            ("3.2.12", 7),
            ("4.0.14", 8),
            ("5.0.14", 9),
            ("6.2.14", 9),
            ("7.0.15", 10),
            ("7.2.5", 11),
            ("7.4.1", 12),
            ("8.0.2", 12),
        ] {
            assert_eq!(max_rdb_for(v), max, "{v}");
        }
    }
}
