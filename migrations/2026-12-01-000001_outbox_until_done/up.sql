-- The outbox stays the source of truth until a job's effect is done (issue 8.1): a row is
-- finished only when the worker's handler completed it or dead-lettered it. A row that was
-- pushed but not finished by `next_push_at` is pushed again (the queue may have lost it: Redis
-- restarted without its data); handlers are idempotent, so a second push is harmless.

ALTER TABLE outbox
    -- When the dispatcher may (re-)push the row: 2 s after insert (the API pushes it itself
    -- after commit), then push time + visibility timeout, or retry time + backoff + timeout.
    ADD COLUMN next_push_at timestamptz NOT NULL DEFAULT (now() + interval '2 seconds'),
    -- Set by the worker when the handler completed (or dead-lettered) the job.
    ADD COLUMN finished_at  timestamptz NULL,
    -- Set together with finished_at when the job was dead-lettered; cleared by a re-drive.
    ADD COLUMN dead_at      timestamptz NULL,
    -- Bumped by each re-drive of a dead job: part of the queue's idempotency key, so a re-driven
    -- job is enqueued again while the first delivery's key is still remembered.
    ADD COLUMN epoch        integer     NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    ADD CONSTRAINT outbox_dead_is_finished CHECK (dead_at IS NULL OR finished_at IS NOT NULL);

-- Rows the previous version pushed more than an hour ago are taken as done; younger ones are
-- pushed once more (harmless: the queue drops a duplicate, the handlers are idempotent).
UPDATE outbox SET finished_at = dispatched_at
WHERE dispatched_at IS NOT NULL AND dispatched_at < now() - interval '1 hour';
UPDATE outbox SET next_push_at = now() WHERE finished_at IS NULL;

DROP INDEX outbox_pending;
DROP INDEX outbox_dispatched;
-- Serves the dispatcher: `WHERE finished_at IS NULL AND next_push_at <= now() ORDER BY
-- next_push_at LIMIT n FOR UPDATE SKIP LOCKED` → Index Scan on outbox_due (only unfinished rows).
CREATE INDEX outbox_due ON outbox (next_push_at) WHERE finished_at IS NULL;
-- Serves pruning: `DELETE … WHERE finished_at < now() - retention AND dead_at IS NULL`.
CREATE INDEX outbox_finished ON outbox (finished_at) WHERE finished_at IS NOT NULL AND dead_at IS NULL;
-- Serves `worker dead list`.
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;
