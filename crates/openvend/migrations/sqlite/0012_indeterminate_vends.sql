-- Units a machine could not say came out (power lost mid-vend): the buyer is refunded, and a
-- person checks the machine's stock. Only those rows are indexed, so a sale that vends
-- normally writes nothing here.
CREATE INDEX vend_results_indeterminate ON vend_results (at) WHERE state = 'indeterminate';
