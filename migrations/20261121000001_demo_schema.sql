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
