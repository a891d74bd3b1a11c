-- name: insert_user(email, password_hash, name, role, verified)^
INSERT INTO users (email, password_hash, name, role, email_verified_at)
VALUES (:email, :password_hash, :name, :role, CASE WHEN :verified THEN now() END)
RETURNING id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps,
       pending_email, totp_enabled_at;

-- name: get_user_by_email(email)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps,
       pending_email, totp_enabled_at
FROM users WHERE lower(email) = lower(:email);

-- name: get_user(id)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps,
       pending_email, totp_enabled_at
FROM users WHERE id = :id;

-- name: update_password_hash(id, password_hash)!
UPDATE users SET password_hash = :password_hash, update_time = now() WHERE id = :id;

-- name: insert_session(user_id, token_hash, expire_time, client_ip, user_agent)^
INSERT INTO sessions (user_id, token_hash, expire_time, client_ip, user_agent)
VALUES (:user_id, :token_hash, :expire_time, :client_ip, :user_agent)
RETURNING id;

-- name: get_live_session(token_hash)^
-- The session and its user, if the session is neither expired nor revoked and the user is active.
SELECT s.id AS session_id, u.id AS user_id, u.email, u.role,
       u.email_verified_at IS NOT NULL AS email_verified, u.totp_enabled_at IS NOT NULL AS totp_enabled
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = :token_hash AND s.revoke_time IS NULL AND s.expire_time > now() AND u.status = 'active';

-- name: revoke_session(id)!
UPDATE sessions SET revoke_time = now() WHERE id = :id AND revoke_time IS NULL;

-- name: insert_api_key(user_id, name, prefix, token_hash, allowed_ips)^
INSERT INTO api_keys (user_id, name, prefix, token_hash, allowed_ips)
VALUES (:user_id, :name, :prefix, :token_hash, :allowed_ips)
RETURNING id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time;

-- name: list_api_keys(user_id)
SELECT id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time
FROM api_keys WHERE user_id = :user_id ORDER BY id;

-- name: count_live_api_keys(user_id)$
-- The keys that still work (a rotated key in its grace period included); revoked and expired ones
-- are history and do not count towards the limit.
SELECT count(*) FROM api_keys
WHERE user_id = :user_id AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now());

-- name: lock_api_key(id, user_id)^
SELECT id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time
FROM api_keys WHERE id = :id AND user_id = :user_id FOR UPDATE;

-- name: expire_api_key(id, grace_s)^
-- Rotation: the old key ends after the grace period (or sooner, if it already ended sooner).
UPDATE api_keys
SET expire_time = least(coalesce(expire_time, 'infinity'), now() + make_interval(secs => :grace_s))
WHERE id = :id
RETURNING id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time;

-- name: revoke_api_key(id)^
UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) WHERE id = :id
RETURNING id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time;

-- name: get_live_api_key(token_hash)^
SELECT k.id AS key_id, k.allowed_ips, k.expire_time, u.id AS user_id, u.email, u.role,
       u.email_verified_at IS NOT NULL AS email_verified, u.totp_enabled_at IS NOT NULL AS totp_enabled
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.token_hash = :token_hash AND k.revoke_time IS NULL
  AND (k.expire_time IS NULL OR k.expire_time > now()) AND u.status = 'active';

-- name: get_profile(id)^
SELECT email, name, timezone, notification_preferences, phone, phone_verified_at IS NOT NULL AS phone_verified
FROM users WHERE id = :id;

-- name: update_profile(id, name, timezone, notification_preferences)^
UPDATE users SET name = :name, timezone = :timezone, notification_preferences = :notification_preferences,
                 update_time = now()
WHERE id = :id
RETURNING email, name, timezone, notification_preferences, phone, phone_verified_at IS NOT NULL AS phone_verified;

-- name: list_live_sessions(user_id)
SELECT id, create_time, expire_time, client_ip, user_agent
FROM sessions WHERE user_id = :user_id AND revoke_time IS NULL AND expire_time > now()
ORDER BY id;

-- name: revoke_user_session(id, user_id)^
UPDATE sessions SET revoke_time = now()
WHERE id = :id AND user_id = :user_id AND revoke_time IS NULL
RETURNING id;

-- name: revoke_all_sessions(user_id)!
UPDATE sessions SET revoke_time = now() WHERE user_id = :user_id AND revoke_time IS NULL;

