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
