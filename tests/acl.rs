//! Least privilege: a user made from `acl print --role R` does R's job end to
//! end on Debian's redis-server; taking away a command it needs makes the
//! job fail naming that command.

mod common;

use common::redis::*;
use common::*;

/// `acl print` for `role`, the password placeholder filled in, as arguments.
fn print(role: &str, extra: &[&str]) -> Vec<String> {
    let (code, out, err) = run(redvault()
        .args(["acl", "print", "--role", role])
        .args(extra));
    assert_eq!(code, 0, "{err}");
    out.trim()
        .replace(">PASSWORD", ">pw")
        .split(' ')
        .map(String::from)
        .collect()
}

fn setuser(server: &RedisServer, line: &[String], without: Option<&str>) {
    let args: Vec<&[u8]> = line
        .iter()
        .filter(|a| without.is_none_or(|w| a.as_str() != format!("+{w}")))
        .map(|a| a.as_bytes())
        .collect();
    match server.client().cmd(&args).unwrap() {
        Resp::Status(s) => assert_eq!(s, "OK"),
        other => panic!("ACL SETUSER {line:?}: {other:?}"),
    }
}

fn export(src: &RedisServer, user: &str, work: &std::path::Path) -> (i32, String, String) {
    run(redvault()
        .env("REDVAULT_REDIS_PASSWORD", "pw")
        .args([
            "export",
            "--redis",
            &format!("redis://{user}@127.0.0.1:{}", src.port),
        ])
        .args(["--source", "s", "--to"])
        .arg(format!("file://{}", work.join("store").display()))
        .arg("--kek")
        .arg(work.join("kek.pub.pem")))
}

#[test]
fn the_backup_and_import_roles_are_enough_and_each_command_is_needed() {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());

    let backup = print("backup", &["--user", "bk"]);
    assert!(backup.contains(&"-@all".to_string()), "{backup:?}");
    for needed in ["psync", "replconf"] {
        setuser(&src, &backup, Some(needed));
        let (code, _, err) = export(&src, "bk", work.path());
        assert_eq!(code, 1, "without +{needed}");
        assert!(
            one_line_error(&err).to_lowercase().contains(needed),
            "{err}"
        );
    }
    setuser(&src, &backup, None);
    let (code, _, err) = export(&src, "bk", work.path());
    assert_eq!(code, 0, "{err}");

    let target = RedisServer::start(&[]);
    let import = print("import", &["--user", "im"]);
    let load = || {
        run(redvault()
            .env("REDVAULT_REDIS_PASSWORD", "pw")
            .args([
                "import",
                "--redis",
                &format!("redis://im@127.0.0.1:{}", target.port),
            ])
            .arg("--from")
            .arg(format!("file://{}", work.path().join("store").display()))
            .arg("--kek")
            .arg(work.path().join("kek.pem")))
    };
    setuser(&target, &import, Some("restore"));
    let (code, _, err) = load();
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).to_lowercase().contains("restore"),
        "{err}"
    );
    assert_eq!(target.client().ok(&["DBSIZE"]), Resp::Int(0));
    setuser(&target, &import, None);
    let (code, _, err) = load();
    assert_eq!(code, 0, "{err}");
    assert_eq!(target.digest(), src.digest());
}

/// The scan role (`export --method scan`, for servers that refuse PSYNC) is
/// enough, and each of SCAN, DUMP and PEXPIRETIME is needed, named when
/// missing along with the role that has it.
#[test]
fn the_scan_role_is_enough_and_each_command_is_needed() {
    let work = tempfile::tempdir().unwrap();
    write_test_keys(work.path());
    std::fs::create_dir(work.path().join("store")).unwrap();
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let scan = print("scan", &["--user", "sc"]);
    let export = || {
        run(redvault()
            .env("REDVAULT_REDIS_PASSWORD", "pw")
            .args(["export", "--method", "scan", "--redis"])
            .arg(format!("redis://sc@127.0.0.1:{}", src.port))
            .args(["--source", "s", "--to"])
            .arg(format!("file://{}", work.path().join("store").display()))
            .arg("--kek")
            .arg(work.path().join("kek.pub.pem")))
    };
    for needed in ["scan", "dump", "pexpiretime"] {
        setuser(&src, &scan, Some(needed));
        let (code, _, err) = export();
        assert_eq!(code, 1, "without +{needed}");
        let line = one_line_error(&err);
        assert!(
            line.contains(&format!("refused {}", needed.to_uppercase()))
                && line.contains("--role scan"),
            "{line}"
        );
    }
    setuser(&src, &scan, None);
    let (code, _, err) = export();
    assert_eq!(code, 0, "{err}");
    let dst = RedisServer::start(&[]);
    let (code, _, err) = run(redvault()
        .args(["import", "--redis", &dst.url(), "--from"])
        .arg(format!("file://{}", work.path().join("store").display()))
        .arg("--kek")
        .arg(work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), src.digest());
}

