//! The replication client against a real primary: the command stream after the
//! snapshot carries the primary's writes with offsets that match its own, and
//! WAIT on the primary counts this client only once it has acknowledged.

mod common;

use common::redis::*;
use redvault::replication::{LinkOptions, RedisUrl, ReplicaLink};

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

#[tokio::test(flavor = "multi_thread")]
async fn command_stream_offsets_match_the_primary_and_acks_drive_wait() {
    let primary = RedisServer::start(&[]);
    primary.client().ok(&["SET", "before", "1"]);
    let url = RedisUrl::parse(&primary.url()).unwrap();
    let link = ReplicaLink::connect(&url, &LinkOptions::default())
        .await
        .unwrap();
    let (info, mut rdb) = link.full_sync(false).await.unwrap();
    while rdb.next().await.unwrap().is_some() {}
    let mut stream = redvault::replication::CommandStream::new(rdb.into_conn(), info.offset);
    // A diskless primary puts the replica online at its first ACK after it saw
    // the snapshot child finish; a replica ACKs every second, so ACK twice.
    stream.ack(stream.offset()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    stream.ack(stream.offset()).await.unwrap();

    let mut c = primary.client();
    c.ok(&["SET", "a", "1"]);
    c.ok(&["SELECT", "2"]);
    c.ok(&["HSET", "h", "f", "v"]);
    let mut seen = vec![];
    while !seen
        .iter()
        .any(|a: &Vec<Vec<u8>>| a[0].eq_ignore_ascii_case(b"HSET"))
    {
        let cmd = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("a command within 10 s")
            .unwrap()
            .expect("stream open");
        seen.push(cmd.args);
    }
    let names: Vec<String> = seen
        .iter()
        .map(|a| String::from_utf8_lossy(&a[0]).to_uppercase())
        .collect();
    assert!(
        names.contains(&"SET".into()) && names.contains(&"SELECT".into()),
        "{names:?}"
    );
    let primary_offset: u64 = info_field(&primary, "replication", "master_repl_offset")
        .parse()
        .unwrap();
    assert_eq!(
        stream.offset(),
        primary_offset,
        "our offset is the primary's"
    );

    // Not acknowledged yet: WAIT finds no replica holding the last write.
    match c.ok(&["WAIT", "1", "300"]) {
        Resp::Int(n) => assert_eq!(n, 0),
        r => panic!("{r:?}"),
    }
    // Drain the GETACK that WAIT sent, then acknowledge everything.
    let mut got_getack = false;
    for _ in 0..10 {
        match tokio::time::timeout(std::time::Duration::from_secs(2), stream.next()).await {
            Ok(Ok(Some(cmd))) => {
                if cmd.is_getack() {
                    got_getack = true;
                    break;
                }
            }
            _ => break,
        }
    }
    assert!(got_getack, "WAIT asks replicas for an ACK");
    stream.ack(stream.offset()).await.unwrap();
    match c.ok(&["WAIT", "1", "5000"]) {
        Resp::Int(n) => assert_eq!(n, 1),
        r => panic!("{r:?}"),
    }
}
