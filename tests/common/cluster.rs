//! A real Redis Cluster of Debian's redis-server: N primaries, each given an
//! equal run of slots with CLUSTER ADDSLOTSRANGE, joined with CLUSTER MEET
//! (any count, even 1 or 2, which `redis-cli --cluster create` refuses).

use super::redis::{Client, RedisServer, Resp};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// Per node, its first and last slot.
    pub ranges: Vec<(u16, u16)>,
}

fn info(c: &mut Client) -> String {
    match c.ok(&["CLUSTER", "INFO"]) {
        Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        r => panic!("CLUSTER INFO: {r:?}"),
    }
}

impl Cluster {
    pub fn start(primaries: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|_| RedisServer::start_cluster_node())
            .collect();
        let mut ranges = vec![];
        for (i, n) in nodes.iter().enumerate() {
            let a = i * 16384 / primaries;
            let b = (i + 1) * 16384 / primaries - 1;
            n.client()
                .ok(&["CLUSTER", "ADDSLOTSRANGE", &a.to_string(), &b.to_string()]);
            ranges.push((a as u16, b as u16));
        }
        for n in &nodes[1..] {
            nodes[0]
                .client()
                .ok(&["CLUSTER", "MEET", "127.0.0.1", &n.port.to_string()]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            let mut c = n.client();
            loop {
                let i = info(&mut c);
                if i.contains("cluster_state:ok")
                    && i.contains(&format!("cluster_known_nodes:{primaries}\r"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not form in 30 s: {i}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Cluster { nodes, ranges }
    }

    pub fn slot(&self, key: &[u8]) -> u16 {
        match self.nodes[0]
            .client()
            .cmd(&[b"CLUSTER", b"KEYSLOT", key])
            .unwrap()
        {
            Resp::Int(s) => s as u16,
            r => panic!("CLUSTER KEYSLOT: {r:?}"),
        }
    }

    /// The node that owns `key`'s slot.
    pub fn owner(&self, key: &[u8]) -> &RedisServer {
        let s = self.slot(key);
        let i = self
            .ranges
            .iter()
            .position(|&(a, b)| a <= s && s <= b)
            .expect("every slot is owned");
        &self.nodes[i]
    }

    pub fn id(n: &RedisServer) -> String {
        match n.client().ok(&["CLUSTER", "MYID"]) {
            Resp::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
            r => panic!("CLUSTER MYID: {r:?}"),
        }
    }

    /// A new node made a replica of primary `of`, joined and in sync
    /// (bounded waits).
    pub fn add_replica(&self, of: usize) -> RedisServer {
        let replica = RedisServer::start_cluster_node();
        self.nodes[0]
            .client()
            .ok(&["CLUSTER", "MEET", "127.0.0.1", &replica.port.to_string()]);
        let id = Cluster::id(&self.nodes[of]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while replica
            .client()
            .cmd(&[b"CLUSTER", b"REPLICATE", id.as_bytes()])
            .ok()
            != Some(Resp::Status("OK".into()))
        {
            assert!(Instant::now() < deadline, "the replica never joined");
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let Resp::Bulk(Some(i)) = replica.client().ok(&["INFO", "replication"]) else {
                panic!("INFO")
            };
            if String::from_utf8_lossy(&i).contains("master_link_status:up") {
                break;
            }
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(100));
        }
        // CLUSTER SLOTS lists a replica once its offset is past 0: one write
        // (and its DEL) on the primary moves it; then every node must list it.
        let probe = (0..10_000)
            .map(|i| format!("replica-probe-{i}"))
            .find(|k| self.owner(k.as_bytes()).port == self.nodes[of].port)
            .expect("a key of the primary");
        let mut p = self.nodes[of].client();
        p.ok(&["SET", &probe, "x"]);
        p.ok(&["DEL", &probe]);
        let port = replica.port as i64;
        for n in &self.nodes {
            let mut c = n.client();
            loop {
                let listed = match c.ok(&["CLUSTER", "SLOTS"]) {
                    Resp::Array(ranges) => ranges.iter().any(|r| match r {
                        Resp::Array(parts) => parts.iter().skip(3).any(
                            |e| matches!(e, Resp::Array(n) if n.get(1) == Some(&Resp::Int(port))),
                        ),
                        _ => false,
                    }),
                    _ => false,
                };
                if listed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "CLUSTER SLOTS never lists the replica"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        replica
    }

    /// Keys on every node together.
    pub fn dbsize(&self) -> i64 {
        self.nodes
            .iter()
            .map(|n| match n.client().ok(&["DBSIZE"]) {
                Resp::Int(k) => k,
                r => panic!("DBSIZE: {r:?}"),
            })
            .sum()
    }
}
