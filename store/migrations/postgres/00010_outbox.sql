-- +goose Up
-- The outbox: every notification to every sink, written in the same transaction as the change
-- that caused it (or, for expiry warnings, once per warning whatever instance writes it: key is
-- unique), and delivered by whichever server instance claims it. A claim is a lease: an
-- instance that dies mid-delivery leaves the message to another once its lease runs out.
CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,
    sink          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    next_at       BIGINT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    claimed_by    TEXT NOT NULL DEFAULT '',
    claimed_until BIGINT,
    delivered_at  BIGINT,
    gave_up_at    BIGINT
);
-- Undelivered messages by due time: what the delivery workers scan.
CREATE INDEX outbox_due ON outbox (sink, next_at) WHERE next_at IS NOT NULL;

-- +goose Down
DROP INDEX outbox_due;
DROP TABLE outbox;
