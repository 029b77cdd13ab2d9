//! The Source suite: every `Source` implementation against a real primary.
//! A snapshot is a whole RDB whose keys are the primary's; the command stream
//! after it carries the primary's writes with offsets that match its own;
//! acknowledgements drive WAIT; a stream resumes after the offset held, and a
//! replication id the server does not know asks for a new snapshot. A new
//! source gets all of this by adding one line to `sources`.

mod common;

use common::redis::*;
use redvault::command::Command;
use redvault::rdb::{Item, RdbScanner, ScanOptions};
use redvault::resp::{ConnectOptions, RedisUrl};
use redvault::source::{
    CommandFeed, PsyncSource, Reencoded, Resumed, ScanSource, Source, SourceError,
};
use std::sync::Arc;
use std::time::Duration;

/// Every implementation, reading `primary`, and whether it has a command
/// stream (a SCAN source has none: it refuses to give one; nor has a
/// snapshot rewritten for RDB 9).
fn sources(primary: &RedisServer) -> Vec<(&'static str, Arc<dyn Source>, bool)> {
    let url = RedisUrl::parse(&primary.url()).unwrap();
    vec![
        (
            "psync",
            Arc::new(PsyncSource::new(url.clone(), ConnectOptions::default())),
            true,
        ),
        (
            "scan",
            Arc::new(ScanSource::new(
                url.clone(),
                ConnectOptions::default(),
                2,
                None,
            )),
            false,
        ),
        (
            "psync rewritten for RDB 9",
            Arc::new(Reencoded::new(
                Arc::new(PsyncSource::new(url, ConnectOptions::default())),
                9,
            )),
            false,
        ),
    ]
}

/// Only those with a command stream.
fn streaming(primary: &RedisServer) -> Vec<(&'static str, Arc<dyn Source>)> {
    sources(primary)
        .into_iter()
        .filter(|s| s.2)
        .map(|(n, s, _)| (n, s))
        .collect()
}

fn info_field(s: &RedisServer, section: &str, field: &str) -> String {
    match s.client().ok(&["INFO", section]) {
        Resp::Bulk(Some(b)) => String::from_utf8(b)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{field}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap(),
        r => panic!("{r:?}"),
    }
}

fn primary_offset(s: &RedisServer) -> u64 {
    info_field(s, "replication", "master_repl_offset")
        .parse()
        .unwrap()
}

async fn next_cmd(feed: &mut CommandFeed) -> Command {
    tokio::time::timeout(Duration::from_secs(10), feed.reader.next())
        .await
        .expect("a command within 10 s")
        .unwrap()
        .expect("stream open")
}

/// A diskless primary puts a replica online at its first ACK after it saw the
/// snapshot child finish; a replica ACKs every second, so ACK twice.
async fn go_online(feed: &mut CommandFeed, offset: u64) {
    feed.acker.ack(offset).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    feed.acker.ack(offset).await.unwrap();
}

