//! A real redis-server for tests: started on a free loopback port in a temp dir,
//! stopped on drop. A missing redis-server fails loudly, naming scripts/setup.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    /// The server binary (`redis-server` on PATH, or one of .tools/versions).
    bin: PathBuf,
    args: Vec<String>,
    /// For a server in its own network namespace: the test's loopback port
    /// is a forwarder to its Unix socket, not a socket the child holds.
    forwarded: bool,
}

fn spawn_redis(bin: &Path, args: &[String]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): run scripts/setup to install it",
                bin.display()
            )
        })
}

/// The major version `bin --version` prints (`Redis server v=7.0.15` or
/// `Valkey server v=8.1.8`).
fn major_version(bin: &Path) -> u32 {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run scripts/setup", bin.display()));
    String::from_utf8_lossy(&out.stdout)
        .split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{}: no version in --version", bin.display()))
}

/// A 127.0.0.1 port whose connections are relayed to the Unix socket at
/// `sock` (each one both ways, on two threads, until either side closes).
/// The accepting thread and its port last as long as the test process.
fn forward_to_unix(sock: PathBuf) -> u16 {
    use std::os::unix::net::UnixStream;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(unix) = UnixStream::connect(&sock) else {
                continue; // not listening yet: the client sees the close
            };
            let (mut t2, mut u2) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
            let (mut t1, mut u1) = (tcp, unix);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut t1, &mut u1);
                let _ = u1.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut t2);
                let _ = t2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port of at most 55535 that is free, with its cluster bus port (+10000).
