//! A hostile or broken primary: a loopback server speaking just enough of the
//! replication protocol to hand export a bad snapshot. Each case ends with a
//! non-zero exit, one line naming the cause, and nothing in the store that
//! looks like a backup.

mod common;

use common::resp_server::read_command;
use common::*;
use crc::{Crc, CRC_64_REDIS};
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;

/// Serves one replica session: answers the handshake, then FULLRESYNC with
/// `replid` and the RDB `body` in the length-prefixed form.
fn fake_primary(replid: &'static str, body: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Bounded: one connection, then the thread ends.
        let Ok((s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        loop {
            let Some(args) = read_command(&mut r) else {
                return;
            };
            let name = args[0].to_ascii_uppercase();
            let reply: Vec<u8> = match name.as_slice() {
                b"INFO" => {
                    let text = "# Server\r\nredis_version:7.0.15\r\n";
                    format!("${}\r\n{text}\r\n", text.len()).into_bytes()
                }
                b"PSYNC" => {
                    let mut out =
                        format!("+FULLRESYNC {replid} 0\r\n${}\r\n", body.len()).into_bytes();
                    out.extend_from_slice(&body);
                    let _ = w.write_all(&out);
                    // Keep the link open until the client goes.
                    let mut sink = [0u8; 256];
                    while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
                    return;
                }
                _ => b"+OK\r\n".to_vec(),
            };
            if w.write_all(&reply).is_err() {
                return;
            }
        }
    });
    port
}

/// An RDB: `head` then the EOF opcode and a correct CRC64 trailer.
fn rdb_with_crc(head: &[u8]) -> Vec<u8> {
    let mut b = head.to_vec();
    b.push(0xFF);
    let crc = Crc::<u64>::new(&CRC_64_REDIS).checksum(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

const GOOD_REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

fn export_from(port: u16) -> (i32, String, std::path::PathBuf, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    let store = work.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
            "--redis-timeout",
            "10",
        ])
        .arg("--to")
        .arg(format!("file://{}", store.display()))
        .args(["--source", "hostile", "--kek"])
        .arg(work.path().join("kek.pub.pem")));
    (code, err, store, work)
}

/// Every file below `dir`, as text.
fn files(dir: &std::path::Path) -> Vec<String> {
    files_below(dir)
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn a_replication_id_that_is_not_40_hex_digits_is_refused() {
    let port = fake_primary("../../x", rdb_with_crc(b"REDIS0010"));
    let (code, err, store, _w) = export_from(port);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("is not 40 hex digits"),
        "{err}"
    );
    assert!(files(&store).is_empty(), "{:?}", files(&store));
}

#[test]
fn an_rdb_version_that_is_not_a_number_is_refused() {
    let port = fake_primary(GOOD_REPLID, rdb_with_crc(b"REDISabcd"));
    let (code, err, store, _w) = export_from(port);
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("is not a number"), "{err}");
    assert!(
        !files(&store).iter().any(|f| f.ends_with("manifest.json")),
        "{:?}",
        files(&store)
    );
}

#[test]
fn a_snapshot_whose_crc_holds_but_that_does_not_parse_leaves_no_backup() {
    // A string key whose length claims 2^40 bytes, then EOF: the CRC is right.
    let mut head = b"REDIS0010".to_vec();
    head.extend_from_slice(&[0xFE, 0x00, 0x00, 0x01, b'k', 0x81]);
    head.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let port = fake_primary(GOOD_REPLID, rdb_with_crc(&head));
    let (code, err, store, _w) = export_from(port);
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("does not parse"), "{err}");
    let left = files(&store);
    assert!(
        !left
            .iter()
            .any(|f| f.ends_with("manifest.json") || f.ends_with("base.rdb.rv")),
        "{left:?}"
    );
}
