-- OpenID Connect login: the identities a user signs in with, and accounts without a password.

-- An account created by a first OpenID login has no password until the reset flow sets one;
-- password login treats it as a wrong password.
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;

CREATE TABLE identities (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The configured provider name (`google`), as shown to the user; `issuer` is what identifies.
    provider   text        NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{0,31}$'),
    issuer     text        NOT NULL CHECK (length(issuer) BETWEEN 1 AND 512),
    -- The provider's `sub`: stable and unique per issuer (an e-mail is neither).
    subject    text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    -- The e-mail the provider gave at the last login (informational, never a key).
    email      text        NULL CHECK (length(email) <= 320),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now()
);

-- One account per (issuer, sub). Serves the callback's look-up `WHERE issuer = $1 AND subject = $2`.
CREATE UNIQUE INDEX identities_issuer_subject_key ON identities (issuer, subject);
-- Serves the user's list `WHERE user_id = $1 ORDER BY created_at, id` and the count on unlink.
CREATE INDEX identities_user ON identities (user_id, created_at, id);
