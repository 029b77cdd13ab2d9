//! The Debian package (`scripts/package`, from the binary under test): lintian
//! (Debian's) finds nothing wrong, it holds exactly the expected files with
//! the expected modes, its config is a conffile, no maintainer script starts
//! anything, the units inside pass `systemd-analyze verify`, and the packaged
//! binary runs from an unpacked tree.

use std::path::{Path, PathBuf};
use std::process::Command;

fn output(cmd: &mut Command, what: &str) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} could not run ({e}): run scripts/setup"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn build(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, text) = output(
        Command::new(root.join("scripts/package"))
            .args(["--binary", env!("CARGO_BIN_EXE_redvault"), "--out"])
            .arg(out),
        "scripts/package",
    );
    assert!(ok, "scripts/package failed: {text}");
    let deb = PathBuf::from(text.lines().last().unwrap_or_default().trim());
    assert!(deb.exists(), "{text}");
    deb
}

#[test]
fn the_debian_package_is_clean_complete_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("redvault_{version}_amd64.deb")
    );

    // Lintian: no error and no warning (the two deliberate exceptions are
    // overridden inside the package, with why).
    let (ok, text) = output(
        Command::new("lintian")
            .args(["--fail-on", "error,warning"])
            .arg(&deb),
        "lintian",
    );
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(ok && tags.is_empty(), "lintian: {text}");

    // Exactly these files, with these modes, all root's.
    let (ok, listing) = output(
        Command::new("dpkg-deb").arg("--contents").arg(&deb),
        "dpkg-deb",
    );
    assert!(ok, "{listing}");
    let mut files: Vec<(String, String)> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[1], "root/root", "{l}");
            (f[5].trim_start_matches("./").to_string(), f[0].to_string())
        })
        .collect();
    files.sort();
    let mut want: Vec<(String, String)> = [
        ("etc/redvault/redvault.toml", "-rw-r-----"),
        ("lib/systemd/system/redvault-drill.service", "-rw-r--r--"),
        ("lib/systemd/system/redvault-drill.timer", "-rw-r--r--"),
        ("lib/systemd/system/redvault.service", "-rw-r--r--"),
        ("usr/bin/redvault", "-rwxr-xr-x"),
        (
            "usr/share/bash-completion/completions/redvault",
            "-rw-r--r--",
        ),
        ("usr/share/doc/redvault/changelog.gz", "-rw-r--r--"),
        ("usr/share/doc/redvault/copyright", "-rw-r--r--"),
        (
            "usr/share/fish/vendor_completions.d/redvault.fish",
            "-rw-r--r--",
        ),
        ("usr/share/lintian/overrides/redvault", "-rw-r--r--"),
        ("usr/share/man/man1/redvault.1.gz", "-rw-r--r--"),
        ("usr/share/redvault/daemon.toml", "-rw-r--r--"),
        ("usr/share/redvault/grafana-dashboard.json", "-rw-r--r--"),
        ("usr/share/redvault/redvault-alerts.yml", "-rw-r--r--"),
        ("usr/share/redvault/redvault.toml", "-rw-r--r--"),
        ("usr/share/zsh/vendor-completions/_redvault", "-rw-r--r--"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(files, want, "{listing}");

    // The config is a conffile; the maintainer scripts enable, never start.
    let control = dir.path().join("control");
    let (ok, text) = output(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(&deb)
            .arg(&control),
        "dpkg-deb",
    );
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/redvault/redvault.toml"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("deb-systemd-helper enable redvault.service"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(control.join(script)).unwrap();
        for starting in [
            "start redvault",
            "restart",
            "systemctl start",
            "invoke start",
        ] {
            assert!(
                !text.contains(starting),
                "{script} starts something: {text}"
            );
        }
    }

    // Unpacked into a throwaway tree: the binary runs, and the units pass
    // systemd-analyze verify (pointed at the unpacked binary).
    let tree = dir.path().join("root");
    let (ok, text) = output(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        "dpkg-deb",
    );
    assert!(ok, "{text}");
    let bin = tree.join("usr/bin/redvault");
    let (ok, text) = output(Command::new(&bin).arg("--version"), "the packaged redvault");
    assert!(
        ok && text.starts_with(&format!("redvault {version}\n")),
        "{text}"
    );
    let mut units = vec![];
    for name in [
        "redvault.service",
        "redvault-drill.service",
        "redvault-drill.timer",
    ] {
        let unit = std::fs::read_to_string(tree.join("lib/systemd/system").join(name)).unwrap();
        assert!(
            !unit.contains("/usr/local/bin"),
            "{name} names /usr/local/bin"
        );
        let copy = dir.path().join(name);
        std::fs::write(
            &copy,
            unit.replace("/usr/bin/redvault", bin.to_str().unwrap()),
        )
        .unwrap();
        units.push(copy);
    }
    let (ok, text) = output(
        Command::new("systemd-analyze").arg("verify").args(&units),
        "systemd-analyze",
    );
    assert!(ok && text.trim().is_empty(), "{text}");
}
