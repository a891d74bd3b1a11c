-- name: insert_transaction(kind, idempotency_key, reference, user_id, amount_micros, memo, actor)$
-- A movement, once per idempotency key: nothing is returned when the key was used before.
INSERT INTO ledger_transactions (kind, idempotency_key, reference, user_id, amount_micros, memo, actor)
VALUES (:kind, :idempotency_key, :reference, :user_id, :amount_micros, :memo, :actor)
ON CONFLICT ON CONSTRAINT ledger_transactions_idempotency_key_key DO NOTHING
RETURNING id;

-- name: transaction_by_key(idempotency_key)^
SELECT id, kind, reference, user_id, amount_micros, memo, actor, create_time,
       (SELECT coalesce(sum(e.amount_micros), 0) FROM ledger_entries e
        WHERE e.transaction_id = t.id AND e.account = 'user:' || t.user_id || ':held')::bigint AS held_micros
FROM ledger_transactions t WHERE idempotency_key = :idempotency_key;

-- name: movement_by_key(idempotency_key)^
-- What a key moved before (a replay must be the same movement): the entries' positive leg.
SELECT t.id, t.kind, t.user_id, t.amount_micros,
       (SELECT coalesce(max(e.amount_micros), 0) FROM ledger_entries e WHERE e.transaction_id = t.id) AS moved_micros
FROM ledger_transactions t WHERE t.idempotency_key = :idempotency_key;

-- name: insert_entries(transaction_id, debit_account, credit_account, amount_micros)!
-- Double entry: what leaves one account enters the other.
INSERT INTO ledger_entries (transaction_id, account, amount_micros)
VALUES (:transaction_id, :debit_account, -:amount_micros), (:transaction_id, :credit_account, :amount_micros);

-- name: ensure_wallet(user_id)!
INSERT INTO wallets (user_id) VALUES (:user_id) ON CONFLICT ON CONSTRAINT wallets_pkey DO NOTHING;

-- name: move_available_to_held(user_id, amount_micros)^
-- The hold: only when the available balance covers it (the row lock serialises concurrent holds).
UPDATE wallets SET available_micros = available_micros - :amount_micros, held_micros = held_micros + :amount_micros,
                   update_time = now()
WHERE user_id = :user_id AND available_micros >= :amount_micros
RETURNING available_micros, held_micros;

-- name: move_held_to_available(user_id, amount_micros)^
UPDATE wallets SET held_micros = held_micros - :amount_micros, available_micros = available_micros + :amount_micros,
                   update_time = now()
WHERE user_id = :user_id AND held_micros >= :amount_micros
RETURNING available_micros, held_micros;

-- name: take_from_held(user_id, amount_micros)^
UPDATE wallets SET held_micros = held_micros - :amount_micros, update_time = now()
WHERE user_id = :user_id AND held_micros >= :amount_micros
RETURNING available_micros, held_micros;

-- name: change_available(user_id, amount_micros)^
-- A credit, or a debit that the available balance covers.
UPDATE wallets SET available_micros = available_micros + :amount_micros, update_time = now()
WHERE user_id = :user_id AND available_micros + :amount_micros >= 0
RETURNING available_micros, held_micros;

-- name: get_wallet(user_id)^
SELECT available_micros, held_micros FROM wallets WHERE user_id = :user_id;

-- name: get_user_wallet(user_id)^
-- A user's balance, zero while the user has no wallet row yet (never funded); no row: no such user.
SELECT coalesce(w.available_micros, 0) AS available_micros, coalesce(w.held_micros, 0) AS held_micros
FROM users u LEFT JOIN wallets w ON w.user_id = u.id
WHERE u.id = :user_id;

-- name: list_transactions(user_id, before_id, limit)
-- With each movement's change of the user's held balance (its entry on the held account).
SELECT id, kind, reference, user_id, amount_micros, memo, actor, create_time,
       (SELECT coalesce(sum(e.amount_micros), 0) FROM ledger_entries e
        WHERE e.transaction_id = t.id AND e.account = 'user:' || t.user_id || ':held')::bigint AS held_micros
