-- SQLite only (its job queue becomes one B-tree keyed by `dedup_key`); PostgreSQL's table and
-- indexes stay as they are.
SELECT 1;
