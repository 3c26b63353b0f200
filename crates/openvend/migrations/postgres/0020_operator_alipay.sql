-- Which Alipay an operator receives through: 'sandbox' for the embedded sandbox's demo,
-- 'real' for an app configured with real settings. Start-up without real settings may move
-- a sandbox operator to a newly registered sandbox account, and never a real one.
ALTER TABLE operators ADD COLUMN alipay TEXT NOT NULL DEFAULT 'real'
    CHECK (alipay = 'real' OR alipay = 'sandbox');
-- The demo is the only operator the sandbox seeds.
UPDATE operators SET alipay = 'sandbox' WHERE name = 'Demo Operator';
