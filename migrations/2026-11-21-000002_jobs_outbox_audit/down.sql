DROP TABLE email_tokens;
DROP TABLE email_log;
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE outbox;
