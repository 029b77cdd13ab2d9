//! The daemon against a real redis-server primary: segments while writes run,
//! point-in-time restore, durable ACKs (WAIT), kill -9 and restart (PSYNC
//! CONTINUE), a primary restarted with a new replication id. Every wait is
//! bounded.

mod common;

use common::daemon::*;
use common::redis::*;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn restore(work: &Path, store: &str, extra: &[&str]) -> (RedisServer, (i32, String, String)) {
    restore_env(work, store, extra, &[])
}

fn restore_env(
    work: &Path,
    store: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> (RedisServer, (i32, String, String)) {
    let dst = RedisServer::start(&[]);
    let r = run(redvault()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args([
            "--json",
            "restore",
            "--redis",
            &dst.url(),
            "--from",
            store,
            "--source",
            "cache1",
            "--kek",
        ])
        .arg(work.join("kek.pem"))
        .args(extra));
    (dst, r)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Writes keep running while the daemon runs; `restore --at` a recorded moment
/// gives the primary's DEBUG DIGEST at that moment, and without --at the final
/// state; `verify` checks every object; SIGTERM stops cleanly.
#[tokio::test]
async fn point_in_time_restore_matches_the_primary() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    // systemd's notification socket: the daemon says READY, then STOPPING.
    let notify_path = work.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = Daemon::start_env(
        work.path(),
        &primary.url(),
        &store,
        &[],
        &[("NOTIFY_SOCKET", notify_path.display().to_string())],
    );
    let mut got = String::new();
    let mut buf = [0u8; 512];
    while !got.contains("READY=1") {
        let n = notify.recv(&mut buf).expect("no READY=1 from the daemon");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        got.push('\n');
    }
    write_batch(&primary, "a", 200);
    d.wait_durable(&primary);
    let moment = now_rfc3339();
    let digest_then = primary.digest();
    let offset_then = repl_offset(&primary);
    std::thread::sleep(Duration::from_millis(50));
    write_batch(&primary, "b", 200);
    primary.client().cmd(&[b"DEL", b"a:1", b"a:2"]).unwrap();
    d.wait_durable(&primary);
    let digest_final = primary.digest();
    assert_ne!(digest_then, digest_final);

    let (dst, (code, _, err)) = restore(work.path(), &store, &["--at", &moment]);
    assert_eq!(code, 0, "restore --at: {err}");
    assert_eq!(
        dst.digest(),
        digest_then,
        "restore --at {moment} differs from the primary then"
    );

    let (dst, (code, _, err)) =
        restore(work.path(), &store, &["--offset", &offset_then.to_string()]);
    assert_eq!(code, 0, "restore --offset: {err}");
    assert_eq!(
        dst.digest(),
        digest_then,
        "restore --offset {offset_then} differs from the primary then"
    );

    let (dst, (code, stdout, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "restore: {err}");
    assert_eq!(
        dst.digest(),
        digest_final,
        "the newest state differs: {stdout}"
    );
    // The base went in through the replication feed (auto, an empty
    // target), the segments over the replay writer.
    assert!(stdout.contains(r#""via":"replication""#), "{stdout}");
    let (dst, (code, stdout, err)) = restore(work.path(), &store, &["--via", "restore"]);
    assert_eq!(code, 0, "restore --via restore: {err}");
    assert!(stdout.contains(r#""via":"restore""#), "{stdout}");
    assert_eq!(dst.digest(), digest_final, "--via restore: {stdout}");

    // A time before any backup is refused, naming what is covered.
    let (_, (code, _, err)) = restore(work.path(), &store, &["--at", "2020-01-01T00:00:00Z"]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("is outside what the backups of cache1 cover"),
        "{line}"
    );

    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "verify: {err}");
    assert!(err.contains("ok "), "{err}");
    d.stop();
    while !got.contains("STOPPING=1") {
        let n = notify.recv(&mut buf).expect("no STOPPING=1 on SIGTERM");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        got.push('\n');
    }
}

/// The shipped unit passes `systemd-analyze verify`.
#[test]
fn systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut copies = vec![];
    for name in [
        "redvault.service",
        "redvault-drill.service",
        "redvault-drill.timer",
    ] {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(name),
        )
        .unwrap();
        let copy = dir.path().join(name);
        std::fs::write(
            &copy,
            unit.replace("/usr/local/bin/redvault", env!("CARGO_BIN_EXE_redvault")),
        )
        .unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze is missing: run scripts/setup");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// WAIT 1 on the primary returns once the write's segment is in storage, and
/// on demand: Redis asks its replicas for an ACK when a client waits, and the
/// daemon cuts the open segment then, not at the cut interval (ten minutes
/// here, far beyond WAIT's 20 s); it acknowledges the durable offset, not
/// what it received.
#[tokio::test]
async fn wait_returns_once_the_segment_is_stored() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let d = Daemon::start(
        work.path(),
        &primary.url(),
        &store,
        &["--segment-interval-ms", "600000"],
    );
    d.wait_up();
    let mut c = primary.client();
    c.ok(&["SET", "durable-key", "v"]);
    let segments_before = d.metric("segments_total").unwrap();
    assert_eq!(c.cmd(&[b"WAIT", b"1", b"20000"]).unwrap(), Resp::Int(1));
    assert!(
        d.metric("segments_total").unwrap() > segments_before,
        "WAIT returned before a segment was stored"
    );
    let durable = d.metric("durable_offset").unwrap();
    assert!(durable >= repl_offset(&primary) - 64, "durable {durable}");
}

/// kill -9 during segments, restart: the link resumes with CONTINUE in the same
/// generation, and the restore equals the primary.
#[tokio::test]
async fn kill_9_and_restart_continues_the_generation() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let mut d = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "a", 100);
    d.wait_durable(&primary);
    // Writes land while the daemon is gone: the primary's backlog keeps them.
    d.kill9();
    write_batch(&primary, "b", 100);
    let d2 = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "c", 100);
    d2.wait_durable(&primary);
    let log = d2.log();
    assert!(
        log.contains("continuing the stream (PSYNC CONTINUE)"),
        "{log}"
    );
    let (code, stdout, err) = run(redvault().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0, "{err}");
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        gens.as_array().unwrap().len(),
        1,
        "a restart must not start a new generation: {gens}"
    );
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

/// kill -9 during the base upload: the interrupted generation is never listed
/// as complete, and the restarted daemon makes a complete one.
#[tokio::test]
async fn kill_9_during_the_base_leaves_no_complete_looking_generation() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    {
        // A base big enough to be killed in the middle of.
        let mut c = primary.client();
        let blob = random(1 << 20);
        for i in 0..60 {
            c.cmd(&[b"SET", format!("big:{i}").as_bytes(), &blob])
                .unwrap();
        }
    }
    let mut d = Daemon::start(work.path(), &primary.url(), &store, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let store_dir = work.path().join("store");
    // Kill as soon as the base object appears, before the manifest.
    loop {
        let started = walk(&store_dir).iter().any(|p| p.ends_with("keyring.json"));
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "no base started: {}", d.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let (code, stdout, _) = run(redvault().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0);
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for g in gens.as_array().unwrap() {
        let has_manifest = walk(&store_dir).iter().any(|p| {
            p.ends_with("manifest.json")
                && p.to_string_lossy()
                    .contains(g["generation"].as_str().unwrap())
        });
        assert_eq!(g["complete"].as_bool().unwrap(), has_manifest, "{g}");
    }
    let d2 = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "after", 10);
    d2.wait_durable(&primary);
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

/// Storage down for 30 s under writes: the link stays up (read at the primary's
/// pace), segments wait in the spool, and once storage is back nothing is lost.
#[tokio::test]
async fn storage_outage_loses_nothing() {
    let (work, _) = workspace();
    let mut az = common::azurite::Azurite::start();
    az.create_container("backups");
    let env: Vec<(&str, String)> = az.env();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let d = Daemon::start_env(work.path(), &primary.url(), "az://backups", &[], &env);
    write_batch(&primary, "before", 50);
    d.wait_durable(&primary);
    let durable_before = d.metric("durable_offset").unwrap();

    az.stop();
    let until = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < until && n < 600 {
        write_batch(&primary, &format!("outage{n}"), 5);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.metric("up"),
        Some(1),
        "the link must stay up while storage is down"
    );
    assert!(
        d.metric("spool_bytes").unwrap() > 0,
        "segments should wait in the spool"
    );
    assert_eq!(
        d.metric("durable_offset").unwrap(),
        durable_before,
        "nothing can be durable while storage is down"
    );
    assert!(d.metric("errors_total").unwrap() > 0);

    az.start_again();
    d.wait_durable(&primary);
    assert_eq!(d.metric("spool_bytes"), Some(0));
    let (dst, (code, _, err)) = restore_env(work.path(), "az://backups", &[], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        dst.digest(),
        primary.digest(),
        "writes made during the outage were lost"
    );
}

/// A spool too small for an outage: the link is dropped (said in the log and
/// metrics), and once storage is back a new generation starts; nothing of the
/// final state is lost and the gap is counted.
#[tokio::test]
async fn full_spool_starts_a_new_generation() {
    let (work, _) = workspace();
    let mut az = common::azurite::Azurite::start();
    az.create_container("backups");
    let env: Vec<(&str, String)> = az.env();
    let config = work.path().join("small-spool.toml");
    std::fs::write(&config, "[daemon]\nspool_max_bytes = 20000\n").unwrap();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let mut env_cfg = env.clone();
    env_cfg.push(("REDVAULT_CONFIG", config.display().to_string()));
    let d = Daemon::start_env(work.path(), &primary.url(), "az://backups", &[], &env_cfg);
    d.wait_durable(&primary);
    az.stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while d.metric("spool_full") != Some(1) {
        assert!(
            Instant::now() < deadline && n < 2000,
            "the spool never filled: {}",
            d.log()
        );
        write_batch(&primary, &format!("fill{n}"), 20);
        n += 1;
    }
    assert!(d.log().contains("is full"), "{}", d.log());
    assert_eq!(d.metric("up"), Some(0), "a full spool drops the link");
    az.start_again();
    let deadline = Instant::now() + Duration::from_secs(90);
    while d.metric("bases_total").unwrap_or(0) < 2 {
        assert!(
            Instant::now() < deadline,
            "no new generation after the outage: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write_batch(&primary, "after", 10);
    d.wait_durable(&primary);
    assert!(d.metric("gaps_total").unwrap() >= 1);
    let (dst, (code, _, err)) = restore_env(work.path(), "az://backups", &[], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The primary restarts empty with a new replication id: a new generation
/// starts, the gap is counted, and the old generation is still restorable.
#[tokio::test]
async fn primary_restart_starts_a_new_generation() {
    let (work, store) = workspace();
    let mut primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let d = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "old", 50);
    d.wait_durable(&primary);
    let digest_old = primary.digest();
    primary.restart_empty();
    write_batch(&primary, "new", 20);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.metric("bases_total") != Some(2) {
        assert!(Instant::now() < deadline, "no new generation: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_durable(&primary);
    assert!(d.metric("gaps_total").unwrap() >= 1);
    let (code, stdout, err) = run(redvault().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0, "{err}");
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let gens = gens.as_array().unwrap();
    assert_eq!(gens.len(), 2, "{gens:?}");
    assert!(gens.iter().all(|g| g["complete"] == true));
    let old = gens[0]["generation"].as_str().unwrap().to_string();
    // The newest state is the new primary's.
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
    // The old generation, closed at its last durable offset, restores to the old
    // primary's last state.
    let (dst, (code, _, err)) = restore(work.path(), &store, &["--generation", &old]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), digest_old);
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
}

/// A missing segment is a hole that `list`, `verify` and `restore` name; a
/// flipped byte in a segment fails `verify`.
#[tokio::test]
async fn holes_and_tampering_are_reported() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let mut d = Daemon::start(
        work.path(),
        &primary.url(),
        &store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    for i in 0..4 {
        write_batch(&primary, &format!("s{i}"), 20);
        d.wait_durable(&primary);
        std::thread::sleep(Duration::from_millis(120));
    }
    d.stop();
    let mut segs: Vec<PathBuf> = walk(&work.path().join("store"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".aof.rv"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    let kek = work.path().join("kek.pem");

    // Tamper with the last segment: verify names it.
    let last = segs.last().unwrap().clone();
    let mut bytes = std::fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&last, &bytes).unwrap();
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(&kek));
    assert_eq!(code, 1);
    let line = one_line_error(
        &err.lines()
            .filter(|l| l.starts_with("redvault:"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(
        line.contains(last.file_name().unwrap().to_str().unwrap()),
        "{line}"
    );
    bytes[n / 2] ^= 1;
    std::fs::write(&last, &bytes).unwrap();

    // Remove a middle segment: a hole.
    std::fs::remove_file(&segs[1]).unwrap();
    let (code, stdout, _) = run(redvault().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0);
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        !gens[0]["holes"].as_array().unwrap().is_empty(),
        "list must show the hole: {gens}"
    );
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(&kek));
    assert_eq!(code, 1);
    assert!(err.contains("a hole from offset"), "{err}");
    let (_, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("has a hole from offset"),
        "{err}"
    );
}

/// A base schedule makes new generations, retention keeps the newest ones, and
/// SIGHUP re-reads the config and carries on with the same generation.
#[tokio::test]
async fn schedule_retention_and_reload() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let config = work.path().join("redvault.toml");
    std::fs::write(&config, "[daemon]\nkeep_last = 1\n").unwrap();
    let port = free_port();
    let log = work.path().join("sched.log");
    let child = redvault()
        .env("REDVAULT_LOG", "info")
        .arg("--config")
        .arg(&config)
        .args([
            "daemon",
            "--redis",
            &primary.url(),
            "--to",
            &store,
            "--source",
            "cache1",
            "--base-every",
            "*/2 * * * * *",
        ])
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem"))
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--segment-interval-ms",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.metric("bases_total").unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "no scheduled bases: {}", d.log());
        write_batch(&primary, "tick", 5);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, stdout, err) = run(redvault().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0, "{err}");
    let gens: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let complete = gens
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["complete"] == true)
        .count();
    assert!(
        complete <= 2,
        "keep_last = 1 keeps the newest complete one (and one being made): {gens}"
    );

    // SIGHUP: the config is re-read and the sessions go on from the checkpoint.
    std::fs::write(&config, "[daemon]\nkeep_last = 2\n").unwrap();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(d.child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("SIGHUP: config re-read") {
        assert!(Instant::now() < deadline, "no reload: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    write_batch(&primary, "after-reload", 10);
    d.wait_durable(&primary);
    // Stopped first: with bases every 2 s, retention could prune what a slow
    // restore is reading.
    d.stop();
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

/// `restore --flush` asks, as `import --flush` does: without a terminal it
/// needs --yes and changes nothing; with it the target equals the source.
#[test]
fn restore_flush_asks_like_import() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let (code, _, err) = run(redvault()
        .args([
            "export",
            "--redis",
            &primary.url(),
            "--to",
            &store,
            "--source",
            "cache1",
            "--kek",
        ])
        .arg(work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    let dst = RedisServer::start(&[]);
    dst.client().ok(&["SET", "precious", "1"]);
    let restore_into = |extra: &[&str]| {
        run(redvault()
            .args([
                "restore",
                "--redis",
                &dst.url(),
                "--from",
                &store,
                "--source",
                "cache1",
                "--kek",
            ])
            .arg(work.path().join("kek.pem"))
            .args(extra)
            .stdin(Stdio::null()))
    };
    let (code, _, err) = restore_into(&["--flush"]);
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("add --yes"), "{err}");
    assert_eq!(
        dst.client().ok(&["EXISTS", "precious"]),
        Resp::Int(1),
        "nothing was flushed"
    );
    let (code, _, err) = restore_into(&["--flush", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

/// A segment holding a command Redis never propagates for data (here CONFIG
/// SET, sealed with the public KEK as anyone holding it could) is refused by
/// restore, naming the segment, the offset and the command, before any of it
/// is applied; verify reports it too.
#[tokio::test]
async fn replay_refuses_a_segment_with_a_command_redis_never_propagates() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let (generation, gen_dir) = export_generation(work.path(), &store, &primary);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen_dir.join("manifest.json")).unwrap()).unwrap();
    let base = manifest["redis"]["offset"].as_u64().unwrap();

    // The forged segment: a write, then CONFIG SET dir.
    let name = redvault::backup::layout::segment_name(base, base + 80);
    forge_segment(
        work.path(),
        &gen_dir,
        &generation,
        &name,
        &[
            (&["SET", "forged", "1"][..], base + 31),
            (&["CONFIG", "SET", "dir", "/tmp"][..], base + 80),
        ],
        false,
        &common::test_signer(work.path()),
        redvault::aof::chain::GENESIS,
    )
    .await;

    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains(&name)
            && line.contains(&format!("offset {}", base + 80))
            && line.contains("CONFIG"),
        "{line}"
    );
    assert_eq!(
        dst.client().ok(&["EXISTS", "forged"]),
        Resp::Int(0),
        "nothing of the segment was applied"
    );
    match dst.client().ok(&["CONFIG", "GET", "dir"]) {
        Resp::Array(v) => assert_ne!(v[1], Resp::Bulk(Some(b"/tmp".to_vec())), "dir unchanged"),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        dst.digest(),
        primary.digest(),
        "the base is restored as it was"
    );
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 1);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("redvault: error:") && last.contains(&name) && last.contains("CONFIG"),
        "{err}"
    );
}

/// A checkpoint that cannot be opened (damaged by an abrupt stop) is moved
/// aside with one line, and the source starts a new generation instead of the
/// daemon failing at every start.
#[tokio::test]
async fn a_damaged_checkpoint_is_moved_aside_and_a_new_generation_starts() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("checkpoint.sled"), b"not a sled database").unwrap();
    let mut d = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "after", 10);
    d.wait_durable(&primary);
    let log = d.log();
    assert!(
        log.contains("cannot be opened") && log.contains("moved to"),
        "{log}"
    );
    assert!(std::fs::read_dir(&state).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("checkpoint.sled.broken-")));
    d.stop();
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

/// /metrics and /healthz carry no authentication: a non-loopback address is
/// refused unless asked for on purpose.
#[test]
fn a_public_metrics_address_needs_to_be_asked_for() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args([
            "daemon",
            "--redis",
            &primary.url(),
            "--to",
            &store,
            "--source",
            "cache1",
        ])
        .arg("--kek")
        .arg(work.path().join("kek.pub.pem"))
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .args(["--listen", "0.0.0.0:9"]));
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("listen_public"), "{err}");
}