pub fn cluster_port() -> u16 {
    use std::net::TcpListener;
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = (std::process::id() as u64) << 32 ^ nanos ^ calls << 20;
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20000 + (x >> 33) as u16 % 35000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair below 55536 in 1000 tries")
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`
/// (read from /proc/net/tcp and the process's file descriptors).
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let wanted = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (LISTEN), inode
            (f.len() > 9 && f[1] == wanted && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

impl RedisServer {
    /// Starts redis-server with test settings plus `extra` (`--name value` pairs).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_rdb(extra, None)
    }

    /// Starts a server that loads `rdb` at startup (native load). A free port
    /// can be taken by another test between choosing and binding it: then the
    /// server exits, and another port is tried (a bounded number of times).
    pub fn start_with_rdb(extra: &[&str], rdb: Option<&Path>) -> Self {
        Self::start_full(Path::new("redis-server"), extra, rdb)
    }

    /// Starts another server binary (a version of tests/common/versions.rs).
    pub fn start_bin(bin: &Path, extra: &[&str]) -> Self {
        Self::start_full(bin, extra, None)
    }

    /// Starts another server binary that loads `rdb` at startup.
    pub fn start_bin_with_rdb(bin: &Path, extra: &[&str], rdb: &Path) -> Self {
        Self::start_full(bin, extra, Some(rdb))
    }

    fn start_full(bin: &Path, extra: &[&str], rdb: Option<&Path>) -> Self {
        // Servers before 7.0 allow DEBUG always and know no such option.
        let debug = major_version(bin) >= 7;
        for _ in 0..4 {
            if let Some(s) = Self::try_start(bin, debug, extra, rdb) {
                return s;
            }
        }
        Self::try_start(bin, debug, extra, rdb)
            .expect("redis-server could not bind a free port in 5 tries")
    }

    fn try_start(bin: &Path, debug: bool, extra: &[&str], rdb: Option<&Path>) -> Option<Self> {
        Self::try_start_on(free_port(), bin, debug, extra, rdb)
    }

    /// Starts a Redis Cluster node (Debian's redis-server) with no slots: on a
    /// port of at most 55535 whose bus port (+10000) is free too.
    pub fn start_cluster_node() -> Self {
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "3000",
        ];
        for _ in 0..8 {
            if let Some(s) = Self::try_start_on(
                cluster_port(),
                Path::new("redis-server"),
                true,
                &extra,
                None,
            ) {
                return s;
            }
        }
        panic!("no cluster node could bind a free port pair in 8 tries")
    }

    fn try_start_on(
        port: u16,
        bin: &Path,
        debug: bool,
        extra: &[&str],
        rdb: Option<&Path>,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        if let Some(rdb) = rdb {
            std::fs::copy(rdb, dir.path().join("dump.rdb")).unwrap();
        }
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.path().to_str().unwrap(),
            "--dbfilename",
            "dump.rdb",
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if debug {
            args.extend(["--enable-debug-command".into(), "yes".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn_redis(bin, &args);
        let mut s = RedisServer {
            port,
            dir,
            child,
            bin: bin.to_path_buf(),
            args,
            forwarded: false,
        };
        s.wait_ready().then_some(s)
    }

    /// A server on a host of its own as far as networking goes: Debian's
    /// redis-server in a new network namespace (`unshare -n`, whose loopback
    /// is down), so nothing it connects to can be reached, as for a target
    /// on another host given an address of this one. The test reaches it on
    /// a 127.0.0.1 port forwarded to its Unix socket.
    pub fn start_isolated(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("redis.sock");
        let mut args: Vec<String> = ["-n", "redis-server", "--port", "0", "--unixsocket"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(sock.to_str().unwrap().into());
        args.extend(
            [
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.path().to_str().unwrap(),
                "--logfile",
                "redis.log",
                "--enable-debug-command",
                "yes",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let errors = dir.path().join("unshare.err");
        let child = Command::new("unshare")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run unshare -n redis-server ({e}): run scripts/setup")
            });
        let port = forward_to_unix(sock);
        let mut s = RedisServer {
            port,
            dir,
            child,
            bin: PathBuf::from("unshare"),
            args,
            forwarded: true,
        };
        assert!(
            s.wait_ready(),
            "unshare -n redis-server exited (it needs CAP_SYS_ADMIN, and a socket path under 108 bytes): {}{}",
            std::fs::read_to_string(&errors).unwrap_or_default(),
            s.log()
        );
        s
    }

    /// Stops the server (SIGKILL) and starts it again on the same port, empty
    /// (no persistence): a primary that lost its data and has a new replication id.
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        self.child = spawn_redis(&self.bin, &self.args);
        assert!(
            self.wait_ready(),
            "redis-server did not restart on its port: {}",
            self.log()
        );
    }

    /// True once the server answers; false if it exited (its port was taken).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let s = &*self;
            if let Ok(mut c) = s.try_client() {
                // LOADING answers until an RDB given at startup is in.
                // The answer must come from this child, not from another
                // test's server that took the port first.
                let ours = || s.forwarded || listens(s.child.id(), s.port);
                match c.cmd(&[b"PING"]) {
                    Ok(Resp::Status(_)) if ours() => return true,
                    Ok(Resp::Error(e)) if e.starts_with("NOAUTH") && ours() => return true,
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_client(&self) -> std::io::Result<Client> {
        Client::connect(self.port)
    }

    pub fn client(&self) -> Client {
        self.try_client().expect("connect to test redis")
    }

    pub fn digest(&self) -> String {
        match self.client().cmd(&[b"DEBUG", b"DIGEST"]).unwrap() {
            Resp::Status(s) => s,
            other => panic!("DEBUG DIGEST: {other:?}"),
        }
    }

    /// `CONFIG GET name`'s value.
    pub fn config(&self, name: &str) -> String {
        match self.client().ok(&["CONFIG", "GET", name]) {
            Resp::Array(items) => match items.get(1) {
                Some(Resp::Bulk(Some(v))) => String::from_utf8_lossy(v).into_owned(),
                other => panic!("CONFIG GET {name}: {other:?}"),
            },
            other => panic!("CONFIG GET {name}: {other:?}"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

/// A minimal blocking RESP client for setting up and checking test data.
pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    pub fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out)
    }

    pub fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Resp> {
        self.send(args)?;
        self.read()
    }

    /// Runs a command that must succeed.
    pub fn ok(&mut self, args: &[&str]) -> Resp {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        let r = self.cmd(&a).unwrap();
        if let Resp::Error(e) = &r {
            panic!("{args:?}: {e}");
        }
        r
    }

    pub fn read(&mut self) -> std::io::Result<Resp> {
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (t, rest) = line.split_at(1.min(line.len()));
        Ok(match t {
            "+" => Resp::Status(rest.into()),
            "-" => Resp::Error(rest.into()),
            ":" => Resp::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut b = vec![0; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Resp::Bulk(Some(b))
                }
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                let mut v = vec![];
                for _ in 0..n.max(0) {
                    v.push(self.read()?);
                }
                Resp::Array(v)
            }
            _ => {
                return Err(std::io::Error::other(format!("bad reply line {line:?}")));
            }
        })
    }
}

/// Distinctive strings planted in the data set, to prove none reaches storage in
/// plaintext.
pub const SECRET_KEY: &str = "plaintext-canary-key-7f3a";
pub const SECRET_VALUE: &str = "plaintext-canary-value-9c1e";

/// Fills a server with every type and encoding Redis writes: int and raw strings,
/// a multi-MB value, small and large lists, intsets, small and large sets, sorted
/// sets and hashes, a stream with a consumer group and pending entries, TTLs,
/// three databases and binary key names.
pub fn fill_all_types(c: &mut Client) {
    c.ok(&["SET", SECRET_KEY, SECRET_VALUE]);
    c.ok(&["SET", "int", "12345"]);
    c.ok(&["SET", "neg", "-987654321"]);
    c.ok(&["SET", "raw", "hello world, a raw string"]);
    let big: String = (0..3_000_000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    c.ok(&["SET", "big", &big]);
    c.ok(&["RPUSH", "list:small", "a", "b", "1", "2"]);
    for chunk in 0..20 {
        let items: Vec<String> = (0..500).map(|i| format!("item-{chunk}-{i}")).collect();
        let mut args = vec!["RPUSH", "list:large"];
        args.extend(items.iter().map(|s| s.as_str()));
        c.ok(&args);
    }
    c.ok(&["SADD", "set:int", "1", "2", "3", "100000", "-5"]);
    c.ok(&["SADD", "set:small", "x", "y", "z"]);
    let members: Vec<String> = (0..2000).map(|i| format!("member-{i}")).collect();
    let mut args = vec!["SADD", "set:large"];
    args.extend(members.iter().map(|s| s.as_str()));
    c.ok(&args);
    c.ok(&[
        "ZADD",
        "zset:small",
        "1",
        "one",
        "2.5",
        "two",
        "-3",
        "three",
    ]);
    let mut zargs: Vec<String> = vec!["ZADD".into(), "zset:large".into()];
    for i in 0..1500 {
        zargs.push(format!("{}", i as f64 * 1.25));
        zargs.push(format!("z-{i}"));
    }
    c.ok(&zargs.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    c.ok(&["HSET", "hash:small", "f1", "v1", "f2", "2"]);
    let mut hargs: Vec<String> = vec!["HSET".into(), "hash:large".into()];
    for i in 0..1000 {
        hargs.push(format!("field-{i}"));
        hargs.push(format!("value-{i}-{}", "x".repeat(i % 70)));
    }
    c.ok(&hargs.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    for i in 0..300 {
        c.ok(&[
            "XADD",
            "stream",
            "*",
            "n",
            &i.to_string(),
            "payload",
            "data",
        ]);
    }
    c.ok(&["XGROUP", "CREATE", "stream", "g1", "0"]);
    c.ok(&["XGROUP", "CREATE", "stream", "g2", "$"]);
    c.ok(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "consumer-a",
        "COUNT",
        "10",
        "STREAMS",
        "stream",
        ">",
    ]);
    c.ok(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "consumer-b",
        "COUNT",
        "5",
        "STREAMS",
        "stream",
        ">",
    ]);
    c.ok(&["SET", "ttl:key", "expires later", "PX", "86400000"]);
    c.ok(&["HSET", "ttl:hash", "a", "b"]);
    c.ok(&["PEXPIRE", "ttl:hash", "90000000"]);
    c.cmd(&[b"SET", b"bin\x00key\xff\xfe", b"bin\x00value\x01"])
        .unwrap();
    c.ok(&["SELECT", "1"]);
    c.ok(&["SET", "db1:key", "in db 1"]);
    c.ok(&["LPUSH", "db1:list", "a", "b"]);
    c.ok(&["SELECT", "7"]);
    c.ok(&["SET", "db7:key", "in db 7"]);
    c.ok(&["SELECT", "0"]);
}
