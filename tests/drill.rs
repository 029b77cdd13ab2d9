//! `redvault drill` against real parts: a daemon's generation restored into
//! a scratch redis-server it starts and stops itself, checked, with RTO and
//! RPO reported; every kind of damage fails naming its cause.

mod common;

use common::daemon::*;
use common::redis::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A daemon generation of a primary holding every type, with writes in
/// several segments; the daemon stopped. Returns the generation's folder
/// and the primary.
fn generation(work: &Path, store: &str) -> (PathBuf, RedisServer) {
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let (gen_dir, _) = generation_of(&primary, work, store);
    (gen_dir, primary)
}

fn drill(work: &Path, store: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let (code, out, err) = run(redvault()
        .args([
            "--json", "drill", "--from", store, "--source", "cache1", "--kek",
        ])
        .arg(work.join("kek.pem"))
        .args(extra));
    let v = serde_json::from_str(out.lines().last().unwrap_or("null"))
        .unwrap_or(serde_json::Value::Null);
    (code, v, err)
}

fn keys_of(s: &RedisServer) -> u64 {
    let mut c = s.client();
    let mut n = 0;
    for db in 0..16 {
        c.ok(&["SELECT", &db.to_string()]);
        if let Resp::Int(k) = c.ok(&["DBSIZE"]) {
            n += k as u64;
        }
    }
    n
}

/// The drill passes: every key of the primary restored (base and
/// segments), RTO by stage and RPO reported, the report and its SVG
/// written (the SVG well-formed XML), and nothing left behind: the scratch
/// server stopped, its directory gone.
#[test]
fn a_drill_restores_checks_and_reports() {
    let (work, store) = workspace();
    let (_, primary) = generation(work.path(), &store);
    let report = work.path().join("drill.md");
    let prom = work.path().join("drill.prom");
    let (code, v, err) = drill(
        work.path(),
        &store,
        &[
            "--report",
            report.to_str().unwrap(),
            "--metrics-file",
            prom.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("redvault_drill_ok{source=\"cache1\"} 1")
            && metrics.contains("redvault_drill_last_success_timestamp_seconds{source=\"cache1\"}")
            && metrics.contains("redvault_drill_rpo_seconds{source=\"cache1\"}"),
        "{metrics}"
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["keys"].as_u64(), Some(keys_of(&primary)), "{v}");
    assert!(
        v["commands"].as_u64().unwrap() > 0,
        "segments replayed: {v}"
    );
    assert!(v["rto_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["rpo_seconds"].as_f64().is_some(), "{v}");
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["plan", "start", "load", "replay"], "{v}");
    let dir = v["scratch_dir"].as_str().unwrap();
    assert!(
        !Path::new(dir).exists(),
        "the scratch directory {dir} is left"
    );
    let port: u16 = v["target"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the scratch server still listens on {port}"
    );
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(
        md.contains("RTO") && md.contains("RPO") && md.contains("drill.svg"),
        "{md}"
    );
    let svg = std::fs::read_to_string(work.path().join("drill.svg")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut depth = 0i32;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the SVG is not well-formed XML: {e}\n{svg}"),
        }
    }
    assert_eq!(depth, 0, "unbalanced SVG: {svg}");
    assert!(svg.starts_with("<svg"), "{svg}");
}

fn flip(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.len() * 2 / 3;
    b[at] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// Damage of every kind fails the drill with exit 1 and one line naming the
/// cause, and still leaves no scratch server behind.
#[test]
fn a_damaged_backup_fails_the_drill_naming_the_cause() {
    let (work, store) = workspace();
    let (gen_dir, _primary) = generation(work.path(), &store);
    let mut segs: Vec<PathBuf> = files_below(&gen_dir.join("aof"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".aof.rv"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");

    // No such source: a failure before any restore still reaches the metrics.
    let early = work.path().join("early.prom");
    let (code, _, err) = run(redvault()
        .args(["drill", "--from", &store, "--source", "nosuch", "--kek"])
        .arg(work.path().join("kek.pem"))
        .arg("--metrics-file")
        .arg(&early));
    assert_eq!(code, 1, "{err}");
    let metrics = std::fs::read_to_string(&early).unwrap();
    assert!(
        metrics.contains("redvault_drill_ok{source=\"nosuch\"} 0"),
        "{metrics}"
    );

    // No such redis-server.
    let (code, _, err) = drill(
        work.path(),
        &store,
        &["--redis-server", "/nonexistent/redis-server"],
    );
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("/nonexistent/redis-server") && line.contains("--redis-server"),
        "{line}"
    );

    // A wrong KEK: another RSA key.
    let other = tempfile::tempdir().unwrap();
    let other_kek = other.path().join("other.pem");
    let (code, _, err) = run(redvault()
        .args(["keys", "generate", "--bits", "2048", "--out"])
        .arg(&other_kek));
    assert_eq!(code, 0, "{err}");
    // The backup's signer is trusted: only the KEK is wrong.
    let (code, _, err) = run(redvault()
        .args(["drill", "--from", &store, "--source", "cache1", "--kek"])
        .arg(&other_kek)
        .arg("--trust")
        .arg(work.path().join(redvault::signing::SIGNING_PUB_FILE)));
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("KEK") || line.contains("unwrap"), "{line}");

    // A flipped byte in a segment: named.
    let seg = &segs[1];
    let saved = std::fs::read(seg).unwrap();
    flip(seg);
    let (code, _, err) = drill(work.path(), &store, &[]);
    assert_eq!(code, 1, "{err}");
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let line = one_line_error(&err);
    assert!(line.contains(&name), "{line}");
    std::fs::write(seg, &saved).unwrap();

    // A removed segment: a hole, named by its offsets.
    std::fs::rename(seg, work.path().join("aside")).unwrap();
    let (code, _, err) = drill(work.path(), &store, &[]);
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(line.contains("hole") || line.contains("missing"), "{line}");
    std::fs::rename(work.path().join("aside"), seg).unwrap();

    // A flipped byte in the base: named, and the metrics say it failed.
    let base = gen_dir.join("base.rdb.rv");
    flip(&base);
    let prom = work.path().join("drill.prom");
    let (code, _, err) = drill(
        work.path(),
        &store,
        &["--metrics-file", prom.to_str().unwrap()],
    );
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("redvault_drill_ok{source=\"cache1\"} 0"),
        "{metrics}"
    );
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err);
    assert!(line.contains("base.rdb.rv"), "{line}");
}