/// Two daemons on one source and store (two hosts configured alike): the
/// second is refused by the first one's lease, naming it, and writes nothing;
/// the first one restarted (same state directory) takes its lease back at once.
#[tokio::test]
async fn a_second_daemon_on_one_source_is_refused_by_the_lease() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let mut a = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "a", 10);
    a.wait_durable(&primary);
    // Another state directory (another host configured alike), same store.
    let other = tempfile::tempdir().unwrap();
    write_test_keys(other.path());
    let b = Daemon::start(other.path(), &primary.url(), &store, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.log().contains("whose lease holds until") {
        assert!(Instant::now() < deadline, "no refusal: {}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        b.log()
            .contains(work.path().join("state").to_str().unwrap()),
        "{}",
        b.log()
    );
    let generations = generation_count(&work.path().join("store/cache1"));
    assert_eq!(generations, 1, "the second daemon wrote nothing");
    drop(b);
    // kill -9 and restart with the same state directory: its own lease.
    a.kill9();
    let a2 = Daemon::start(work.path(), &primary.url(), &store, &[]);
    write_batch(&primary, "after", 10);
    a2.wait_durable(&primary);
    assert!(
        !a2.log().contains("whose lease holds until"),
        "{}",
        a2.log()
    );
}

/// Seals `cmds` as segment `name` of a generation with the public KEK,
/// signed by `signer` after the segment whose link is `prev`, and puts it in
/// the store folder; with `bad_keyring`, the keyring in its header names the
/// KEK but its wrapped key is garbage. Returns its link.
#[allow(clippy::too_many_arguments)]
async fn forge_segment(
    work: &Path,
    gen_dir: &Path,
    generation: &str,
    name: &str,
    cmds: &[(&[&str], u64)],
    bad_keyring: bool,
    signer: &redvault::signing::Signer,
    prev: [u8; 32],
) -> [u8; 32] {
    use redvault::command::Command;
    use redvault::data_key::DataKey;
    use redvault::keyring::Keyring;
    let kek = redvault::kek::LocalRsaKek::from_pem(
        &std::fs::read_to_string(work.join("kek.pub.pem")).unwrap(),
        "kek.pub.pem",
    )
    .unwrap();
    let mut plain = vec![];
    for (args, offset) in cmds {
        redvault::aof::encode_record(
            &mut plain,
            &Command {
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                offset: *offset,
                time_ms: 1,
            },
        );
    }
    let dek = DataKey::generate();
    let mut ring = Keyring::wrap(&dek, &kek).await.unwrap();
    if bad_keyring {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut w = b64.decode(&ring.wrapped[0].key).unwrap();
        w[7] ^= 0x55;
        ring.wrapped[0].key = b64.encode(&w);
    }
    let (from, to) = redvault::backup::layout::parse_segment_name(name).unwrap();
    let source = gen_dir
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let place = redvault::aof::SegmentPlace {
        source,
        generation,
        name,
        from,
        to,
    };
    let (sealed, link) = redvault::aof::seal_segment(
        &plain,
        &place,
        prev,
        1,
        &redvault::aof::SessionKeys {
            dek: &dek,
            keyring: &ring,
            signer,
        },
        &redvault::sealer::SealOptions::default(),
    )
    .await
    .unwrap();
    std::fs::create_dir_all(gen_dir.join("aof")).unwrap();
    std::fs::write(gen_dir.join("aof").join(name), sealed).unwrap();
    link
}

/// Storage chooses the keyrings in segment headers: after a few failed
/// unwraps a run tries no more (the private key is no oracle), naming why.
#[tokio::test]
async fn a_run_stops_unwrapping_after_a_few_failures() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    primary.client().ok(&["SET", "a", "1"]);
    let (generation, gen_dir) = export_generation(work.path(), &store, &primary);
    for i in 0..5u64 {
        let name = redvault::backup::layout::segment_name(i * 10, i * 10 + 10);
        forge_segment(
            work.path(),
            &gen_dir,
            &generation,
            &name,
            &[(&["SET", "k", "v"][..], i * 10 + 10)],
            true,
            &common::test_signer(work.path()),
            redvault::aof::chain::GENESIS,
        )
        .await;
    }
    let (code, out, _) = run(redvault()
        .args(["--json", "verify", "--from", &store, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 1);
    // The reports, then the one-line error as JSON.
    let reports: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let problems: Vec<String> = reports[0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let failed = problems
        .iter()
        .filter(|p| p.contains("unwrapping the data key"))
        .count();
    let held_back = problems
        .iter()
        .filter(|p| p.contains("unwraps failed already"))
        .count();
    assert_eq!((failed, held_back), (3, 2), "{problems:#?}");
}

/// One sealed export of `primary` as source cache1: its generation and folder.
fn export_generation(work: &Path, store: &str, primary: &RedisServer) -> (String, PathBuf) {
    let (code, out, err) = run(redvault()
        .args([
            "--json",
            "export",
            "--redis",
            &primary.url(),
            "--to",
            store,
            "--source",
            "cache1",
            "--kek",
        ])
        .arg(work.join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");
    let generation = serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["generation"]
        .as_str()
        .unwrap()
        .to_string();
    let gen_dir = work.join("store/cache1").join(&generation);
    (generation, gen_dir)
}

/// Segments written by a daemon, stopped cleanly: (store folder of the
/// generation, its segments in order, the primary).
fn daemon_generation(work: &Path, store: &str) -> (PathBuf, Vec<PathBuf>, RedisServer) {
    let primary = RedisServer::start(&[]);
    let (gen_dir, segs) = generation_of(&primary, work, store);
    (gen_dir, segs, primary)
}

/// Deleting the last segments (and the signed chain heads that name them)
/// rolls nothing back silently: the head written at the clean stop names
/// the offset the segments must reach; restore and verify fail naming the
/// missing end, and the target is left as the base alone never was.
#[tokio::test]
async fn deleted_trailing_segments_are_named_not_restored_around() {
    let (work, store) = workspace();
    let (gen_dir, segs, _primary) = daemon_generation(work.path(), &store);
    let heads: Vec<PathBuf> = walk(&gen_dir.join("aof"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("head-")
        })
        .collect();
    assert!(!heads.is_empty(), "a clean stop writes a signed chain head");
    // Restores in full first.
    let (_, (code, out, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("last_write_ms"), "{out}");

    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("segments are missing at the end"), "{line}");
    assert_eq!(
        dst.client().ok(&["DBSIZE"]),
        Resp::Int(0),
        "refused before anything was loaded"
    );
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 1);
    assert!(err.contains("segments are missing at the end"), "{err}");
    // A point inside what is there still restores.
    let first = segs[0].file_name().unwrap().to_str().unwrap();
    let (_, to) = redvault::backup::layout::parse_segment_name(first).unwrap();
    let (_, (code, _, err)) = restore(work.path(), &store, &["--offset", &to.to_string()]);
    assert_eq!(code, 0, "{err}");
}

/// A segment sealed with the right public KEK but signed by another key (or
/// carrying no signature, as the older format) is refused by restore and
/// verify, naming the signer, before the private key is used on it; the
/// target keeps none of it.
#[tokio::test]
async fn a_segment_not_signed_by_a_trusted_signer_is_refused() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    fill_all_types(&mut primary.client());
    let (generation, gen_dir) = export_generation(work.path(), &store, &primary);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen_dir.join("manifest.json")).unwrap()).unwrap();
    let base = manifest["redis"]["offset"].as_u64().unwrap();
    let stranger = redvault::signing::Signer::generate();
    let name = redvault::backup::layout::segment_name(base, base + 40);
    forge_segment(
        work.path(),
        &gen_dir,
        &generation,
        &name,
        &[(&["SET", "forged", "1"][..], base + 40)],
        false,
        &stranger,
        redvault::aof::chain::GENESIS,
    )
    .await;
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains(&name)
            && line.contains(&hex::encode(stranger.id_bytes()))
            && line.contains("not a trusted signer"),
        "{line}"
    );
    assert_eq!(dst.client().ok(&["EXISTS", "forged"]), Resp::Int(0));
    let (code, _, err) = run(redvault()
        .args(["verify", "--from", &store, "--kek"])
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 1);
    assert!(err.contains("not a trusted signer"), "{err}");

    // The same segment with its attestation stripped (a format 1 object):
    // refused as unsigned unless --allow-unsigned.
    let own = common::test_signer(work.path());
    std::fs::remove_file(gen_dir.join("aof").join(&name)).unwrap();
    let link = forge_segment(
        work.path(),
        &gen_dir,
        &generation,
        &name,
        &[(&["SET", "forged", "1"][..], base + 40)],
        false,
        &own,
        redvault::aof::chain::GENESIS,
    )
    .await;
    assert_ne!(link, redvault::aof::chain::GENESIS);
    let path = gen_dir.join("aof").join(&name);
    let stripped = strip_attestation(&std::fs::read(&path).unwrap());
    std::fs::write(&path, stripped).unwrap();
    let (dst, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("unsigned") && line.contains("--allow-unsigned"),
        "{line}"
    );
    assert_eq!(dst.client().ok(&["EXISTS", "forged"]), Resp::Int(0));
}

