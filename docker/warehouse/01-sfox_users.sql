-- Sample source table of the onboarding DAG, loaded by the warehouse's first start
-- (docker-entrypoint-initdb.d). Synthetic people and firms at example.com: 16 individuals,
-- 8 corporations, and one invalid row (a phone not in E.164) that ends in the ledger as
-- 'rejected' (1 of 25 rows: under the default failure_threshold of 5%).
-- The same 24 valid users are registered on the sandbox by docker/sandbox/users.json.
CREATE TABLE sfox_users (
    user_id      VARCHAR(128) PRIMARY KEY,
    account_type VARCHAR(40)  NOT NULL,
    email        VARCHAR(320),
    phone_number VARCHAR(40)
);

INSERT INTO sfox_users (user_id, account_type, email, phone_number) VALUES
    ('demo-0001', 'individual', 'ada.lovelace@example.com', '+12025550001'),
    ('demo-0002', 'individual', 'alan.turing@example.com', '+12025550002'),
    ('demo-0003', 'corporation', 'treasury@analytical-engines-ltd.example.com', NULL),
    ('demo-0004', 'individual', 'grace.hopper@example.com', '+12025550004'),
    ('demo-0005', 'individual', 'edsger.dijkstra@example.com', '+12025550005'),
    ('demo-0006', 'corporation', 'treasury@bletchley-works.example.com', NULL),
    ('demo-0007', 'individual', 'barbara.liskov@example.com', '+12025550007'),
    ('demo-0008', 'individual', 'donald.knuth@example.com', '+12025550008'),
    ('demo-0009', 'corporation', 'treasury@difference-engine-co.example.com', NULL),
    ('demo-0010', 'individual', 'margaret.hamilton@example.com', '+12025550010'),
    ('demo-0011', 'individual', 'john.backus@example.com', '+12025550011'),
    ('demo-0012', 'corporation', 'treasury@eniac-inc.example.com', NULL),
    ('demo-0013', 'individual', 'frances.allen@example.com', '+12025550013'),
    ('demo-0014', 'individual', 'ken.thompson@example.com', '+12025550014'),
    ('demo-0015', 'corporation', 'treasury@colossus-holdings.example.com', NULL),
    ('demo-0016', 'individual', 'dennis.ritchie@example.com', '+12025550016'),
    ('demo-0017', 'individual', 'radia.perlman@example.com', '+12025550017'),
    ('demo-0018', 'corporation', 'treasury@z3-trading.example.com', NULL),
    ('demo-0019', 'individual', 'leslie.lamport@example.com', '+12025550019'),
    ('demo-0020', 'individual', 'tony.hoare@example.com', '+12025550020'),
    ('demo-0021', 'corporation', 'treasury@manchester-baby-plc.example.com', NULL),
    ('demo-0022', 'individual', 'niklaus.wirth@example.com', '+12025550022'),
    ('demo-0023', 'individual', 'sophie.wilson@example.com', '+12025550023'),
    ('demo-0024', 'corporation', 'treasury@harvard-mark-labs.example.com', NULL),
    ('demo-9999', 'individual', 'bad.phone@example.com', '555-0199');