FROM ledger_transactions t
WHERE user_id = :user_id AND id < :before_id
ORDER BY id DESC
LIMIT :limit;

-- name: lock_live_user(id)$
-- The user, unless deleted, share-locked until the adjustment commits: a deletion (which locks the
-- row FOR UPDATE first) waits for it, and a deletion in progress makes this wait and then see the
-- row as deleted (READ COMMITTED re-checks the WHERE on the committed row). A plain read saw the
-- row as it was before an uncommitted deletion, and the adjustment landed on the deleted account.
SELECT id FROM users WHERE id = :id AND status <> 'deleted' FOR SHARE;

-- name: unbalanced_transactions()
SELECT t.id, coalesce(sum(e.amount_micros), 0)::bigint AS total, count(e.id) AS entries
FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
GROUP BY t.id
HAVING coalesce(sum(e.amount_micros), 0) <> 0 OR count(e.id) < 2
ORDER BY t.id
LIMIT 100;

-- name: wallet_mismatches()
-- Cached balances that differ from the sum of their entries, or that are negative.
WITH sums AS (
    SELECT split_part(account, ':', 2)::bigint AS user_id,
           sum(amount_micros) FILTER (WHERE account LIKE '%%:available')::bigint AS available,
           sum(amount_micros) FILTER (WHERE account LIKE '%%:held')::bigint AS held
    FROM ledger_entries WHERE account LIKE 'user:%%'
    GROUP BY 1
)
SELECT coalesce(w.user_id, s.user_id) AS user_id, coalesce(w.available_micros, 0) AS cached_available,
       coalesce(w.held_micros, 0) AS cached_held, coalesce(s.available, 0) AS ledger_available,
       coalesce(s.held, 0) AS ledger_held
FROM wallets w FULL JOIN sums s ON s.user_id = w.user_id
WHERE coalesce(w.available_micros, 0) <> coalesce(s.available, 0)
   OR coalesce(w.held_micros, 0) <> coalesce(s.held, 0)
   OR coalesce(w.available_micros, 0) < 0 OR coalesce(w.held_micros, 0) < 0
ORDER BY 1
LIMIT 100;

-- name: order_money_mismatches()
-- Orders whose held, charged or released amounts differ from their ledger movements, or (when
-- final) do not add up to what was held. What moved is read from the entries (what the accounts
-- got), not from the transactions' amount_micros (the statement's column).
WITH moved AS (
    SELECT split_part(t.reference, ':', 2)::bigint AS order_id,
           coalesce(sum(e.amount_micros) FILTER (WHERE t.kind = 'hold' AND e.account LIKE 'user:%%:held'), 0)::bigint AS held,
           coalesce(sum(e.amount_micros) FILTER (WHERE t.kind = 'settle' AND e.account = 'revenue'), 0)::bigint AS charged,
           coalesce(sum(e.amount_micros) FILTER (WHERE t.kind = 'release' AND e.account LIKE 'user:%%:available'), 0)::bigint AS released
    FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
    WHERE t.reference LIKE 'order:%%'
    GROUP BY 1
)
SELECT o.id, o.status, o.price_micros, o.charged_micros, o.released_micros,
       coalesce(m.held, 0) AS ledger_held, coalesce(m.charged, 0) AS ledger_charged,
       coalesce(m.released, 0) AS ledger_released
FROM orders o LEFT JOIN moved m ON m.order_id = o.id
WHERE coalesce(m.held, 0) <> o.price_micros
   OR coalesce(m.charged, 0) <> o.charged_micros
   OR coalesce(m.released, 0) <> o.released_micros
   OR (o.status IN ('completed', 'partial', 'canceled', 'failed', 'expired')
       AND o.charged_micros + o.released_micros <> o.price_micros)
ORDER BY o.id
LIMIT 100;

