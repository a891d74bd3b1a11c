-- The retention-purge job (server/system/retention.py) deletes expired credentials and old API key
-- usage days in batches, oldest first; without these indexes every batch scanned the table.
CREATE INDEX sessions_expire_time_idx ON sessions (expire_time);
CREATE INDEX account_tokens_expire_time_idx ON account_tokens (expire_time);
CREATE INDEX phone_codes_expire_time_idx ON phone_codes (expire_time);
CREATE INDEX api_key_usage_days_day_idx ON api_key_usage_days (day);
