-- A task's request body in a table of its own, as on SQLite (where every UPDATE of a task row
-- rewrote the request, up to ~11 MB with an edit's data: URI inputs). PostgreSQL keeps large
-- values out of line anyway; the schemas stay the same so that migrate-db copies table by table.
CREATE TABLE task_requests (
    task_id  TEXT PRIMARY KEY REFERENCES tasks(id),
    request  TEXT NOT NULL
);
INSERT INTO task_requests (task_id, request) SELECT id, request FROM tasks;
ALTER TABLE tasks DROP COLUMN request;
