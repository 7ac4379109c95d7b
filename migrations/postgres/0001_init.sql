-- The PostgreSQL schema: the same tables and columns as migrations/sqlite (0001–0003 there), so
-- the code's SQL is shared. Integers are BIGINT (Rust i64), flags are BIGINT 0/1 like SQLite's.
-- Times are Unix milliseconds.

CREATE TABLE applications (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    credits          BIGINT NOT NULL DEFAULT 0,
    disabled         BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    rate_per_minute  BIGINT,
    burst            BIGINT,
    max_concurrent   BIGINT
);

-- Tokens are stored only as a SHA-256 hash plus a short visible prefix.
CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,
    application_id  TEXT NOT NULL REFERENCES applications(id),
    hash            TEXT NOT NULL UNIQUE,
    prefix          TEXT NOT NULL,
    name            TEXT NOT NULL DEFAULT '',
    -- '*' or a comma-separated list of API ids this token may call.
    apis            TEXT NOT NULL DEFAULT '*',
    expires_at      BIGINT,
    revoked         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);

-- A task is both the user-visible record and the queue entry.
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    trace_id        TEXT NOT NULL,
    application_id  TEXT NOT NULL REFERENCES applications(id),
    user_id         TEXT NOT NULL,
    api_id          TEXT NOT NULL,
    credential_id   TEXT NOT NULL,
    request         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'processing', 'succeeded', 'failed')),
    http_status     BIGINT,
    response        TEXT,
    callback_url    TEXT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    run_at          BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    -- What a task reserved when accepted and what it was finally charged (NULL until settled).
    model           TEXT NOT NULL DEFAULT '',
    reserved        BIGINT NOT NULL DEFAULT 0,
    charged         BIGINT,
    images          BIGINT NOT NULL DEFAULT 0,
    failed_images   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_queue ON tasks (state, run_at);
CREATE INDEX tasks_application ON tasks (application_id, created_at);

-- The callback outbox: written in the same transaction that records a task's result.
CREATE TABLE callbacks (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL REFERENCES tasks(id),
    url              TEXT NOT NULL,
    body             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX callbacks_queue ON callbacks (state, next_attempt_at);

-- Every delivery attempt, for operators and for the at-least-once guarantee's audit.
CREATE TABLE callback_attempts (
    callback_id  TEXT NOT NULL REFERENCES callbacks(id),
    attempt      BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    status       BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT,
    PRIMARY KEY (callback_id, attempt)
);

-- Idempotency-Key: the same key from the same application within 24 hours returns the original
-- task instead of creating (and billing) a new one.
CREATE TABLE idempotency_keys (
    application_id  TEXT NOT NULL,
    key             TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (application_id, key)
);

-- Every change of a balance; balance = SUM(amount) per application, always.
CREATE TABLE ledger (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    application_id  TEXT NOT NULL REFERENCES applications(id),
    task_id         TEXT,
    amount          BIGINT NOT NULL,
    reason          TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX ledger_application ON ledger (application_id, created_at);
