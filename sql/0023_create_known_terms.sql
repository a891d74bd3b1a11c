-- What a provider charges for one of its upstream services, when smm knows it: the terms on that
-- provider's own service row (priced by its sync). A pending price rise counts: it is what the
-- provider charges now. A fallback's cost is compared with an order's price from here.
CREATE VIEW known_terms AS
SELECT provider_id, upstream_service_id,
       coalesce(pending_provider_rate_micros, provider_rate_micros) AS provider_rate_micros,
       provider_currency,
       CASE WHEN pending_provider_rate_micros IS NULL THEN exchange_rate ELSE pending_exchange_rate END AS exchange_rate
FROM services
WHERE provider_id IS NOT NULL
  AND coalesce(pending_provider_rate_micros, provider_rate_micros) IS NOT NULL
  AND CASE WHEN pending_provider_rate_micros IS NULL THEN exchange_rate ELSE pending_exchange_rate END IS NOT NULL;

-- The terms an order records once a provider took it: those it was priced on when that provider
-- (and upstream service) is the one it was priced for; a fallback's as smm knows them
-- (``known_terms``); else none. One definition for the two statements that store an acceptance.
CREATE FUNCTION taker_terms(
    priced_provider_id bigint, priced_upstream_service_id text,
    priced_rate_micros bigint, priced_currency text, priced_exchange_rate numeric,
    taker_provider_id bigint, taker_upstream_service_id text
) RETURNS TABLE (provider_rate_micros bigint, provider_currency text, exchange_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT t.provider_rate_micros, t.provider_currency, t.exchange_rate
    FROM (SELECT priced_rate_micros AS provider_rate_micros, priced_currency AS provider_currency,
                 priced_exchange_rate AS exchange_rate, 0 AS pick
          WHERE priced_provider_id IS NOT DISTINCT FROM taker_provider_id
            AND priced_upstream_service_id = taker_upstream_service_id
          UNION ALL
          SELECT k.provider_rate_micros, k.provider_currency, k.exchange_rate, 1
          FROM known_terms k
          WHERE k.provider_id = taker_provider_id AND k.upstream_service_id = taker_upstream_service_id
          UNION ALL
          SELECT NULL, '', NULL, 2) t
    ORDER BY t.pick LIMIT 1
$$;
