-- Credits, rate limits and usage.
ALTER TABLE applications ADD COLUMN rate_per_minute INTEGER;
ALTER TABLE applications ADD COLUMN burst INTEGER;
ALTER TABLE applications ADD COLUMN max_concurrent INTEGER;

-- What a task reserved when accepted and what it was finally charged (NULL until settled).
ALTER TABLE tasks ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN charged INTEGER;
ALTER TABLE tasks ADD COLUMN images INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN failed_images INTEGER NOT NULL DEFAULT 0;

-- Every change of a balance; balance = SUM(amount) per application, always.
CREATE TABLE ledger (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id  TEXT NOT NULL REFERENCES applications(id),
    task_id         TEXT,
    amount          INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX ledger_application ON ledger (application_id, created_at);

-- The opening balances of applications created before the ledger existed.
INSERT INTO ledger (application_id, amount, reason, created_at)
    SELECT id, credits, 'opening balance', created_at FROM applications WHERE credits <> 0;
