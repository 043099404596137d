-- Idempotency keys of the HTTP API (`Idempotency-Key` on POST, PUT and DELETE).
--
-- A row is inserted as pending (status NULL) before the call runs, so a concurrent repeat on
-- any node finds it and waits instead of running the call a second time; the call's status and
-- body are written when it ends. Rows live 24 hours (created_at is unix milliseconds in both
-- backends, so they share the SQL); every node deletes expired ones.
CREATE TABLE api_idempotency (
    key         TEXT NOT NULL PRIMARY KEY,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    -- SHA-256 of the request body, hex.
    body_hash   TEXT NOT NULL,
    -- NULL while the first call runs.
    status      INTEGER,
    body        TEXT,
    created_at  INTEGER NOT NULL
);

-- The periodic cleanup deletes by age.
CREATE INDEX api_idempotency_created_at_idx ON api_idempotency (created_at);
