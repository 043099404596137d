-- Webhooks that are never lost: the transactional outbox (see the Postgres migration of the
-- same name for the whole story). An event is inserted in the same transaction as the change
-- it reports, when webhooks are configured, and delivered from here by the node
-- (src/hooks/delivery.rs). Times are unix milliseconds.
CREATE TABLE webhook_outbox (
    id          TEXT NOT NULL PRIMARY KEY,
    type        TEXT NOT NULL,
    -- message.created: the message, read when the event is delivered.
    message_id  TEXT,
    -- Every other type: the event's data, JSON.
    data        TEXT,
    created_at  INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    claimed_by  TEXT,
    lease_until INTEGER,
    failed_at   INTEGER
);

CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (due_at) WHERE failed_at IS NULL;
