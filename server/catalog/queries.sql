-- name: list_categories_on_sale()
-- Categories with at least one service on sale, in display order.
SELECT c.id, c.name, c.sort_order, c.enabled, c.create_time, c.update_time
FROM categories c
WHERE c.enabled AND EXISTS (
    SELECT 1 FROM services s
    WHERE s.category_id = c.id AND s.enabled AND NOT s.quarantined
      AND NOT EXISTS (SELECT 1 FROM providers p WHERE p.id = s.provider_id AND p.status <> 'enabled'))
ORDER BY c.sort_order, c.id;

-- name: list_all_categories()
-- Every category, for staff, in display order.
SELECT id, name, sort_order, enabled, create_time, update_time FROM categories ORDER BY sort_order, id;

-- name: list_services_on_sale(category_id, after_category_sort, after_category_id, after_sort, after_id, limit)
-- Keyset page of services on sale; a category_id of 0 means every category.
SELECT s.id, s.category_id, c.name AS category_name, c.sort_order AS category_sort, s.name, s.description, s.type, s.rate_micros,
       s.min_quantity, s.max_quantity, s.refill, s.refill_days, s.cancel, s.dripfeed, s.enabled,
       s.sort_order, s.create_time, s.update_time, coalesce(s.average_completion_s, 0) AS average_completion_s,
       s.one_active_order_per_link,
       (s.enabled AND NOT s.quarantined AND c.enabled
        AND NOT EXISTS (SELECT 1 FROM providers p WHERE p.id = s.provider_id AND p.status <> 'enabled')) AS on_sale
FROM services s
JOIN categories c ON c.id = s.category_id
WHERE s.enabled AND NOT s.quarantined AND c.enabled
  -- A service of a disabled or deleted provider is not sold.
  AND NOT EXISTS (SELECT 1 FROM providers p WHERE p.id = s.provider_id AND p.status <> 'enabled')
  AND (:category_id = 0 OR s.category_id = :category_id)
  AND (c.sort_order, c.id, s.sort_order, s.id) > (:after_category_sort, :after_category_id, :after_sort, :after_id)
ORDER BY c.sort_order, c.id, s.sort_order, s.id
LIMIT :limit;

-- name: list_services_by_ids(ids)
-- Services by id (one, or a staff page), in no particular order.
SELECT s.id, s.category_id, c.name AS category_name, c.sort_order AS category_sort, s.name, s.description, s.type, s.rate_micros,
       s.min_quantity, s.max_quantity, s.refill, s.refill_days, s.cancel, s.dripfeed, s.enabled,
       s.sort_order, s.create_time, s.update_time, coalesce(s.average_completion_s, 0) AS average_completion_s,
       s.one_active_order_per_link,
       (s.enabled AND NOT s.quarantined AND c.enabled
        AND NOT EXISTS (SELECT 1 FROM providers p WHERE p.id = s.provider_id AND p.status <> 'enabled')) AS on_sale
FROM services s
JOIN categories c ON c.id = s.category_id
WHERE s.id = ANY(:ids);

-- name: user_discount(user_id)$
-- The user's discount (the accounts' table, read-only here), to show what they pay per 1000.
SELECT coalesce((SELECT discount_bps FROM users WHERE id = :user_id), 0);

-- name: get_category(id)^
SELECT id, name, sort_order, enabled, create_time, update_time FROM categories WHERE id = :id;

-- name: lock_category(id)^
SELECT id, name, sort_order, enabled, create_time, update_time FROM categories WHERE id = :id FOR UPDATE;

-- name: insert_category(name, sort_order, enabled)^
INSERT INTO categories (name, sort_order, enabled)
VALUES (:name, :sort_order, :enabled)
RETURNING id, name, sort_order, enabled, create_time, update_time;

-- name: category_name_taken(name, id)$
-- Whether another category has this name, letter case aside (id 0: a category not created yet).
SELECT EXISTS (SELECT 1 FROM categories WHERE lower(name) = lower(:name) AND id <> :id);

-- name: update_category(id, name, sort_order, enabled)^
UPDATE categories SET name = :name, sort_order = :sort_order, enabled = :enabled, update_time = now()
WHERE id = :id
RETURNING id, name, sort_order, enabled, create_time, update_time;

