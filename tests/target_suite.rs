//! The Target suite: one contract run against every `Target` on a real
//! redis-server. Entries of a snapshot land exactly (DEBUG DIGEST equal to the
//! source's); commands applied after them land in order on top; a refused
//! command is named by its offset; an RDB version the target cannot read is
//! refused before any key is sent; an existing key is named under the fail
//! policy. A new target gets the suite by adding one line to `targets`.

mod common;

use common::redis::*;
use redvault::command::Command;
use redvault::inputs::open_file;
use redvault::resp::{ConnectOptions, RedisUrl};
use redvault::source::{PsyncSource, Source};
use redvault::target::{load, LoadOptions, RedisTarget, Target, TargetError};

/// Every implementation, writing into `dst`.
async fn targets(dst: &RedisServer) -> Vec<(&'static str, Box<dyn Target>)> {
    let url = RedisUrl::parse(&dst.url()).unwrap();
    let opts = ConnectOptions::default();
    vec![(
        "redis-restore",
        Box::new(
            RedisTarget::connect(&url, &opts, LoadOptions::default())
                .await
                .unwrap(),
        ),
    )]
}

/// The `n`th implementation writing into a fresh server (`prepare`d first);
/// None past the last.
async fn nth_target(
    n: usize,
    prepare: impl Fn(&RedisServer),
) -> Option<(RedisServer, &'static str, Box<dyn Target>)> {
    let dst = RedisServer::start(&[]);
    prepare(&dst);
    let mut all = targets(&dst).await;
    if n >= all.len() {
        return None;
    }
    let (name, t) = all.remove(n);
    Some((dst, name, t))
}

/// The source's RDB, written to a file (a plain RDB input).
async fn snapshot_file(src: &RedisServer, dir: &std::path::Path) -> std::path::PathBuf {
    let source = PsyncSource::new(
        RedisUrl::parse(&src.url()).unwrap(),
        ConnectOptions::default(),
    );
    let mut snap = source.snapshot(false).await.unwrap();
    let mut rdb = vec![];
    while let Some(p) = snap.next_piece().await.unwrap() {
        rdb.extend_from_slice(&p);
    }
    let path = dir.join("dump.rdb");
    std::fs::write(&path, rdb).unwrap();
    path
}

fn cmd(offset: u64, args: &[&str]) -> Command {
    Command {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        offset,
        time_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_then_commands_land_exactly_and_in_order() {
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let dir = tempfile::tempdir().unwrap();
    let rdb = snapshot_file(&src, dir.path()).await;
    // The commands, applied to the source too: the reference state.
    let stream = [
        cmd(10, &["SELECT", "1"]),
        cmd(20, &["SET", "after", "1"]),
        cmd(30, &["INCR", "after"]),
        cmd(40, &["APPEND", "after", "-x"]),
        cmd(50, &["SELECT", "0"]),
        cmd(60, &["PING"]),
        cmd(70, &["SET", "last", "z"]),
        cmd(80, &["MULTI"]),
        cmd(90, &["INCR", "counter"]),
        cmd(100, &["RPUSH", "tx", "a"]),
        cmd(110, &["EXEC"]),
    ];
    let mut c = src.client();
    c.ok(&["SELECT", "1"]);
    c.ok(&["SET", "after", "1"]);
    c.ok(&["INCR", "after"]);
    c.ok(&["APPEND", "after", "-x"]);
    c.ok(&["SELECT", "0"]);
    c.ok(&["SET", "last", "z"]);
    c.ok(&["MULTI"]);
    c.ok(&["INCR", "counter"]);
    c.ok(&["RPUSH", "tx", "a"]);
    c.ok(&["EXEC"]);
    for n in 0.. {
        let Some((dst, name, mut t)) = nth_target(n, |_| {}).await else {
            break;
        };
        load(t.as_mut(), vec![open_file(&rdb).unwrap()], &|_| {})
            .await
            .unwrap();
        for c in &stream {
            t.apply(c).await.unwrap();
        }
        let stats = t.finish().await.unwrap();
        assert_eq!(stats.commands, 10, "{name}: PING is not replayed");
        assert_eq!(dst.digest(), src.digest(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_named() {
    let src = RedisServer::start(&[]);
    src.client().ok(&["SET", "taken", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let rdb = snapshot_file(&src, dir.path()).await;
    for n in 0.. {
        let Some((_dst, name, mut t)) = nth_target(n, |_| {}).await else {
            break;
        };
        // An RDB version newer than the target reads: refused up front.
        match t.begin(99) {
            Err(TargetError::TargetTooOld { source_version, .. }) => {
                assert_eq!(source_version, 99, "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
        // A refused command names its offset.
        t.apply(&cmd(4242, &["NOSUCHCOMMAND", "x"])).await.unwrap();
        let e = t.finish().await.unwrap_err().to_string();
        assert!(e.contains("offset 4242"), "{name}: {e}");

        // Under the fail policy an existing key is named.
        let (_dst, name, mut t) = nth_target(n, |dst| {
            dst.client().ok(&["SET", "taken", "already"]);
        })
        .await
        .unwrap();
        let loaded = load(t.as_mut(), vec![open_file(&rdb).unwrap()], &|_| {}).await;
        let e = match loaded {
            Err(e) => e.to_string(),
            Ok(()) => t.finish().await.unwrap_err().to_string(),
        };
        assert!(
            e.contains("key taken already exists in db 0"),
            "{name}: {e}"
        );
    }
}
