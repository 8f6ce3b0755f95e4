//! SIGTERM during a burst of jobs (a rolling restart of the worker): none lost, none doubled.

use std::time::Duration;

use testkit::TestApp;

use crate::support::{Smtp, Worker, count_audit, eventually};

const N: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_loses_no_job_and_doubles_none() {
    let app = TestApp::spawn().await;
    // Each send is held 150 ms at RCPT and two run at a time: the burst lasts ≥ 2 s.
    let smtp = Smtp::start(0.15);
    let slow = [("WORKER_CONCURRENCY", "2".to_owned())];
    let mut first = Worker::spawn(&app, Some(&smtp), &slow);
    for i in 0..N {
        app.signup(&format!("burst{i}@example.com")).await;
    }
    eventually(Duration::from_secs(30), "the first mails of the burst", || async {
        (smtp.messages().len() >= 3).then_some(())
    })
    .await;
    let status = first.terminate(Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}\n{}", first.log());
    let before = smtp.messages().len();
    assert!(before < N, "the burst was over before SIGTERM ({before} of {N} sent)");

    // The replacement takes over what the first left: unstarted jobs, and any it had fetched.
    let _second = Worker::spawn(&app, Some(&smtp), &[]);
    eventually(Duration::from_secs(90), "every verification mail", || async {
        (smtp.messages().len() >= N).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "every sign-up audit row", || async {
        (count_audit(&app, "signup").await == N as i64).then_some(())
    })
    .await;
    // Late duplicates would arrive within a few poll intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    for i in 0..N {
        let to = format!("burst{i}@example.com");
        let n = mails
            .iter()
            .filter(|m| m.contains(&format!("To: {to}")) || m.contains(&format!("<{to}>")))
            .count();
        assert_eq!(n, 1, "{to}: {n} mails ({before} were sent before SIGTERM)");
    }
    assert_eq!(mails.len(), N, "{before} were sent before SIGTERM");
    assert_eq!(count_audit(&app, "signup").await, N as i64);
}