-- name: held_mismatches()
-- Users whose held account (its entries) differs from what their orders still hold: the price
-- less what was charged and released. Held funds are only ever an order's: a hold for no order
-- (or for another user's), or an order's hold that moved another amount, shows here.
WITH held AS (
    SELECT split_part(account, ':', 2)::bigint AS user_id, sum(amount_micros)::bigint AS held
    FROM ledger_entries WHERE account LIKE 'user:%%:held'
    GROUP BY 1
), owed AS (
    SELECT user_id, sum(price_micros - charged_micros - released_micros)::bigint AS owed
    FROM orders
    GROUP BY 1
)
SELECT coalesce(h.user_id, o.user_id) AS user_id, coalesce(h.held, 0) AS ledger_held,
       coalesce(o.owed, 0) AS orders_hold
FROM held h FULL JOIN owed o ON o.user_id = h.user_id
WHERE coalesce(h.held, 0) <> coalesce(o.owed, 0)
ORDER BY 1
LIMIT 100;

-- name: ledger_totals()$
SELECT coalesce(sum(amount_micros), 0)::bigint FROM ledger_entries;

-- name: count_transactions()$
SELECT count(*) FROM ledger_transactions;

-- name: note_ledger_problems(digest, problem_count)^
-- The set of problems found now; a row (the alert's time) only when it differs from the set last
-- alerted about, or none was: raise an alert then. Concurrent runs cannot both get a row (the
-- conflicting insert waits for the row lock and re-checks the digest).
INSERT INTO ledger_alert_state (singleton, problems_digest, problem_count)
VALUES (true, :digest, :problem_count)
ON CONFLICT ON CONSTRAINT ledger_alert_state_pkey DO UPDATE
SET problems_digest = EXCLUDED.problems_digest, problem_count = EXCLUDED.problem_count, alert_time = now()
WHERE ledger_alert_state.problems_digest <> EXCLUDED.problems_digest
RETURNING alert_time;

-- name: last_ledger_alert()^
SELECT alert_time FROM ledger_alert_state;

-- name: clear_ledger_alert()^
-- The ledger is clean: forget the last alert (its time, if there was one), so a new breakage alerts.
DELETE FROM ledger_alert_state RETURNING alert_time;

-- name: insert_hold_along(hold_user_id, hold_amount, hold_key, hold_reference, hold_actor, hold_debit, hold_credit)
-- The head of one statement that holds funds and, in the same statement, runs the caller's writes
-- (ledger.hold_with appends the caller's CTEs and final SELECT). ``hold`` has one row when the
-- hold was made (or there is nothing to hold: an amount of 0), none when the wallet did not cover
-- it as the statement began or the key was used before; the caller's writes read FROM hold, so
-- then they write nothing either. Two holds racing for the same funds both pass the first check;
-- the wallet row's lock serialises them, the second's UPDATE recomputes from the first's result
-- and breaks wallets_available_micros_check: the whole statement fails, the caller's rows too.
WITH hold_tx AS (
    INSERT INTO ledger_transactions (kind, idempotency_key, reference, user_id, amount_micros, memo, actor)
    SELECT 'hold', :hold_key, :hold_reference, :hold_user_id, -:hold_amount::bigint, '', :hold_actor
    FROM wallets
    WHERE user_id = :hold_user_id AND available_micros >= :hold_amount::bigint AND :hold_amount::bigint > 0
    ON CONFLICT ON CONSTRAINT ledger_transactions_idempotency_key_key DO NOTHING
    RETURNING id
), hold_moved AS (
    UPDATE wallets SET available_micros = available_micros - :hold_amount::bigint,
                       held_micros = held_micros + :hold_amount::bigint, update_time = now()
    WHERE user_id = :hold_user_id AND EXISTS (SELECT 1 FROM hold_tx)
    RETURNING user_id
), hold_entries AS (
    INSERT INTO ledger_entries (transaction_id, account, amount_micros)
    SELECT t.id, e.account, e.amount_micros
    FROM hold_tx t CROSS JOIN hold_moved
    CROSS JOIN (VALUES (:hold_debit, -:hold_amount::bigint), (:hold_credit, :hold_amount::bigint)) AS e (account, amount_micros)
), hold AS (
    SELECT t.id AS transaction_id FROM hold_tx t CROSS JOIN hold_moved
    UNION ALL
    SELECT NULL::bigint WHERE :hold_amount::bigint = 0
)
