-- The input images that tasks use, by the SHA-256 of their bytes, with how many task records
-- use each. The bytes are objects of the image store (`inputs/<digest>`), shared by every task
-- that sent the same image; a task's stored request names them (`input:sha256:<digest>`)
-- instead of carrying megabytes of base64. A task's admission adds one to the count of each
-- image it uses, and deleting its record takes one off (and the row at zero), in the same
-- transaction; the input sweeper deletes objects with no row here once they are older than its
-- grace period. One small row per distinct image, none per task: an edit whose images are
-- already stored adds nothing here.
CREATE TABLE input_objects (
    digest  TEXT PRIMARY KEY,
    tasks   INTEGER NOT NULL
) WITHOUT ROWID;
