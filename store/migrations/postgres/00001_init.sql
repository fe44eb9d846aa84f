-- +goose Up
CREATE TABLE requests (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requester        TEXT    NOT NULL,
    resource         TEXT    NOT NULL,
    role             TEXT    NOT NULL,
    duration_ns      BIGINT NOT NULL,
    reason           TEXT    NOT NULL DEFAULT '',
    start_at         BIGINT,
    break_glass      BOOLEAN NOT NULL DEFAULT FALSE,
    extends_grant    BIGINT NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL,
    policy           TEXT    NOT NULL,
    step             BIGINT NOT NULL DEFAULT 0,
    steps            BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    decided_at       BIGINT,
    decided_by       TEXT    NOT NULL DEFAULT '',
    decision_note    TEXT    NOT NULL DEFAULT '',
    post_review_open BOOLEAN NOT NULL DEFAULT FALSE,
    grant_id         BIGINT NOT NULL DEFAULT 0,
    version          BIGINT NOT NULL DEFAULT 1
);
-- Pending requests by time-out (the scheduler's next due time, the review inbox).
CREATE INDEX requests_state_expires ON requests (state, expires_at);
-- "My requests".
CREATE INDEX requests_requester ON requests (requester, state);
-- Pending extensions of a grant, cancelled when the grant ends.
CREATE INDEX requests_extends ON requests (extends_grant) WHERE extends_grant <> 0;
-- Break-glass requests awaiting their after-the-fact review.
CREATE INDEX requests_post_review ON requests (id) WHERE post_review_open;

CREATE TABLE reviews (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id BIGINT NOT NULL REFERENCES requests (id),
    reviewer   TEXT    NOT NULL,
    step       BIGINT NOT NULL,
    decision   TEXT    NOT NULL,
    comment    TEXT    NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    post_hoc   BOOLEAN NOT NULL DEFAULT FALSE,
    -- One person counts once per step, even if two of their clicks race.
    UNIQUE (request_id, step, reviewer, post_hoc)
);

CREATE TABLE grants (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id    BIGINT NOT NULL REFERENCES requests (id),
    user_name     TEXT    NOT NULL,
    resource      TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    policy        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    break_glass   BOOLEAN NOT NULL DEFAULT FALSE,
    starts_at     BIGINT NOT NULL,
    ends_at       BIGINT NOT NULL,
    activated_at  BIGINT,
    ended_at      BIGINT,
    end_reason    TEXT    NOT NULL DEFAULT '',
    ended_by      TEXT    NOT NULL DEFAULT '',
    extensions    BIGINT NOT NULL DEFAULT 0,
    prov_state    TEXT    NOT NULL DEFAULT 'none',
    prov_attempts BIGINT NOT NULL DEFAULT 0,
    prov_error    TEXT    NOT NULL DEFAULT '',
    prov_next_at  BIGINT,
    version       BIGINT NOT NULL DEFAULT 1
);
-- Scheduled grants by start and active grants by end (activation, expiry, "active grants").
CREATE INDEX grants_state_starts ON grants (state, starts_at);
CREATE INDEX grants_state_ends ON grants (state, ends_at);
-- Provisioning work due (grant/revoke retries).
CREATE INDEX grants_prov_next ON grants (prov_next_at) WHERE prov_next_at IS NOT NULL;
-- "My grants" and the one-live-grant-per-role check.
CREATE INDEX grants_user ON grants (user_name, resource, role, state);

CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    request_id BIGINT NOT NULL DEFAULT 0,
    grant_id   BIGINT NOT NULL DEFAULT 0,
    details    TEXT    NOT NULL DEFAULT '{}',
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
CREATE INDEX audit_request ON audit_events (request_id) WHERE request_id <> 0;
CREATE INDEX audit_grant ON audit_events (grant_id) WHERE grant_id <> 0;
CREATE INDEX audit_actor ON audit_events (actor, seq);

-- The chain's head: one row, locked by every append so that appends are serialized.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

-- +goose Down
DROP TABLE audit_head;
DROP TABLE audit_events;
DROP TABLE grants;
DROP TABLE reviews;
DROP TABLE requests;
