-- The trace context of the request that wrote the row (issue 12): W3C `traceparent` and
-- `tracestate` as a JSON object of strings, NULL when traces were off. The job pushed from the
-- row carries it, so the worker's span for the job continues the request's trace.
ALTER TABLE outbox ADD COLUMN trace jsonb NULL;