/// A sealed object's header without its attestation, as a version 1 object:
/// what an attacker gets by cutting the signature out. The header MAC is then
/// wrong (it covered the attestation), which is what a reader sees after it
/// refused the object as unsigned.
fn strip_attestation(sealed: &[u8]) -> Vec<u8> {
    let hlen = u32::from_be_bytes(sealed[10..14].try_into().unwrap()) as usize;
    let header = &sealed[..hlen];
    // Walk the fields to the attestation (docs/FORMAT.md).
    let mut p = 14 + 1 + 1 + 4 + 16 + 32;
    for _ in 0..2 {
        let n = u16::from_be_bytes(header[p..p + 2].try_into().unwrap()) as usize;
        p += 2 + n;
    }
    let k = u32::from_be_bytes(header[p..p + 4].try_into().unwrap()) as usize;
    p += 4 + k;
    let mut out = header[..p].to_vec();
    out[8..10].copy_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&header[hlen - 32..]);
    let len = out.len() as u32;
    out[10..14].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&sealed[hlen..]);
    out
}

/// A loopback "primary" that answers every PSYNC with a hostile reply (a
/// replication id that is a path): each session of that source fails.
/// Bounded: at most `sessions` connections, each read-timed.
fn hostile_primary(sessions: usize) -> u16 {
    use std::io::BufRead;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..sessions {
            let Ok((s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            // Each command: "*N", then N "$len" + value lines; the first
            // argument names it.
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let Some(n) = line
                    .trim()
                    .strip_prefix('*')
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    break;
                };
                let mut name = String::new();
                for i in 0..n * 2 {
                    line.clear();
                    let _ = r.read_line(&mut line);
                    if i == 1 {
                        name = line.trim().to_ascii_uppercase();
                    }
                }
                let reply: &[u8] = match name.as_str() {
                    "PSYNC" => b"+FULLRESYNC ../../../../etc/x 0\r\n$5\r\nREDIS\r\n",
                    "INFO" => b"$30\r\n# Server\r\nredis_version:7.0.15\r\n",
                    _ => b"+OK\r\n",
                };
                if w.write_all(reply).is_err() || name == "PSYNC" {
                    break;
                }
            }
        }
    });
    port
}

