//! systemd's notification protocol (sd_notify): `READY=1`, `STATUS=...`,
//! `WATCHDOG=1`, `STOPPING=1` as datagrams to $NOTIFY_SOCKET. Without the
//! variable (not under systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;

pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().to_string();
    let sent = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Half the watchdog interval systemd asked for, if it asked.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(std::time::Duration::from_micros(usec / 2))
}
