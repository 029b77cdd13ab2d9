//! A real Azurite blob service (npm package, installed into .tools/ by
//! scripts/setup) on a free loopback port, telemetry off, stopped on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Azurite {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The CA that signed its certificate, when it serves HTTPS.
    ca: Option<std::path::PathBuf>,
    child: Child,
}

fn tools() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/azurite/node_modules/.bin/azurite-blob")
}

impl Azurite {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// HTTPS with OAuth on (`--oauth basic`): bearer tokens are checked for
    /// issuer, audience and lifetime.
    pub fn start_oauth(ca: &super::tls::TestCa) -> Self {
        Self::start_with(Some(ca))
    }

    fn start_with(tls: Option<&super::tls::TestCa>) -> Self {
        let bin = tools();
        assert!(
            bin.exists(),
            "Azurite is missing at {}: run scripts/setup",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = super::redis::free_port();
        let mut cmd = Command::new(bin);
        if let Some(t) = tls {
            cmd.arg("--oauth")
                .arg("basic")
                .arg("--cert")
                .arg(&t.cert)
                .arg("--key")
                .arg(&t.key);
        }
        let child = cmd
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--disableTelemetry",
                "--silent",
                "--loose",
                "--skipApiVersionCheck",
                "--location",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob (run scripts/setup)");
        let a = Azurite {
            port,
            dir,
            ca: tls.map(|t| t.ca.clone()),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Azurite did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        a
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn create_container(&self, name: &str) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/azurite-create-container.js");
        let mut cmd = Command::new("node");
        if let Some(ca) = &self.ca {
            cmd.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let out = cmd
            .arg(script)
            .arg(self.endpoint())
            .arg(name)
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The environment object_store reads to reach this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
            ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
