-- Text messages: a phone number per account (verified by a code), the codes themselves (stored
-- only as keyed hashes, expiring, single-use, few attempts), SMS delivery tracking and
-- suppressed numbers, for the accounts and notifications services.
ALTER TABLE users
    -- E.164 ("+15551234567"); '' when the account has none.
    ADD COLUMN phone             text NOT NULL DEFAULT '',
    ADD COLUMN phone_verified_at timestamptz;

CREATE TABLE phone_codes (
    id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT phone_codes_pkey PRIMARY KEY,
    user_id     bigint      NOT NULL CONSTRAINT phone_codes_user_id_fkey REFERENCES users (id),
    -- The number the code was sent to: it confirms that number only.
    phone       text        NOT NULL,
    code_hash   bytea       NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    -- Set when the code is used, replaced by a newer one, or spent by too many wrong attempts.
    used_time   timestamptz
);
CREATE INDEX phone_codes_user_live_idx ON phone_codes (user_id, id) WHERE used_time IS NULL;

CREATE TABLE sms_messages (
    id                    bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT sms_messages_pkey PRIMARY KEY,
    -- One message per (event, number), whatever the redeliveries. No body is kept: a
    -- verification code must not rest here.
    event_id              text        NOT NULL,
    user_id               bigint      CONSTRAINT sms_messages_user_id_fkey REFERENCES users (id),
    to_number             text        NOT NULL,
    template              text        NOT NULL,
    status                text        NOT NULL DEFAULT 'queued' CONSTRAINT sms_messages_status_check
                                      CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'undelivered',
                                                        'failed', 'suppressed')),
    transport             text        NOT NULL DEFAULT '',
    -- Twilio's message SID ("SM..."): once set, the message is never sent again.
    transport_message_id  text        NOT NULL DEFAULT '',
    error                 text        NOT NULL DEFAULT '',
    error_code            text        NOT NULL DEFAULT '',
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sms_messages_event_recipient_key UNIQUE (event_id, to_number)
);
CREATE INDEX sms_messages_user_idx ON sms_messages (user_id, id);
CREATE INDEX sms_messages_transport_idx ON sms_messages (transport_message_id) WHERE transport_message_id <> '';

-- Numbers that cannot receive texts (unknown, unreachable, landline, opted out): nothing more is
-- sent to them until an account sets the number again.
CREATE TABLE sms_suppressions (
    number      text        NOT NULL CONSTRAINT sms_suppressions_pkey PRIMARY KEY,
    reason      text        NOT NULL,
    error_code  text        NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now()
);
