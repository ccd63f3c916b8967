-- Campaigns (issue #10): the campaign, its contacts (the dial queue, with leases), each
-- contact's attempts, tenant limits, the suppression list's source, per-trunk limits.
-- Same rules as 0001: TEXT ids made by the application, BIGINT integers and µs times, JSON and
-- enums as TEXT. Rates are stored in milli-calls per second (BIGINT, no floats).

CREATE TABLE campaign (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenant (id),
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    -- The client's settings (model::CampaignSettings) as JSON; the columns below repeat what
    -- queries need.
    settings        TEXT NOT NULL,
    script_id       TEXT,
    script_version  BIGINT,
    priority        BIGINT NOT NULL,
    max_concurrent  BIGINT NOT NULL,
    max_cps_milli   BIGINT NOT NULL,
    -- Calls/s across nodes (GCRA): the theoretical arrival time of the next call, advanced by
    -- each claim in its transaction.
    cps_tat_us      BIGINT NOT NULL DEFAULT 0,
    -- The next contact.seq of this campaign.
    next_seq        BIGINT NOT NULL DEFAULT 1,
    start_at_us     BIGINT,
    end_at_us       BIGINT,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL,
    started_at_us   BIGINT,
    ended_at_us     BIGINT
);
CREATE INDEX campaign_by_tenant ON campaign (tenant_id, created_at_us DESC, id DESC);
CREATE INDEX campaign_by_status ON campaign (status);

CREATE TABLE contact (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenant (id),
    campaign_id         TEXT NOT NULL REFERENCES campaign (id),
    -- Insertion order within the campaign (pagination, results, FIFO among equals).
    seq                 BIGINT NOT NULL,
    phone               TEXT NOT NULL,
    name                TEXT,
    timezone            TEXT,
    resolved_tz         TEXT NOT NULL,
    variables           TEXT NOT NULL,
    priority            BIGINT NOT NULL DEFAULT 0,
    status              TEXT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_us  BIGINT NOT NULL,
    last_outcome        TEXT,
    reason_code         TEXT,
    reason              TEXT,
    trunk_index         BIGINT NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_expires_at_us BIGINT,
    line                BIGINT,
    created_at_us       BIGINT NOT NULL,
    updated_at_us       BIGINT NOT NULL,
    UNIQUE (campaign_id, phone),
    UNIQUE (campaign_id, seq)
);
-- The claim: a campaign's due contacts, best first.
CREATE INDEX contact_due ON contact (campaign_id, priority DESC, next_attempt_at_us, seq)
    WHERE status = 'queued';
-- Live calls per campaign and expired leases.
CREATE INDEX contact_dialing ON contact (campaign_id, lease_expires_at_us) WHERE status = 'dialing';
CREATE INDEX contact_lease ON contact (lease_expires_at_us) WHERE status = 'dialing';
-- Listing by status; counts.
CREATE INDEX contact_by_status ON contact (campaign_id, status, seq);
-- A suppression moves the tenant's queued contacts with that number.
CREATE INDEX contact_by_phone ON contact (tenant_id, phone);

CREATE TABLE contact_attempt (
    contact_id    TEXT NOT NULL REFERENCES contact (id),
    attempt       BIGINT NOT NULL,
    tenant_id     TEXT NOT NULL,
    campaign_id   TEXT NOT NULL,
    phone         TEXT NOT NULL,
    call_id       TEXT,
    trunk_id      TEXT,
    node_id       TEXT NOT NULL,
    claimed_at_us BIGINT NOT NULL,
    ended_at_us   BIGINT,
    outcome       TEXT,
    rule          TEXT,
    PRIMARY KEY (contact_id, attempt)
);
-- The per-number cap across a tenant's campaigns.
CREATE INDEX attempt_by_number ON contact_attempt (tenant_id, phone, claimed_at_us);
CREATE INDEX attempt_by_call ON contact_attempt (call_id);
-- Calls/s over the last minute; outcome counts.
CREATE INDEX attempt_by_campaign ON contact_attempt (campaign_id, claimed_at_us);

-- A tenant's campaign limits (absent: defaults).
CREATE TABLE tenant_limits (
    tenant_id           TEXT PRIMARY KEY REFERENCES tenant (id),
    max_concurrent      BIGINT,
    max_cps_milli       BIGINT,
    number_cap          BIGINT NOT NULL,
    number_cap_window_s BIGINT NOT NULL,
    -- Calls/s across nodes (GCRA), as campaign.cps_tat_us.
    cps_tat_us          BIGINT NOT NULL DEFAULT 0,
    updated_at_us       BIGINT NOT NULL
);

-- Where a suppression came from: api, csv, opt_out.
ALTER TABLE suppression ADD COLUMN source TEXT NOT NULL DEFAULT 'api';

-- Per-trunk limits (NULL: unlimited).
ALTER TABLE trunk ADD COLUMN max_concurrent BIGINT;
ALTER TABLE trunk ADD COLUMN max_cps_milli BIGINT;
