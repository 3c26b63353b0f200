-- SQLite only (its timeline becomes one B-tree keyed by order); PostgreSQL's table and index
-- stay as they are.
SELECT 1;
