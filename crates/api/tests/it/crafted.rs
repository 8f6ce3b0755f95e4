//! Crafted input that used to reach the database or the mailer (issue 8, items 7, 8 and 11):
//! cursors with timestamps outside what the database can compare, a category deleted while a
//! task is being linked to it, repeated query parameters, and sign-up addresses and names the
//! mailer cannot deliver or that hide characters.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use testkit::{PASSWORD, Res, StatusCode, TestApp};
use uuid::Uuid;

#[track_caller]
fn assert_field(res: &Res, field: &str) {
    let body = res.assert_problem(422, "validation_failed");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, [field], "{body}");
}

fn cursor(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

/// Years Postgres cannot store (−5000), or that the API never writes (0, 200000): every list
/// refuses them in a cursor as a 422 naming `cursor` — as it does any key the list's own cursors
/// never carry.
#[tokio::test]
async fn crafted_cursor_timestamps_are_422_on_every_keyset_list() {
    let app = TestApp::spawn().await;
    let admin = app.admin("cursor-admin@example.com").await;
    let id = Uuid::now_v7();
    for t in [
        "-5000-01-01T00:00:00Z",
        "0000-06-01T00:00:00Z",
        "+200000-01-01T00:00:00Z",
    ] {
        for sort in ["created_at", "-created_at", "due_at", "-due_at"] {
            let c = cursor(&json!({"s": sort, "t": t, "id": id}));
            let res = app
                .get(&format!("/v1/tasks?sort={sort}&cursor={c}"), Some(&admin.access))
                .await;
            assert_field(&res, "cursor");
        }
        let c = cursor(&json!({"t": t, "id": id}));
        assert_field(
            &app.get(&format!("/v1/audit-events?cursor={c}"), Some(&admin.access))
                .await,
            "cursor",
        );
        // Lists keyed by id alone: a timestamp is not part of their cursors at all.
        let c = cursor(&json!({"id": id, "t": t}));
        for list in ["/v1/categories", "/v1/users"] {
            assert_field(
                &app.get(&format!("{list}?cursor={c}"), Some(&admin.access)).await,
                "cursor",
            );
        }
    }
    // The cursors the lists hand out still work.
    app.signup("second@example.com").await;
    let page = app.get("/v1/users?limit=1", Some(&admin.access)).await;
    let c = page.body["next_cursor"].as_str().unwrap();
    let next = app
        .get(&format!("/v1/users?limit=1&cursor={c}"), Some(&admin.access))
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert_eq!(next.body["items"].as_array().unwrap().len(), 1);
}

/// Waits until a statement of the app's pool waits for a lock in its database.
async fn until_blocked(admin: &mut AsyncPgConnection) {
    let started = Instant::now();
    loop {
        let waiting: i64 = diesel::dsl::sql::<BigInt>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result(admin)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the request never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "Two tabs": one deletes a category (its transaction not yet committed) while the other links
/// a task to it. The link waits for the delete, which then commits: the request is the same 422
/// as for a category that is not yours (it used to be a foreign-key violation: 500), and nothing
/// is half-written.
#[tokio::test]
async fn linking_a_category_deleted_meanwhile_is_a_422_not_a_500() {
    let app = TestApp::spawn().await;
    let s = app.signup("race@example.com").await;
    let existing = app
        .post("/v1/tasks", Some(&s.access), json!({"title": "Existing"}))
        .await;
    let existing_id = existing.body["id"].as_str().unwrap().to_owned();
    for op in ["create", "update"] {
        let category = app
            .post(
                "/v1/categories",
                Some(&s.access),
                json!({"name": format!("Doomed {op}")}),
            )
            .await;
        let cat = category.body["id"].as_str().unwrap().to_owned();
        let mut other_tab = AsyncPgConnection::establish(&app.db.url).await.unwrap();
        diesel::sql_query("BEGIN").execute(&mut other_tab).await.unwrap();
        diesel::sql_query(format!("DELETE FROM categories WHERE id = '{cat}'"))
            .execute(&mut other_tab)
            .await
            .unwrap();
        let mut watcher = AsyncPgConnection::establish(&app.db.url).await.unwrap();
        let request = async {
            match op {
                "create" => {
                    app.post(
                        "/v1/tasks",
                        Some(&s.access),
                        json!({"title": "Linked", "category_ids": [cat]}),
                    )
                    .await
                }
                _ => {
                    app.patch(
                        &format!("/v1/tasks/{existing_id}"),
                        Some(&s.access),
                        json!({"title": "Renamed", "category_ids": [cat]}),
                    )
                    .await
                }
            }
        };
        let delete_commits = async {
            until_blocked(&mut watcher).await;
            diesel::sql_query("COMMIT").execute(&mut other_tab).await.unwrap();
        };
        let (res, ()) = tokio::join!(request, delete_commits);
        assert_field(&res, "category_ids");
    }
    let tasks = app.get("/v1/tasks", Some(&s.access)).await;
    let items = tasks.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the create wrote nothing: {}", tasks.body);
    assert_eq!(items[0]["title"], "Existing", "the update changed nothing");
    assert_eq!(items[0]["categories"], json!([]));
}

/// A parameter given twice is honoured where repetition means something (`status`,
/// `priority`), and everywhere else a 422 naming it — not "body", not the last value.
#[tokio::test]
async fn a_repeated_query_parameter_is_honoured_or_named() {
    let app = TestApp::spawn().await;
    let admin = app.admin("repeat-admin@example.com").await;
    for status in ["todo", "in_progress", "done"] {
        app.post(
            "/v1/tasks",
            Some(&admin.access),
            json!({"title": status, "status": status}),
        )
        .await;
    }
    for (query, field) in [
        ("/v1/tasks?sort=due_at&sort=-due_at", "sort"),
        ("/v1/tasks?limit=5&limit=50", "limit"),
        ("/v1/tasks?q=a&q=b", "q"),
        (
            "/v1/tasks?include_deleted=true&include_deleted=false",
            "include_deleted",
        ),
        ("/v1/categories?limit=1&limit=2", "limit"),
        ("/v1/users?q=a&q=b", "q"),
        ("/v1/users?limit=1&limit=1", "limit"),
        ("/v1/audit-events?type=login_failed&type=signup", "type"),
        ("/v1/audit-events?limit=1&limit=2", "limit"),
    ] {
        let res = app.get(query, Some(&admin.access)).await;
        assert_field(&res, field);
        assert_eq!(
            res.body["errors"][0]["message"], "must be given at most once",
            "{query}: {}",
            res.body
        );
    }
    let both = app
        .get("/v1/tasks?status=todo&status=done&sort=created_at", Some(&admin.access))
        .await;
    let titles: Vec<&str> = both.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["todo", "done"]);
}

/// Sign-up validates the address with the mailer's rules, so no account gets an address whose
/// mail would be dead-lettered, and refuses invisible characters in addresses and names.
#[tokio::test]
async fn signup_refuses_what_the_mailer_cannot_deliver_and_invisible_characters() {
    let app = TestApp::spawn().await;
    let signup = |email: &str, name: &str| {
        app.post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": PASSWORD, "name": name}),
        )
    };
    for email in [
        "a..b@example.com",
        "a.@example.com",
        "a@example.com.",
        "a(comment)@example.com",
        "\"a b\"@example.com",
        "a@[192.0.2.1]",
        "a@192.0.2.1",
        "a\u{200B}@example.com",
        "\u{FEFF}a@example.com",
        "jos\u{E9}@example.com",
        "a@b\u{FC}cher.de",
    ] {
        let res = signup(email, "Ada").await;
        assert_field(&res, "email");
    }
    for name in ["Ada\u{200B}", "\u{202E}adA", "\u{3164}", "A\u{2066}d\u{2069}a"] {
        assert_field(&signup("hidden-name@example.com", name).await, "name");
    }
    // Two accounts cannot differ by an invisible character.
    assert_eq!(signup("eve@example.com", "Eve").await.status, StatusCode::CREATED);
    assert_field(&signup("eve\u{200D}@example.com", "Eve").await, "email");
    // Look-alike spacing is normalised, not refused.
    let spaced = signup("ada@example.com", " Ada\u{00A0}\u{00A0}Lovelace\u{3000}").await;
    assert_eq!(spaced.status, StatusCode::CREATED, "{}", spaced.body);
    assert_eq!(spaced.body["user"]["name"], "Ada Lovelace");
    // Admin-created accounts follow the same rules.
    let admin = app.admin("rules-admin@example.com").await;
    let created = app
        .post(
            "/v1/users",
            Some(&admin.access),
            json!({"email": "x..y@example.com", "password": PASSWORD, "name": "X", "role": "user"}),
        )
        .await;
    assert_field(&created, "email");
}

/// A JSON array where an object is expected: serde would read a struct from its fields in order
/// (`[null, null]` was a 200 no-op PATCH; found by schemathesis). Every body must be an object.
#[tokio::test]
async fn array_bodies_are_refused_everywhere() {
    let app = TestApp::spawn().await;
    let me = app.signup("arrays@example.com").await;
    for (method, path, body) in [
        (testkit::Method::PATCH, "/v1/users/me", json!([null, null])),
        (testkit::Method::POST, "/v1/tasks", json!(["a title"])),
        (testkit::Method::POST, "/v1/orders", json!([[]])),
    ] {
        let res = app.request(method, path, Some(&me.access), Some(body)).await;
        assert_field(&res, "body");
    }
    let bare = app
        .post("/v1/auth/login", None, json!(["arrays@example.com", PASSWORD]))
        .await;
    assert_field(&bare, "body");
    assert_eq!(app.me(&me.access).await.name, me.user.name, "nothing changed");
}
