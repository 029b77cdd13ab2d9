//! Azure end to end, authenticated only by managed-identity tokens: Azurite over
//! HTTPS with OAuth on (it checks every bearer token), a loopback token endpoint
//! speaking the IMDS protocol, and a loopback Key Vault holding real RSA keys.
//! Nothing here reaches a non-loopback address: the token endpoint override
//! makes redvault refuse any other host.

mod common;

use common::azurite::Azurite;
use common::daemon::Daemon;
use common::key_vault::KeyVault;
use common::redis::*;
use common::tls::TestCa;
use common::token_endpoint::{TokenEndpoint, UserAssigned};
use common::*;
use std::path::PathBuf;
use std::process::Command;

const SYSTEM_OID: &str = "11111111-0000-0000-0000-000000000001";

/// The parts of one Azure test: CA, token endpoint, Key Vault, optional Azurite,
/// and a config file pointing redvault at them.
struct World {
    work: tempfile::TempDir,
    /// Kept for its files (the CA and leaf) while the servers run.
    _ca: TestCa,
    tokens: TokenEndpoint,
    vault: KeyVault,
    /// Kept running until the test ends.
    azurite: Option<Azurite>,
    config: PathBuf,
}

impl World {
    fn new(tokens: TokenEndpoint, with_azurite: bool, identity_toml: &str) -> Self {
        let ca = TestCa::new();
        let vault = KeyVault::start(&ca);
        let azurite = with_azurite.then(|| {
            let a = Azurite::start_oauth(&ca);
            a.create_container("backups");
            a
        });
        let work = tempfile::tempdir().unwrap();
        write_test_keys(work.path());
        std::fs::create_dir(work.path().join("store")).unwrap();
        let config = work.path().join("redvault.toml");
        let storage = azurite
            .as_ref()
            .map(|a| {
                format!(
                    "[azure.storage]\naccount = \"devstoreaccount1\"\nendpoint = \"{}/devstoreaccount1\"\n",
                    a.endpoint()
                )
            })
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "signing_key = \"{}\"\n[trust]\nsigners = [\"{}\"]\n[azure]\ntoken_endpoint = \"{}\"\nca_file = \"{}\"\n{identity_toml}\n{storage}\n[azure.key_vault]\nverify_challenge_resource = false\n",
                // A Key Vault KEK has no folder to keep the signing pair
                // beside: the config names both halves.
                work.path().join("signing.pem").display(),
                work.path().join("signing.pub.pem").display(),
                tokens.url(),
                ca.ca.display()
            ),
        )
        .unwrap();
        World {
            work,
            _ca: ca,
            tokens,
            vault,
            azurite,
            config,
        }
    }

    fn kek_url(&self, name: &str) -> String {
        format!("{}/keys/{name}", self.vault.base())
    }

    fn file_store(&self) -> String {
        format!("file://{}", self.work.path().join("store").display())
    }

    /// redvault with this world's config and none of the host's Azure settings.
    fn cmd(&self) -> Command {
        let mut c = self.cmd_bare();
        c.arg("--config").arg(&self.config);
        c
    }

    /// redvault with none of the host's Azure settings and no config.
    fn cmd_bare(&self) -> Command {
        let mut c = redvault();
        for v in [
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "MSI_ENDPOINT",
            "MSI_SECRET",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_STORAGE_USE_EMULATOR",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCOUNT_NAME",
            "REDVAULT_KEK",
            "REDVAULT_STORE",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn export(&self, redis: &str, to: &str, kek: &str) -> (i32, String, String) {
        run(self.cmd().args([
            "--json", "export", "--redis", redis, "--to", to, "--source", "cache1", "--kek", kek,
        ]))
    }

    fn import(
        &self,
        redis: &str,
        from: &str,
        kek: &str,
        generation: Option<&str>,
    ) -> (i32, String, String) {
        let mut c = self.cmd();
        c.args([
            "--json", "import", "--redis", redis, "--from", from, "--kek", kek,
        ]);
        if let Some(g) = generation {
            c.args(["--generation", g]);
        }
        run(&mut c)
    }
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// Export to Azurite and import back with only managed-identity tokens and a Key
/// Vault KEK. Tokens here expire within the refresh margin, so every storage call
/// fetches a fresh one: the long run keeps working across refreshes.
#[tokio::test]
async fn export_and_import_with_managed_identity_and_key_vault() {
    let tokens = TokenEndpoint::start(Some(SYSTEM_OID), vec![], 300);
    let w = World::new(tokens, true, "");
    let v1 = w.vault.add_rsa_version("backup-kek");
    w.vault.permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey"]);
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    {
        // Enough data for several 10 MiB upload parts.
        let mut c = src.client();
        let blob = random(1 << 20);
        for i in 0..24 {
            c.ok(&[
                "SET",
                &format!("big:{i}"),
                &hex::encode(&blob[i * 20_000..(i + 1) * 20_000]),
            ]);
            c.cmd(&[b"SET", format!("rnd:{i}").as_bytes(), &blob])
                .unwrap();
        }
    }
    let kek = w.kek_url("backup-kek");

    let (code, stdout, err) = w.export(&src.url(), "az://backups", &kek);
    assert_eq!(code, 0, "export: {err}");
    let generation = json(&stdout)["generation"].as_str().unwrap().to_string();

    // The keyring names the exact key version that wrapped the data key.
    let (code, stdout, err) =
        run(w
            .cmd()
            .args(["--json", "keys", "status", "--from", "az://backups"]));
    assert_eq!(code, 0, "keys status: {err}");
    let status = json(&stdout);
    assert_eq!(status[0]["keks"][0], format!("{kek}/{v1}"), "{status}");

    let dst = RedisServer::start(&[]);
    let (code, _, err) = w.import(&dst.url(), "az://backups", &kek, None);
    assert_eq!(code, 0, "import: {err}");
    assert_eq!(dst.digest(), src.digest(), "restored data differs");

    // The https:// form of the same container goes through the same [azure]
    // settings (identity, token endpoint, CA), here a loopback endpoint.
    let https = format!(
        "{}/devstoreaccount1/backups",
        w.azurite.as_ref().unwrap().endpoint()
    );
    let (code, stdout, err) = run(w.cmd().args(["--json", "list", "--from", &https]));
    assert_eq!(code, 0, "list {https}: {err}");
    assert_eq!(json(&stdout)[0]["generation"], generation.as_str());
    let dst2 = RedisServer::start(&[]);
    let (code, _, err) = w.import(&dst2.url(), &https, &kek, None);
    assert_eq!(code, 0, "import from {https}: {err}");
    assert_eq!(dst2.digest(), src.digest(), "restored data differs");

    let reqs = w.tokens.requests();
    assert!(reqs.iter().all(|r| r.identity == "system"), "{reqs:?}");
    let storage = reqs
        .iter()
        .filter(|r| r.resource == "https://storage.azure.com")
        .count();
    let vault = reqs
        .iter()
        .filter(|r| r.resource == "https://vault.azure.net")
        .count();
    assert!(
        storage > 3,
        "storage tokens were not refreshed during the run: {storage}"
    );
    assert!(vault >= 2, "{reqs:?}");
    let log = w.vault.log();
    assert!(
        log.contains(&format!("wrapKey backup-kek/{v1} by {SYSTEM_OID}")),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("unwrapKey backup-kek/{v1} by {SYSTEM_OID}")),
        "{log:?}"
    );
    assert!(!generation.is_empty());
}

/// A signing key that never leaves Key Vault (EC P-256, ES256): `keys
/// signer-public` gives its public half; an export and a daemon (manifests,
/// segments, chain heads) sign through the vault; a reader that trusts that
/// key restores the same data, one that trusts another signer refuses it and
/// names the vault's signer; without the 'sign' permission, or with an RSA
/// key, nothing is written and the error names the cause.
#[tokio::test]
async fn signing_key_held_in_key_vault() {
    let tokens = TokenEndpoint::start(Some(SYSTEM_OID), vec![], 3600);
    let w = World::new(tokens, false, "");
    w.vault.add_rsa_version("backup-kek");
    let version = w.vault.add_ec_version("backup-signer");
    // Reading the public half needs `get` only.
    w.vault.permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey"]);
    let kek = w.kek_url("backup-kek");
    let signer = w.kek_url("backup-signer");
    let store = w.file_store();

    let public = w.work.path().join("vault-signer.pub.pem");
    let (code, stdout, err) = run(w
        .cmd()
        .args([
            "--json",
            "keys",
            "signer-public",
            "--signing-key",
            &signer,
            "--out",
        ])
        .arg(&public));
    assert_eq!(code, 0, "keys signer-public: {err}");
    let id = json(&stdout)["signer"].as_str().unwrap().to_string();
    assert!(id.starts_with("es256:"), "{id}");
    w.vault
        .permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey", "sign"]);

    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (code, stdout, err) = run(w.cmd().args([
        "--json",
        "export",
        "--redis",
        &src.url(),
        "--to",
        &store,
        "--source",
        "cache1",
        "--kek",
        &kek,
        "--signing-key",
        &signer,
    ]));
    assert_eq!(code, 0, "export: {err}");
    let generation = json(&stdout)["generation"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            w.work
                .path()
                .join(format!("store/cache1/{generation}/manifest.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["signer"], id.as_str());

    // The daemon signs its segments and chain heads through the vault too.
    let command = || {
        let mut c = w.cmd();
        c.args([
            "daemon",
            "--redis",
            &src.url(),
            "--to",
            &store,
            "--source",
            "cache1",
        ])
        .args([
            "--kek",
            &kek,
            "--signing-key",
            &signer,
            "--segment-interval-ms",
            "100",
        ])
        .arg("--state-dir")
        .arg(w.work.path().join("state"))
        .arg("--audit-log")
        .arg(w.work.path().join("daemon-audit.log"));
        c
    };
    let mut daemon = Daemon::spawn(command, w.work.path());
    daemon.wait_up();
    for i in 0..50 {
        src.client().ok(&["SET", &format!("after:{i}"), "v"]);
    }
    daemon.wait_durable(&src);
    daemon.stop();
    let signed = w
        .vault
        .log()
        .iter()
        .filter(|l| **l == format!("sign backup-signer/{version} by {SYSTEM_OID}"))
        .count();
    // One manifest each for the export and the daemon's base, one or more
    // segments, one head at the stop.
    assert!(signed >= 4, "{:?}", w.vault.log());
    // The daemon's records name the identity its KEK and signer used.
    let audit = std::fs::read_to_string(w.work.path().join("daemon-audit.log")).unwrap();
    let started: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "generation start")
        .collect();
    assert_eq!(started.len(), 1, "{audit}");
    let who = started[0]["azure_identity"].as_str().unwrap_or_default();
    assert!(who.contains(SYSTEM_OID), "{audit}");

    // A reader with the same Azure settings but its own trust.
    let text = std::fs::read_to_string(&w.config).unwrap();
    let reader = w.work.path().join("reader.toml");
    std::fs::write(&reader, &text[text.find("[azure]").unwrap()..]).unwrap();
    let restore = |trust: &std::path::Path| {
        let dst = RedisServer::start(&[]);
        let out = run(w
            .cmd_bare()
            .arg("--config")
            .arg(&reader)
            .args([
                "restore",
                "--redis",
                &dst.url(),
                "--from",
                &store,
                "--source",
                "cache1",
            ])
            .args(["--kek", &kek, "--trust"])
            .arg(trust));
        (dst, out)
    };
    let (dst, (code, _, err)) = restore(&w.work.path().join("signing.pub.pem"));
    assert_eq!(code, 1, "a backup by another signer was restored");
    let line = one_line_error(&err);
    assert!(
        line.contains("not a trusted signer") && line.contains(&id),
        "{line}"
    );
    assert_eq!(dst.client().ok(&["DBSIZE"]), Resp::Int(0));
    let (dst, (code, _, err)) = restore(&public);
    assert_eq!(code, 0, "restore: {err}");
    assert_eq!(dst.digest(), src.digest(), "restored data differs");
    let (code, _, err) = run(w
        .cmd_bare()
        .arg("--config")
        .arg(&reader)
        .args(["verify", "--from", &store, "--kek", &kek, "--trust"])
        .arg(&public));
    assert_eq!(code, 0, "verify: {err}");

    let export_signed_by = |signing_key: &str| {
        run(w.cmd().args([
            "export",
            "--redis",
            &src.url(),
            "--to",
            &store,
            "--source",
            "cache1",
            "--kek",
            &kek,
            "--signing-key",
            signing_key,
        ]))
    };
    // Without the 'sign' permission nothing is written.
    w.vault.permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey"]);
    let before = generation_count(&w.work.path().join("store/cache1"));
    let (code, _, err) = export_signed_by(&signer);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("'sign' permission") && line.contains("Key Vault Crypto User"),
        "{line}"
    );
    assert_eq!(
        generation_count(&w.work.path().join("store/cache1")),
        before,
        "a failed export left a folder"
    );
    // An RSA key cannot sign here.
    w.vault
        .permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey", "sign"]);
    let (code, _, err) = export_signed_by(&kek);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(line.contains("EC key on P-256"), "{line}");
}

/// Runs `cmd` with its output in files, reading its command line and
/// environment from /proc while it runs (what `ps` and other users see).
fn run_watched(mut cmd: Command, dir: &std::path::Path) -> (i32, String, String, String) {
    let out = dir.join("watched.out");
    let err = dir.join("watched.err");
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        for f in ["cmdline", "environ"] {
            if let Ok(b) = std::fs::read(format!("/proc/{}/{f}", child.id())) {
                seen.push_str(&String::from_utf8_lossy(&b));
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the command hangs");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
        seen,
    )
}

/// Secrets from files: a service principal's client secret
/// (`client_secret_file`) and a SAS token (`sas_token_file`) both work end to
/// end, and none of them, nor a bearer token issued, shows in any output (at
/// debug level), --json summary, audit record, or the process's command line
/// and environment.
#[tokio::test]
async fn secrets_from_files_never_show() {
    use common::token_endpoint::{CLIENT_SECRET, TENANT};
    const SP_OID: &str = "44444444-0000-0000-0000-000000000004";
    let sp = UserAssigned {
        client_id: "sp-app".into(),
        object_id: SP_OID.into(),
        resource_id: "-".into(),
    };
    let tokens = TokenEndpoint::start(None, vec![sp], 3600);
    let authority = tokens.url();
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let w = World::new(
        tokens,
        true,
        &format!(
            "credential = \"client-secret\"\nclient_id = \"sp-app\"\ntenant_id = \"{TENANT}\"\nauthority_host = \"{authority}\"\nclient_secret_file = \"{}\"",
            secret_file.display()
        ),
    );
    let bearer = w.tokens.token_for("https://storage.azure.com", SP_OID);
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let audit = w.work.path().join("audit.jsonl");
    let kek_pub = w.work.path().join("kek.pub.pem");
    let kek = w.work.path().join("kek.pem");
    let mut seen = String::new();
    let mut go = |args: &[&str], kek: &std::path::Path| {
        let mut c = w.cmd();
        c.env("REDVAULT_LOG", "debug")
            .arg("--audit-log")
            .arg(&audit)
            .args(args)
            .arg("--kek")
            .arg(kek);
        let (code, out, err, proc_seen) = run_watched(c, w.work.path());
        seen.push_str(&out);
        seen.push_str(&err);
        seen.push_str(&proc_seen);
        (code, out, err)
    };
    let (code, _, err) = go(
        &[
            "--json",
            "export",
            "--redis",
            &src.url(),
            "--to",
            "az://backups",
            "--source",
            "sp",
        ],
        &kek_pub,
    );
    assert_eq!(code, 0, "export with the client secret: {err}");
    assert!(
        w.tokens
            .requests()
            .iter()
            .any(|r| r.identity == "workload client_id=sp-app"
                && r.issued_to.as_deref() == Some(SP_OID)),
        "{:?}",
        w.tokens.requests()
    );

    // The SAS token from a file.
    let sas = String::from_utf8(
        Command::new("node")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/support/azurite-sas.js"),
            )
            .arg("backups")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let sig_encoded = sas.split("sig=").nth(1).unwrap().to_string();
    let sig = url::form_urlencoded::parse(format!("sig={sig_encoded}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let sas_file = secrets.path().join("sas");
    std::fs::write(&sas_file, &sas).unwrap();
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap().replace(
            "[azure.storage]\n",
            &format!(
                "[azure.storage]\nauth = \"sas\"\nsas_token_file = \"{}\"\n",
                sas_file.display()
            ),
        ),
    )
    .unwrap();
    let before = w.tokens.requests().len();
    let (code, _, err) = go(
        &[
            "--json",
            "export",
            "--redis",
            &src.url(),
            "--to",
            "az://backups",
            "--source",
            "sas",
        ],
        &kek_pub,
    );
    assert_eq!(code, 0, "export with the SAS token: {err}");
    let dst = RedisServer::start(&[]);
    // JSON log lines (--log-format json) are searched too.
    let (code, _, err) = go(
        &[
            "--json",
            "--log-format",
            "json",
            "import",
            "--redis",
            &dst.url(),
            "--from",
            "az://backups",
            "--source",
            "sp",
        ],
        &kek,
    );
    assert_eq!(code, 0, "import with the SAS token: {err}");
    assert!(err.contains("{\"timestamp\""), "JSON log lines: {err}");
    assert_eq!(dst.digest(), src.digest());
    assert_eq!(
        w.tokens.requests().len(),
        before,
        "storage by SAS asked for tokens"
    );

    let text = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    // The identity that got tokens is named (by ids); by SAS, none was used.
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let who = recs[0]["azure_identity"].as_str().unwrap_or_default();
    assert!(who.contains("sp-app") && who.contains(SP_OID), "{text}");
    assert!(recs[1].get("azure_identity").is_none(), "{text}");
    // What was searched: the debug log, and the processes' /proc entries.
    assert!(seen.contains("DEBUG"), "no debug output was seen");
    assert!(seen.contains("--audit-log"), "no command line was seen");
    for (what, canary) in [
        ("the client secret", CLIENT_SECRET),
        ("the SAS signature", sig.as_str()),
        ("the SAS signature (encoded)", sig_encoded.as_str()),
        ("a bearer token", bearer.as_str()),
    ] {
        assert!(canary.len() > 16, "{what}: {canary}");
        assert!(!text.contains(canary), "{what} in the audit log");
        assert!(!seen.contains(canary), "{what} in the output or /proc");
    }
}

/// With no identity pinned: system-assigned if the host has one, else the first
/// configured user-assigned one; a pinned one is used as given.
#[tokio::test]
async fn managed_identity_choice() {
    let ua = |n: u8| {
        UserAssigned {
        client_id: format!("client-{n}"),
        object_id: format!("22222222-0000-0000-0000-00000000000{n}"),
        resource_id: format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua{n}"),
    }
    };
    let list = |w: &World| run(w.cmd().args(["--json", "list", "--from", "az://backups"]));

    // The host has both: the system-assigned identity wins.
    let w = World::new(
        TokenEndpoint::start(Some(SYSTEM_OID), vec![ua(1)], 3600),
        true,
        "user_assigned = [\"client_id=client-1\"]",
    );
    let (code, _, err) = list(&w);
    assert_eq!(code, 0, "{err}");
    let reqs = w.tokens.requests();
    assert!(reqs.iter().all(|r| r.identity == "system"), "{reqs:?}");
    drop(w);

    // No system-assigned identity: the first configured user-assigned one.
    let w = World::new(
        TokenEndpoint::start(None, vec![ua(1), ua(2)], 3600),
        true,
        "user_assigned = [\"client_id=client-2\", \"client_id=client-1\"]",
    );
    let (code, _, err) = list(&w);
    assert_eq!(code, 0, "{err}");
    let reqs = w.tokens.requests();
    assert_eq!(reqs[0].identity, "system", "{reqs:?}");
    assert!(
        reqs[1..].iter().all(|r| r.identity == "client_id=client-2"),
        "{reqs:?}"
    );
    assert!(reqs.len() >= 2);
    drop(w);

    // Pinned by resource id.
    let w = World::new(
        TokenEndpoint::start(Some(SYSTEM_OID), vec![ua(1)], 3600),
        true,
        &format!("resource_id = \"{}\"", ua(1).resource_id),
    );
    let (code, _, err) = list(&w);
    assert_eq!(code, 0, "{err}");
    let reqs = w.tokens.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.identity == format!("msi_res_id={}", ua(1).resource_id)),
        "{reqs:?}"
    );
    drop(w);

    // Neither: a named error.
    let w = World::new(TokenEndpoint::start(None, vec![ua(1)], 3600), true, "");
    let (code, _, err) = list(&w);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("no system-assigned identity and no user-assigned one is configured"),
        "{line}"
    );
}

/// Workload identity: a federated token file exchanged at the (loopback) Entra ID
/// authority for storage tokens.
#[tokio::test]
async fn workload_identity() {
    use common::token_endpoint::{FEDERATED_ASSERTION, TENANT};
    let ua = UserAssigned {
        client_id: "workload-app".into(),
        object_id: "33333333-0000-0000-0000-000000000003".into(),
        resource_id: "-".into(),
    };
    let tokens = TokenEndpoint::start(None, vec![ua], 3600);
    let token_file =
        std::env::temp_dir().join(format!("redvault-federated-{}", std::process::id()));
    std::fs::write(&token_file, FEDERATED_ASSERTION).unwrap();
    let authority = tokens.url();
    let w = World::new(
        tokens,
        true,
        &format!(
            "credential = \"workload-identity\"\nclient_id = \"workload-app\"\ntenant_id = \"{TENANT}\"\ntoken_file = \"{}\"\nauthority_host = \"{authority}\"",
            token_file.display()
        ),
    );
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (code, _, err) = w.export(
        &src.url(),
        "az://backups",
        &w.work.path().join("kek.pub.pem").display().to_string(),
    );
    assert_eq!(code, 0, "{err}");
    let reqs = w.tokens.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.identity == "workload client_id=workload-app" && r.issued_to.is_some()),
        "{reqs:?}"
    );
    let dst = RedisServer::start(&[]);
    let (code, _, err) = w.import(
        &dst.url(),
        "az://backups",
        &w.work.path().join("kek.pem").display().to_string(),
        None,
    );
    let _ = std::fs::remove_file(&token_file);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), src.digest());
}

