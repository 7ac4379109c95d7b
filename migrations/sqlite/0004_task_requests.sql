-- A task's request body in a table of its own. SQLite rewrites a whole row on every UPDATE, and
-- a task row is updated when claimed, on every lease renewal and when finished: with an edit's
-- data: URI inputs in the row (up to ~11 MB of JSON), each of those wrote the request again.
CREATE TABLE task_requests (
    task_id  TEXT PRIMARY KEY REFERENCES tasks(id),
    request  TEXT NOT NULL
);
INSERT INTO task_requests (task_id, request) SELECT id, request FROM tasks;
ALTER TABLE tasks DROP COLUMN request;
