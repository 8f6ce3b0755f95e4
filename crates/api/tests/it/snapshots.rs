//! Snapshots of response bodies clients depend on (insta, with ids, times and tokens redacted).

use serde_json::json;
use testkit::TestApp;

#[tokio::test]
async fn response_shapes() {
    let app = TestApp::spawn().await;
    let signup = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "shape@example.com", "password": testkit::PASSWORD, "name": "Shape"}),
        )
        .await;
    insta::assert_json_snapshot!("signup", signup.body, {
        ".user.id" => "[id]",
        ".user.created_at" => "[time]",
        ".access_token" => "[jwt]",
        ".refresh_token" => "[token]",
    });
    let problem = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "bad", "password": "x", "name": ""}),
        )
        .await;
    insta::assert_json_snapshot!("validation_problem", problem.body, { ".request_id" => "[request-id]" });
    let token = signup.body["access_token"].as_str().unwrap();
    let task = app
        .post(
            "/v1/tasks",
            Some(token),
            json!({"title": "Snapshot me", "priority": "high", "due_at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    insta::assert_json_snapshot!("task", task.body, {
        ".id" => "[id]",
        ".created_at" => "[time]",
        ".updated_at" => "[time]",
    });
}
