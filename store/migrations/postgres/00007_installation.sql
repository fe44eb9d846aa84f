-- +goose Up
-- A random identity for this jitgate installation (every server sharing the store shares it).
-- Provisioners mark the accounts they create with it, so that two installations that manage
-- one database never take over or remove each other's accounts.
CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id        TEXT NOT NULL
);
INSERT INTO installation (singleton, id) VALUES (1, replace(gen_random_uuid()::text, '-', ''));

-- +goose Down
DROP TABLE installation;
