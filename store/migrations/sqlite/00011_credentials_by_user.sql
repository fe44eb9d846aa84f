-- +goose Up
-- The MySQL gateway checks a client's scrambled proof against the credentials of the user it
-- names (GatewayService.AuthenticateProof), so credentials are looked up by user too. Hashes
-- written from here on are SHA-256 of SHA-256 (jitgate.HashCredential); older rows keep their
-- single SHA-256 and are still found by it until their grants end.
CREATE INDEX session_credentials_user ON session_credentials (user_name, grant_id);

-- +goose Down
DROP INDEX session_credentials_user;
