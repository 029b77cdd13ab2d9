//! A `redvault daemon` process under test: its metrics endpoint, waits
//! bounded in time, a clean stop (SIGTERM) or a kill.
#![allow(dead_code)]

use super::redis::{RedisServer, Resp};
use super::{redvault, write_test_keys};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    /// Its metrics port (`--listen`).
    pub port: u16,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Spawns the command `make` builds (a `redvault daemon ...`) with its
    /// metrics on a free loopback port and its log (at info) in `work`, and
    /// waits (bounded) until it serves them, or ends. A port taken by
    /// another test between choosing and binding it makes the daemon exit:
    /// then another port is tried, a bounded number of times.
    pub fn spawn(make: impl Fn() -> Command, work: &std::path::Path) -> Self {
        for _ in 0..5 {
            let port = super::redis::free_port();
            let log = work.join(format!("daemon-{port}.log"));
            let child = make()
                .env("REDVAULT_LOG", "info")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut d = Daemon { child, port, log };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if d.metrics().is_some() {
                    return d;
                }
                if let Ok(Some(_)) = d.child.try_wait() {
                    if d.log().contains("cannot listen") {
                        break; // the port was taken: another one
                    }
                    return d; // ended for its own reasons: the test looks
                }
                assert!(
                    Instant::now() < deadline,
                    "the daemon never served its metrics; log:\n{}",
                    d.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("the daemon could not bind a free port in 5 tries");
    }

    pub fn metrics(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    pub fn metric(&self, name: &str) -> Option<u64> {
        let m = self.metrics()?;
        m.lines()
            .find(|l| l.starts_with(&format!("redvault_{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the link is up.
    pub fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.metric("up") != Some(1) {
            assert!(
                Instant::now() < deadline,
                "the daemon never connected; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until storage holds everything the primary has written.
    /// (A primary has offset 0 until a replica connects: wait for the link first.)
    pub fn wait_durable(&self, primary: &RedisServer) {
        self.wait_up();
        let target = repl_offset(primary);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.metric("durable_offset").is_some_and(|d| d >= target) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "durable offset never reached {target}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "daemon exit {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop on SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn repl_offset(r: &RedisServer) -> u64 {
    match r.client().cmd(&[b"INFO", b"replication"]).unwrap() {
        Resp::Bulk(Some(b)) => String::from_utf8(b)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        other => panic!("{other:?}"),
    }
}

impl Daemon {
    /// `redvault daemon` for source `cache1` of the Redis at `redis` into
    /// `store`, with the test KEK of `work` and a 200 ms cut interval
    /// unless `extra` sets one.
    pub fn start(work: &Path, redis: &str, store: &str, extra: &[&str]) -> Self {
        Self::start_env(work, redis, store, extra, &[])
    }

    pub fn start_env(
        work: &Path,
        redis: &str,
        store: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let command = || {
            let mut c = redvault();
            c.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .args([
                    "daemon", "--redis", redis, "--to", store, "--source", "cache1",
                ])
                .arg("--kek")
                .arg(work.join("kek.pub.pem"))
                .arg("--state-dir")
                .arg(work.join("state"))
                .args(if extra.contains(&"--segment-interval-ms") {
                    &[][..]
                } else {
                    &["--segment-interval-ms", "200"][..]
                })
                .args(extra);
            c
        };
        Daemon::spawn(command, work)
    }
}

/// A temp dir with the test keys and an empty file:// store in it.
pub fn workspace() -> (tempfile::TempDir, String) {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    (work, store)
}

/// `n` writes of `tag` over three types and two databases.
pub fn write_batch(r: &RedisServer, tag: &str, n: usize) {
    let mut c = r.client();
    for i in 0..n {
        c.ok(&["SET", &format!("{tag}:{i}"), &format!("value {i} of {tag}")]);
        c.cmd(&[
            b"HSET",
            format!("h:{tag}").as_bytes(),
            i.to_string().as_bytes(),
            b"x",
        ])
        .unwrap();
        c.ok(&["SELECT", "3"]);
        c.cmd(&[b"RPUSH", b"db3:list", tag.as_bytes()]).unwrap();
        c.ok(&["SELECT", "0"]);
    }
    c.cmd(&[b"INCRBY", b"counter", n.to_string().as_bytes()])
        .unwrap();
}

/// A daemon generation of `primary` with writes in three segments or more,
/// the daemon stopped cleanly: (the generation's folder, its segments in
/// order).
pub fn generation_of(primary: &RedisServer, work: &Path, store: &str) -> (PathBuf, Vec<PathBuf>) {
    let mut d = Daemon::start(
        work,
        &primary.url(),
        store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    for i in 0..3 {
        write_batch(primary, &format!("s{i}"), 20);
        d.wait_durable(primary);
        std::thread::sleep(Duration::from_millis(120));
    }
    d.stop();
    let segs: Vec<PathBuf> = super::files_below(&work.join("store"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".aof.rv"))
        .collect();
    assert!(segs.len() >= 3, "{segs:?}");
    let gen_dir = segs[0].parent().unwrap().parent().unwrap().to_path_buf();
    (gen_dir, segs)
}
