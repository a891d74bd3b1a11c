-- A category name is one name whatever its letter case ("Instagram Likes" is "instagram likes"):
-- staff are refused such a twin (server/catalog/logic.py) and a provider sync joins the existing
-- category (server/catalog/importer.py); this index also stops two writes at once both passing.
-- A panel that already has twins keeps them and gets no index, so the upgrade neither fails nor
-- merges categories on its own: staff merge them, then create the index (docs/DEPLOYMENT.md).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM categories GROUP BY lower(name) HAVING count(*) > 1) THEN
        RAISE WARNING 'categories whose names differ only in letter case exist: '
            'categories_name_lower_key not created; merge them, then create it (docs/DEPLOYMENT.md)';
    ELSE
        CREATE UNIQUE INDEX categories_name_lower_key ON categories (lower(name));
    END IF;
END
$$;