/// `drill --target` with the user `acl print --role drill` makes: the
/// drill passes by the replication feed; without REPLICAOF it passes by the
/// RESTORE loader; without RESTORE as well it fails naming the command.
#[test]
fn a_drill_into_a_target_needs_only_the_drill_role() {
    let (work, store) = workspace();
    let (_, primary) = generation(work.path(), &store);
    let target = RedisServer::start(&[]);
    // Fitted to the server (the commands it knows).
    let (code, line, err) = run(redvault()
        .args(["acl", "print", "--role", "drill", "--user", "dr"])
        .args(["--redis", &target.url()]));
    assert_eq!(code, 0, "{err}");
    let line: Vec<String> = line
        .trim()
        .replace(">PASSWORD", ">pw")
        .split(' ')
        .map(String::from)
        .collect();
    let setuser = |without: &[&str]| {
        let mut c = target.client();
        c.ok(&["ACL", "DELUSER", "dr"]);
        let args: Vec<&[u8]> = line
            .iter()
            .filter(|a| !without.iter().any(|w| a.as_str() == format!("+{w}")))
            .map(|a| a.as_bytes())
            .collect();
        assert_eq!(c.cmd(&args).unwrap(), Resp::Status("OK".into()));
        c.ok(&["FLUSHALL"]);
    };
    let url = format!("redis://dr@127.0.0.1:{}", target.port);
    let go = || {
        let (code, out, err) = run(redvault()
            .env("REDVAULT_REDIS_PASSWORD", "pw")
            .args(["--json", "drill", "--from", &store, "--source", "cache1"])
            .args(["--target", &url, "--kek"])
            .arg(work.path().join("kek.pem")));
        let v: serde_json::Value =
            serde_json::from_str(out.lines().last().unwrap_or("null")).unwrap_or_default();
        (code, v, err)
    };
    setuser(&[]);
    let (code, v, err) = go();
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "replication", "{v}");
    assert_eq!(v["keys"].as_u64(), Some(keys_of(&primary)), "{v}");
    assert_eq!(target.digest(), primary.digest());

    setuser(&["replicaof"]);
    let (code, v, err) = go();
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "restore", "{v}");
    assert_eq!(target.digest(), primary.digest());

    setuser(&["replicaof", "restore"]);
    let (code, _, err) = go();
    assert_eq!(code, 1, "{err}");
    let line = one_line_error(&err).to_lowercase();
    assert!(
        line.contains("restore") && line.contains("noperm"),
        "{line}"
    );
}

