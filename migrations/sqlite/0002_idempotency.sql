-- Idempotency-Key: the same key from the same application within 24 hours returns the original
-- task instead of creating (and billing) a new one.
CREATE TABLE idempotency_keys (
    application_id  TEXT NOT NULL,
    key             TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (application_id, key)
);
