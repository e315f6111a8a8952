-- Demo dataset schema (restaurant chain sales), exactly as specified in
-- demo-dataset.sql. src/db/seed.rs drops and re-adds the foreign keys around
-- its bulk load by their default names (<table>_<column>_fkey), so keep those
-- definitions in sync with ADD_FOREIGN_KEYS there.
--
-- No index beyond sales_created_at_idx. Measured on 1,000,000 seeded sales
-- (VACUUM ANALYZE, warm cache) with the typical dashboard query: revenue,
-- average ticket and count by channel for one month (29,423 sales), alone and
-- with store_id = 17, channel_id IN (2,3), or both. The seeder keeps ids and
-- created_at in the same order, so the heap is in created_at order and the
-- plan is an Index Scan on sales_created_at_idx touching 449 buffers
-- (27,357 before the seeder ordered times within a day).
--   (created_at) INCLUDE (store_id, channel_id, status, total_amount): never
--     chosen by the planner, same plan and buffers for all four queries.
--   (store_id, created_at): never chosen either, even with the store filter
--     (estimated dearer than the correlated created_at scan).
-- Neither changed the plans, so neither is added.

CREATE TABLE channels (
    id    smallint PRIMARY KEY,
    name  text NOT NULL UNIQUE,          -- 'Presencial', 'iFood', 'Rappi', 'App', 'WhatsApp', 'Telefone'
    type  text NOT NULL CHECK (type IN ('P', 'D'))  -- P = in person, D = delivery
);

CREATE TABLE stores (
    id        integer PRIMARY KEY,
    name      text NOT NULL,
    city      text NOT NULL,
    state     char(2) NOT NULL,
    opened_at date NOT NULL
);

CREATE TABLE products (
    id        integer PRIMARY KEY,
    name      text NOT NULL,
    category  text NOT NULL,
    price     numeric(10,2) NOT NULL
);

CREATE TABLE customers (
    id          integer PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE sales (
    id                  bigint PRIMARY KEY,
    store_id            integer  NOT NULL REFERENCES stores(id),
    channel_id          smallint NOT NULL REFERENCES channels(id),
    customer_id         integer  REFERENCES customers(id),
    created_at          timestamptz NOT NULL,
    status              text NOT NULL CHECK (status IN ('COMPLETED', 'CANCELLED')),
    total_amount        numeric(10,2) NOT NULL,
    total_discount      numeric(10,2) NOT NULL DEFAULT 0,
    delivery_fee        numeric(10,2) NOT NULL DEFAULT 0,
    people_quantity     integer,
    production_seconds  integer,
    delivery_seconds    integer
);
CREATE INDEX sales_created_at_idx ON sales (created_at);

CREATE TABLE product_sales (
    id           bigint PRIMARY KEY,
    sale_id      bigint  NOT NULL REFERENCES sales(id),
    product_id   integer NOT NULL REFERENCES products(id),
    quantity     integer NOT NULL,
    total_price  numeric(10,2) NOT NULL
);