/// The daemon records the source's keys per database at an offset in its
/// signed chain heads; a drill stops its replay at that offset, finds the
/// same counts, and goes on to the end. The recorded offset is one the
/// later writes moved past (so the check ran mid-stream, not at the end).
/// Keys whose TTL runs out before the drill count as the source counted
/// them through the feed (a replica keeps them); by RESTORE the counts are
/// not compared, and the report says why.
#[test]
fn a_drill_compares_the_key_counts_the_daemon_recorded() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let mut c = primary.client();
    fill_all_types(&mut c);
    let mut d = Daemon::start(
        work.path(),
        &primary.url(),
        &store,
        &[
            "--segment-interval-ms",
            "50",
            "--fingerprint-interval-ms",
            "200",
        ],
    );
    d.wait_up();
    // Batch A: keys in two databases, some with a TTL that runs out soon.
    write_batch(&primary, "a", 30);
    for i in 0..20 {
        c.ok(&["SET", &format!("short:{i}"), "v", "PX", "1500"]);
    }
    c.ok(&["SELECT", "5"]);
    for i in 0..10 {
        c.ok(&["SET", &format!("db5:{i}"), "v"]);
    }
    c.ok(&["SELECT", "0"]);
    d.wait_durable(&primary);
    // The first head takes the first counts; the next ones wait for a head.
    std::thread::sleep(Duration::from_millis(800));
    // Batch B changes every count.
    for i in 0..10 {
        c.ok(&["DEL", &format!("a:{i}")]);
    }
    c.ok(&["SELECT", "5"]);
    c.ok(&["FLUSHDB"]);
    c.ok(&["SELECT", "0"]);
    write_batch(&primary, "b", 15);
    d.wait_durable(&primary);
    d.stop();
    // Past the short TTLs.
    std::thread::sleep(Duration::from_millis(1600));

    let (code, v, err) = drill(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "replication", "{v}");
    let f = &v["fingerprint"];
    assert_eq!(f["compared"], true, "{v}");
    let offset = f["offset"].as_u64().expect("a fingerprint was checked");
    assert!(offset > v["base_offset"].as_u64().unwrap(), "{v}");
    // The counts checked are not the final ones: the replay stopped there.
    let recorded: Vec<(u64, u64)> = f["dbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["db"].as_u64().unwrap(), d["keys"].as_u64().unwrap()))
        .collect();
    let final_counts: Vec<(u64, u64)> = v["keys_per_db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
        .collect();
    assert_ne!(recorded, final_counts, "{v}");

    let (code, v, err) = drill(work.path(), &store, &["--via", "restore"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["via"], "restore", "{v}");
    assert_eq!(v["fingerprint"]["compared"], false, "{v}");
    assert!(
        v["fingerprint"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("RESTORE")),
        "{v}"
    );
    assert_eq!(v["fingerprint"]["offset"].as_u64(), Some(offset), "{v}");
}

/// `drill_every` in the daemon: a drill of the source runs on schedule as
/// a child process, its result is on /metrics with the names the alert
/// rules use, in the audit log and in the state directory; a drill that
/// fails (a KEK that cannot unwrap) says so in the metrics, keeps the last
/// success time, and the backups go on.
#[test]
fn the_daemon_runs_scheduled_drills_beside_the_backups() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let audit = work.path().join("audit.jsonl");
    let kek = work.path().join("kek.pem");
    let start = |drill_kek: &Path| {
        Daemon::start_env(
            work.path(),
            &primary.url(),
            &store,
            &[
                "--segment-interval-ms",
                "50",
                "--drill-every",
                "*/2 * * * * *",
                "--drill-kek",
                drill_kek.to_str().unwrap(),
            ],
            &[("REDVAULT_AUDIT_LOG", audit.display().to_string())],
        )
    };
    let drill_metric = |d: &Daemon, name: &str| -> Option<f64> {
        d.metrics()?
            .lines()
            .find(|l| l.starts_with(&format!("redvault_drill_{name}{{source=\"cache1\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let wait_for = |d: &Daemon, what: &str, ok: &dyn Fn(&Daemon) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !ok(d) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} never came; log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let mut d = start(&kek);
    d.wait_up();
    write_batch(&primary, "a", 20);
    d.wait_durable(&primary);
    wait_for(&d, "a passing drill", &|d| {
        drill_metric(d, "ok") == Some(1.0)
    });
    let passed_at = drill_metric(&d, "last_success_timestamp_seconds").unwrap();
    assert!(passed_at > 0.0);
    assert!(drill_metric(&d, "rto_seconds").is_some_and(|s| s > 0.0));
    assert!(drill_metric(&d, "rpo_seconds").is_some());
    let last = work.path().join("state/drill/cache1.json");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    assert_eq!(kept["ok"], true, "{kept}");
    assert!(work.path().join("state/drill/cache1.md").exists());
    d.stop();
    let records = std::fs::read_to_string(&audit).unwrap();
    assert!(
        records
            .lines()
            .any(|l| l.contains("\"drill\"") && l.contains("\"ok\":true")),
        "{records}"
    );

    // The public KEK cannot unwrap: the drill fails, the backups go on,
    // and the last success time (kept across the restart) stays.
    let mut d = start(&work.path().join("kek.pub.pem"));
    d.wait_up();
    wait_for(&d, "a failed drill", &|d| {
        drill_metric(d, "ok") == Some(0.0)
    });
    assert_eq!(
        drill_metric(&d, "last_success_timestamp_seconds"),
        Some(passed_at)
    );
    write_batch(&primary, "b", 20);
    d.wait_durable(&primary);
    d.stop();
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    assert_eq!(kept["ok"], false, "{kept}");
    assert!(
        kept["error"]
            .as_str()
            .is_some_and(|e| e.contains("the drill failed") && e.contains("only a public key")),
        "{kept}"
    );
}

/// Every generation's newest chain head carries the source's key counts,
/// the later generations' too: a count waiting when a scheduled base ended
/// the last generation does not hold up the next one's.
#[test]
fn each_generation_carries_the_key_counts() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let mut d = Daemon::start(
        work.path(),
        &primary.url(),
        &store,
        &[
            "--segment-interval-ms",
            "50",
            "--fingerprint-interval-ms",
            "100",
            "--base-every",
            "*/3 * * * * *",
        ],
    );
    d.wait_up();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while d.metric("bases_total").unwrap_or(0) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled bases: {}",
            d.log()
        );
        write_batch(&primary, &format!("t{i}"), 5);
        i += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    write_batch(&primary, "last", 5);
    d.wait_durable(&primary);
    d.stop();
    let mut generations: Vec<PathBuf> = std::fs::read_dir(work.path().join("store/cache1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("aof").is_dir())
        .collect();
    generations.sort();
    assert!(generations.len() >= 2, "{generations:?}");
    // The first may have ended before its first head; every later one
    // followed writes for a whole schedule tick.
    for g in &generations[1..] {
        let mut heads: Vec<PathBuf> = std::fs::read_dir(g.join("aof"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("head-")
            })
            .collect();
        heads.sort();
        let newest = heads
            .last()
            .unwrap_or_else(|| panic!("{} has no head", g.display()));
        let head: serde_json::Value =
            serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
        assert!(
            head["fingerprint"]["offset"].as_u64().is_some(),
            "{}: {head}",
            newest.display()
        );
    }
    let (code, v, err) = drill(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["fingerprint"]["compared"], true, "{v}");
}