-- name: list_users(query, query_id, pattern, role, status, before_id, limit)
-- pattern: the query as an ILIKE pattern, its wildcards escaped (server/common/search.py).
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps,
       pending_email, totp_enabled_at
FROM users
WHERE (:query = '' OR id = :query_id OR email ILIKE :pattern OR name ILIKE :pattern)
  AND (:role = '' OR role = :role)
  AND (:status = '' OR status = :status)
  AND id < :before_id
ORDER BY id DESC
LIMIT :limit;

-- name: lock_user(id)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps,
       pending_email, totp_enabled_at
FROM users WHERE id = :id FOR UPDATE;

-- name: update_user(id, email, name, role, status, discount_bps, password_hash)^
UPDATE users
SET email = :email, name = :name, role = :role, status = :status, discount_bps = :discount_bps,
    password_hash = :password_hash, update_time = now(),
    -- A new address is unconfirmed until its owner follows a verification link.
    email_verified_at = CASE WHEN lower(email) = lower(:email) THEN email_verified_at END,
    -- Deleting anonymises: nothing personal or secret is kept.
    pending_email = CASE WHEN :status = 'deleted' THEN '' ELSE pending_email END,
    totp_secret = CASE WHEN :status = 'deleted' THEN '' ELSE totp_secret END,
    totp_enabled_at = CASE WHEN :status = 'deleted' THEN NULL ELSE totp_enabled_at END,
    phone = CASE WHEN :status = 'deleted' THEN '' ELSE phone END,
    phone_verified_at = CASE WHEN :status = 'deleted' THEN NULL ELSE phone_verified_at END
WHERE id = :id
RETURNING id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps,
       pending_email, totp_enabled_at;

-- name: revoke_all_api_keys(user_id)!
UPDATE api_keys SET revoke_time = now() WHERE user_id = :user_id AND revoke_time IS NULL;

-- name: invalidate_account_tokens(user_id, purpose)!
-- A new link replaces the earlier unused ones of the same kind; a change of password, address or
-- status voids the unused reset links, so none outlives the state it was sent for.
UPDATE account_tokens SET used_time = now()
WHERE user_id = :user_id AND purpose = :purpose AND used_time IS NULL;

-- name: invalidate_earlier_account_tokens(user_id, purpose, request_id)!
-- A new link replaces the earlier unused ones of the same kind, except those minted for the same
-- request (a redelivered email event): the first attempt may have delivered its link already.
UPDATE account_tokens SET used_time = now()
WHERE user_id = :user_id AND purpose = :purpose AND used_time IS NULL
  AND (:request_id = '' OR request_id <> :request_id);

-- name: insert_account_token(user_id, purpose, token_hash, email, ttl_s, request_id)$
INSERT INTO account_tokens (user_id, purpose, token_hash, email, expire_time, request_id)
VALUES (:user_id, :purpose, :token_hash, :email, now() + make_interval(secs => :ttl_s), :request_id)
RETURNING expire_time;

-- name: use_account_token(token_hash, purposes)^
-- Single use: the first caller gets the row, every later one (or a late one) nothing.
UPDATE account_tokens SET used_time = now()
WHERE token_hash = :token_hash AND purpose = ANY(:purposes) AND used_time IS NULL AND expire_time > now()
RETURNING user_id, purpose, email;

-- name: mark_email_verified(id, email)$
UPDATE users SET email_verified_at = coalesce(email_verified_at, now()), update_time = now()
WHERE id = :id AND lower(email) = lower(:email) AND status = 'active'
RETURNING email;

-- name: confirm_email_change(id, email)$
UPDATE users SET email = pending_email, pending_email = '', email_verified_at = now(), update_time = now()
WHERE id = :id AND pending_email <> '' AND lower(pending_email) = lower(:email) AND status = 'active'
RETURNING email;

-- name: drop_pending_email(id)!
-- A new password, a new status or an address staff set: a change the user had asked for (and its
-- link, invalidated beside it) no longer applies.
UPDATE users SET pending_email = '', update_time = now() WHERE id = :id AND pending_email <> '';

-- name: set_pending_email(id, email)!
UPDATE users SET pending_email = :email, update_time = now() WHERE id = :id;

-- name: email_in_use(email)$
SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower(:email));

-- name: lock_totp(id)^
SELECT totp_secret, totp_enabled_at, totp_last_step FROM users WHERE id = :id FOR UPDATE;

