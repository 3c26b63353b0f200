-- The order timeline in one B-tree keyed by (order, entry) instead of a rowid table plus an
-- index on the order: each entry written writes one page instead of two (about five pages
-- fewer per sale). `id` now counts an order's entries (1, 2, …), in the order written.
CREATE TABLE order_events_keyed (
    order_id  BIGINT  NOT NULL REFERENCES orders (id),
    id        INTEGER NOT NULL,
    at        BIGINT  NOT NULL,
    source    TEXT    NOT NULL CHECK (source IN ('alipay', 'device', 'system', 'admin')),
    kind      TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    PRIMARY KEY (order_id, id)
) WITHOUT ROWID;
INSERT INTO order_events_keyed
    SELECT order_id, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY id), at, source, kind, detail
    FROM order_events;
DROP TABLE order_events;
ALTER TABLE order_events_keyed RENAME TO order_events;
