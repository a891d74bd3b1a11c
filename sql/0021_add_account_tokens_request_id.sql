-- The request (the email event) a single-use link was minted for. A redelivery of that event mints
-- a link again without voiding the one the first attempt may already have delivered: Resend
-- refuses the second message as a duplicate, so the first link is the one the user holds.
ALTER TABLE account_tokens
    ADD COLUMN request_id text NOT NULL DEFAULT '';
