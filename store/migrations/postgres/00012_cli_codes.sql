-- +goose Up
-- One-time codes of CLI sign-ins (jitgate login): issued by the replica where the browser
-- confirms, traded for a token at whichever replica the CLI reaches. Only the code's SHA-256 is
-- kept; a code is deleted when traded, and expired ones when the next is issued.
CREATE TABLE cli_codes (
    hash       TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    challenge  TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX cli_codes_expires ON cli_codes (expires_at);

-- +goose Down
DROP TABLE cli_codes;
