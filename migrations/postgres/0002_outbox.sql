-- The outbox claim per webhook (issue #9): a claim looks at the webhooks that have something
-- due, oldest first, through an index, and takes at most a few due rows of each through
-- another index, instead of ranking every pending row of every webhook in one window.
--
-- webhook.claimable_at_us: nothing of this webhook can be claimed before it (NULL: nothing
-- pending). It is a lower bound of max(paused_until_us, the earliest due pending row): queuing
-- or rescheduling a row only ever lowers it (the trigger below, finish_attempt, redeliver),
-- and only the claim, which has just looked at the webhook's rows, sets it exactly (it may
-- raise it). A bound that is too low costs one probe that finds nothing; it is never too high.
-- webhook.paused_until_us: after a failed attempt the webhook rests (doubling with its failures
-- in a row, reset by a success), so a receiver that is down is not sent its whole backlog.
ALTER TABLE webhook ADD COLUMN claimable_at_us BIGINT;
ALTER TABLE webhook ADD COLUMN paused_until_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;

-- The claim: which webhooks have something due, earliest first.
CREATE INDEX webhook_claimable ON webhook (claimable_at_us) WHERE claimable_at_us IS NOT NULL;
-- The claim: one webhook's pending rows, earliest due first.
CREATE INDEX webhook_delivery_pending ON webhook_delivery (webhook_id, next_attempt_at_us)
    WHERE status = 'pending';

UPDATE webhook SET claimable_at_us = (
    SELECT MIN(d.next_attempt_at_us) FROM webhook_delivery d
    WHERE d.webhook_id = webhook.id AND d.status = 'pending'
);

-- A queued delivery makes its webhook claimable at its due time (or at the end of a pause).
-- A trigger rather than code in the event append: every writer of the outbox keeps the bound.
--
-- The KEY SHARE lock (the foreign key takes the same one) is held until the inserting
-- transaction commits. The claim locks the webhook rows it recomputes FOR UPDATE SKIP LOCKED,
-- which conflicts with it: a claim never recomputes the bound of a webhook while a delivery
-- of it is being queued (it would not see the uncommitted row and could raise the bound above
-- it), and a delivery queued after a claim sees the claim's bound before lowering it.
CREATE FUNCTION webhook_delivery_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM webhook WHERE id = NEW.webhook_id FOR KEY SHARE;
    UPDATE webhook
    SET claimable_at_us = GREATEST(paused_until_us, NEW.next_attempt_at_us)
    WHERE id = NEW.webhook_id
      AND (claimable_at_us IS NULL
           OR claimable_at_us > GREATEST(paused_until_us, NEW.next_attempt_at_us));
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_delivery_queued AFTER INSERT ON webhook_delivery
FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION webhook_delivery_queued();
