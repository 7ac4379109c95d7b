-- The input images a task uses, by the SHA-256 of their bytes. The bytes themselves are objects
-- of the image store (`inputs/<digest>`), shared by every task that sent the same image; a task's
-- stored request names them (`input:sha256:<digest>`) instead of carrying megabytes of base64.
-- One row per task and image: an object referenced by no row is deleted by the input sweeper
-- once it is older than its grace period. Deleting a task's record deletes its rows.
CREATE TABLE task_inputs (
    task_id  TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    digest   TEXT NOT NULL,
    PRIMARY KEY (task_id, digest)
);
CREATE INDEX task_inputs_digest ON task_inputs (digest);
