-- Where an order for a service may go, in order: the primary provider (position 0), then the
-- fallbacks. One definition for the dispatcher's list and its one-statement claim.
CREATE VIEW service_candidates AS
SELECT id AS service_id, 0 AS position, provider_id, upstream_service_id
FROM services
WHERE provider_id IS NOT NULL
UNION ALL
SELECT service_id, position + 1, provider_id, upstream_service_id
FROM service_fallbacks;
