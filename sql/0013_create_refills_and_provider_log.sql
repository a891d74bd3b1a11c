-- Refills and cancels requested by users, the per-order log of what smm said to providers, and
-- the secret providers sign their status webhooks with.
CREATE TABLE order_refills (
    id                bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT order_refills_pkey PRIMARY KEY,
    order_id          bigint      NOT NULL CONSTRAINT order_refills_order_id_fkey REFERENCES orders (id),
    user_id           bigint      NOT NULL CONSTRAINT order_refills_user_id_fkey REFERENCES users (id),
    provider_id       bigint      NOT NULL CONSTRAINT order_refills_provider_id_fkey REFERENCES providers (id),
    status            text        NOT NULL DEFAULT 'pending' CONSTRAINT order_refills_status_check
                                  CHECK (status IN ('pending', 'in_progress', 'completed', 'rejected')),
    upstream_refill_id text       NOT NULL DEFAULT '',
    message           text        NOT NULL DEFAULT '',
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    next_poll_time    timestamptz
);
CREATE INDEX order_refills_order_idx ON order_refills (order_id, id);
CREATE INDEX order_refills_poll_idx ON order_refills (next_poll_time) WHERE status IN ('pending', 'in_progress');
CREATE UNIQUE INDEX order_refills_open_key ON order_refills (order_id) WHERE status IN ('pending', 'in_progress');

ALTER TABLE orders
    -- A user's cancel request: '' none, 'requested' (sent upstream, waiting for the provider),
    -- 'rejected' (the provider refused; message in cancel_message).
    ADD COLUMN cancel_state   text NOT NULL DEFAULT '' CONSTRAINT orders_cancel_state_check
                              CHECK (cancel_state IN ('', 'requested', 'rejected')),
    ADD COLUMN cancel_message text NOT NULL DEFAULT '',
    -- Staff sent the order to one provider by hand: the dispatcher tries that one only.
    ADD COLUMN pinned_provider boolean NOT NULL DEFAULT false;

-- What smm sent to providers and what came back, per order (the API key never appears).
CREATE TABLE provider_exchanges (
    id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT provider_exchanges_pkey PRIMARY KEY,
    provider_id bigint      NOT NULL CONSTRAINT provider_exchanges_provider_id_fkey REFERENCES providers (id),
    order_ids   bigint[]    NOT NULL DEFAULT '{}',
    action      text        NOT NULL,
    params      jsonb       NOT NULL DEFAULT '{}',
    http_status integer,
    body        text        NOT NULL DEFAULT '',
    outcome     text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    latency_ms  integer     NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_exchanges_order_ids_idx ON provider_exchanges USING gin (order_ids);

ALTER TABLE providers ADD COLUMN webhook_secret_ciphertext text NOT NULL DEFAULT '';
