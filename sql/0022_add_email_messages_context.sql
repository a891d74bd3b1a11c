-- What a planned email says, stored when it is first planned. A redelivered event (the worker died
-- after Resend accepted the email and before it recorded the answer) sends the very same request
-- again: Resend compares the body under one idempotency key, and a different one (the balance, a
-- name or the clock moved in between) is refused with a 409 that carries no email id, so the
-- message could never be matched with its bounces. NULL: planned before this column existed.
ALTER TABLE email_messages
    ADD COLUMN context         jsonb,
    ADD COLUMN unsubscribe_url text NOT NULL DEFAULT '';
