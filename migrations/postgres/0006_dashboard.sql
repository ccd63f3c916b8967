-- Reads of the dashboard (issue #14).
--
-- GET /v1/calls/{id}/deliveries: the deliveries of one call's events, found by event id
-- (webhook_delivery otherwise has no index on it, and grows with every event delivered).
CREATE INDEX webhook_delivery_by_event ON webhook_delivery (tenant_id, event_id);
-- GET /v1/campaigns/{id}/activity: attempts ended per time bucket (started ones use
-- attempt_by_campaign on claimed_at_us).
CREATE INDEX attempt_by_campaign_ended ON contact_attempt (campaign_id, ended_at_us);
