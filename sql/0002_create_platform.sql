-- Platform tables: the transactional outbox and the store that makes retried RPCs idempotent.

-- Every event is written here in the transaction of the change that causes it; the relay
-- publishes pending rows to JetStream with Nats-Msg-Id = event_id.
CREATE TABLE outbox_events (
    id           bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT outbox_events_pkey PRIMARY KEY,
    event_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    subject      text        NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    CONSTRAINT outbox_events_event_id_key UNIQUE (event_id)
);
CREATE INDEX outbox_events_pending_idx ON outbox_events (id) WHERE published_at IS NULL;

-- AIP-155: the first answer to a request_id, replayed to retries. The row is written in the same
-- transaction as the effect, so a retry either sees the effect and its answer or neither.
CREATE TABLE idempotent_requests (
    rpc          text        NOT NULL,
    actor        text        NOT NULL,
    request_id   text        NOT NULL,
    request_hash bytea       NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotent_requests_pkey PRIMARY KEY (rpc, actor, request_id)
);
CREATE INDEX idempotent_requests_created_at_idx ON idempotent_requests (created_at);
