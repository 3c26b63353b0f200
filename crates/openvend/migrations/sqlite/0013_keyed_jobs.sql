-- The job queue in one B-tree keyed by `dedup_key` (every lookup but the due sweep is by key)
-- instead of a rowid table plus a unique index on the key: a sale's jobs are written in
-- four transactions, and each now writes two B-trees instead of three. `id` only tells one
-- job from a later one under the same key (a job that ended and a new one queued in the same
-- transaction): a random 63-bit number where SQLite used to reuse the rowid.
CREATE TABLE jobs_keyed (
    dedup_key     TEXT    NOT NULL PRIMARY KEY,
    id            INTEGER NOT NULL DEFAULT (random() & 9223372036854775807),
    kind          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_at        BIGINT  NOT NULL,
    locked_until  BIGINT,
    last_error    TEXT,
    created_at    BIGINT  NOT NULL
) WITHOUT ROWID;
INSERT INTO jobs_keyed (dedup_key, id, kind, payload, attempts, run_at, locked_until, last_error, created_at)
    SELECT dedup_key, id, kind, payload, attempts, run_at, locked_until, last_error, created_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_keyed RENAME TO jobs;
CREATE INDEX jobs_due_idx ON jobs (run_at);
