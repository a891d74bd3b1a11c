-- The profile's notification preferences: an opaque map until the notifications issue gives it a schema.
ALTER TABLE users ADD COLUMN notification_preferences jsonb NOT NULL DEFAULT '{}'::jsonb;
