-- Durable background jobs: typed, deduplicated, retried with back-off, claimed atomically.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,
    dedup_key     TEXT    NOT NULL UNIQUE,
    payload       TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_at        BIGINT  NOT NULL,
    locked_until  BIGINT,
    last_error    TEXT,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX jobs_due_idx ON jobs (run_at);

-- Every money action, append-only.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    subject   TEXT   NOT NULL,
    detail    TEXT   NOT NULL
);
