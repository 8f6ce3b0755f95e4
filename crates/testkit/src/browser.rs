//! Browser tests: [`drive`] runs `browser/drive.py` (pip `playwright` driving Debian's headless
//! `/usr/bin/chromium`) through the account pages and returns what the page showed. Both are
//! installed by `deploy/scripts/ensure-browser.sh` (`just tools`); a missing one fails the test
//! with that hint.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;

/// Runs `drive.py <args>` (at most 60 s) and returns its JSON; panics with its stderr on failure,
/// or when the page logged a script or CSP error.
pub async fn drive(args: &[&str]) -> Value {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `just tools` (deploy/scripts/ensure-browser.sh)"
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/drive.py");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 on PATH");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the browser run took over 60 s")
        .expect("drive.py runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "drive.py {args:?} failed ({}); is playwright installed (`just tools`)?\n{stderr}",
        out.status
    );
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drive.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(
        value["errors"],
        serde_json::json!([]),
        "the page logged errors: {value}"
    );
    value
}
