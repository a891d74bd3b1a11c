-- Email delivery tracking, suppressed addresses (hard bounces, complaints) and the one-click
-- unsubscribe, for the notifications service.
CREATE TABLE email_messages (
    id                    bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT email_messages_pkey PRIMARY KEY,
    -- The event and the recipient: one message per (event, recipient), whatever the redeliveries.
    event_id              text        NOT NULL,
    user_id               bigint      CONSTRAINT email_messages_user_id_fkey REFERENCES users (id),
    to_address            text        NOT NULL,
    template              text        NOT NULL,
    status                text        NOT NULL DEFAULT 'queued' CONSTRAINT email_messages_status_check
                                      CHECK (status IN ('queued', 'sent', 'delivered', 'bounced', 'complained', 'failed', 'suppressed')),
    transport             text        NOT NULL DEFAULT '',
    transport_message_id  text        NOT NULL DEFAULT '',
    error                 text        NOT NULL DEFAULT '',
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT email_messages_event_recipient_key UNIQUE (event_id, to_address)
);
CREATE INDEX email_messages_user_idx ON email_messages (user_id, id);
CREATE INDEX email_messages_transport_idx ON email_messages (transport_message_id) WHERE transport_message_id <> '';

CREATE TABLE email_suppressions (
    address     text        NOT NULL,
    reason      text        NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX email_suppressions_address_key ON email_suppressions (lower(address));
