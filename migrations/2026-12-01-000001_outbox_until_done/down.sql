DROP INDEX outbox_dead;
DROP INDEX outbox_finished;
DROP INDEX outbox_due;
ALTER TABLE outbox
    DROP CONSTRAINT outbox_dead_is_finished,
    DROP COLUMN epoch,
    DROP COLUMN dead_at,
    DROP COLUMN finished_at,
    DROP COLUMN next_push_at;
CREATE INDEX outbox_pending ON outbox (created_at) WHERE dispatched_at IS NULL;
CREATE INDEX outbox_dispatched ON outbox (dispatched_at) WHERE dispatched_at IS NOT NULL;