/// Rotation: backups wrapped under version 1, a new version 2, `keys rewrap`
/// moves every keyring to version 2; with version 1 disabled, a backup made
/// before the rotation and one made after both restore.
#[tokio::test]
async fn key_vault_rotation_keeps_backups_restorable() {
    let w = World::new(
        TokenEndpoint::start(Some(SYSTEM_OID), vec![], 3600),
        false,
        "",
    );
    let v1 = w.vault.add_rsa_version("kek");
    w.vault.permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey"]);
    let kek = w.kek_url("kek");
    let store = w.file_store();
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (code, stdout, err) = w.export(&src.url(), &store, &kek);
    assert_eq!(code, 0, "{err}");
    let before = json(&stdout)["generation"].as_str().unwrap().to_string();
    let digest_before = src.digest();

    let v2 = w.vault.add_rsa_version("kek");
    src.client().ok(&["SET", "after-rotation", "yes"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, stdout, err) = w.export(&src.url(), &store, &kek);
    assert_eq!(code, 0, "{err}");
    let after = json(&stdout)["generation"].as_str().unwrap().to_string();
    let digest_after = src.digest();

    let status = |w: &World| {
        let (code, stdout, err) = run(w.cmd().args(["--json", "keys", "status", "--from", &store]));
        assert_eq!(code, 0, "{err}");
        json(&stdout)
    };
    let s = status(&w);
    assert_eq!(s[0]["generation"], before.as_str());
    assert_eq!(s[0]["keks"], serde_json::json!([format!("{kek}/{v1}")]));
    assert_eq!(s[1]["keks"], serde_json::json!([format!("{kek}/{v2}")]));

    let (code, stdout, err) = run(w.cmd().args([
        "--json", "keys", "rewrap", "--from", &store, "--kek", &kek, "--to", &kek,
    ]));
    assert_eq!(code, 0, "rewrap: {err}");
    assert_eq!(json(&stdout)["changed"], 1, "{stdout}");
    let s = status(&w);
    assert_eq!(
        s[0]["keks"],
        serde_json::json!([format!("{kek}/{v2}")]),
        "{s}"
    );
    assert_eq!(
        s[1]["keks"],
        serde_json::json!([format!("{kek}/{v2}")]),
        "{s}"
    );

    w.vault.disable("kek", &v1);
    let seen = w.vault.log().len();
    for (generation, digest) in [(&before, &digest_before), (&after, &digest_after)] {
        let dst = RedisServer::start(&[]);
        let (code, _, err) = w.import(&dst.url(), &store, &kek, Some(generation));
        assert_eq!(code, 0, "import {generation}: {err}");
        assert_eq!(&dst.digest(), digest, "{generation} restored differently");
    }
    // Both restores unwrapped with version 2 only.
    let log = w.vault.log();
    assert!(log[seen..].iter().all(|l| l.contains(&v2)), "{log:?}");
}

/// A local RSA key rotated to another: the new private key opens the backup, the
/// old one no longer does.
#[tokio::test]
async fn local_key_rotation() {
    let w = World::new(
        TokenEndpoint::start(Some(SYSTEM_OID), vec![], 3600),
        false,
        "",
    );
    let dir = w.work.path();
    let new_key = dir.join("new.pem");
    let (code, _, err) = run(redvault()
        .args(["keys", "generate", "--bits", "2048", "--out"])
        .arg(&new_key));
    assert_eq!(code, 0, "{err}");
    let old = dir.join("kek.pem").display().to_string();
    let store = w.file_store();
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let (code, _, err) = w.export(
        &src.url(),
        &store,
        &dir.join("kek.pub.pem").display().to_string(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(w
        .cmd()
        .args(["keys", "rewrap", "--from", &store, "--kek", &old, "--to"])
        .arg(dir.join("new.pub.pem")));
    assert_eq!(code, 0, "{err}");
    // list and keys status agree on the KEK that wraps the data key now.
    let (code, stdout, err) = run(w.cmd().args(["--json", "keys", "status", "--from", &store]));
    assert_eq!(code, 0, "{err}");
    let now = json(&stdout)[0]["keks"].clone();
    let (code, stdout, err) = run(w.cmd().args(["--json", "list", "--from", &store]));
    assert_eq!(code, 0, "{err}");
    let listed = json(&stdout)[0].clone();
    assert_eq!(listed["keks"], now, "{listed}");
    assert_ne!(
        listed["keks"], listed["manifest"]["keks"],
        "the manifest keeps the KEK at write time; list shows the current one"
    );
    let dst = RedisServer::start(&[]);
    let (code, _, err) = w.import(&dst.url(), &store, &old, None);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("was wrapped by local-rsa:"),
        "{err}"
    );
    let (code, _, err) = w.import(&dst.url(), &store, &new_key.display().to_string(), None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), src.digest());
}

/// Misconfigurations give one line naming the cause, and nothing is written.
#[tokio::test]
async fn key_vault_and_storage_errors_name_the_cause() {
    let w = World::new(
        TokenEndpoint::start(Some(SYSTEM_OID), vec![], 3600),
        true,
        "",
    );
    w.vault.add_rsa_version("kek");
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let store = w.file_store();
    let kek = w.kek_url("kek");
    let stored = || {
        std::fs::read_dir(w.work.path().join("store"))
            .unwrap()
            .count()
    };

    // May get, may not wrap.
    w.vault.permit(SYSTEM_OID, &["get"]);
    let (code, _, err) = w.export(&src.url(), &store, &kek);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("lacks the 'wrapKey' permission on Key Vault key"),
        "{line}"
    );
    assert!(
        line.contains(SYSTEM_OID),
        "the message names the identity: {line}"
    );
    assert_eq!(stored(), 0, "nothing may be written without a usable key");

    // A backup-only host: may wrap, may not unwrap.
    w.vault.permit(SYSTEM_OID, &["get", "wrapKey"]);
    let (code, _, err) = w.export(&src.url(), &store, &kek);
    assert_eq!(code, 0, "{err}");
    let dst = RedisServer::start(&[]);
    let (code, _, err) = w.import(&dst.url(), &store, &kek, None);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("lacks the 'unwrapKey' permission"),
        "{err}"
    );

    // Not an RSA key.
    w.vault.permit(SYSTEM_OID, &["get", "wrapKey", "unwrapKey"]);
    w.vault.add_version("ec-key", "EC", None);
    let (code, _, err) = w.export(&src.url(), &store, &w.kek_url("ec-key"));
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err)
            .contains("is of type EC; redvault wraps with RSA-OAEP-256 and needs an RSA key"),
        "{err}"
    );

    // A key that does not exist.
    let (code, _, err) = w.export(&src.url(), &store, &w.kek_url("nope"));
    assert_eq!(code, 1);
    assert!(one_line_error(&err).contains("does not exist"), "{err}");

    // Plain http is refused.
    let (code, _, err) = w.export(&src.url(), &store, &kek.replace("https://", "http://"));
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("Key Vault is reached over https only"),
        "{err}"
    );

    // With challenge checking on (the default), a loopback vault asking for a
    // vault.azure.net token is refused before any token is sent.
    let strict = w.work.path().join("strict.toml");
    std::fs::write(
        &strict,
        std::fs::read_to_string(&w.config).unwrap().replace(
            "verify_challenge_resource = false",
            "verify_challenge_resource = true",
        ),
    )
    .unwrap();
    let (code, _, err) = run(w.cmd_bare().arg("--config").arg(&strict).args([
        "export",
        "--redis",
        &src.url(),
        "--to",
        &store,
        "--kek",
        &kek,
    ]));
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("outside its own domain: refused"),
        "{err}"
    );

    // A missing container says so.
    let (code, _, err) = w.export(&src.url(), "az://no-such-container", &kek);
    assert_eq!(code, 1);
    assert!(
        one_line_error(&err).contains("does not exist in account devstoreaccount1"),
        "{err}"
    );

    // Azurite rejects a token for another audience; the message names the identity.
    w.tokens.state.lock().unwrap().aud_override = Some("https://wrong.example".into());
    let (code, _, err) = w.export(&src.url(), "az://backups", &kek);
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains("rejected the credentials of managed identity (system-assigned)"),
        "{line}"
    );
}

