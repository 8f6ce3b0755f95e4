-- Categories and tasks, per user. Every list query is `WHERE user_id = $1 [AND deleted_at IS NULL]
-- ORDER BY <key>, id LIMIT n` with a keyset condition `(<key>, id) > ($k, $id)`; each sort has
-- an index on (user_id, <key>, id) so a page is an index range scan that stops after n rows,
-- however deep the page (plans in docs/TASKS.md).

CREATE TABLE categories (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 50),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Name unique per user, case-insensitively; also serves "my categories" (user_id prefix).
CREATE UNIQUE INDEX categories_user_name_key ON categories (user_id, lower(name));

CREATE TABLE tasks (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description  text        NULL CHECK (char_length(description) <= 10000),
    status       text        NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    -- 1 = low, 2 = medium, 3 = high: sorting by priority is sorting by this rank.
    priority     smallint    NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 3),
    due_at       timestamptz NULL,
    completed_at timestamptz NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz NULL,
    CHECK ((status = 'done') = (completed_at IS NOT NULL))
);

-- Live tasks (the default: include_deleted=false), one index per sort key. Partial: soft-deleted
-- rows are skipped by the index itself. due_at sorts put "no due date" last in both directions
-- by sorting on coalesce(due_at, ±infinity); each direction has its own expression.
CREATE INDEX tasks_live_created ON tasks (user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_live_due_asc ON tasks (user_id, (coalesce(due_at, 'infinity'::timestamptz)), id)
    WHERE deleted_at IS NULL;
CREATE INDEX tasks_live_due_desc ON tasks (user_id, (coalesce(due_at, '-infinity'::timestamptz)), id)
    WHERE deleted_at IS NULL;
CREATE INDEX tasks_live_priority ON tasks (user_id, priority, id) WHERE deleted_at IS NULL;
-- include_deleted=true (rare): all of a user's rows in creation order; other sorts sort the
-- user's rows (thousands at most) in memory.
CREATE INDEX tasks_all_created ON tasks (user_id, created_at, id);

CREATE TABLE task_categories (
    task_id     uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    category_id uuid NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, category_id)
);

-- Serves the category_id filter (`EXISTS … WHERE category_id = $1 AND task_id = tasks.id`) and
-- the cascade when a category is deleted. The primary key serves the batched load of a page's
-- categories (`WHERE task_id = ANY($1)`).
CREATE INDEX task_categories_category ON task_categories (category_id, task_id);
