-- Fails the statement (and so its transaction) when a write changed another number of rows
-- than expected: `Query::expect_rows` wraps a guarded state transition in it, so the
-- transition needs no answer before the transaction's COMMIT, sent with it in one write.
CREATE FUNCTION openvend_expect_rows(changed BIGINT, expected BIGINT, what TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF changed <> expected THEN
        RAISE EXCEPTION '% row(s) changed where % expected: %', changed, expected, what
            USING ERRCODE = 'OV001';
    END IF;
END
$$;