-- name: lock_service(id)^
SELECT id FROM services WHERE id = :id FOR UPDATE;

-- name: insert_service(category_id, name, description, type, rate_micros, min_quantity, max_quantity, refill, refill_days, cancel, dripfeed, enabled, sort_order, one_active_order_per_link)^
INSERT INTO services (category_id, name, description, type, rate_micros, min_quantity, max_quantity,
                      refill, refill_days, cancel, dripfeed, enabled, sort_order, one_active_order_per_link)
VALUES (:category_id, :name, :description, :type, :rate_micros, :min_quantity, :max_quantity,
        :refill, :refill_days, :cancel, :dripfeed, :enabled, :sort_order, :one_active_order_per_link)
RETURNING id;

-- name: update_service(id, category_id, name, description, type, rate_micros, min_quantity, max_quantity, refill, refill_days, cancel, dripfeed, enabled, sort_order, one_active_order_per_link)!
UPDATE services
SET category_id = :category_id, name = :name, description = :description, type = :type,
    rate_micros = :rate_micros, min_quantity = :min_quantity, max_quantity = :max_quantity,
    refill = :refill, refill_days = :refill_days, cancel = :cancel, dripfeed = :dripfeed,
    enabled = :enabled, sort_order = :sort_order, one_active_order_per_link = :one_active_order_per_link,
    update_time = now()
WHERE id = :id;

-- name: lock_synced_services(provider_id)
-- Every catalog service linked to a provider, locked for the length of a sync.
SELECT id, upstream_service_id, category_id, name, description, type, min_quantity, max_quantity, refill,
       refill_days, cancel, dripfeed, upstream_dripfeed, enabled, rate_micros, provider_rate_micros,
       provider_currency, exchange_rate, cost_micros, manual_price, admin_edited, quarantined, quarantine_reason,
       pending_provider_rate_micros, pending_exchange_rate, gone_upstream_time, disabled_by_sync, upstream_category
FROM services WHERE provider_id = :provider_id
ORDER BY id
FOR UPDATE;

-- name: list_category_ids()
SELECT name, id FROM categories;

-- name: insert_missing_category(name)!
-- A provider's category name, unless a category has it already, letter case aside. Without a target,
-- ON CONFLICT also covers categories_name_lower_key, which a panel with old duplicates lacks (sql/0027).
INSERT INTO categories (name)
SELECT CAST(:name AS text) WHERE NOT EXISTS (SELECT 1 FROM categories WHERE lower(name) = lower(:name))
ON CONFLICT DO NOTHING;

-- name: find_category_id(name)$
-- The category of a name, letter case aside; of older duplicates the exact spelling, else the oldest.
SELECT id FROM categories WHERE lower(name) = lower(:name) ORDER BY name = :name DESC, id LIMIT 1;

-- name: list_pricing_rules()
SELECT id, category_id, service_id, markup_bps, fixed_micros, round_to_micros, update_time
FROM pricing_rules ORDER BY (category_id IS NOT NULL OR service_id IS NOT NULL), category_id, service_id, id;

-- name: insert_synced_service(provider_id, upstream_service_id, category_id, name, description, type, min_quantity, max_quantity, refill, refill_days, cancel, dripfeed, upstream_dripfeed, enabled, rate_micros, provider_rate_micros, provider_currency, exchange_rate, cost_micros, upstream_category)!
INSERT INTO services (provider_id, upstream_service_id, category_id, name, description, type, min_quantity,
                      max_quantity, refill, refill_days, cancel, dripfeed, upstream_dripfeed, enabled, rate_micros,
                      provider_rate_micros, provider_currency, exchange_rate, cost_micros, upstream_category)
VALUES (:provider_id, :upstream_service_id, :category_id, :name, :description, :type, :min_quantity,
        :max_quantity, :refill, :refill_days, :cancel, :dripfeed, :upstream_dripfeed, :enabled, :rate_micros,
        :provider_rate_micros, :provider_currency, :exchange_rate, :cost_micros, :upstream_category);

