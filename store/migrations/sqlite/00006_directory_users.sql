-- +goose Up
-- Users who signed in through the identity provider, with the groups it last reported, so
-- their tokens and policies' group rules work between sign-ins and across server instances.
CREATE TABLE directory_users (
    name        TEXT PRIMARY KEY,
    groups_json TEXT NOT NULL DEFAULT '[]',
    source      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- +goose Down
DROP TABLE directory_users;
