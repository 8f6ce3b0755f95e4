//! `/v1/users/me` and user administration.

use serde_json::json;
use testkit::{PASSWORD, StatusCode, TestApp};
use uuid::Uuid;

#[tokio::test]
async fn me_patch_name_and_reject_privileged_fields() {
    let app = TestApp::spawn().await;
    let s = app.signup("me@example.com").await;
    let res = app
        .patch("/v1/users/me", Some(&s.access), json!({"name": "  Renamed  "}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.body["name"], "Renamed");
    for field in ["role", "id", "email_verified", "email"] {
        let mut body = json!({"name": "X"});
        body[field] = json!(if field == "email_verified" {
            json!(true)
        } else {
            json!("admin")
        });
        let res = app.patch("/v1/users/me", Some(&s.access), body).await;
        assert_eq!(
            res.assert_problem(422, "validation_failed")["errors"][0]["field"],
            field
        );
    }
    let me = app.get("/v1/users/me", Some(&s.access)).await;
    assert_eq!(
        (me.body["role"].as_str(), me.body["name"].as_str()),
        (Some("user"), Some("Renamed"))
    );
    // An empty patch changes nothing.
    assert_eq!(
        app.patch("/v1/users/me", Some(&s.access), json!({})).await.body["name"],
        "Renamed"
    );
    app.patch("/v1/users/me", None, json!({}))
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn password_change_needs_current_and_revokes_other_sessions() {
    let app = TestApp::spawn().await;
    let s = app.signup("pw@example.com").await;
    let other = app.login("pw@example.com", PASSWORD).await;
    let other_access = other.body["access_token"].as_str().unwrap().to_owned();

    let res = app
        .patch("/v1/users/me", Some(&s.access), json!({"password": "new-password-99"}))
        .await;
    assert_eq!(
        res.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "current_password"
    );
    let res = app
        .patch(
            "/v1/users/me",
            Some(&s.access),
            json!({"password": "new-password-99", "current_password": "wrong-one"}),
        )
        .await;
    res.assert_problem(403, "invalid_current_password");
    let res = app
        .patch(
            "/v1/users/me",
            Some(&s.access),
            json!({"password": "short", "current_password": PASSWORD}),
        )
        .await;
    res.assert_problem(422, "validation_failed");

    let res = app
        .patch(
            "/v1/users/me",
            Some(&s.access),
            json!({"password": "new-password-99", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // The other session is dead at once; the current one continues.
    app.get("/v1/users/me", Some(&other_access))
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.get("/v1/users/me", Some(&s.access)).await.status, StatusCode::OK);
    app.login("pw@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(
        app.login("pw@example.com", "new-password-99").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_routes_need_admin() {
    let app = TestApp::spawn().await;
    let user = app.signup("plain@example.com").await;
    let other = app.signup("other@example.com").await;
    app.get("/v1/users", Some(&user.access))
        .await
        .assert_problem(403, "forbidden");
    app.get(&format!("/v1/users/{}", other.user_id), Some(&user.access))
        .await
        .assert_problem(403, "forbidden");
    app.post(
        "/v1/users",
        Some(&user.access),
        json!({"email": "x@example.com", "password": PASSWORD, "name": "X", "role": "admin"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.patch(
        &format!("/v1/users/{}", user.user_id),
        Some(&user.access),
        json!({"role": "admin"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.delete(&format!("/v1/users/{}", other.user_id), Some(&user.access))
        .await
        .assert_problem(403, "forbidden");
    app.get("/v1/users", None).await.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn admin_lists_with_cursor_and_prefix_filter() {
    let app = TestApp::spawn().await;
    let admin = app.admin("admin@example.com").await;
    for i in 0..5 {
        app.signup(&format!("user{i}@example.com")).await;
    }
    app.signup("zed@other.org").await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users?limit=2&cursor={c}"),
            None => "/v1/users?limit=2".to_owned(),
        };
        let page = app.get(&path, Some(&admin.access)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["email"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen[0], "admin@example.com", "creation order");
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 7);

    let filtered = app.get("/v1/users?q=USER", Some(&admin.access)).await;
    let emails: Vec<&str> = filtered.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails.len(), 5, "{emails:?}");
    assert!(emails.iter().all(|e| e.starts_with("user")));
    // Name prefix, and LIKE wildcards are literal.
    assert_eq!(
        app.get("/v1/users?q=test%20us", Some(&admin.access)).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        app.get("/v1/users?q=%25", Some(&admin.access)).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    for bad in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "cursor=!!!",
        "cursor=eyJpZCI6MX0",
        "unknown=1",
        "q=",
    ] {
        let res = app.get(&format!("/v1/users?{bad}"), Some(&admin.access)).await;
        res.assert_problem(422, "validation_failed");
    }
}

#[tokio::test]
async fn admin_creates_reads_updates_and_deletes() {
    let app = TestApp::spawn().await;
    let admin = app.admin("boss@example.com").await;
    let res = app
        .post(
            "/v1/users",
            Some(&admin.access),
            json!({"email": "Staff@Example.com", "password": PASSWORD, "name": "Staff", "role": "admin"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!(
        (res.body["email"].as_str(), res.body["role"].as_str()),
        (Some("staff@example.com"), Some("admin"))
    );
    let id = res.body["id"].as_str().unwrap().to_owned();
    app.post(
        "/v1/users",
        Some(&admin.access),
        json!({"email": "staff@example.com", "password": PASSWORD, "name": "S"}),
    )
    .await
    .assert_problem(409, "email_taken");
    app.post(
        "/v1/users",
        Some(&admin.access),
        json!({"email": "r@example.com", "password": PASSWORD, "name": "S", "role": "root"}),
    )
    .await
    .assert_problem(422, "validation_failed");

    assert_eq!(
        app.get(&format!("/v1/users/{id}"), Some(&admin.access)).await.body["name"],
        "Staff"
    );
    app.get(&format!("/v1/users/{}", Uuid::now_v7()), Some(&admin.access))
        .await
        .assert_problem(404, "not_found");

    let res = app
        .patch(
            &format!("/v1/users/{id}"),
            Some(&admin.access),
            json!({"role": "user", "name": "Demoted"}),
        )
        .await;
    assert_eq!(
        (res.body["role"].as_str(), res.body["name"].as_str()),
        (Some("user"), Some("Demoted"))
    );
    app.patch(
        &format!("/v1/users/{id}"),
        Some(&admin.access),
        json!({"email": "x@y.com"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.patch(
        &format!("/v1/users/{}", Uuid::now_v7()),
        Some(&admin.access),
        json!({"name": "N"}),
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test]
async fn role_changes_apply_to_live_tokens() {
    let app = TestApp::spawn().await;
    let admin = app.admin("chief@example.com").await;
    let user = app.signup("promoted@example.com").await;
    app.get("/v1/users", Some(&user.access))
        .await
        .assert_problem(403, "forbidden");
    app.patch(
        &format!("/v1/users/{}", user.user_id),
        Some(&admin.access),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(app.get("/v1/users", Some(&user.access)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn delete_revokes_sessions_and_frees_the_email() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root@example.com").await;
    let victim = app.signup("gone@example.com").await;
    let res = app
        .delete(&format!("/v1/users/{}", victim.user_id), Some(&admin.access))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    app.get("/v1/users/me", Some(&victim.access))
        .await
        .assert_problem(401, "invalid_token");
    app.post("/v1/auth/refresh", None, json!({"refresh_token": victim.refresh}))
        .await
        .assert_problem(401, "invalid_token");
    app.login("gone@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    app.get(&format!("/v1/users/{}", victim.user_id), Some(&admin.access))
        .await
        .assert_problem(404, "not_found");
    app.delete(&format!("/v1/users/{}", victim.user_id), Some(&admin.access))
        .await
        .assert_problem(404, "not_found");
    // The address is free again: a new, different account.
    let again = app.signup("gone@example.com").await;
    assert_ne!(again.user_id, victim.user_id);
    let listed = app.get("/v1/users?q=gone", Some(&admin.access)).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
}
