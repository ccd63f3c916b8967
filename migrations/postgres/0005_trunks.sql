-- Trunks that reach real carriers (issue #11).
--
-- trunk.settings is the JSON of crate::trunk::TrunkSettings minus the fields that already have
-- a column: each value is stored once. The columns address (the first host), transport,
-- username, password and from_user stay what existing API clients and the campaign code read;
-- the store fills them from the settings on write and puts them back into the settings on read.
-- The password lives only in trunk.password (never in the JSON).
ALTER TABLE trunk ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';

-- Inbound routing by the dialed number: a DID (E.164 "+4420..." or a Request-URI user part)
-- belongs to one trunk of its tenant and runs script_id (NULL: the node's default inbound).
CREATE TABLE trunk_route (
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    trunk_id      TEXT NOT NULL REFERENCES trunk (id) ON DELETE CASCADE,
    did           TEXT NOT NULL,
    script_id     TEXT,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, did)
);
-- A trunk's routes (listing, and the cascade on delete).
CREATE INDEX trunk_route_by_trunk ON trunk_route (trunk_id, did);
