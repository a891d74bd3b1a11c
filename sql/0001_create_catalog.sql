-- The catalog: categories and the services sold in them. Money is BIGINT micro-units.
CREATE TABLE categories (
    id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT categories_pkey PRIMARY KEY,
    name        text        NOT NULL CONSTRAINT categories_name_check CHECK (length(name) BETWEEN 1 AND 200),
    sort_order  integer     NOT NULL DEFAULT 0,
    enabled     boolean     NOT NULL DEFAULT true,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT categories_name_key UNIQUE (name)
);

CREATE TABLE services (
    id           bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT services_pkey PRIMARY KEY,
    category_id  bigint      NOT NULL CONSTRAINT services_category_id_fkey REFERENCES categories (id),
    name         text        NOT NULL CONSTRAINT services_name_check CHECK (length(name) BETWEEN 1 AND 300),
    description  text        NOT NULL DEFAULT '',
    type         text        NOT NULL CONSTRAINT services_type_check CHECK (type IN (
                     'DEFAULT', 'PACKAGE', 'SEO', 'CUSTOM_COMMENTS', 'CUSTOM_COMMENTS_PACKAGE', 'MENTIONS',
                     'MENTIONS_WITH_HASHTAGS', 'MENTIONS_CUSTOM_LIST', 'MENTIONS_HASHTAG',
                     'MENTIONS_USER_FOLLOWERS', 'MENTIONS_MEDIA_LIKERS', 'COMMENT_LIKES', 'COMMENT_REPLIES',
                     'POLL', 'INVITES_FROM_GROUPS', 'SUBSCRIPTIONS', 'WEB_TRAFFIC')),
    rate_micros  bigint      NOT NULL CONSTRAINT services_rate_micros_check CHECK (rate_micros >= 0),
    min_quantity bigint      NOT NULL DEFAULT 1 CONSTRAINT services_min_quantity_check CHECK (min_quantity >= 1),
    max_quantity bigint      NOT NULL DEFAULT 1,
    refill       boolean     NOT NULL DEFAULT false,
    refill_days  integer     NOT NULL DEFAULT 0 CONSTRAINT services_refill_days_check CHECK (refill_days BETWEEN 0 AND 3650),
    cancel       boolean     NOT NULL DEFAULT false,
    dripfeed     boolean     NOT NULL DEFAULT false,
    enabled      boolean     NOT NULL DEFAULT true,
    sort_order   integer     NOT NULL DEFAULT 0,
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT services_quantity_range_check CHECK (max_quantity >= min_quantity)
);

CREATE INDEX services_category_id_idx ON services (category_id, sort_order, id);
CREATE INDEX services_on_sale_idx ON services (sort_order, id) WHERE enabled;