/// The restore role lists the writes of newer servers too; given --redis,
/// those this server does not know are left out, so ACL SETUSER takes it, and
/// the user may not run what replay never runs.
#[test]
fn the_restore_role_fits_the_server_and_refuses_admin_commands() {
    let server = RedisServer::start(&[]);
    let url = format!("redis://127.0.0.1:{}", server.port);
    let line = print("restore", &["--user", "rs", "--redis", &url]);
    setuser(&server, &line, None);
    let mut c = server.client();
    c.ok(&["AUTH", "rs", "pw"]);
    assert_eq!(c.ok(&["SET", "k", "v"]), Resp::Status("OK".into()));
    // FLUSHALL is replayed (Redis propagates it); these never are.
    for admin in [
        &["CONFIG", "SET", "dir", "/tmp"][..],
        &["EVAL", "return 1", "0"],
        &["REPLICAOF", "NO", "ONE"],
        &["ACL", "LIST"],
    ] {
        match c
            .cmd(&admin.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
            .unwrap()
        {
            Resp::Error(e) => assert!(e.starts_with("NOPERM"), "{admin:?}: {e}"),
            other => panic!("{admin:?} allowed: {other:?}"),
        }
    }
}

/// `acl check` says, for a user made from `acl print`, that every command of
/// the role is allowed; for one lacking a command, names it and exits 1; and
/// names admin commands a broad user may run beyond the role.
#[test]
fn acl_check_finds_what_is_missing_and_what_is_beyond_the_role() {
    let server = RedisServer::start(&[]);
    let admin = format!("redis://127.0.0.1:{}", server.port);
    let check = |user: &str| {
        run(redvault().args([
            "acl", "check", "--role", "backup", "--user", user, "--redis", &admin,
        ]))
    };
    let line = print("backup", &["--user", "bk"]);
    setuser(&server, &line, None);
    let (code, out, err) = check("bk");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("allowed  +psync") && !out.contains("EXCESS"),
        "{out}"
    );

    setuser(&server, &line, Some("replconf"));
    let (code, out, err) = check("bk");
    assert_eq!(code, 1);
    assert!(out.contains("MISSING  +replconf"), "{out}");
    assert!(one_line_error(&err).contains("+replconf"), "{err}");

    match server
        .client()
        .cmd(&[b"ACL", b"SETUSER", b"wide", b"on", b">pw", b"~*", b"+@all"])
        .unwrap()
    {
        Resp::Status(s) => assert_eq!(s, "OK"),
        other => panic!("{other:?}"),
    }
    let (code, out, _) = check("wide");
    assert_eq!(code, 0);
    assert!(
        out.contains("EXCESS   config|set") && out.contains("EXCESS   eval"),
        "{out}"
    );

    // A container command (XGROUP, which replay sends) is judged by its
    // subcommands: allowed for the restore user, and missing, naming the
    // subcommand, once one of them is taken away.
    let restore = print("restore", &["--user", "rs", "--redis", &admin]);
    setuser(&server, &restore, None);
    let check_restore = || {
        run(redvault().args([
            "acl", "check", "--role", "restore", "--user", "rs", "--redis", &admin,
        ]))
    };
    let (code, out, err) = check_restore();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("allowed  +xgroup") && !out.contains("unchecked"),
        "{out}"
    );
    match server
        .client()
        .cmd(&[b"ACL", b"SETUSER", b"rs", b"-xgroup|setid"])
        .unwrap()
    {
        Resp::Status(s) => assert_eq!(s, "OK"),
        other => panic!("{other:?}"),
    }
    let (code, out, _) = check_restore();
    assert_eq!(code, 1);
    assert!(out.contains("MISSING  +xgroup: xgroup|setid"), "{out}");
}