-- name: set_totp_secret(id, secret)!
UPDATE users SET totp_secret = :secret, update_time = now() WHERE id = :id AND totp_enabled_at IS NULL;

-- name: enable_totp(id, step)!
UPDATE users SET totp_enabled_at = now(), totp_last_step = :step, update_time = now() WHERE id = :id;

-- name: disable_totp(id)!
UPDATE users SET totp_secret = '', totp_enabled_at = NULL, totp_last_step = 0, update_time = now()
WHERE id = :id;

-- name: advance_totp_step(id, step)$
-- Replay protection: a time step is accepted once, and never one older than the last.
UPDATE users SET totp_last_step = :step WHERE id = :id AND totp_last_step < :step RETURNING id;

-- name: delete_recovery_codes(user_id)!
DELETE FROM recovery_codes WHERE user_id = :user_id;

-- name: insert_recovery_codes(user_id, code_hashes)!
INSERT INTO recovery_codes (user_id, code_hash) SELECT :user_id, unnest(:code_hashes::bytea[]);

-- name: use_recovery_code(user_id, code_hash)$
UPDATE recovery_codes SET used_time = now()
WHERE user_id = :user_id AND code_hash = :code_hash AND used_time IS NULL
RETURNING id;

-- name: add_api_key_usage(api_key_ids, days, calls)!
-- One statement for a whole flush of in-memory counters; it also stamps the keys' last-used time
-- (at most one write a minute per key).
WITH counted AS (
    INSERT INTO api_key_usage_days (api_key_id, day, calls)
    SELECT * FROM unnest(:api_key_ids::bigint[], :days::date[], :calls::bigint[])
    ON CONFLICT ON CONSTRAINT api_key_usage_days_pkey
    DO UPDATE SET calls = api_key_usage_days.calls + excluded.calls
)
UPDATE api_keys SET last_used_time = now()
WHERE id = ANY(:api_key_ids::bigint[])
  AND (last_used_time IS NULL OR last_used_time < now() - interval '1 minute');

-- name: list_api_key_usage(api_key_id, days)
SELECT day, calls FROM api_key_usage_days
WHERE api_key_id = :api_key_id AND day > (now() AT TIME ZONE 'UTC')::date - :days::int
ORDER BY day DESC;

-- name: set_phone(id, phone)!
-- A new number (or the same one again) starts unverified; no text goes to it until it is.
UPDATE users SET phone = :phone, phone_verified_at = NULL, update_time = now() WHERE id = :id;

-- name: unsuppress_number(number)!
-- Someone says the number works now: texts may go to it again (a bounce suppresses it again).
DELETE FROM sms_suppressions WHERE number = :number;

-- name: void_phone_codes(user_id)!
-- A new code (or a new number, or none) voids the earlier unused codes.
UPDATE phone_codes SET used_time = now() WHERE user_id = :user_id AND used_time IS NULL;

-- name: insert_phone_code(user_id, phone, code_hash, ttl_s)$
INSERT INTO phone_codes (user_id, phone, code_hash, expire_time)
VALUES (:user_id, :phone, :code_hash, now() + make_interval(secs => :ttl_s))
RETURNING expire_time;

-- name: lock_live_phone_code(user_id, phone)^
-- The newest code that can still be used for this number, locked for the attempt.
SELECT id, code_hash, attempts FROM phone_codes
WHERE user_id = :user_id AND phone = :phone AND used_time IS NULL AND expire_time > now()
ORDER BY id DESC LIMIT 1
FOR UPDATE;

-- name: use_phone_code(id)!
UPDATE phone_codes SET used_time = now() WHERE id = :id AND used_time IS NULL;

-- name: count_phone_code_attempt(id, max_attempts)$
-- A wrong code: one attempt more; the last allowed one spends the code.
UPDATE phone_codes
SET attempts = attempts + 1, used_time = CASE WHEN attempts + 1 >= :max_attempts THEN now() END
WHERE id = :id
RETURNING :max_attempts - attempts;

-- name: mark_phone_verified(id, phone)$
UPDATE users SET phone_verified_at = now(), update_time = now()
WHERE id = :id AND phone = :phone AND status = 'active'
RETURNING phone;

-- name: lock_phone_state(id)^
SELECT id, name, status, phone, phone_verified_at IS NOT NULL AS phone_verified FROM users WHERE id = :id FOR UPDATE;