/// Entra ID AUTH to Redis: the principal's object id as user, its token for
/// https://redis.azure.com as password; the default user is off.
#[tokio::test]
async fn entra_id_auth_to_redis() {
    let tokens = TokenEndpoint::start(Some(SYSTEM_OID), vec![], 3600);
    let token = tokens.token_for("https://redis.azure.com", SYSTEM_OID);
    let w = World::new(tokens, false, "[azure.redis]\nentra_id = true");
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let digest = src.digest();
    let mut c = src.client();
    c.ok(&[
        "ACL",
        "SETUSER",
        SYSTEM_OID,
        "on",
        &format!(">{token}"),
        "~*",
        "&*",
        "+@all",
    ]);
    c.ok(&["ACL", "SETUSER", "default", "off"]);
    let store = w.file_store();
    let pubkey = w.work.path().join("kek.pub.pem").display().to_string();
    let (code, _, err) = w.export(&src.url(), &store, &pubkey);
    assert_eq!(code, 0, "export with Entra ID auth: {err}");
    assert!(w
        .tokens
        .requests()
        .iter()
        .any(|r| r.resource == "https://redis.azure.com"));

    // Without it, the same Redis refuses us.
    let plain = w.work.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let (code, _, err) = run(w.cmd_bare().arg("--config").arg(&plain).args([
        "export",
        "--redis",
        &src.url(),
        "--to",
        &store,
        "--kek",
        &pubkey,
    ]));
    assert_eq!(code, 1, "{err}");

    let dst = RedisServer::start(&[]);
    let (code, _, err) = run(w
        .cmd_bare()
        .arg("--config")
        .arg(&plain)
        .args(["import", "--redis", &dst.url(), "--from", &store, "--kek"])
        .arg(w.work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(dst.digest(), digest);
}

/// A long import re-authenticates before the token expires: with tokens this
/// close to expiry, every batch is preceded by AUTH with a fresh token.
#[tokio::test]
async fn entra_id_reauth_during_import() {
    let tokens = TokenEndpoint::start(Some(SYSTEM_OID), vec![], 200);
    let token = tokens.token_for("https://redis.azure.com", SYSTEM_OID);
    let w = World::new(tokens, false, "[azure.redis]\nentra_id = true");
    let src = RedisServer::start(&[]);
    {
        let mut c = src.client();
        fill_all_types(&mut c);
        for i in 0..400 {
            c.ok(&["SET", &format!("k:{i}"), "v"]);
        }
    }
    let store = w.file_store();
    let plain = w.work.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let (code, _, err) = run(w
        .cmd_bare()
        .arg("--config")
        .arg(&plain)
        .args(["export", "--redis", &src.url(), "--to", &store, "--kek"])
        .arg(w.work.path().join("kek.pub.pem")));
    assert_eq!(code, 0, "{err}");

    let dst = RedisServer::start(&[]);
    let mut admin = dst.client();
    admin.ok(&[
        "ACL",
        "SETUSER",
        SYSTEM_OID,
        "on",
        &format!(">{token}"),
        "~*",
        "&*",
        "+@all",
    ]);
    admin.ok(&["ACL", "SETUSER", "default", "off"]);
    let (code, _, err) = run(w
        .cmd()
        .args([
            "import",
            "--redis",
            &dst.url(),
            "--from",
            &store,
            "--connections",
            "2",
            "--pipeline",
            "50",
            // The RESTORE loader's connections are the ones that re-AUTH.
            "--via",
            "restore",
            "--kek",
        ])
        .arg(w.work.path().join("kek.pem")));
    assert_eq!(code, 0, "{err}");
    let stats = match admin.cmd(&[b"INFO", b"commandstats"]).unwrap() {
        Resp::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    let auth_calls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_auth:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Two connections AUTH when they connect and again before their token expires.
    assert!(
        auth_calls >= 4,
        "no re-AUTH during the import: {auth_calls} AUTH calls\n{stats}"
    );
    admin.ok(&["ACL", "SETUSER", "default", "on", "nopass"]);
    assert_eq!(dst.digest(), src.digest());
}

/// Hosts without an identity: the account key, with a warning, and no token asked for.
#[tokio::test]
async fn account_key_storage() {
    let w = World::new(
        TokenEndpoint::start(Some(SYSTEM_OID), vec![], 3600),
        true,
        "",
    );
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config)
            .unwrap()
            .replace("[azure.storage]\n", "[azure.storage]\nauth = \"key\"\n"),
    )
    .unwrap();
    let src = RedisServer::start(&[]);
    fill_all_types(&mut src.client());
    let pubkey = w.work.path().join("kek.pub.pem").display().to_string();
    let (code, _, err) = run(w
        .cmd()
        .env("AZURE_STORAGE_ACCOUNT_KEY", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
        .args(["export", "--redis", &src.url(), "--to", "az://backups", "--kek", &pubkey]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("a managed identity is the stronger choice"),
        "{err}"
    );
    assert!(w.tokens.requests().is_empty(), "{:?}", w.tokens.requests());

    // Without the key: a named error, before Redis is asked for anything.
    let (code, _, err) = run(w.cmd().args([
        "export",
        "--redis",
        &src.url(),
        "--to",
        "az://backups",
        "--kek",
        &pubkey,
    ]));
    assert_eq!(code, 1);
    let line = one_line_error(&err);
    assert!(
        line.contains(
            "neither azure.storage.account_key_file nor AZURE_STORAGE_ACCOUNT_KEY is set"
        ),
        "{line}"
    );

    // The key from a file (a systemd credential) instead.
    let key_file = w.work.path().join("storage-key");
    std::fs::write(&key_file, "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==\n").unwrap();
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap().replace(
            "auth = \"key\"\n",
            &format!(
                "auth = \"key\"\naccount_key_file = \"{}\"\n",
                key_file.display()
            ),
        ),
    )
    .unwrap();
    let (code, _, err) = run(w.cmd().args([
        "export",
        "--redis",
        &src.url(),
        "--to",
        "az://backups",
        "--kek",
        &pubkey,
    ]));
    assert_eq!(code, 0, "{err}");
}

/// Every example config in config/ is valid, and none makes a network call when
/// the store is local.
#[test]
fn config_examples_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let store = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let (code, _, err) = run(redvault()
                .arg("--config")
                .arg(&path)
                .args(["list", "--from"])
                .arg(format!("file://{}", store.path().display())));
            assert_eq!(code, 0, "{}: {err}", path.display());
            n += 1;
        }
    }
    assert!(n >= 5, "{n} examples");
}
