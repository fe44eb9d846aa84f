-- +goose Up
-- Agents (AI agents, bots) request access with an owner who answers for them. The owner is
-- kept with the request and its grant as it was at submission: approval steps that name "the
-- requester's owner", listings that show an owner their agents' work, and the audit all need it.
ALTER TABLE requests ADD COLUMN requester_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX requests_requester_owner ON requests (requester_owner) WHERE requester_owner <> '';
CREATE INDEX grants_owner ON grants (owner) WHERE owner <> '';

-- +goose Down
DROP INDEX grants_owner;
DROP INDEX requests_requester_owner;
ALTER TABLE grants DROP COLUMN owner;
ALTER TABLE requests DROP COLUMN requester_owner;
