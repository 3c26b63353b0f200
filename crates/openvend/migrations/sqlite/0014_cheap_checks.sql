-- SQLite checks `x IN ('a', 'b', 'c', …)` (three constants or more) in a CHECK constraint by
-- building a temporary B-tree of the constants, at every insert and at every update of the
-- column: about 2 µs each time, and a sale writes such a column over twenty times (every
-- timeline entry, every state change of an order or a command). The same constraints written
-- as chains of `=` cost next to nothing.
--
-- They are rewritten in place, by the simpler procedure SQLite documents for removing CHECK
-- constraints or changing defaults (lang_altertable.html, "other kinds of table schema
-- changes"). It applies here because the accepted values are the same (every row already
-- satisfies the new text, nothing on disk changes) and no index, view or trigger depends on
-- the text. `RESET` makes this connection read the new schema; the table created and dropped
-- at the end changes the schema version, so every other connection does too. A later
-- migration that changes one of these lists must search for the `=` chain.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(replace(sql,
    'CHECK (kind IN (''show_qr'', ''dispense'', ''unlock_door'', ''cancel'', ''sync_time'', ''sale_refused''))',
    'CHECK (kind = ''show_qr'' OR kind = ''dispense'' OR kind = ''unlock_door'' OR kind = ''cancel'' OR kind = ''sync_time'' OR kind = ''sale_refused'')'),
    'CHECK (state IN (''pending'', ''sent'', ''acknowledged'', ''rejected'', ''done'', ''expired''))',
    'CHECK (state = ''pending'' OR state = ''sent'' OR state = ''acknowledged'' OR state = ''rejected'' OR state = ''done'' OR state = ''expired'')')
WHERE type = 'table' AND name = 'device_commands';
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (kind IN (''vending'', ''face'', ''cabinet''))',
    'CHECK (kind = ''vending'' OR kind = ''face'' OR kind = ''cabinet'')')
WHERE type = 'table' AND name = 'machines';
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (source IN (''alipay'', ''device'', ''system'', ''admin''))',
    'CHECK (source = ''alipay'' OR source = ''device'' OR source = ''system'' OR source = ''admin'')')
WHERE type = 'table' AND name = 'order_events';
UPDATE sqlite_schema SET sql = replace(replace(sql,
    'CHECK (channel IN (''qr'', ''jsapi'', ''face'', ''cabinet''))',
    'CHECK (channel = ''qr'' OR channel = ''jsapi'' OR channel = ''face'' OR channel = ''cabinet'')'),
    'CHECK (state IN (''awaiting_payment'', ''payment_unknown'', ''paid'', ''dispensing'',' || char(10) || '                                                   ''completed'', ''refunded'', ''closed'', ''dispute''))',
    'CHECK (state = ''awaiting_payment'' OR state = ''payment_unknown'' OR state = ''paid'' OR state = ''dispensing'' OR state = ''completed'' OR state = ''refunded'' OR state = ''closed'' OR state = ''dispute'')')
WHERE type = 'table' AND name = 'orders';
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (state IN (''requested'', ''unknown'', ''succeeded'', ''failed''))',
    'CHECK (state = ''requested'' OR state = ''unknown'' OR state = ''succeeded'' OR state = ''failed'')')
WHERE type = 'table' AND name = 'refunds';
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (state IN (''dispensed'', ''failed'', ''indeterminate''))',
    'CHECK (state = ''dispensed'' OR state = ''failed'' OR state = ''indeterminate'')')
WHERE type = 'table' AND name = 'vend_results';

PRAGMA writable_schema = RESET;
PRAGMA writable_schema = OFF;
CREATE TABLE schema_reload (x INTEGER);
DROP TABLE schema_reload;