-- name: update_synced_service(id, category_id, name, description, type, min_quantity, max_quantity, refill, refill_days, cancel, dripfeed, upstream_dripfeed, enabled, rate_micros, provider_rate_micros, provider_currency, exchange_rate, cost_micros, quarantined, quarantine_reason, pending_provider_rate_micros, pending_exchange_rate, gone_upstream_time, disabled_by_sync, upstream_category)!
UPDATE services
SET category_id = :category_id, name = :name, description = :description, type = :type,
    min_quantity = :min_quantity, max_quantity = :max_quantity, refill = :refill, refill_days = :refill_days,
    cancel = :cancel, dripfeed = :dripfeed, upstream_dripfeed = :upstream_dripfeed, enabled = :enabled, rate_micros = :rate_micros,
    provider_rate_micros = :provider_rate_micros, provider_currency = :provider_currency,
    exchange_rate = :exchange_rate, cost_micros = :cost_micros, quarantined = :quarantined,
    quarantine_reason = :quarantine_reason, pending_provider_rate_micros = :pending_provider_rate_micros,
    pending_exchange_rate = :pending_exchange_rate, gone_upstream_time = :gone_upstream_time,
    disabled_by_sync = :disabled_by_sync, upstream_category = :upstream_category, update_time = now()
WHERE id = :id;

-- name: clear_disabled_by_sync(id)!
-- Staff set whether the service is on sale: a return upstream no longer enables it.
UPDATE services SET disabled_by_sync = false WHERE id = :id AND disabled_by_sync;

-- name: get_service_cost(id)$
-- What the provider charges per 1000, in the panel's currency (NULL: not linked, or not synced yet).
SELECT cost_micros FROM services WHERE id = :id;

-- name: mark_admin_edits(id, fields, manual_price)!
-- Fields staff edited by hand are kept from then on: a sync never overwrites them.
UPDATE services
SET admin_edited = ARRAY(SELECT DISTINCT unnest(admin_edited || :fields::text[]) ORDER BY 1),
    manual_price = manual_price OR :manual_price
WHERE id = :id;

-- name: list_admin_services(provider_id, category_id, quarantined_only, enabled, query, query_id, name_pattern, before_id, limit)
-- name_pattern: the query as an ILIKE pattern, its wildcards escaped (server/common/search.py).
-- enabled: NULL for every service, else only those enabled (true) or disabled (false).
SELECT s.id, s.provider_id, s.upstream_service_id, s.provider_rate_micros, s.provider_currency, s.exchange_rate,
       s.cost_micros, s.manual_price, s.admin_edited, s.quarantined, s.quarantine_reason,
       s.pending_provider_rate_micros, s.pending_exchange_rate, s.gone_upstream_time, s.upstream_dripfeed
FROM services s
WHERE (:provider_id = 0 OR s.provider_id = :provider_id)
  AND (:category_id = 0 OR s.category_id = :category_id)
  AND (NOT :quarantined_only OR s.quarantined)
  AND (CAST(:enabled AS boolean) IS NULL OR s.enabled = CAST(:enabled AS boolean))
  AND (:query = '' OR s.id = :query_id OR s.name ILIKE :name_pattern)
  AND s.id < :before_id
ORDER BY s.id DESC
LIMIT :limit;

-- name: get_admin_service(id)^
SELECT s.id, s.provider_id, s.upstream_service_id, s.provider_rate_micros, s.provider_currency, s.exchange_rate,
       s.cost_micros, s.manual_price, s.admin_edited, s.quarantined, s.quarantine_reason,
       s.pending_provider_rate_micros, s.pending_exchange_rate, s.gone_upstream_time, s.upstream_dripfeed
FROM services s WHERE s.id = :id;

-- name: list_fallbacks(service_ids)
SELECT service_id, provider_id, upstream_service_id FROM service_fallbacks
WHERE service_id = ANY(:service_ids) ORDER BY service_id, position;

-- name: delete_service(id)$
DELETE FROM services WHERE id = :id RETURNING id;

-- name: delete_category(id)$
DELETE FROM categories WHERE id = :id RETURNING id;

-- name: set_service_provider(id, provider_id, upstream_service_id)!
-- Another upstream service: its category name is not known until the next sync records it.
UPDATE services SET provider_id = :provider_id, upstream_service_id = :upstream_service_id,
    upstream_category = CASE WHEN provider_id IS NOT DISTINCT FROM :provider_id
                              AND upstream_service_id = :upstream_service_id
                             THEN upstream_category ELSE '' END,
    update_time = now()
WHERE id = :id;

