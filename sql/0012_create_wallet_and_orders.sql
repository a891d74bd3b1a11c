-- The wallet ledger (double-entry, append-only, BIGINT micro-units) and orders.
--
-- Ledger accounts are names: "user:<id>:available", "user:<id>:held", "funding" (money that came
-- from outside: payments, staff adjustments) and "revenue" (what delivered orders earned). Every
-- movement is one ledger_transactions row with entries that sum to zero, under a unique
-- idempotency key. wallets caches each user's two balances; they change only together with entries.
CREATE TABLE wallets (
    user_id          bigint      NOT NULL CONSTRAINT wallets_pkey PRIMARY KEY
                                 CONSTRAINT wallets_user_id_fkey REFERENCES users (id),
    available_micros bigint      NOT NULL DEFAULT 0 CONSTRAINT wallets_available_micros_check CHECK (available_micros >= 0),
    held_micros      bigint      NOT NULL DEFAULT 0 CONSTRAINT wallets_held_micros_check CHECK (held_micros >= 0),
    update_time      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_transactions (
    id              bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT ledger_transactions_pkey PRIMARY KEY,
    kind            text        NOT NULL CONSTRAINT ledger_transactions_kind_check
                                CHECK (kind IN ('adjustment', 'hold', 'settle', 'release', 'payment', 'refund')),
    idempotency_key text        NOT NULL,
    -- What the movement is for: "order:<id>", "adjustment:<request id>", "payment:<id>".
    reference       text        NOT NULL,
    user_id         bigint      NOT NULL CONSTRAINT ledger_transactions_user_id_fkey REFERENCES users (id),
    -- The user's available balance change (positive: more to spend), for their statement.
    amount_micros   bigint      NOT NULL,
    memo            text        NOT NULL DEFAULT '',
    actor           text        NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transactions_idempotency_key_key UNIQUE (idempotency_key)
);
CREATE INDEX ledger_transactions_user_idx ON ledger_transactions (user_id, id);

CREATE TABLE ledger_entries (
    id             bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT ledger_entries_pkey PRIMARY KEY,
    transaction_id bigint NOT NULL CONSTRAINT ledger_entries_transaction_id_fkey REFERENCES ledger_transactions (id),
    account        text   NOT NULL,
    amount_micros  bigint NOT NULL CONSTRAINT ledger_entries_amount_micros_check CHECK (amount_micros <> 0)
);
CREATE INDEX ledger_entries_transaction_idx ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (%)', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- Checked at commit: a transaction's entries sum to zero (a second guard behind server/wallet/ledger.py).
CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT coalesce(sum(amount_micros), 0) FROM ledger_entries WHERE transaction_id = NEW.transaction_id) <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', NEW.transaction_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_balanced';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced();

