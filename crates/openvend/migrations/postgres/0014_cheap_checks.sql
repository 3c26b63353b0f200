-- SQLite only (its CHECK constraints with lists of values become chains of `=`, which it
-- checks without a temporary B-tree); PostgreSQL checks a list as cheaply.
SELECT 1;
