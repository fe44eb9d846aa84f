-- +goose Up
-- Running server instances, each with a heartbeat. An instance found dead has its work taken
-- over by another: its provisioning leases (grants.prov_claimed_by) are released at once and
-- its gateway sessions (sessions.instance_id) are ended in the store.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL DEFAULT '',
    pid          INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
ALTER TABLE grants ADD COLUMN prov_claimed_by TEXT NOT NULL DEFAULT '';
CREATE INDEX grants_prov_claimed ON grants (prov_claimed_by) WHERE prov_claimed_by <> '';
ALTER TABLE sessions ADD COLUMN instance_id TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_live_instance ON sessions (instance_id) WHERE ended_at IS NULL;

-- +goose Down
DROP INDEX sessions_live_instance;
ALTER TABLE sessions DROP COLUMN instance_id;
DROP INDEX grants_prov_claimed;
ALTER TABLE grants DROP COLUMN prov_claimed_by;
DROP TABLE instances;