CREATE TABLE orders (
    id                   bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT orders_pkey PRIMARY KEY,
    user_id              bigint      NOT NULL CONSTRAINT orders_user_id_fkey REFERENCES users (id),
    service_id           bigint      NOT NULL CONSTRAINT orders_service_id_fkey REFERENCES services (id),
    status               text        NOT NULL DEFAULT 'pending' CONSTRAINT orders_status_check CHECK (status IN (
                             'pending', 'submitting', 'in_progress', 'processing', 'completed', 'partial',
                             'canceled', 'failed', 'needs_review', 'active', 'paused', 'expired')),
    link                 text        NOT NULL DEFAULT '',
    quantity             bigint      NOT NULL DEFAULT 0,
    runs                 integer     NOT NULL DEFAULT 1,
    interval_minutes     integer     NOT NULL DEFAULT 0,
    -- Every add parameter as sent upstream (besides key, action, service).
    upstream_params      jsonb       NOT NULL DEFAULT '{}',
    -- Units the price covers: price = rate x billable / 1000 (after the discount, rounded once).
    billable             bigint      NOT NULL,
    rate_micros          bigint      NOT NULL,
    discount_bps         integer     NOT NULL DEFAULT 0,
    price_micros         bigint      NOT NULL CONSTRAINT orders_price_micros_check CHECK (price_micros >= 0),
    -- The money side, kept by the ledger too: charged (settled) and released never exceed the price.
    charged_micros       bigint      NOT NULL DEFAULT 0,
    released_micros      bigint      NOT NULL DEFAULT 0,
    provider_id          bigint      CONSTRAINT orders_provider_id_fkey REFERENCES providers (id),
    upstream_service_id  text        NOT NULL DEFAULT '',
    upstream_order_id    text        NOT NULL DEFAULT '',
    -- The provider's price and the exchange rate in force when the order was placed.
    provider_rate_micros bigint,
    provider_currency    text        NOT NULL DEFAULT '',
    exchange_rate        numeric(24, 10),
    -- Which provider (0 = primary, then fallbacks) the next submission goes to.
    attempt              integer     NOT NULL DEFAULT 0,
    start_count          bigint,
    remains              bigint,
    upstream_charge_micros bigint,
    source               text        NOT NULL DEFAULT 'web' CONSTRAINT orders_source_check CHECK (source IN ('web', 'api', 'reseller')),
    api_key_id           bigint,
    idempotency_key      text,
    request_hash         bytea,
    status_note          text        NOT NULL DEFAULT '',
    create_time          timestamptz NOT NULL DEFAULT now(),
    update_time          timestamptz NOT NULL DEFAULT now(),
    submit_time          timestamptz,
    finish_time          timestamptz,
    next_poll_time       timestamptz,
    stuck_alert_time     timestamptz,
    CONSTRAINT orders_money_check CHECK (charged_micros >= 0 AND released_micros >= 0
                                         AND charged_micros + released_micros <= price_micros),
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_idx ON orders (user_id, id);
CREATE INDEX orders_poll_idx ON orders (next_poll_time) WHERE status IN ('in_progress', 'processing', 'active', 'paused');
CREATE INDEX orders_open_idx ON orders (status, create_time) WHERE status IN ('pending', 'submitting', 'needs_review');
CREATE INDEX orders_link_idx ON orders (user_id, link);
CREATE INDEX orders_provider_open_idx ON orders (provider_id)
    WHERE status NOT IN ('completed', 'partial', 'canceled', 'failed', 'expired');

-- Every attempt to place an order upstream, written as "starting" before the provider is called:
-- after a crash, a starting row without an outcome means the order may exist upstream.
CREATE TABLE order_submissions (
    id                  bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT order_submissions_pkey PRIMARY KEY,
    order_id            bigint      NOT NULL CONSTRAINT order_submissions_order_id_fkey REFERENCES orders (id),
    provider_id         bigint      NOT NULL CONSTRAINT order_submissions_provider_id_fkey REFERENCES providers (id),
    upstream_service_id text        NOT NULL,
    state               text        NOT NULL DEFAULT 'starting' CONSTRAINT order_submissions_state_check
                                    CHECK (state IN ('starting', 'accepted', 'rejected', 'unknown', 'not_sent')),
    upstream_order_id   text        NOT NULL DEFAULT '',
    message             text        NOT NULL DEFAULT '',
    create_time         timestamptz NOT NULL DEFAULT now(),
    finish_time         timestamptz
);
CREATE INDEX order_submissions_order_idx ON order_submissions (order_id, id);

-- The order's timeline, as the user sees it.
CREATE TABLE order_events (
    id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT order_events_pkey PRIMARY KEY,
    order_id    bigint      NOT NULL CONSTRAINT order_events_order_id_fkey REFERENCES orders (id),
    status      text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order_idx ON order_events (order_id, id);

-- Per service: refuse a second active order for the same link (PP's "You have active order with this link").
ALTER TABLE services ADD COLUMN one_active_order_per_link boolean NOT NULL DEFAULT false;
