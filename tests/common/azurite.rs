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
    /// The command line, to start it again after `stop`.
    argv: Vec<std::ffi::OsString>,
}

fn spawn(argv: &[std::ffi::OsString]) -> Child {
    Command::new(tools())
        .args(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start azurite-blob (run scripts/setup)")
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
        // A free port can be taken by another test between choosing and
        // binding it: then Azurite exits, and another port is tried.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = super::redis::free_port();
            let mut argv: Vec<std::ffi::OsString> = vec![];
            if let Some(t) = tls {
                argv.extend([
                    "--oauth".into(),
                    "basic".into(),
                    "--cert".into(),
                    t.cert.clone().into(),
                    "--key".into(),
                    t.key.clone().into(),
                ]);
            }
            argv.extend(
                [
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--disableTelemetry",
                    "--silent",
                    "--loose",
                    "--skipApiVersionCheck",
                    "--location",
                ]
                .iter()
                .map(std::ffi::OsString::from),
            );
            argv.push(dir.path().into());
            let child = spawn(&argv);
            let mut a = Azurite {
                port,
                dir,
                ca: tls.map(|t| t.ca.clone()),
                child,
                argv,
            };
            if a.wait_listening() {
                return a;
            }
        }
        panic!("Azurite could not bind a free port in 5 tries");
    }

    /// Stops the service (SIGTERM, so it saves its metadata): storage is down.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port and data folder.
    pub fn start_again(&mut self) {
        self.child = spawn(&self.argv);
        assert!(
            self.wait_listening(),
            "Azurite did not start again on port {}",
            self.port
        );
    }

    /// True once Azurite itself listens on its port; false if it exited
    /// first (the port was taken). A successful connect is not enough: the
    /// port may be another test's server, or the kernel may connect the
    /// probing socket to itself, so the listening socket must be one of the
    /// child's open files.
    fn wait_listening(&mut self) -> bool {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if super::redis::listens(self.child.id(), port) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "Azurite did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
