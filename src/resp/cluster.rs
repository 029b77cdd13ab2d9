//! What a Redis Cluster node says of its cluster: `CLUSTER SLOTS`, each slot
//! range with its primary. Shared by the cluster target (routing) and the
//! cluster export (one snapshot per primary).

use super::{Conn, RedisError, Reply};

pub const SLOTS: usize = 16384;

/// One run of slots and the primary that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    /// As the node announces it; empty when it announces none (the address
    /// the caller reached the cluster by is meant).
    pub host: String,
    pub port: u16,
    pub node_id: String,
    /// Its replicas, as CLUSTER SLOTS lists them: (host, port); an empty
    /// host as for the primary.
    pub replicas: Vec<(String, u16)>,
}

/// A primary and every slot range it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub host: String,
    pub port: u16,
    pub node_id: String,
    pub ranges: Vec<(u16, u16)>,
    /// Its replicas (host, port), an unknown host made the seed's.
    pub replicas: Vec<(String, u16)>,
}

impl Primary {
    pub fn first_slot(&self) -> u16 {
        self.ranges.iter().map(|r| r.0).min().unwrap_or(0)
    }

    pub fn last_slot(&self) -> u16 {
        self.ranges.iter().map(|r| r.1).max().unwrap_or(0)
    }
}

/// `CLUSTER SLOTS` of the node `conn` reaches.
pub async fn cluster_slots(conn: &mut Conn) -> Result<Vec<SlotRange>, RedisError> {
    let refused = |conn: &Conn, message: String| RedisError::Refused {
        addr: conn.addr.clone(),
        command: "CLUSTER SLOTS".into(),
        message,
    };
    let reply = conn.command(&[b"CLUSTER", b"SLOTS"]).await?;
    let ranges = match reply {
        Reply::Array(r) => r,
        Reply::Error(m) => return Err(refused(conn, m)),
        other => return Err(refused(conn, format!("{other:?}"))),
    };
    let mut out = vec![];
    for r in ranges {
        let Reply::Array(parts) = r else {
            return Err(refused(conn, "a range that is no array".into()));
        };
        let (Some(Reply::Integer(a)), Some(Reply::Integer(b)), Some(Reply::Array(node))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(refused(conn, "a range without its primary".into()));
        };
        let text = |i: usize| {
            node.get(i)
                .and_then(Reply::as_bytes)
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .unwrap_or_default()
        };
        let Some(Reply::Integer(port)) = node.get(1) else {
            return Err(refused(conn, "a primary without its port".into()));
        };
        if !(0..SLOTS as i64).contains(a) || !(*a..SLOTS as i64).contains(b) {
            return Err(refused(conn, format!("slots {a}-{b}")));
        }
        let host = text(0);
        let replicas = parts[3..]
            .iter()
            .filter_map(|r| {
                let Reply::Array(n) = r else { return None };
                let host = n.first().and_then(Reply::as_bytes)?;
                let Some(Reply::Integer(port)) = n.get(1) else {
                    return None;
                };
                let host = String::from_utf8_lossy(host).into_owned();
                Some((
                    if host == "?" { String::new() } else { host },
                    u16::try_from(*port).ok()?,
                ))
            })
            .collect();
        out.push(SlotRange {
            first: *a as u16,
            last: *b as u16,
            host: if host == "?" { String::new() } else { host },
            port: u16::try_from(*port).map_err(|_| refused(conn, format!("port {port}")))?,
            node_id: text(2),
            replicas,
        });
    }
    Ok(out)
}

/// The primaries of the cluster, each with its ranges, in slot order; a
/// primary that announces no host is at `seed_host` (the node reached).
pub fn primaries(ranges: &[SlotRange], seed_host: &str) -> Vec<Primary> {
    let mut out: Vec<Primary> = vec![];
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.first);
    // By node id (two primaries may announce the same unknown host and port).
    for r in sorted {
        let host = if r.host.is_empty() {
            seed_host
        } else {
            &r.host
        };
        let same = |p: &&mut Primary| {
            if r.node_id.is_empty() {
                p.host == host && p.port == r.port
            } else {
                p.node_id == r.node_id
            }
        };
        let replicas: Vec<(String, u16)> = r
            .replicas
            .iter()
            .map(|(h, p)| {
                (
                    if h.is_empty() {
                        seed_host.to_string()
                    } else {
                        h.clone()
                    },
                    *p,
                )
            })
            .collect();
        match out.iter_mut().find(same) {
            Some(p) => {
                p.ranges.push((r.first, r.last));
                for x in replicas {
                    if !p.replicas.contains(&x) {
                        p.replicas.push(x);
                    }
                }
            }
            None => out.push(Primary {
                host: host.to_string(),
                port: r.port,
                node_id: r.node_id,
                ranges: vec![(r.first, r.last)],
                replicas,
            }),
        }
    }
    // The same replica comes first however the node asked lists them.
    for p in &mut out {
        p.replicas.sort();
    }
    out
}

/// Slots no primary serves.
pub fn unowned_slots(ranges: &[SlotRange]) -> usize {
    let mut owned = vec![false; SLOTS];
    for r in ranges {
        owned[r.first as usize..=r.last as usize]
            .iter_mut()
            .for_each(|o| *o = true);
    }
    owned.iter().filter(|o| !**o).count()
}

/// The slots being migrated between nodes (`CLUSTER NODES` lists them as
/// `[slot->-node]` on the node giving a slot up and `[slot-<-node]` on the
/// one taking it); None when this user may not ask.
pub async fn migrating_slots(conn: &mut Conn) -> Result<Option<Vec<u16>>, RedisError> {
    let text = match conn.command(&[b"CLUSTER", b"NODES"]).await? {
        Reply::Bulk(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
        Reply::Error(m) if m.starts_with("NOPERM") || m.contains("no permissions") => {
            return Ok(None)
        }
        Reply::Error(message) => {
            return Err(RedisError::Refused {
                addr: conn.addr.clone(),
                command: "CLUSTER NODES".into(),
                message,
            })
        }
        _ => return Ok(Some(vec![])),
    };
    Ok(Some(parse_migrating(&text)))
}

fn parse_migrating(nodes: &str) -> Vec<u16> {
    let mut out: Vec<u16> = nodes
        .lines()
        .flat_map(|l| l.split_whitespace().skip(8))
        .filter_map(|t| {
            let inner = t.strip_prefix('[')?.strip_suffix(']')?;
            inner.split(['-', '<', '>']).next()?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod migrating_tests {
    #[test]
    fn migrating_and_importing_slots_are_read() {
        let nodes = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [93->-b2]\n\
                     b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-16383 [93-<-a1] [7-<-a1]\n\
                     c3 127.0.0.1:7002@17002 slave b2 0 0 2 connected\n";
        assert_eq!(super::parse_migrating(nodes), vec![7, 93]);
        assert!(super::parse_migrating("a1 h:1@2 master - 0 0 1 connected 0-16383\n").is_empty());
    }
}
