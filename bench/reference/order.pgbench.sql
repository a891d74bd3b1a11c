\set uid random(1, 100)
WITH moved AS (
    UPDATE bench_reference.wallets SET available = available - 1521, held = held + 1521
    WHERE user_id = :uid AND available >= 1521
    RETURNING user_id
), placed AS (
    INSERT INTO bench_reference.orders (user_id, service_id, link, quantity, price)
    SELECT user_id, 7, 'https://instagram.com/p/smm-bench', 1300, 1521 FROM moved
    RETURNING id
), entries AS (
    INSERT INTO bench_reference.ledger (tx_key, account, amount)
    SELECT 'order-' || p.id || '-hold', e.account, e.amount
    FROM placed p CROSS JOIN (VALUES ('available', -1521), ('held', 1521)) AS e (account, amount)
    RETURNING id
), event AS (
    INSERT INTO bench_reference.outbox (subject, payload)
    SELECT 'smm.orders.order.created', decode('0102', 'hex') FROM placed
    RETURNING id
)
SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM event);
