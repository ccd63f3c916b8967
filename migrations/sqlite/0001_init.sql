-- callplane schema, version 1 (SQLite dialect; migrations/postgres/0001_init.sql is the same
-- schema for PostgreSQL: keep the two in step).
--
-- Conventions shared by both dialects, so that one body of SQL (src/store/sql.rs) serves both:
-- ids are TEXT made by the application (`<prefix>_` + 24 hex, store::new_id) except call_event's
-- global sequence; every integer is BIGINT (times in µs since the epoch: `*_us`); JSON and
-- enums are TEXT; flags are BIGINT 0/1 (no BOOLEAN: the Any driver maps it differently per
-- database).
--
-- This file is applied once, in one transaction, by the store's migration runner, which
-- records it in schema_migrations with its SHA-256: never edit it after release, add 0002_*.

CREATE TABLE tenant (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    created_at_us BIGINT NOT NULL
);

-- The secret is never stored: only its SHA-256 (lowercase hex), which is what a Bearer key is
-- looked up by.
CREATE TABLE api_key (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'operator', 'analyst', 'viewer')),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT
);
CREATE INDEX api_key_by_tenant ON api_key (tenant_id, created_at_us);

CREATE TABLE trunk (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    name          TEXT NOT NULL,
    address       TEXT NOT NULL,
    transport     TEXT NOT NULL,
    username      TEXT,
    password      TEXT,
    from_user     TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- A script is its current head; every version (the first included) is a script_version row,
-- so a call can always be traced to the exact body it ran, even after the script is deleted
-- (deleted_at_us set: hidden from listings, its name free again).
CREATE TABLE script (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    deleted_at_us BIGINT
);
CREATE UNIQUE INDEX script_name_per_tenant ON script (tenant_id, name) WHERE deleted_at_us IS NULL;

CREATE TABLE script_version (
    script_id     TEXT NOT NULL REFERENCES script (id),
    version       BIGINT NOT NULL,
    name          TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (script_id, version)
);

-- One row per call attempt. The columns after `created_at_us` are derived from the call's
-- events (store::derive::apply, in the transaction that appends each event). trunk_id and
-- script_id carry no foreign key on purpose: a call's history outlives the trunk or script.
CREATE TABLE call (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenant (id),
    direction       TEXT NOT NULL,
    to_uri          TEXT NOT NULL,
    from_uri        TEXT NOT NULL,
    trunk_id        TEXT,
    script_id       TEXT,
    script_version  BIGINT,
    campaign_id     TEXT,
    idempotency_key TEXT,
    request         TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    status          TEXT NOT NULL,
    outcome         TEXT,
    sip_status      BIGINT,
    sip_reason      TEXT,
    q850_cause      BIGINT,
    sip_call_id     TEXT,
    started_at_us   BIGINT,
    ringing_at_us   BIGINT,
    answered_at_us  BIGINT,
    ended_at_us     BIGINT,
    talk_ms         BIGINT,
    result          TEXT,
    end_reason      TEXT,
    -- The node running the call (NULL for rows no node ran); its live calls end with it.
    node_id         TEXT,
    -- NULL keys never collide: only calls created with an Idempotency-Key are deduplicated.
    UNIQUE (tenant_id, idempotency_key)
);
-- GET /v1/calls: newest first, keyset pagination on (created_at_us, id).
-- Start-up and heartbeats look for live calls of stopped nodes.
CREATE INDEX call_open_by_node ON call (node_id, status);
CREATE INDEX call_by_tenant_created ON call (tenant_id, created_at_us DESC, id DESC);
CREATE INDEX call_by_tenant_campaign ON call (tenant_id, campaign_id, created_at_us DESC);
-- open_calls() at start (calls a crash left without a final event).
CREATE INDEX call_open ON call (status) WHERE status NOT IN ('completed', 'failed');

-- The append-only timeline. `id` is the global sequence SSE resumes from (Last-Event-ID):
-- AUTOINCREMENT so an id is never reused, even after the newest row is deleted; SQLite has a
-- single writer, so ids also increase in commit order.
CREATE TABLE call_event (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenant (id),
    call_id     TEXT NOT NULL REFERENCES call (id),
    campaign_id TEXT,
    kind        TEXT NOT NULL,
    at_unix_us  BIGINT NOT NULL,
    offset_us   BIGINT NOT NULL,
    details     TEXT NOT NULL
);
CREATE INDEX call_event_by_call ON call_event (call_id, id);
CREATE INDEX call_event_by_tenant ON call_event (tenant_id, id);
CREATE INDEX call_event_by_campaign ON call_event (tenant_id, campaign_id, id);

CREATE TABLE recording (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    call_id       TEXT NOT NULL REFERENCES call (id),
    event_id      BIGINT NOT NULL REFERENCES call_event (id),
    path          TEXT NOT NULL,
    format        TEXT NOT NULL,
    channels      BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    created_at_us BIGINT NOT NULL
);
CREATE INDEX recording_by_call ON recording (call_id, created_at_us);

CREATE TABLE webhook (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    url           TEXT NOT NULL,
    secret        TEXT NOT NULL,
    events        TEXT NOT NULL, -- a JSON array of kinds ("call.*" matches a prefix); [] = all
    active        BIGINT NOT NULL, -- 0 or 1
    description   TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
CREATE INDEX webhook_by_tenant ON webhook (tenant_id, created_at_us);

-- The outbox: written in the transaction that appends the event, so an event is stored if and
-- only if its deliveries are queued. `body` is fixed at enqueue time: every attempt sends the
-- same bytes.
CREATE TABLE webhook_delivery (
    id                 TEXT PRIMARY KEY,
    webhook_id         TEXT NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
    tenant_id          TEXT NOT NULL REFERENCES tenant (id),
    event_id           BIGINT NOT NULL REFERENCES call_event (id),
    body               TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts           BIGINT NOT NULL,
    next_attempt_at_us BIGINT NOT NULL,
    last_status        BIGINT,
    last_error         TEXT,
    created_at_us      BIGINT NOT NULL,
    delivered_at_us    BIGINT
);
-- The dispatcher's claim: pending rows due first.
CREATE INDEX webhook_delivery_due ON webhook_delivery (status, next_attempt_at_us);
-- GET /v1/webhooks/{id}/deliveries: newest first.
CREATE INDEX webhook_delivery_by_webhook ON webhook_delivery (webhook_id, created_at_us DESC, event_id DESC);

-- The do-not-call list.
CREATE TABLE suppression (
    tenant_id     TEXT NOT NULL REFERENCES tenant (id),
    number        TEXT NOT NULL,
    reason        TEXT,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, number)
);

-- callplane processes sharing this database.
CREATE TABLE node (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    capacity        BIGINT NOT NULL,
    started_at_us   BIGINT NOT NULL,
    heartbeat_at_us BIGINT NOT NULL
);

-- Room for the campaigns issue: it adds `campaign` (id, tenant_id, name, script_id, trunk_id,
-- pacing, status...) and `contact` (id, campaign_id, number, variables, status, attempts...)
-- in a 0002 migration. call.campaign_id and call_event.campaign_id already exist (and are
-- indexed) so that listing and streaming by campaign need no change to these tables.
