//! Tasks and categories: CRUD, PATCH semantics, ownership, soft delete, every filter and sort,
//! pagination stability, bad input, and the constant statement count of a list page.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use domain::{CategoryId, TaskId};
use serde_json::{Value, json};
use testkit::{CategoryRef, NewTask, Page, Session, StatusCode, Task, TestApp};
use uuid::Uuid;

/// (title, id, priority rank, due date) of a created task.
type Row = (String, TaskId, i32, Option<String>);

async fn category(app: &TestApp, s: &Session, name: &str) -> CategoryId {
    let created = app.create_category(&s.access, name).await;
    assert_eq!(created.name, name.trim());
    created.id
}

async fn task(app: &TestApp, s: &Session, new: NewTask) -> Task {
    app.create_task(&s.access, &new).await
}

fn titles(page: &Page<Task>) -> Vec<String> {
    page.items.iter().map(|t| t.title.clone()).collect()
}

fn refs(pairs: &[(CategoryId, &str)]) -> Vec<CategoryRef> {
    pairs
        .iter()
        .map(|(id, name)| CategoryRef {
            id: *id,
            name: (*name).to_owned(),
        })
        .collect()
}

/// Every title of a listing, following cursors with the given page size.
async fn all_pages(app: &TestApp, s: &Session, query: &str, limit: usize) -> Vec<String> {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if query.is_empty() { "" } else { "&" };
        let query = match &cursor {
            Some(c) => format!("{query}{sep}limit={limit}&cursor={c}"),
            None => format!("{query}{sep}limit={limit}"),
        };
        let page = app.tasks(&s.access, &query).await;
        assert!(page.items.len() <= limit, "{query}");
        out.extend(titles(&page));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn categories_are_per_user_and_unique_case_insensitively() {
    let app = TestApp::spawn().await;
    let a = app.signup("cat-a@example.com").await;
    let b = app.signup("cat-b@example.com").await;
    let work = category(&app, &a, "Work").await;
    app.post("/v1/categories", Some(&a.access), json!({"name": " work "}))
        .await
        .assert_problem(409, "category_exists");
    // Another user may use the same name.
    category(&app, &b, "Work").await;
    let home = category(&app, &a, "Home").await;
    app.patch(
        &format!("/v1/categories/{home}"),
        Some(&a.access),
        json!({"name": "WORK"}),
    )
    .await
    .assert_problem(409, "category_exists");
    let renamed = app
        .patch(
            &format!("/v1/categories/{home}"),
            Some(&a.access),
            json!({"name": "House"}),
        )
        .await;
    let renamed: testkit::Category = renamed.expect(StatusCode::OK);
    assert_eq!((renamed.id, renamed.name.as_str()), (home, "House"));
    app.post("/v1/categories", Some(&a.access), json!({"name": ""}))
        .await
        .assert_problem(422, "validation_failed");

    // B can neither see nor touch A's categories.
    let listed: Page<testkit::Category> = app.get("/v1/categories", Some(&b.access)).await.expect(StatusCode::OK);
    assert_eq!(listed.items.len(), 1);
    assert_ne!(listed.items[0].id, work);
    app.patch(
        &format!("/v1/categories/{work}"),
        Some(&b.access),
        json!({"name": "Mine"}),
    )
    .await
    .assert_problem(404, "not_found");
    app.delete(&format!("/v1/categories/{work}"), Some(&b.access))
        .await
        .assert_problem(404, "not_found");

    // Deleting a category keeps its tasks.
    let t = task(&app, &a, NewTask::titled("Report").categories(&[work, home])).await;
    // Sorted by name.
    assert_eq!(t.categories, refs(&[(home, "House"), (work, "Work")]));
    app.delete(&format!("/v1/categories/{work}"), Some(&a.access))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let after = app.task(&a.access, t.id).await;
    assert_eq!(after.categories, refs(&[(home, "House")]));

    let page: Page<testkit::Category> = app
        .get("/v1/categories?limit=1", Some(&a.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next_cursor, None, "only one category left");
    app.get("/v1/categories?limit=0", Some(&a.access))
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn create_and_patch_semantics() {
    let app = TestApp::spawn().await;
    let s = app.signup("patch@example.com").await;
    let c1 = category(&app, &s, "One").await;
    let c2 = category(&app, &s, "Two").await;
    let t = task(
        &app,
        &s,
        NewTask::titled("  Write tests ")
            .description("all of them")
            .priority("high")
            .due(Some("2030-01-01T10:00:00Z"))
            .categories(&[c1]),
    )
    .await;
    assert_eq!(t.title, "Write tests");
    assert_eq!((t.status.as_str(), t.priority.as_str()), ("todo", "high"));
    assert_eq!(t.description.as_deref(), Some("all of them"));
    assert_eq!(t.categories, refs(&[(c1, "One")]));
    assert!(t.completed_at.is_none() && t.deleted_at.is_none());
    let path = format!("/v1/tasks/{}", t.id);

    // Absent fields are unchanged.
    let r = app.patch(&path, Some(&s.access), json!({"priority": "low"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["priority"].as_str(), r.body["description"].as_str()),
        (Some("low"), Some("all of them"))
    );
    assert_eq!(r.body["due_at"], "2030-01-01T10:00:00Z");
    assert_eq!(r.body["categories"].as_array().unwrap().len(), 1);

    // null clears nullable fields, and is rejected for the others.
    let r = app
        .patch(&path, Some(&s.access), json!({"description": null, "due_at": null}))
        .await;
    assert!(
        r.body["description"].is_null() && r.body["due_at"].is_null(),
        "{}",
        r.body
    );
    for field in ["title", "status", "priority", "category_ids"] {
        let r = app.patch(&path, Some(&s.access), json!({ field: null })).await;
        assert_eq!(r.assert_problem(422, "validation_failed")["errors"][0]["field"], field);
    }

    // completed_at follows the status.
    let done = app.patch(&path, Some(&s.access), json!({"status": "done"})).await;
    let completed = done.body["completed_at"].as_str().unwrap().to_owned();
    let again = app
        .patch(&path, Some(&s.access), json!({"status": "done", "title": "Renamed"}))
        .await;
    assert_eq!(
        again.body["completed_at"],
        completed.as_str(),
        "kept while it stays done"
    );
    let reopened = app
        .patch(&path, Some(&s.access), json!({"status": "in_progress"}))
        .await;
    assert!(reopened.body["completed_at"].is_null());

    // category_ids replaces the set; an invalid set changes nothing at all (one transaction).
    let r = app
        .patch(&path, Some(&s.access), json!({"category_ids": [c2, c2]}))
        .await;
    assert_eq!(r.body["categories"], json!([{"id": c2, "name": "Two"}]));
    let other = app.signup("intruder@example.com").await;
    let foreign = category(&app, &other, "Theirs").await;
    let r = app
        .patch(
            &path,
            Some(&s.access),
            json!({"category_ids": [c1, foreign], "title": "Should not stick"}),
        )
        .await;
    assert_eq!(
        r.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "category_ids"
    );
    let unchanged = app.get(&path, Some(&s.access)).await;
    assert_eq!(unchanged.body["title"], "Renamed");
    assert_eq!(unchanged.body["categories"], json!([{"id": c2, "name": "Two"}]));
    let r = app.patch(&path, Some(&s.access), json!({"category_ids": []})).await;
    assert_eq!(r.body["categories"], json!([]));

    // Creating with someone else's category creates nothing.
    app.try_create_task(&s.access, &NewTask::titled("Sneaky").categories(&[foreign]))
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(titles(&app.tasks(&s.access, "").await), ["Renamed"]);

    // Bad bodies.
    for bad in [
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({"title": "ok", "status": "open"}),
        json!({"title": "ok", "priority": 3}),
        json!({"title": "ok", "due_at": "tomorrow"}),
        json!({"title": "ok", "category_ids": ["nope"]}),
        json!({"title": "ok", "user_id": Uuid::now_v7()}),
        json!({"title": "ok", "description": "d".repeat(10_001)}),
        // Postgres text cannot hold NUL, and timestamptz has a range: both are 422, never a 500.
        json!({"title": "ok", "description": "a\u{0}b"}),
        json!({"title": "ok", "labels": {"a\u{0}": 1}}),
        json!({"title": "ok", "due_at": "-5000-01-01T00:00:00Z"}),
        json!({"title": "ok", "due_at": "+200000-01-01T00:00:00Z"}),
    ] {
        app.post("/v1/tasks", Some(&s.access), bad)
            .await
            .assert_problem(422, "validation_failed");
    }
    let done_now = task(&app, &s, NewTask::titled("Already done").status("done")).await;
    assert!(done_now.completed_at.is_some());
}

#[tokio::test]
async fn other_users_tasks_are_404_for_every_verb() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner@example.com").await;
    let other = app.signup("other@example.com").await;
    let admin = app.admin("admin-tasks@example.com").await;
    let id = task(&app, &owner, NewTask::titled("Private")).await.id;
    for who in [&other, &admin] {
        app.get(&format!("/v1/tasks/{id}"), Some(&who.access))
            .await
            .assert_problem(404, "not_found");
        app.patch(&format!("/v1/tasks/{id}"), Some(&who.access), json!({"title": "Mine"}))
            .await
            .assert_problem(404, "not_found");
        app.delete(&format!("/v1/tasks/{id}"), Some(&who.access))
            .await
            .assert_problem(404, "not_found");
        app.post(&format!("/v1/tasks/{id}/restore"), Some(&who.access), json!({}))
            .await
            .assert_problem(404, "not_found");
        assert!(app.tasks(&who.access, "include_deleted=true").await.items.is_empty());
    }
    assert_eq!(app.task(&owner.access, id).await.title, "Private");
    app.get("/v1/tasks", None).await.assert_problem(401, "unauthorized");
    app.get("/v1/tasks/not-a-uuid", Some(&owner.access))
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn soft_delete_and_restore() {
    let app = TestApp::spawn().await;
    let s = app.signup("trash@example.com").await;
    let t = task(&app, &s, NewTask::titled("Ephemeral")).await;
    task(&app, &s, NewTask::titled("Keeper")).await;
    let path = format!("/v1/tasks/{}", t.id);
    assert_eq!(app.delete(&path, Some(&s.access)).await.status, StatusCode::NO_CONTENT);
    app.get(&path, Some(&s.access)).await.assert_problem(404, "not_found");
    app.delete(&path, Some(&s.access))
        .await
        .assert_problem(404, "not_found");
    app.patch(&path, Some(&s.access), json!({"title": "x"}))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(titles(&app.tasks(&s.access, "").await), ["Keeper"]);
    let with_deleted = app.tasks(&s.access, "include_deleted=true&sort=created_at").await;
    assert_eq!(titles(&with_deleted), ["Ephemeral", "Keeper"]);
    assert!(with_deleted.items[0].deleted_at.is_some());
    assert!(with_deleted.items[1].deleted_at.is_none());

    let restored: Task = app
        .post(&format!("{path}/restore"), Some(&s.access), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!((restored.id, restored.deleted_at), (t.id, None));
    let again: Task = app
        .post(&format!("{path}/restore"), Some(&s.access), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.deleted_at, None, "restore is idempotent");
    assert_eq!(app.task(&s.access, t.id).await.title, "Ephemeral");
    app.post(
        &format!("/v1/tasks/{}/restore", Uuid::now_v7()),
        Some(&s.access),
        json!({}),
    )
    .await
    .assert_problem(404, "not_found");

    // Both the delete and the restore were queued for the audit log.
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::RunQueryDsl;
    let mut conn = app.state.db.get().await.unwrap();
    let payloads: Vec<Value> = db::schema::outbox::table
        .filter(db::schema::outbox::queue.eq("audit"))
        .select(db::schema::outbox::payload)
        .load(&mut conn)
        .await
        .unwrap();
    let kinds: Vec<&str> = payloads
        .iter()
        .filter_map(|p| p["job"]["event"]["event_type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"task_deleted") && kinds.contains(&"task_restored"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn every_filter() {
    let app = TestApp::spawn().await;
    let s = app.signup("filters@example.com").await;
    let work = category(&app, &s, "Work").await;
    task(
        &app,
        &s,
        NewTask::titled("Alpha report")
            .status("todo")
            .priority("high")
            .due(Some("2030-01-10T00:00:00Z"))
            .categories(&[work]),
    )
    .await;
    task(
        &app,
        &s,
        NewTask::titled("Beta REPORT")
            .status("in_progress")
            .priority("low")
            .due(Some("2030-01-20T00:00:00Z")),
    )
    .await;
    task(
        &app,
        &s,
        NewTask::titled("Gamma")
            .status("done")
            .priority("medium")
            .categories(&[work]),
    )
    .await;
    let gone = task(&app, &s, NewTask::titled("Deleted report").status("todo")).await;
    app.delete(&format!("/v1/tasks/{}", gone.id), Some(&s.access))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    // Someone else's matching task never shows.
    let other = app.signup("noise@example.com").await;
    task(&app, &other, NewTask::titled("Alpha report").status("todo")).await;

    let cases: &[(&str, &[&str])] = &[
        ("status=todo", &["Alpha report"]),
        ("status=todo,done", &["Alpha report", "Gamma"]),
        ("status=todo&status=in_progress", &["Alpha report", "Beta REPORT"]),
        ("priority=low", &["Beta REPORT"]),
        ("priority=high,medium", &["Alpha report", "Gamma"]),
        (&format!("category_id={work}"), &["Alpha report", "Gamma"]),
        ("due_before=2030-01-15T00:00:00Z", &["Alpha report"]),
        ("due_after=2030-01-15T00:00:00Z", &["Beta REPORT"]),
        (
            "due_after=2030-01-01T00:00:00Z&due_before=2030-12-31T00:00:00Z",
            &["Alpha report", "Beta REPORT"],
        ),
        ("q=report", &["Alpha report", "Beta REPORT"]),
        (
            "q=REPORT&include_deleted=true",
            &["Alpha report", "Beta REPORT", "Deleted report"],
        ),
        ("q=%25", &[]),
        ("status=done&q=alpha", &[]),
    ];
    for (query, expected) in cases {
        let mut got = all_pages(&app, &s, &format!("{query}&sort=created_at"), 2).await;
        got.sort();
        assert_eq!(got, *expected, "{query}");
    }
    let unknown_category = format!("category_id={}", Uuid::now_v7());
    assert!(all_pages(&app, &s, &unknown_category, 10).await.is_empty());
}

#[tokio::test]
async fn every_sort_pages_completely_with_ties_broken_by_id() {
    let app = TestApp::spawn().await;
    let s = app.signup("sorts@example.com").await;
    // (title, priority, due) with deliberate ties on priority and due date, and missing due dates.
    let specs = [
        ("t00", "high", Some("2030-01-03T00:00:00Z")),
        ("t01", "low", None),
        ("t02", "medium", Some("2030-01-01T00:00:00Z")),
        ("t03", "high", Some("2030-01-01T00:00:00Z")),
        ("t04", "low", Some("2030-01-02T00:00:00Z")),
        ("t05", "medium", None),
        ("t06", "high", Some("2030-01-02T00:00:00Z")),
        ("t07", "medium", Some("2030-01-01T00:00:00Z")),
        ("t08", "low", Some("2030-01-03T00:00:00Z")),
        ("t09", "high", None),
        ("t10", "medium", Some("2030-01-02T00:00:00Z")),
    ];
    let mut rows = vec![];
    let mut created = vec![];
    for (title, priority, due) in specs {
        let t = task(&app, &s, NewTask::titled(title).priority(priority).due(due)).await;
        let rank = match priority {
            "low" => 1,
            "medium" => 2,
            _ => 3,
        };
        // Created one after another: created_at strictly increases (asserted below), so creation
        // order is the order of this vector.
        rows.push((title.to_owned(), t.id, rank, due.map(str::to_owned)));
        created.push(t.created_at);
    }
    assert!(created.windows(2).all(|w| w[0] < w[1]));
    let position: std::collections::HashMap<String, usize> =
        rows.iter().enumerate().map(|(i, r)| (r.0.clone(), i)).collect();
    // Expected orders computed here, independently of SQL.
    let by = |f: &dyn Fn(&Row, &Row) -> std::cmp::Ordering| {
        let mut v = rows.clone();
        v.sort_by(|a, b| f(a, b));
        v.into_iter().map(|r| r.0).collect::<Vec<_>>()
    };
    let due_asc = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    };
    let expected = [
        ("created_at", by(&|a, b| position[&a.0].cmp(&position[&b.0]))),
        ("-created_at", by(&|a, b| position[&b.0].cmp(&position[&a.0]))),
        ("due_at", by(&|a, b| due_asc(&a.3, &b.3).then(a.1.cmp(&b.1)))),
        // Descending, but "no due date" still last.
        (
            "-due_at",
            by(&|a, b| match (&a.3, &b.3) {
                (Some(x), Some(y)) => y.cmp(x).then(b.1.cmp(&a.1)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => b.1.cmp(&a.1),
            }),
        ),
        ("priority", by(&|a, b| a.2.cmp(&b.2).then(a.1.cmp(&b.1)))),
        ("-priority", by(&|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)))),
    ];
    for (sort, want) in &expected {
        for limit in [1, 3, 4, 100] {
            let got = all_pages(&app, &s, &format!("sort={sort}"), limit).await;
            assert_eq!(&got, want, "sort={sort} limit={limit}");
        }
    }
    // The default sort is newest first.
    assert_eq!(all_pages(&app, &s, "", 5).await, expected[1].1);
}

#[tokio::test]
async fn pagination_is_stable_across_inserts_and_deletes() {
    let app = TestApp::spawn().await;
    let s = app.signup("stable@example.com").await;
    let mut ids = vec![];
    for i in 0..9 {
        ids.push(task(&app, &s, NewTask::titled(&format!("old{i}"))).await.id);
    }
    let first = app.tasks(&s.access, "sort=-created_at&limit=3").await;
    assert_eq!(titles(&first), ["old8", "old7", "old6"]);
    let cursor = first.next_cursor.unwrap();
    // Between pages: new tasks arrive (they sort before the cursor) and one unseen task is deleted.
    task(&app, &s, NewTask::titled("new0")).await;
    task(&app, &s, NewTask::titled("new1")).await;
    app.delete(&format!("/v1/tasks/{}", ids[4]), Some(&s.access))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let mut rest = vec![];
    let mut next = Some(cursor);
    while let Some(c) = next {
        let page = app
            .tasks(&s.access, &format!("sort=-created_at&limit=3&cursor={c}"))
            .await;
        rest.extend(titles(&page));
        next = page.next_cursor;
    }
    assert_eq!(
        rest,
        ["old5", "old3", "old2", "old1", "old0"],
        "no repeats, no gaps, no newcomers"
    );
}

#[tokio::test]
async fn bad_list_parameters_are_422() {
    let app = TestApp::spawn().await;
    let s = app.signup("badlist@example.com").await;
    for _ in 0..3 {
        task(&app, &s, NewTask::titled("x")).await;
    }
    let priority_cursor = app.tasks(&s.access, "sort=priority&limit=1").await.next_cursor.unwrap();
    let tampered = format!("{}A", &priority_cursor[..priority_cursor.len() - 1]);
    for (query, field) in [
        ("sort=title", "sort"),
        ("status=open", "status"),
        ("priority=urgent", "priority"),
        ("category_id=123", "category_id"),
        ("due_before=soon", "due_before"),
        ("due_after=2030-13-01T00:00:00Z", "due_after"),
        ("include_deleted=maybe", "include_deleted"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("limit=ten", "limit"),
        ("q=", "q"),
        ("q=a%00b", "q"),
        ("due_before=0000-01-01T00:00:00Z", "due_before"),
        ("bogus=1", "bogus"),
        ("cursor=%%%", "cursor"),
        (&format!("sort=created_at&cursor={priority_cursor}"), "cursor"),
        (&format!("sort=priority&cursor={tampered}"), "cursor"),
    ] {
        let res = app.get(&format!("/v1/tasks?{query}"), Some(&s.access)).await;
        let body = res.assert_problem(422, "validation_failed");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_list_page_with_its_categories_is_one_statement_whatever_its_size() {
    use diesel_async::AsyncConnection;
    let app = TestApp::spawn().await;
    let s = app.signup("n-plus-one@example.com").await;
    let cats = [
        category(&app, &s, "A").await,
        category(&app, &s, "B").await,
        category(&app, &s, "C").await,
    ];
    for i in 0..60 {
        task(
            &app,
            &s,
            NewTask::titled(&format!("t{i}")).categories(&[cats[i % 3], cats[(i + 1) % 3]]),
        )
        .await;
    }
    let mut conn = app.state.db.get().await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    conn.set_instrumentation(move |event: diesel::connection::InstrumentationEvent<'_>| {
        if matches!(event, diesel::connection::InstrumentationEvent::StartQuery { .. }) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    for limit in [5, 50] {
        let query =
            domain::tasks::TaskListQuery::parse([("limit", limit.to_string().as_str()), ("sort", "priority")]).unwrap();
        count.store(0, Ordering::SeqCst);
        let views = api::services::tasks::list_page(&mut conn, s.user_id, &query)
            .await
            .unwrap()
            .items;
        assert_eq!(views.len(), limit);
        assert!(views.iter().all(|v| v.categories.len() == 2), "categories embedded");
        for v in &views {
            let names: Vec<&str> = v.categories.iter().map(|(_, n)| n.as_str()).collect();
            let i: usize = v.row.title[1..].parse().unwrap();
            let mut want = [["A", "B", "C"][i % 3], ["A", "B", "C"][(i + 1) % 3]];
            want.sort_unstable();
            assert_eq!(names, want, "{}: its own categories, by name", v.row.title);
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "limit {limit}: the page and its categories in one statement"
        );
    }
    // …and that statement is prepared once per connection and reused (no `Parse`, no new plan),
    // for every sort, first pages and pages after a cursor alike: nothing in it makes diesel
    // refuse to cache it.
    for sort in ["-created_at", "due_at", "-due_at", "priority"] {
        let first = domain::tasks::TaskListQuery::parse([("sort", sort)]).unwrap();
        for _ in 0..2 {
            let page = api::services::tasks::list_page(&mut conn, s.user_id, &first)
                .await
                .unwrap();
            let cursor = page.next_cursor.expect("60 tasks: a second page");
            let next = domain::tasks::TaskListQuery::parse([("sort", sort), ("cursor", cursor.as_str())]).unwrap();
            api::services::tasks::list_page(&mut conn, s.user_id, &next)
                .await
                .unwrap();
        }
    }
    #[derive(diesel::QueryableByName)]
    struct Prepared {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let prepared: Prepared = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "select count(*) as n from pg_prepared_statements \
             where starts_with(statement, 'SELECT \"tasks\".\"id\"') and strpos(statement, 'array(select') > 0",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(
        prepared.n, 8,
        "one prepared statement per sort and per first or later page (limits are bound)"
    );
}

/// A page read twice on `app`: the first read is whatever it is (returned), the second a hit
/// with the same body.
async fn read_twice(app: &TestApp, s: &Session, path: &str) -> (Option<String>, Value) {
    let first = app.get(path, Some(&s.access)).await;
    first.expect_status(StatusCode::OK);
    let again = app.get(path, Some(&s.access)).await;
    assert_eq!(again.header("x-cache"), Some("hit"), "{path}: cached after one read");
    assert_eq!(again.body, first.body, "{path}: the hit is the page just read");
    (first.header("x-cache").map(str::to_owned), first.body)
}

fn page_titles(body: &Value) -> Vec<&str> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect()
}

/// Task pages are cached per user; every kind of write of theirs (task create, update, delete,
/// restore; category rename, delete) voids them on every instance before it answers, so the
/// next read on the other instance shows it; another user's writes leave them cached, and the
/// same query by another user is another page.
#[tokio::test]
async fn task_pages_are_cached_per_user_and_every_write_of_theirs_shows_at_once_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    let s = a.signup("pages-owner@example.com").await;
    let other = a.signup("pages-other@example.com").await;
    let home = category(&a, &s, "Home").await;
    let first = task(&a, &s, NewTask::titled("first").categories(&[home])).await;
    let pages = ["/v1/tasks", "/v1/tasks?sort=priority&limit=5", "/v1/tasks?q=fir"];
    for path in pages {
        read_twice(&b, &s, path).await;
    }
    // After each write on a: b's next read of every page misses and shows the write.
    let check = async |what: &str, titles: &[&str], categories: Value| {
        let (status, body) = read_twice(&b, &s, "/v1/tasks").await;
        assert_eq!(
            status.as_deref(),
            Some("miss"),
            "{what} voids b's page before it answers"
        );
        assert_eq!(page_titles(&body), titles, "after {what}");
        let first = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == json!(first.id));
        assert_eq!(first.unwrap()["categories"], categories, "after {what}");
        for path in &pages[1..] {
            let res = b.get(path, Some(&s.access)).await;
            assert_eq!(res.header("x-cache"), Some("miss"), "{what}: {path}");
            b.get(path, Some(&s.access)).await;
        }
    };
    let house = |name: &str| json!([{"id": home, "name": name}]);
    let second = task(&a, &s, NewTask::titled("second")).await.id;
    check("a create", &["second", "first"], house("Home")).await;
    a.update_task(&s.access, first.id, json!({"title": "first renamed"}))
        .await;
    check("an update", &["second", "first renamed"], house("Home")).await;
    a.patch(
        &format!("/v1/categories/{home}"),
        Some(&s.access),
        json!({"name": "House"}),
    )
    .await
    .expect_status(StatusCode::OK);
    check("a category rename", &["second", "first renamed"], house("House")).await;
    a.delete(&format!("/v1/tasks/{second}"), Some(&s.access))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    check("a delete", &["first renamed"], house("House")).await;
    a.post(&format!("/v1/tasks/{second}/restore"), Some(&s.access), json!({}))
        .await
        .expect_status(StatusCode::OK);
    check("a restore", &["second", "first renamed"], house("House")).await;
    a.delete(&format!("/v1/categories/{home}"), Some(&s.access))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    check("a category delete", &["second", "first renamed"], json!([])).await;
    // Another user's writes leave these pages cached; their own page is theirs.
    task(&a, &other, NewTask::titled("someone else's")).await;
    let still = b.get("/v1/tasks", Some(&s.access)).await;
    assert_eq!(still.header("x-cache"), Some("hit"), "another user's write");
    let (_, theirs) = read_twice(&b, &other, "/v1/tasks").await;
    assert_eq!(page_titles(&theirs), ["someone else's"]);
    // Voiding the whole namespace (what `api seed` does) voids every user's pages.
    a.state.cache.invalidate(api::infra::cache::ns::TASKS).await;
    let res = b.get("/v1/tasks", Some(&s.access)).await;
    assert_eq!(res.header("x-cache"), Some("miss"), "the namespace's bump");
}
