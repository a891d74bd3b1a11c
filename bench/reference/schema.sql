-- The minimal order write of ../shared/ENVIRONMENT.md, in a schema of its own beside smm's tables:
-- a wallet with a non-negative balance, a ledger, orders and an outbox, nothing else. It calibrates
-- the machine: ENVIRONMENT.md measured this write on its day, so the same write today says how
-- fast the machine is now, apart from anything smm's own schema adds.
DROP SCHEMA IF EXISTS bench_reference CASCADE;
CREATE SCHEMA bench_reference;
CREATE TABLE bench_reference.wallets (
    user_id bigint PRIMARY KEY,
    available bigint NOT NULL CHECK (available >= 0),
    held bigint NOT NULL DEFAULT 0
);
CREATE TABLE bench_reference.ledger (
    id bigserial PRIMARY KEY,
    tx_key text NOT NULL,
    account text NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tx_key, account)
);
CREATE TABLE bench_reference.orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES bench_reference.wallets,
    service_id bigint NOT NULL,
    link text NOT NULL,
    quantity bigint NOT NULL,
    price bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON bench_reference.orders (user_id, id);
CREATE TABLE bench_reference.outbox (
    id bigserial PRIMARY KEY,
    subject text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO bench_reference.wallets (user_id, available)
SELECT n, 1000000000000 FROM generate_series(1, 100) AS n;
