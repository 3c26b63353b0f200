-- Nothing on SQLite: `Query::expect_rows` runs its statement at once and compares the count
-- in the process (see the PostgreSQL migration of the same number).
SELECT 1;
