-- name: list_categories_on_sale()
-- Categories with at least one service on sale, in display order.
SELECT c.id, c.name, c.sort_order, c.enabled, c.create_time, c.update_time
FROM categories c
WHERE c.enabled AND EXISTS (SELECT 1 FROM services s WHERE s.category_id = c.id AND s.enabled)
ORDER BY c.sort_order, c.id;

-- name: list_services_on_sale(category_id, after_category_sort, after_category_id, after_sort, after_id, limit)
-- Keyset page of services on sale; a category_id of 0 means every category.
SELECT s.id, s.category_id, c.name AS category_name, c.sort_order AS category_sort, s.name, s.description, s.type, s.rate_micros,
       s.min_quantity, s.max_quantity, s.refill, s.refill_days, s.cancel, s.dripfeed, s.enabled,
       s.sort_order, s.create_time, s.update_time
FROM services s
JOIN categories c ON c.id = s.category_id
WHERE s.enabled AND c.enabled
  AND (:category_id = 0 OR s.category_id = :category_id)
  AND (c.sort_order, c.id, s.sort_order, s.id) > (:after_category_sort, :after_category_id, :after_sort, :after_id)
ORDER BY c.sort_order, c.id, s.sort_order, s.id
LIMIT :limit;

-- name: get_service(id)^
SELECT s.id, s.category_id, c.name AS category_name, c.sort_order AS category_sort, s.name, s.description, s.type, s.rate_micros,
       s.min_quantity, s.max_quantity, s.refill, s.refill_days, s.cancel, s.dripfeed, s.enabled,
       s.sort_order, s.create_time, s.update_time
FROM services s
JOIN categories c ON c.id = s.category_id
WHERE s.id = :id;

-- name: get_category(id)^
SELECT id, name, sort_order, enabled, create_time, update_time FROM categories WHERE id = :id;

-- name: lock_category(id)^
SELECT id, name, sort_order, enabled, create_time, update_time FROM categories WHERE id = :id FOR UPDATE;

-- name: insert_category(name, sort_order, enabled)^
INSERT INTO categories (name, sort_order, enabled)
VALUES (:name, :sort_order, :enabled)
RETURNING id, name, sort_order, enabled, create_time, update_time;

-- name: update_category(id, name, sort_order, enabled)^
UPDATE categories SET name = :name, sort_order = :sort_order, enabled = :enabled, update_time = now()
WHERE id = :id
RETURNING id, name, sort_order, enabled, create_time, update_time;

-- name: lock_service(id)^
SELECT id FROM services WHERE id = :id FOR UPDATE;

-- name: insert_service(category_id, name, description, type, rate_micros, min_quantity, max_quantity, refill, refill_days, cancel, dripfeed, enabled, sort_order)^
INSERT INTO services (category_id, name, description, type, rate_micros, min_quantity, max_quantity,
                      refill, refill_days, cancel, dripfeed, enabled, sort_order)
VALUES (:category_id, :name, :description, :type, :rate_micros, :min_quantity, :max_quantity,
        :refill, :refill_days, :cancel, :dripfeed, :enabled, :sort_order)
RETURNING id;

-- name: update_service(id, category_id, name, description, type, rate_micros, min_quantity, max_quantity, refill, refill_days, cancel, dripfeed, enabled, sort_order)!
UPDATE services
SET category_id = :category_id, name = :name, description = :description, type = :type,
    rate_micros = :rate_micros, min_quantity = :min_quantity, max_quantity = :max_quantity,
    refill = :refill, refill_days = :refill_days, cancel = :cancel, dripfeed = :dripfeed,
    enabled = :enabled, sort_order = :sort_order, update_time = now()
WHERE id = :id;
