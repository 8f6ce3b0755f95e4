-- The transactional outbox, the append-only audit log, the e-mail send log and single-use e-mail
-- tokens (verification, password reset).

CREATE TABLE outbox (
    id            uuid        PRIMARY KEY,
    queue         text        NOT NULL CHECK (queue IN ('email', 'audit', 'orders')),
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz NULL,
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    text        NULL CHECK (length(last_error) <= 1000)
);

-- Serves the dispatcher: `WHERE dispatched_at IS NULL AND created_at < $1 ORDER BY created_at
-- LIMIT n FOR UPDATE SKIP LOCKED` → Index Scan on outbox_pending (tiny: only pending rows).
CREATE INDEX outbox_pending ON outbox (created_at) WHERE dispatched_at IS NULL;
-- Serves pruning: `DELETE … WHERE dispatched_at < now() - retention`.
CREATE INDEX outbox_dispatched ON outbox (dispatched_at) WHERE dispatched_at IS NOT NULL;

CREATE TABLE audit_log (
    -- Unique per event: a re-delivered job inserts nothing new (ON CONFLICT DO NOTHING).
    event_id    uuid        PRIMARY KEY,
    event_type  text        NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_.]{0,63}$'),
    -- No foreign keys: the log must outlive what it talks about.
    actor_id    uuid        NULL,
    target_type text        NULL CHECK (length(target_type) <= 32),
    target_id   uuid        NULL,
    request_id  text        NULL CHECK (length(request_id) <= 128),
    ip          text        NULL CHECK (length(ip) <= 64),
    user_agent  text        NULL CHECK (length(user_agent) <= 512),
    data        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Serve GET /v1/audit-events: newest first with (occurred_at, event_id) keyset pagination,
-- optionally filtered by actor or type → Index Scan (Backward) on the matching index.
CREATE INDEX audit_log_time ON audit_log (occurred_at, event_id);
CREATE INDEX audit_log_actor ON audit_log (actor_id, occurred_at, event_id);
CREATE INDEX audit_log_type ON audit_log (event_type, occurred_at, event_id);

-- Append-only, whoever connects (even the table owner): UPDATE, DELETE and TRUNCATE raise.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE email_log (
    -- One row per logical message: checked before sending, recorded after.
    message_key text        PRIMARY KEY CHECK (length(message_key) <= 200),
    kind        text        NOT NULL,
    user_id     uuid        NULL,
    sent_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE email_tokens (
    token_hash bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text        NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz NULL
);

-- Serves "invalidate the user's other live tokens of this purpose" after a reset.
CREATE INDEX email_tokens_user_live ON email_tokens (user_id, purpose) WHERE used_at IS NULL;
