-- +goose Up
CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name   TEXT    NOT NULL,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    hash        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    created_by  TEXT    NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_name);

-- +goose Down
DROP TABLE api_tokens;
