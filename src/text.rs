//! Small helpers every layer shares: one-line messages and wall-clock time.
//! The bottom layer: it imports nothing of the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An error (or any message) on one line: several backends' messages span lines.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

/// Wall-clock time as Unix milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock time as Unix seconds (0 before 1970).
pub fn unix_now() -> u64 {
    now_ms() / 1000
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-23T05:50:12Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 UTC with milliseconds, from Unix ms.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Unix ms of an RFC 3339 time (`2026-11-23T10:15:00Z`, fractions allowed); None
/// if it does not parse.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(text)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// Creates `path` with `mode` set at creation (so a private key is never
/// readable by others, whatever the umask), writes and fsyncs it; an existing
/// file is never replaced.
pub fn write_new_file(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A secret kept in a file (a systemd credential, a mounted secret), wiped
/// from memory when dropped. One trailing newline (as `echo` writes) is not
/// part of it.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<zeroize::Zeroizing<String>> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
    let s = text.strip_suffix('\n').unwrap_or(&text);
    let s = s.strip_suffix('\r').unwrap_or(s);
    Ok(zeroize::Zeroizing::new(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_lines_join() {
        assert_eq!(
            parse_rfc3339_ms(&rfc3339_ms(1_700_000_000_123)),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("not a time"), None);
        assert_eq!(one_line(&"a\nb"), "a b");
    }
}
