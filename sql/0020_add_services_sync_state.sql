-- What the provider sync remembers of its own doing, so staff decisions stick.
ALTER TABLE services
    -- The sync took this service off sale because it went upstream: only then does its return
    -- put it back on sale. A service staff disabled (or never enabled) stays off.
    ADD COLUMN disabled_by_sync  boolean NOT NULL DEFAULT false,
    -- The provider's category name at the last sync: a service moves category only when this
    -- changes upstream, so a category staff renamed (or a service they moved) stays where it is.
    ADD COLUMN upstream_category text    NOT NULL DEFAULT '';

-- Services gone upstream now: whether they were on sale before is unknown, so they stay off sale
-- when they come back (disabled_by_sync stays false) until staff enable them.

-- Synced services are in the category of their upstream name (until now every sync moved them there).
UPDATE services s SET upstream_category = c.name
FROM categories c
WHERE c.id = s.category_id AND s.provider_id IS NOT NULL;

-- Services staff created (never priced by a sync): everything on them is staff's, as if edited.
UPDATE services
SET admin_edited = ARRAY(SELECT DISTINCT unnest(admin_edited || '{category,description,dripfeed,name}'::text[]) ORDER BY 1),
    manual_price = true
WHERE provider_rate_micros IS NULL;