-- name: quarantine_service(id, reason)!
-- Off sale with no price to accept: the provider's next sync decides (release, or a pending price).
UPDATE services
SET quarantined = true, quarantine_reason = :reason,
    pending_provider_rate_micros = NULL, pending_exchange_rate = NULL, update_time = now()
WHERE id = :id;

-- name: delete_fallbacks(service_id)!
DELETE FROM service_fallbacks WHERE service_id = :service_id;

-- name: insert_fallback(service_id, position, provider_id, upstream_service_id)!
INSERT INTO service_fallbacks (service_id, position, provider_id, upstream_service_id)
VALUES (:service_id, :position, :provider_id, :upstream_service_id);

-- name: provider_exists(id)$
SELECT EXISTS (SELECT 1 FROM providers WHERE id = :id AND status <> 'deleted');

-- name: accept_pending_price(id, cost_micros)!
UPDATE services
SET provider_rate_micros = pending_provider_rate_micros, exchange_rate = pending_exchange_rate,
    cost_micros = :cost_micros, quarantined = false, quarantine_reason = '',
    pending_provider_rate_micros = NULL, pending_exchange_rate = NULL, update_time = now()
WHERE id = :id;

-- name: set_service_rate(id, rate_micros, manual_price)!
UPDATE services SET rate_micros = :rate_micros, manual_price = :manual_price, update_time = now() WHERE id = :id;

-- name: set_services_enabled(ids, enabled)$
WITH changed AS (
    UPDATE services SET enabled = :enabled, disabled_by_sync = false, update_time = now()
    WHERE id = ANY(:ids) AND (enabled <> :enabled OR disabled_by_sync) RETURNING id
)
SELECT count(*) FROM changed;

-- name: lock_priced_services(ids)
-- Services whose price the rules may set (not hand-priced, not quarantined, with a known cost).
SELECT id, category_id, rate_micros, cost_micros, manual_price
FROM services
WHERE (cardinality(:ids::bigint[]) = 0 OR id = ANY(:ids)) AND cost_micros IS NOT NULL AND NOT quarantined
ORDER BY id
FOR UPDATE;

-- name: lock_services_by_id(ids)
SELECT id, category_id, rate_micros, cost_micros, manual_price
FROM services WHERE id = ANY(:ids) ORDER BY id FOR UPDATE;

-- name: get_pricing_rule(id)^
SELECT id, category_id, service_id, markup_bps, fixed_micros, round_to_micros, update_time
FROM pricing_rules WHERE id = :id;

-- name: insert_pricing_rule(category_id, service_id, markup_bps, fixed_micros, round_to_micros)^
INSERT INTO pricing_rules (category_id, service_id, markup_bps, fixed_micros, round_to_micros)
VALUES (:category_id, :service_id, :markup_bps, :fixed_micros, :round_to_micros)
RETURNING id, category_id, service_id, markup_bps, fixed_micros, round_to_micros, update_time;

-- name: update_pricing_rule(id, markup_bps, fixed_micros, round_to_micros)^
UPDATE pricing_rules
SET markup_bps = :markup_bps, fixed_micros = :fixed_micros, round_to_micros = :round_to_micros, update_time = now()
WHERE id = :id
RETURNING id, category_id, service_id, markup_bps, fixed_micros, round_to_micros, update_time;

-- name: delete_pricing_rule(id)$
DELETE FROM pricing_rules WHERE id = :id AND (category_id IS NOT NULL OR service_id IS NOT NULL) RETURNING id;

-- name: lock_pricing_rules()!
-- Rule changes and the repricing they cause happen one at a time.
LOCK TABLE pricing_rules IN SHARE ROW EXCLUSIVE MODE;

-- name: refresh_completion_times()!
-- Average time from order to completion over the last 30 days' completed orders (the orders table
-- is read here, never written), shown on the catalog as average_completion_seconds.
UPDATE services s SET average_completion_s = recent.seconds
FROM (
    SELECT service_id, avg(extract(epoch FROM finish_time - create_time))::bigint AS seconds
    FROM orders
    WHERE status = 'completed' AND finish_time > now() - interval '30 days'
    GROUP BY service_id
) recent
WHERE s.id = recent.service_id AND s.average_completion_s IS DISTINCT FROM recent.seconds;
