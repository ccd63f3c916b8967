-- Campaign events (issue #10): `campaign.started|paused|resumed|completed|cancelled` and
-- `contact.deferred|suppressed|exhausted` belong to a campaign and to no call. They go in the
-- one timeline (call_event), so that they share its global id sequence (SSE Last-Event-ID) and
-- its outbox: call_id becomes optional, and every event still belongs to a call or to a
-- campaign (the CHECK).
--
-- SQLite cannot drop a NOT NULL constraint, so the table is rebuilt by the procedure of the
-- SQLite documentation ("ALTER TABLE", "Making Other Kinds Of Table Schema Changes"): a new
-- table, the rows copied with their ids, the old one dropped, the new one renamed, the indexes
-- made again. Foreign keys must be off for it: webhook_delivery.event_id and
-- recording.event_id reference call_event, and dropping it with them on would delete-check
-- every row. `PRAGMA foreign_keys` does nothing inside a transaction, so the migration runner
-- (src/store/sql/migrate.rs) turns them off around all SQLite migrations and runs
-- `PRAGMA foreign_key_check` before turning them on again.
--
-- Ids are never reused (AUTOINCREMENT): the new table's sqlite_sequence row takes the old
-- one's value, which may be above the largest id left (a deleted newest row). DROP TABLE
-- removes the old table's row; the RENAME renames the new one's.

CREATE TABLE call_event_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenant (id),
    call_id     TEXT REFERENCES call (id),
    campaign_id TEXT,
    kind        TEXT NOT NULL,
    at_unix_us  BIGINT NOT NULL,
    offset_us   BIGINT NOT NULL,
    details     TEXT NOT NULL,
    CONSTRAINT call_event_owner CHECK (call_id IS NOT NULL OR campaign_id IS NOT NULL)
);

INSERT INTO call_event_new (id, tenant_id, call_id, campaign_id, kind, at_unix_us, offset_us,
                            details)
SELECT id, tenant_id, call_id, campaign_id, kind, at_unix_us, offset_us, details
FROM call_event ORDER BY id;

DELETE FROM sqlite_sequence WHERE name = 'call_event_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'call_event_new', seq FROM sqlite_sequence WHERE name = 'call_event';

DROP TABLE call_event;
ALTER TABLE call_event_new RENAME TO call_event;

CREATE INDEX call_event_by_call ON call_event (call_id, id);
CREATE INDEX call_event_by_tenant ON call_event (tenant_id, id);
CREATE INDEX call_event_by_campaign ON call_event (tenant_id, campaign_id, id);