/// Reads commands until one named `name`; returns all read.
async fn until(feed: &mut CommandFeed, name: &[u8]) -> Vec<Command> {
    let mut seen = vec![];
    for _ in 0..1000 {
        let c = next_cmd(feed).await;
        let done = c.name().eq_ignore_ascii_case(name);
        seen.push(c);
        if done {
            return seen;
        }
    }
    panic!("no {} within 1000 commands", String::from_utf8_lossy(name));
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_is_the_primarys_keys() {
    let primary = RedisServer::start(&[]);
    let mut c = primary.client();
    for i in 0..300 {
        c.ok(&["SET", &format!("k{i}"), "v"]);
    }
    c.ok(&["SELECT", "3"]);
    c.ok(&["RPUSH", "list", "a", "b"]);
    for (name, source, streams) in sources(&primary) {
        if !streams {
            // Asked for a stream it cannot give, it says so (no snapshot).
            let e = source.snapshot(true).await.err().expect("refused");
            assert!(matches!(e, SourceError::Unsupported(_)), "{name}: {e}");
        }
        let mut snap = source.snapshot(false).await.unwrap();
        let mut rdb = vec![];
        while let Some(piece) = snap.next_piece().await.unwrap() {
            rdb.extend_from_slice(&piece);
        }
        assert_eq!(snap.received(), rdb.len() as u64, "{name}");
        assert!(snap.rdb_version().is_some(), "{name}");
        if name.ends_with("RDB 9") {
            assert_eq!(snap.rdb_version(), Some(9), "{name}");
            assert_eq!(&rdb[..9], b"REDIS0009", "{name}");
        }
        let mut s = RdbScanner::new(&rdb[..], ScanOptions::default()).unwrap();
        let mut per_db = std::collections::BTreeMap::new();
        while let Some(item) = s.next().unwrap() {
            if let Item::Entry(e) = item {
                *per_db.entry(e.db).or_insert(0) += 1;
            }
        }
        assert_eq!(per_db.get(&0), Some(&300), "{name}");
        assert_eq!(per_db.get(&3), Some(&1), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn command_stream_offsets_match_the_primary_and_acks_drive_wait() {
    let primary = RedisServer::start(&[]);
    primary.client().ok(&["SET", "before", "1"]);
    for (name, source) in streaming(&primary) {
        let mut snap = source.snapshot(true).await.unwrap();
        while snap.next_piece().await.unwrap().is_some() {}
        let start = snap.info().offset;
        let mut feed = snap.into_stream();
        go_online(&mut feed, start).await;

        let mut c = primary.client();
        c.ok(&["SET", "a", "1"]);
        c.ok(&["SELECT", "2"]);
        c.ok(&["HSET", "h", "f", "v"]);
        let seen = until(&mut feed, b"HSET").await;
        let names: Vec<String> = seen
            .iter()
            .map(|c| String::from_utf8_lossy(c.name()).to_uppercase())
            .collect();
        assert!(
            names.contains(&"SET".into()) && names.contains(&"SELECT".into()),
            "{name}: {names:?}"
        );
        let mut held = seen.last().unwrap().offset;
        assert_eq!(
            held,
            primary_offset(&primary),
            "{name}: our offset is the primary's"
        );
        assert!(
            seen.iter().all(|c| c.time_ms > 0),
            "{name}: stamped on receipt"
        );

        // Not acknowledged yet: WAIT finds no replica holding the last write.
        match c.ok(&["WAIT", "1", "300"]) {
            Resp::Int(n) => assert_eq!(n, 0, "{name}"),
            r => panic!("{r:?}"),
        }
        // Drain the GETACK that WAIT sent, then acknowledge everything.
        let mut got_getack = false;
        for _ in 0..10 {
            match tokio::time::timeout(Duration::from_secs(2), feed.reader.next()).await {
                Ok(Ok(Some(cmd))) => {
                    held = cmd.offset;
                    if cmd.is_getack() {
                        got_getack = true;
                        break;
                    }
                }
                _ => break,
            }
        }
        assert!(got_getack, "{name}: WAIT asks replicas for an ACK");
        feed.acker.ack(held).await.unwrap();
        match c.ok(&["WAIT", "1", "5000"]) {
            Resp::Int(n) => assert_eq!(n, 1, "{name}"),
            r => panic!("{r:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_resumes_after_the_offset_held_and_an_unknown_one_needs_a_snapshot() {
    let primary = RedisServer::start(&[]);
    for (name, source) in streaming(&primary) {
        let mut snap = source.snapshot(true).await.unwrap();
        while snap.next_piece().await.unwrap().is_some() {}
        let replid = snap.info().replid.clone();
        let start = snap.info().offset;
        let mut feed = snap.into_stream();
        go_online(&mut feed, start).await;
        primary.client().ok(&["SET", "first", "1"]);
        let held = until(&mut feed, b"SET").await.last().unwrap().offset;
        drop(feed);

        primary.client().ok(&["SET", "second", "2"]);
        match source.resume(&replid, held).await.unwrap() {
            Resumed::Stream {
                replid: now,
                mut feed,
            } => {
                assert_eq!(now, replid, "{name}");
                let got = until(&mut feed, b"SET").await;
                let set = got.last().unwrap();
                assert_eq!(set.args[1], b"second", "{name}: the next write, none lost");
                assert_eq!(set.offset, primary_offset(&primary), "{name}");
            }
            Resumed::NeedSnapshot { .. } => panic!("{name}: the backlog holds the offset"),
        }
        match source
            .resume("0123456789abcdef0123456789abcdef01234567", held)
            .await
            .unwrap()
        {
            Resumed::NeedSnapshot { replid: offered } => {
                assert_eq!(offered, replid, "{name}: the server offers its own id")
            }
            Resumed::Stream { .. } => panic!("{name}: an unknown replid cannot continue"),
        }
    }
}
