-- +goose Up
-- A session.statements event carries a batch of one session's statements (JSON), covered by
-- the event's hash; one row per batch instead of one per statement.
ALTER TABLE audit_events ADD COLUMN statements TEXT;

-- +goose Down
ALTER TABLE audit_events DROP COLUMN statements;
