//! A loopback server speaking just enough RESP for a test to play a server
//! that misbehaves on purpose (a hostile primary, SCAN returning a key
//! twice). Bounded: a fixed number of connections, each in its own thread.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// One command as its arguments, or None at the end of the connection.
pub fn read_command(r: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = vec![];
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut a = vec![0u8; len + 2];
        r.read_exact(&mut a).ok()?;
        a.truncate(len);
        args.push(a);
    }
    Some(args)
}

pub fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

pub fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

/// Serves up to `connections` connections with `reply` (the arguments of a
/// command, to the bytes to answer); returns the port.
pub fn serve(
    connections: usize,
    reply: impl Fn(&[Vec<u8>]) -> Vec<u8> + Send + Sync + 'static,
) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let reply = std::sync::Arc::new(reply);
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((s, _)) = l.accept() else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                while let Some(args) = read_command(&mut r) {
                    if w.write_all(&reply(&args)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}
