-- Accounts, sessions (one refresh-token family per login) and the refresh tokens of each family.

CREATE TABLE users (
    id                uuid        PRIMARY KEY,
    -- Stored lower-cased by the application (domain::Email); the CHECK keeps every writer honest,
    -- so equality and the unique index are case-insensitive without citext.
    email             text        NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    name              text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    password_hash     text        NOT NULL,
    role              text        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    email_verified_at timestamptz NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz NULL
);

-- One live account per e-mail; a soft-deleted account frees its address.
-- Serves: login / sign-up lookup `WHERE email = $1 AND deleted_at IS NULL`.
CREATE UNIQUE INDEX users_email_key ON users (email) WHERE deleted_at IS NULL;

-- Serves the admin list: `WHERE deleted_at IS NULL [AND email LIKE 'q%'] ORDER BY id LIMIT n`
-- (id is a UUIDv7, so id order is creation order). Index scan on the primary key for the plain
-- list; the prefix filter uses this pattern-ops index (Index Cond: email ~>=~ 'q' AND email ~<~ 'r').
CREATE INDEX users_email_prefix ON users (email text_pattern_ops) WHERE deleted_at IS NULL;
CREATE INDEX users_name_prefix ON users (lower(name) text_pattern_ops) WHERE deleted_at IS NULL;

CREATE TABLE sessions (
    id             uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz NULL,
    revoked_reason text        NULL CHECK (revoked_reason IN
        ('logout', 'user_revoked', 'refresh_reuse', 'password_changed', 'password_reset', 'account_deleted', 'admin')),
    user_agent     text        NULL CHECK (length(user_agent) <= 512),
    ip             text        NULL CHECK (length(ip) <= 64),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);

-- Serves: "list my active sessions" and "revoke all sessions of user X".
CREATE INDEX sessions_user_active ON sessions (user_id, created_at) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    -- SHA-256 of the opaque token; the token itself is never stored.
    token_hash bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz NULL
);

CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