fn metric_of(d: &Daemon, name: &str, source: &str) -> Option<u64> {
    let m = d.metrics()?;
    let prefix = format!("redvault_{name}{{source=\"{source}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// One source whose primary answers with hostile replies fails session after
/// session: it is retried with backoff, counted in redvault_errors_total and
/// named by /healthz, while the other source's segments keep flowing.
#[test]
fn a_failing_source_is_retried_and_counted_while_the_other_flows() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let bad = hostile_primary(20);
    let config = work.path().join("redvault.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{store}\"\nkek = \"{}\"\n[daemon]\nsegment_interval_ms = 100\n[[daemon.sources]]\nname = \"good\"\nredis = \"{}\"\n[[daemon.sources]]\nname = \"bad\"\nredis = \"redis://127.0.0.1:{bad}\"\n",
            work.path().join("kek.pub.pem").display(),
            primary.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = work.path().join("daemon.log");
    let child = redvault()
        .env("REDVAULT_LOG", "info")
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_of(&d, "up", "good") != Some(1) {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 0..3 {
        write_batch(&primary, &format!("r{round}"), 10);
        let target = repl_offset(&primary);
        while metric_of(&d, "durable_offset", "good").is_none_or(|o| o < target) {
            assert!(Instant::now() < deadline, "{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    while metric_of(&d, "errors_total", "bad").is_none_or(|e| e < 2) {
        assert!(Instant::now() < deadline, "never retried: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric_of(&d, "errors_total", "good"), Some(0));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut health = String::new();
    let _ = s.read_to_string(&mut health);
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("unhealthy: bad"),
        "{health}"
    );
    assert!(d.log().contains("replication id"), "{}", d.log());
    d.stop();
    // The good source's data is all there.
    let dst = RedisServer::start(&[]);
    let (code, _, err) = run(&mut restore_cmd(
        &dst.url(),
        &store,
        "good",
        &work.path().join("kek.pem"),
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest());
}

/// A point inside a transaction (between its MULTI and its EXEC): the
/// transaction is left out whole, never half of it, by either path, and the
/// summary says where the restore stopped; the latest state has it whole.
#[tokio::test]
async fn a_point_inside_a_transaction_stops_before_it() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let d = Daemon::start(work.path(), &primary.url(), &store, &[]);
    d.wait_up();
    let mut c = primary.client();
    c.ok(&["SET", "before", "1"]);
    d.wait_durable(&primary);
    let digest_before = primary.digest();
    c.ok(&["MULTI"]);
    c.ok(&["SET", "tx:a", "1"]);
    c.ok(&["SET", "tx:b", "2"]);
    c.ok(&["EXEC"]);
    // Read at once: the EXEC is the stream's last command.
    let end = repl_offset(&primary);
    let inside = end - b"*1\r\n$4\r\nEXEC\r\n".len() as u64;
    d.wait_durable(&primary);
    for via in ["replication", "restore"] {
        let (dst, (code, stdout, err)) = restore(
            work.path(),
            &store,
            &["--offset", &inside.to_string(), "--via", via],
        );
        assert_eq!(code, 0, "{via}: {err}");
        assert_eq!(dst.digest(), digest_before, "{via}: half a transaction");
        let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(v["via"], via, "{v}");
        assert!(v["cut_transaction"].as_u64().is_some(), "{v}");
    }
    let (dst, (code, stdout, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), primary.digest(), "{stdout}");
    assert!(stdout.contains(r#""cut_transaction":null"#), "{stdout}");
}

/// The time index: each segment's signed statement names the time of its
/// last record and its offsets, so planning reads only the newest segment's
/// header, and a restore opens nothing past the segment holding its point.
/// A newest segment damaged past its header does not stop a restore to an
/// earlier offset, and the latest state is refused naming it.
#[tokio::test]
async fn an_earlier_point_restores_past_a_damaged_newest_segment() {
    let (work, store) = workspace();
    let primary = RedisServer::start(&[]);
    let mut d = Daemon::start(
        work.path(),
        &primary.url(),
        &store,
        &["--segment-interval-ms", "50"],
    );
    d.wait_up();
    write_batch(&primary, "early", 50);
    d.wait_durable(&primary);
    let digest_then = primary.digest();
    let offset_then = repl_offset(&primary);
    std::thread::sleep(Duration::from_millis(150));
    write_batch(&primary, "late", 50);
    d.wait_durable(&primary);
    d.stop();
    let mut segs: Vec<PathBuf> = walk(&work.path().join("store"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".aof.rv"))
        .collect();
    segs.sort();
    let newest = segs.last().expect("segments").clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x10;
    std::fs::write(&newest, bytes).unwrap();
    let (dst, (code, _, err)) =
        restore(work.path(), &store, &["--offset", &offset_then.to_string()]);
    assert_eq!(
        code, 0,
        "restore --offset before the damaged segment: {err}"
    );
    assert_eq!(dst.digest(), digest_then);
    let (_, (code, _, err)) = restore(work.path(), &store, &[]);
    assert_eq!(code, 1, "{err}");
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "{err}");
}
