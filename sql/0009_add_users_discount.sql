-- Per-user discount on catalog prices, in basis points (100 = 1%).
ALTER TABLE users ADD COLUMN discount_bps integer NOT NULL DEFAULT 0
    CONSTRAINT users_discount_bps_check CHECK (discount_bps BETWEEN 0 AND 10000);
