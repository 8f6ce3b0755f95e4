DROP TABLE identities;
-- Accounts that never set a password get one that matches nothing (bcrypt rejects the value).
UPDATE users SET password_hash = '!' WHERE password_hash IS NULL;
ALTER TABLE users ALTER COLUMN password_hash SET NOT NULL;
