-- An application's own retention (`Limits::retention_seconds`): how long its finished tasks are
-- kept. NULL: the server's `--retention`; 0: forever; otherwise seconds.
ALTER TABLE applications ADD COLUMN retention_seconds BIGINT;
