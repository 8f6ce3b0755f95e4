//! Shutdown as the deployments rely on it (Kubernetes readiness + endpoints, compose, a load
//! balancer polling `/health/ready`; README "Operations" → Restarts): the real `api` binary.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::{ApiProcess, Http};

fn signal(pid: u32, sig: &str) {
    let sent = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(sent, "kill -{sig} {pid}");
}

/// SIGTERM: `/health/ready` answers 503 `shutting_down` at once, while every other route is still
/// served — on new connections too — for `SHUTDOWN_DELAY`; then the process exits 0.
#[tokio::test]
async fn sigterm_turns_ready_off_at_once_keeps_serving_for_the_delay_then_exits_0() {
    let delay = Duration::from_secs(2);
    let mut api = ApiProcess::spawn(env!("CARGO_BIN_EXE_api"), &[("SHUTDOWN_DELAY", "2s")]).await;
    api.get("/health/ready", None).await.expect_status(StatusCode::OK);

    let sent = Instant::now();
    signal(api.pid(), "TERM");
    loop {
        let res = api.get("/health/ready", None).await;
        if res.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(res.body["code"], "shutting_down", "{}", res.body);
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "/health/ready still {} 500 ms after SIGTERM",
            res.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut served = 0;
    while sent.elapsed() < delay - Duration::from_millis(400) {
        // A new client each time: a new connection, as a load balancer's next request would be.
        let fresh = Http::new(api.base.clone());
        fresh.get("/health/live", None).await.expect_status(StatusCode::OK);
        fresh.get("/openapi.json", None).await.expect_status(StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "only {served} rounds served during the delay");

    let status = api
        .wait_exit(Duration::from_secs(10))
        .expect("api still running 10 s after the delay");
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", api.log());
    assert!(took >= delay, "exited after {took:?}, before SHUTDOWN_DELAY");
}

/// Ctrl-C (SIGINT, as in `just run`) stops at once: no drain delay.
#[tokio::test]
async fn sigint_stops_without_the_delay() {
    let mut api = ApiProcess::spawn(env!("CARGO_BIN_EXE_api"), &[("SHUTDOWN_DELAY", "30s")]).await;
    let sent = Instant::now();
    signal(api.pid(), "INT");
    let status = api
        .wait_exit(Duration::from_secs(5))
        .expect("api still running 5 s after SIGINT");
    assert!(status.success(), "exit status {status}:\n{}", api.log());
    assert!(sent.elapsed() < Duration::from_secs(5));
}
