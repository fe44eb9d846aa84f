-- +goose Up
-- The revocation receipt: when the provisioner verified that an ended grant's access is gone,
-- and what it checked.
ALTER TABLE grants ADD COLUMN prov_verified_at BIGINT;
ALTER TABLE grants ADD COLUMN prov_receipt TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE grants DROP COLUMN prov_receipt;
ALTER TABLE grants DROP COLUMN prov_verified_at;
