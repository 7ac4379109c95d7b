-- Applications own tokens and (from the billing issue on) a credit balance and rate limits.
CREATE TABLE applications (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    credits       INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
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
    expires_at      INTEGER,
    revoked         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

-- A task is both the user-visible record and the queue entry. Times are Unix milliseconds.
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    trace_id        TEXT NOT NULL,
    application_id  TEXT NOT NULL REFERENCES applications(id),
    user_id         TEXT NOT NULL,
    api_id          TEXT NOT NULL,
    credential_id   TEXT NOT NULL,
    request         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'processing', 'succeeded', 'failed')),
    http_status     INTEGER,
    response        TEXT,
    callback_url    TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    run_at          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER
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
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX callbacks_queue ON callbacks (state, next_attempt_at);

-- Every delivery attempt, for operators and for the at-least-once guarantee's audit.
CREATE TABLE callback_attempts (
    callback_id  TEXT NOT NULL REFERENCES callbacks(id),
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status       INTEGER,
    latency_ms   INTEGER NOT NULL,
    error        TEXT,
    PRIMARY KEY (callback_id, attempt)
);
