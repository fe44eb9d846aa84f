-- +goose Up
CREATE TABLE session_credentials (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grant_id    BIGINT NOT NULL REFERENCES grants (id),
    user_name   TEXT    NOT NULL,
    -- SHA-256 of the credential; the credential itself is shown once.
    hash        TEXT    NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX session_credentials_grant ON session_credentials (grant_id);

CREATE TABLE sessions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grant_id    BIGINT NOT NULL REFERENCES grants (id),
    user_name   TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    client_addr TEXT    NOT NULL DEFAULT '',
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    end_reason  TEXT    NOT NULL DEFAULT '',
    bytes_in    BIGINT NOT NULL DEFAULT 0,
    bytes_out   BIGINT NOT NULL DEFAULT 0,
    statements  BIGINT NOT NULL DEFAULT 0
);
-- Live sessions ("jitgate sessions --active") and a grant's sessions.
CREATE INDEX sessions_live ON sessions (id) WHERE ended_at IS NULL;
CREATE INDEX sessions_grant ON sessions (grant_id);

ALTER TABLE audit_events ADD COLUMN session_id BIGINT NOT NULL DEFAULT 0;
CREATE INDEX audit_session ON audit_events (session_id) WHERE session_id <> 0;

-- +goose Down
DROP INDEX audit_session;
ALTER TABLE audit_events DROP COLUMN session_id;
DROP TABLE sessions;
DROP TABLE session_credentials;
