//! Bulk demo data for benchmarks: `api seed --users N --tasks M`. Generated inside Postgres
//! (`generate_series`), so a million tasks take seconds rather than a million round trips.
//! Seed accounts are `seed{i}@seed.example.com`; all share one password hash.

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbResult;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> DbResult<i64> {
    Ok(diesel::sql_query(sql).get_result::<Count>(conn).await?.n)
}

/// Creates the seed users (idempotent), four categories each, and tasks until the seed users own
/// `tasks` in total. Returns (users, tasks) owned by seed accounts afterwards.
pub async fn bulk(conn: &mut AsyncPgConnection, users: i64, tasks: i64, password_hash: &str) -> DbResult<(i64, i64)> {
    diesel::sql_query(
        "INSERT INTO users (id, email, name, password_hash, role, email_verified_at) \
         SELECT gen_random_uuid(), format('seed%s@seed.example.com', i), format('Seed User %s', i), $1, 'user', now() \
         FROM generate_series(1, $2) AS i \
         ON CONFLICT (email) WHERE deleted_at IS NULL DO NOTHING",
    )
    .bind::<Text, _>(password_hash)
    .bind::<BigInt, _>(users)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO categories (id, user_id, name) \
         SELECT gen_random_uuid(), u.id, n.name FROM users u \
         CROSS JOIN (VALUES ('Work'), ('Home'), ('Errands'), ('Ideas')) AS n(name) \
         WHERE u.email LIKE 'seed%@seed.example.com' AND u.deleted_at IS NULL \
         ON CONFLICT DO NOTHING",
    )
    .execute(conn)
    .await?;
    let have = count(
        conn,
        "SELECT count(*) AS n FROM tasks t JOIN users u ON u.id = t.user_id WHERE u.email LIKE 'seed%@seed.example.com'",
    )
    .await?;
    let mut made = have;
    // Batches of 100k keep each statement (and its WAL) a manageable size.
    while made < tasks {
        let batch = (tasks - made).min(100_000);
        diesel::sql_query(
            "WITH u AS (SELECT array_agg(id ORDER BY email) AS ids FROM users \
                        WHERE email LIKE 'seed%@seed.example.com' AND deleted_at IS NULL), \
                  s AS (SELECT i, random() AS r1, random() AS r2, random() AS r3 FROM generate_series($1 + 1, $1 + $2) AS i) \
             INSERT INTO tasks (id, user_id, title, description, status, priority, due_at, completed_at, created_at, updated_at) \
             SELECT gen_random_uuid(), u.ids[1 + (s.i % array_length(u.ids, 1))], \
                    (ARRAY['Write','Review','Call','Buy','Plan','Fix','Read','Send'])[1 + (s.i % 8)] || ' ' || \
                    (ARRAY['report','groceries','invoice','slides','bug','book','email','budget'])[1 + ((s.i / 8) % 8)] || ' #' || s.i, \
                    CASE WHEN s.r1 < 0.3 THEN 'Seeded task ' || s.i END, \
                    CASE WHEN s.r1 < 0.5 THEN 'todo' WHEN s.r1 < 0.75 THEN 'in_progress' ELSE 'done' END, \
                    1 + floor(s.r2 * 3)::int, \
                    CASE WHEN s.r3 < 0.7 THEN now() + (s.r3 * 60 - 20) * interval '1 day' END, \
                    CASE WHEN s.r1 >= 0.75 THEN now() - interval '1 hour' END, \
                    now() - ($1 + $2 - s.i) * interval '1 second', \
                    now() - ($1 + $2 - s.i) * interval '1 second' \
             FROM s, u",
        )
        .bind::<BigInt, _>(made)
        .bind::<BigInt, _>(batch)
        .execute(conn)
        .await?;
        made += batch;
    }
    if made > have {
        // About 60% of the new tasks get one category of their owner.
        diesel::sql_query(
            "WITH c AS (SELECT user_id, array_agg(id ORDER BY id) AS ids FROM categories GROUP BY user_id) \
             INSERT INTO task_categories (task_id, category_id) \
             SELECT t.id, c.ids[1 + abs(hashtext(t.id::text)) % array_length(c.ids, 1)] \
             FROM tasks t JOIN c USING (user_id) JOIN users u ON u.id = t.user_id \
             WHERE u.email LIKE 'seed%@seed.example.com' AND abs(hashtext(t.id::text)) % 10 < 6 \
               AND NOT EXISTS (SELECT 1 FROM task_categories tc WHERE tc.task_id = t.id) \
             ON CONFLICT DO NOTHING",
        )
        .execute(conn)
        .await?;
        diesel::sql_query("ANALYZE users, categories, tasks, task_categories")
            .execute(conn)
            .await?;
    }
    let users = count(
        conn,
        "SELECT count(*) AS n FROM users WHERE email LIKE 'seed%@seed.example.com'",
    )
    .await?;
    Ok((users, made))
}
