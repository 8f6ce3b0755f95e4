//! `/v1/users/me` and user administration.

use serde_json::json;
use testkit::{NewUser, PASSWORD, Role, TestApp, User};
use uuid::Uuid;

#[tokio::test]
async fn me_patch_name_and_reject_privileged_fields() {
    let app = TestApp::spawn().await;
    let s = app.signup("me@example.com").await;
    let renamed = app.update_me(&s.access, json!({"name": "  Renamed  "})).await;
    assert_eq!(renamed.name, "Renamed");
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
    let me = app.me(&s.access).await;
    assert_eq!((me.role, me.name.as_str()), (Role::User, "Renamed"));
    assert_eq!((me.email.as_str(), me.email_verified), ("me@example.com", false));
    // An empty patch changes nothing.
    assert_eq!(app.update_me(&s.access, json!({})).await, me);
    app.patch("/v1/users/me", None, json!({}))
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn password_change_needs_current_and_revokes_other_sessions() {
    let app = TestApp::spawn().await;
    let s = app.signup("pw@example.com").await;
    let other_access = app.login("pw@example.com", PASSWORD).await.access;

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

    app.update_me(
        &s.access,
        json!({"password": "new-password-99", "current_password": PASSWORD}),
    )
    .await;
    // The other session is dead at once; the current one continues.
    app.get("/v1/users/me", Some(&other_access))
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(app.me(&s.access).await.id, s.user_id);
    app.try_login("pw@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    app.login("pw@example.com", "new-password-99").await;
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
        let query = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".to_owned(),
        };
        let page = app.users(&admin.access, &query).await;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|u| u.email));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // Every account exactly once, in creation order, across the pages.
    let mut expected = vec!["admin@example.com".to_owned()];
    expected.extend((0..5).map(|i| format!("user{i}@example.com")));
    expected.push("zed@other.org".to_owned());
    assert_eq!(seen, expected);

    let emails: Vec<String> = app
        .users(&admin.access, "q=USER")
        .await
        .items
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(emails, expected[1..6], "e-mail prefix, case-insensitive");
    // Name prefix, and LIKE wildcards are literal.
    assert_eq!(app.users(&admin.access, "q=test%20us").await.items.len(), 7);
    assert!(app.users(&admin.access, "q=%25").await.items.is_empty());

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
    let staff = app
        .create_user(
            &admin.access,
            &NewUser::new("Staff@Example.com").name("Staff").role(Role::Admin),
        )
        .await;
    assert_eq!(
        (staff.email.as_str(), staff.role, staff.name.as_str()),
        ("staff@example.com", Role::Admin, "Staff")
    );
    let id = staff.id;
    // The new account works with its password.
    app.login("staff@example.com", PASSWORD).await;
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

    assert_eq!(app.user(&admin.access, id).await, staff);
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
    let demoted: User = res.expect(testkit::StatusCode::OK);
    assert_eq!((demoted.role, demoted.name.as_str()), (Role::User, "Demoted"));
    assert_eq!(app.user(&admin.access, id).await, demoted);
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
    let promoted: User = app
        .patch(
            &format!("/v1/users/{}", user.user_id),
            Some(&admin.access),
            json!({"role": "admin"}),
        )
        .await
        .expect(testkit::StatusCode::OK);
    assert_eq!(promoted.role, Role::Admin);
    // The same access token, issued while the account was a plain user.
    assert_eq!(app.users(&user.access, "").await.items.len(), 2);
    assert_eq!(app.me(&user.access).await.role, Role::Admin);
}

#[tokio::test]
async fn delete_revokes_sessions_and_frees_the_email() {
    let app = TestApp::spawn().await;
    let admin = app.admin("root@example.com").await;
    let victim = app.signup("gone@example.com").await;
    app.delete(&format!("/v1/users/{}", victim.user_id), Some(&admin.access))
        .await
        .expect_status(testkit::StatusCode::NO_CONTENT);
    app.get("/v1/users/me", Some(&victim.access))
        .await
        .assert_problem(401, "invalid_token");
    app.try_refresh(&victim.refresh)
        .await
        .assert_problem(401, "invalid_token");
    app.try_login("gone@example.com", PASSWORD)
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
    let listed = app.users(&admin.access, "q=gone").await.items;
    assert_eq!(listed, [again.user]);
}
