-- Campaign events (issue #10): `campaign.started|paused|resumed|completed|cancelled` and
-- `contact.deferred|suppressed|exhausted` belong to a campaign and to no call. They go in the
-- one timeline (call_event), so that they share its global id sequence (SSE Last-Event-ID),
-- its commit-order lock and its outbox: call_id becomes optional, and every event still
-- belongs to a call or to a campaign.
ALTER TABLE call_event ALTER COLUMN call_id DROP NOT NULL;
ALTER TABLE call_event ADD CONSTRAINT call_event_owner
    CHECK (call_id IS NOT NULL OR campaign_id IS NOT NULL);
