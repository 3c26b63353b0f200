-- SQLite only (its tables found by primary key become WITHOUT ROWID); PostgreSQL's heap and
-- primary key index stay as they are.
SELECT 1;
