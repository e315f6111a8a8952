//! The SQL text of the demo-data generator: static statements whose every
//! value arrives as a bind parameter (see `super` for how they are run).

/// Number of generated customers; sales pick their customer among these ids.
pub(super) const CUSTOMERS: i64 = 100_000;

/// Sales generated per `INSERT ... SELECT`: large enough that per-statement
/// overhead is negligible, small enough for a progress line every few seconds
/// and for the per-chunk CTE to stay well inside `work_mem`.
pub(super) const CHUNK_SALES: i64 = 250_000;

/// Upper bound on `SeedOptions::sales`: product line hashes use
/// `sale_id * 8 + line`, which must not overflow a bigint, and anything near
/// this size is far beyond a demo anyway.
pub(super) const MAX_SALES: u64 = 1_000_000_000;

// Compile-time guards for the constants above.
const _: () = assert!(CHUNK_SALES > 0);
const _: () = assert!(MAX_SALES <= (i64::MAX as u64 - 5) / 8);

/// Session settings for the load, reverted automatically at commit/rollback.
/// The chunk statements run for seconds, so a pool-wide `statement_timeout`
/// meant for dashboard queries must not apply; JIT compilation only adds
/// latency to these one-off statements (their row estimates are huge, which
/// would otherwise trigger it); the per-chunk CTE is kept in memory.
pub(super) const SESSION_SETTINGS: [&str; 3] = [
    "SET LOCAL statement_timeout = 0",
    "SET LOCAL jit = off",
    "SET LOCAL work_mem = '128MB'",
];

pub(super) const TRUNCATE: &str = "TRUNCATE product_sales, sales, customers, products, stores, channels";

/// Foreign keys are checked row by row by triggers, which cost more than the
/// rest of the load put together (measured with 200,000 sales on 2 cores:
/// 17.7-24.2 s keeping the keys, 6.3-6.8 s dropping and re-adding them).
/// Re-adding a key validates it with one set-based anti-join instead. The names are PostgreSQL's defaults for the
/// constraints declared in the demo schema migration, and the definitions
/// below must stay identical to it. Everything happens inside the seeding
/// transaction, so no other session ever sees the tables without their keys.
pub(super) const DROP_FOREIGN_KEYS: [&str; 2] = [
    "ALTER TABLE product_sales
         DROP CONSTRAINT product_sales_sale_id_fkey,
         DROP CONSTRAINT product_sales_product_id_fkey",
    "ALTER TABLE sales
         DROP CONSTRAINT sales_store_id_fkey,
         DROP CONSTRAINT sales_channel_id_fkey,
         DROP CONSTRAINT sales_customer_id_fkey",
];

pub(super) const ADD_FOREIGN_KEYS: [&str; 2] = [
    "ALTER TABLE sales
         ADD CONSTRAINT sales_store_id_fkey FOREIGN KEY (store_id) REFERENCES stores(id),
         ADD CONSTRAINT sales_channel_id_fkey FOREIGN KEY (channel_id) REFERENCES channels(id),
         ADD CONSTRAINT sales_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers(id)",
    "ALTER TABLE product_sales
         ADD CONSTRAINT product_sales_sale_id_fkey FOREIGN KEY (sale_id) REFERENCES sales(id),
         ADD CONSTRAINT product_sales_product_id_fkey FOREIGN KEY (product_id) REFERENCES products(id)",
];

/// Helper SQL functions, created in the session's temporary schema so the
/// migration-defined schema stays exactly as specified. They are simple
/// immutable SQL expressions, which the planner inlines: no call overhead.
pub(super) const HELPER_FUNCTIONS: [&str; 5] = [
    // Uniform value in [0, 1) for (row id, seed, column salt): the low 53 bits
    // of a 64-bit hash are exactly representable in a double.
    "CREATE OR REPLACE FUNCTION pg_temp.seed_u(id bigint, seed bigint, salt bigint)
     RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
     AS $$ SELECT (hashint8extended(id, seed # salt) & 9007199254740991)::double precision
                  / 9007199254740992.0 $$",
    // Bends a uniform value towards 0 so that low indexes are picked more
    // often: a few best sellers and regular customers instead of a flat mix.
    "CREATE OR REPLACE FUNCTION pg_temp.seed_skew(u double precision)
     RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
     AS $$ SELECT 0.4 * u + 0.6 * u * u $$",
    // Product of an order line: mains are ids 1..220, drinks and desserts
    // 221..300. Multiplying the skewed rank by a number coprime with the range
    // size scatters the best sellers over all categories.
    "CREATE OR REPLACE FUNCTION pg_temp.seed_product(u_kind double precision, u_pick double precision)
     RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
     AS $$ SELECT CASE WHEN u_kind < 0.35
                       THEN 1 + (floor(220 * pg_temp.seed_skew(u_pick))::integer * 97) % 220
                       ELSE 221 + (floor(80 * pg_temp.seed_skew(u_pick))::integer * 37) % 80
                  END $$",
    "CREATE OR REPLACE FUNCTION pg_temp.seed_quantity(u double precision)
     RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
     AS $$ SELECT CASE WHEN u < 0.85 THEN 1 WHEN u < 0.97 THEN 2 ELSE 3 END $$",
    // Local second of the day for a position v in [0, 1) through the day's
    // orders: the inverse of a piecewise-uniform distribution over the opening
    // hours with peaks at lunch (11-14h, 39%) and dinner (18-22h, 47%), plus a
    // little after-midnight delivery. Monotonic in v, so ids that follow each
    // other within a day get non-decreasing times.
    "CREATE OR REPLACE FUNCTION pg_temp.seed_time_of_day(v double precision)
     RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
     AS $$ SELECT least(86399, floor(CASE
                    WHEN v < 0.01  THEN  0 * 3600 + 3600 * v / 0.01
                    WHEN v < 0.03  THEN 10 * 3600 + 3600 * (v - 0.01) / 0.02
                    WHEN v < 0.11  THEN 11 * 3600 + 3600 * (v - 0.03) / 0.08
                    WHEN v < 0.25  THEN 12 * 3600 + 3600 * (v - 0.11) / 0.14
                    WHEN v < 0.37  THEN 13 * 3600 + 3600 * (v - 0.25) / 0.12
                    WHEN v < 0.42  THEN 14 * 3600 + 3600 * (v - 0.37) / 0.05
                    WHEN v < 0.445 THEN 15 * 3600 + 3600 * (v - 0.42) / 0.025
                    WHEN v < 0.47  THEN 16 * 3600 + 3600 * (v - 0.445) / 0.025
                    WHEN v < 0.51  THEN 17 * 3600 + 3600 * (v - 0.47) / 0.04
                    WHEN v < 0.58  THEN 18 * 3600 + 3600 * (v - 0.51) / 0.07
                    WHEN v < 0.70  THEN 19 * 3600 + 3600 * (v - 0.58) / 0.12
                    WHEN v < 0.83  THEN 20 * 3600 + 3600 * (v - 0.70) / 0.13
                    WHEN v < 0.93  THEN 21 * 3600 + 3600 * (v - 0.83) / 0.10
                    WHEN v < 0.98  THEN 22 * 3600 + 3600 * (v - 0.93) / 0.05
                    ELSE                23 * 3600 + 3600 * (v - 0.98) / 0.02
                  END)::integer) $$",
];

pub(super) const DROP_HELPER_FUNCTIONS: &str = "DROP FUNCTION pg_temp.seed_time_of_day(double precision),
     pg_temp.seed_quantity(double precision),
     pg_temp.seed_product(double precision, double precision),
     pg_temp.seed_skew(double precision),
     pg_temp.seed_u(bigint, bigint, bigint)";

pub(super) const INSERT_CHANNELS: &str = "INSERT INTO channels (id, name, type) VALUES
     (1, 'Presencial', 'P'), (2, 'iFood', 'D'), (3, 'Rappi', 'D'),
     (4, 'App', 'D'), (5, 'WhatsApp', 'D'), (6, 'Telefone', 'D')";

/// The store list with a relative sales weight (flagship stores in the big
/// capitals sell more). The weight is not part of the schema, hence the
/// temporary table.
pub(super) const CREATE_SEED_STORES: &str = "CREATE TEMP TABLE seed_stores ON COMMIT DROP AS
     SELECT v.id, v.neighborhood, v.city, v.state, v.weight
     FROM (VALUES
       (1, 'Centro', 'São Paulo', 'SP', 1.6), (2, 'Paulista', 'São Paulo', 'SP', 1.8),
       (3, 'Pinheiros', 'São Paulo', 'SP', 1.5), (4, 'Moema', 'São Paulo', 'SP', 1.4),
       (5, 'Vila Mariana', 'São Paulo', 'SP', 1.3), (6, 'Tatuapé', 'São Paulo', 'SP', 1.3),
       (7, 'Santana', 'São Paulo', 'SP', 1.1), (8, 'Itaim Bibi', 'São Paulo', 'SP', 1.4),
       (9, 'Mooca', 'São Paulo', 'SP', 1.1), (10, 'Lapa', 'São Paulo', 'SP', 1.0),
       (11, 'Morumbi', 'São Paulo', 'SP', 1.0),
       (12, 'Centro', 'Campinas', 'SP', 1.0), (13, 'Cambuí', 'Campinas', 'SP', 1.1),
       (14, 'Barão Geraldo', 'Campinas', 'SP', 0.8),
       (15, 'Gonzaga', 'Santos', 'SP', 0.9), (16, 'Ponta da Praia', 'Santos', 'SP', 0.8),
       (17, 'Centro', 'Ribeirão Preto', 'SP', 0.8), (18, 'Jardim Botânico', 'Ribeirão Preto', 'SP', 0.7),
       (19, 'Centro', 'Rio de Janeiro', 'RJ', 1.3), (20, 'Copacabana', 'Rio de Janeiro', 'RJ', 1.5),
       (21, 'Barra da Tijuca', 'Rio de Janeiro', 'RJ', 1.4), (22, 'Tijuca', 'Rio de Janeiro', 'RJ', 1.1),
       (23, 'Botafogo', 'Rio de Janeiro', 'RJ', 1.2), (24, 'Méier', 'Rio de Janeiro', 'RJ', 0.9),
       (25, 'Savassi', 'Belo Horizonte', 'MG', 1.2), (26, 'Centro', 'Belo Horizonte', 'MG', 1.0),
       (27, 'Pampulha', 'Belo Horizonte', 'MG', 0.8), (28, 'Buritis', 'Belo Horizonte', 'MG', 0.8),
       (29, 'Batel', 'Curitiba', 'PR', 1.1), (30, 'Centro', 'Curitiba', 'PR', 0.9),
       (31, 'Água Verde', 'Curitiba', 'PR', 0.8),
       (32, 'Moinhos de Vento', 'Porto Alegre', 'RS', 1.0), (33, 'Centro Histórico', 'Porto Alegre', 'RS', 0.8),
       (34, 'Menino Deus', 'Porto Alegre', 'RS', 0.7),
       (35, 'Centro', 'Florianópolis', 'SC', 0.8), (36, 'Lagoa da Conceição', 'Florianópolis', 'SC', 0.7),
       (37, 'Barra', 'Salvador', 'BA', 1.0), (38, 'Pituba', 'Salvador', 'BA', 0.9),
       (39, 'Rio Vermelho', 'Salvador', 'BA', 0.8),
       (40, 'Boa Viagem', 'Recife', 'PE', 1.0), (41, 'Casa Forte', 'Recife', 'PE', 0.7),
       (42, 'Centro', 'Recife', 'PE', 0.8),
       (43, 'Aldeota', 'Fortaleza', 'CE', 0.9), (44, 'Meireles', 'Fortaleza', 'CE', 0.8),
       (45, 'Asa Sul', 'Brasília', 'DF', 1.0), (46, 'Asa Norte', 'Brasília', 'DF', 0.9),
       (47, 'Lago Sul', 'Brasília', 'DF', 0.7),
       (48, 'Setor Bueno', 'Goiânia', 'GO', 0.8), (49, 'Setor Marista', 'Goiânia', 'GO', 0.7),
       (50, 'Adrianópolis', 'Manaus', 'AM', 0.7)
     ) AS v(id, neighborhood, city, state, weight)";

/// $1 seed, $2 anchor. Every store opened between ~8 years and 2 months
/// before the window starts, so all of them sell during the whole window.
pub(super) const INSERT_STORES: &str = "INSERT INTO stores (id, name, city, state, opened_at)
     SELECT s.id, 'Loja ' || s.neighborhood || ' - ' || s.city, s.city, s.state,
            ($2::date - interval '3 years')::date - 60
              - floor(3000 * pg_temp.seed_u(s.id, $1, 1001))::integer
     FROM pg_temp.seed_stores s
     ORDER BY s.id";

/// 1000 equal-probability buckets, each owned by one store in proportion to
/// its weight: a sale picks a uniform bucket, i.e. a weighted store. Exact
/// numeric arithmetic keeps the bucket boundaries platform independent.
pub(super) const CREATE_STORE_BUCKETS: &str = "CREATE TEMP TABLE seed_store_buckets ON COMMIT DROP AS
     WITH w AS (
       SELECT id,
              sum(weight) OVER (ORDER BY id) - weight AS lo,
              sum(weight) OVER (ORDER BY id) AS hi,
              sum(weight) OVER () AS total
       FROM pg_temp.seed_stores
     )
     SELECT b AS bucket, w.id AS store_id
     FROM generate_series(0, 999) AS b
     JOIN w ON (b + 0.5) / 1000 * w.total >= w.lo AND (b + 0.5) / 1000 * w.total < w.hi";

/// $1 seed. 300 products in 7 categories: mains are ids 1..220, drinks and
/// desserts 221..300 (see `pg_temp.seed_product`). Names are flavour x variant
/// (unique); the price grows with the variant (Broto < Média < Grande ...) and
/// ends in ,90 like a real menu.
pub(super) const INSERT_PRODUCTS: &str = "INSERT INTO products (id, name, category, price)
     SELECT p.id,
            c.prefix || c.flavors[1 + (p.id - c.first_id) % cardinality(c.flavors)]
                     || c.variants[1 + (p.id - c.first_id) / cardinality(c.flavors)],
            c.category,
            (floor(c.min_price + (c.max_price - c.min_price)
                   * ((p.id - c.first_id) / cardinality(c.flavors) + pg_temp.seed_u(p.id, $1, 1002))
                   / cardinality(c.variants)) + 0.90)::numeric(10,2)
     FROM (VALUES
       ('Hambúrgueres', 'Hambúrguer ', 1, 60, 22, 44,
        ARRAY['Clássico', 'Bacon', 'Cheddar', 'Salada', 'Frango', 'Vegano', 'Picanha', 'Costela',
              'Cogumelos', 'Barbecue', 'Egg', 'Calabresa'],
        ARRAY[' Kids', '', ' Smash', ' Duplo', ' Especial']),
       ('Pizzas', 'Pizza ', 61, 50, 36, 79,
        ARRAY['Margherita', 'Calabresa', 'Portuguesa', 'Quatro Queijos', 'Frango com Catupiry',
              'Pepperoni', 'Napolitana', 'da Casa', 'Muçarela', 'Atum'],
        ARRAY[' Broto', ' Média', ' Grande', ' Família', ' Especial']),
       ('Pratos', '', 111, 50, 26, 58,
        ARRAY['Parmegiana de Frango', 'Parmegiana de Carne', 'Feijoada', 'Strogonoff de Frango',
              'Strogonoff de Carne', 'Picanha na Chapa', 'Frango Grelhado', 'Filé de Tilápia',
              'Lasanha Bolonhesa', 'Escondidinho de Carne'],
        ARRAY[' Kids', ' Fit', '', ' Executivo', ' para Dois']),
       ('Porções', 'Porção de ', 161, 40, 19, 52,
        ARRAY['Batata Frita', 'Mandioca Frita', 'Calabresa Acebolada', 'Frango a Passarinho',
              'Isca de Peixe', 'Anéis de Cebola', 'Polenta Frita', 'Bolinho de Bacalhau'],
        ARRAY[' Pequena', ' Média', ' Grande', ' com Cheddar', ' Especial']),
       ('Combos', 'Combo ', 201, 20, 34, 69,
        ARRAY['Família', 'Casal', 'Individual', 'Kids', 'Executivo', 'Burger', 'Pizza',
              'Happy Hour', 'Almoço', 'Jantar'],
        ARRAY['', ' Plus']),
       ('Bebidas', '', 221, 45, 5, 16,
        ARRAY['Refrigerante Cola', 'Refrigerante Guaraná', 'Refrigerante Laranja', 'Refrigerante Limão',
              'Suco de Laranja', 'Suco de Limão', 'Suco de Maracujá', 'Suco de Uva', 'Suco de Abacaxi',
              'Água Mineral', 'Água com Gás', 'Chá Gelado', 'Cerveja Pilsen', 'Cerveja IPA', 'Energético'],
        ARRAY[' 350ml', ' 600ml', ' 1L']),
       ('Sobremesas', '', 266, 35, 8, 26,
        ARRAY['Pudim', 'Brigadeiro', 'Petit Gâteau', 'Mousse de Maracujá', 'Sorvete', 'Açaí',
              'Torta de Limão'],
        ARRAY[' Individual', '', ' com Calda', ' Grande', ' Especial'])
     ) AS c(category, prefix, first_id, n, min_price, max_price, flavors, variants)
     CROSS JOIN LATERAL generate_series(c.first_id, c.first_id + c.n - 1) AS p(id)
     ORDER BY p.id";

/// $1 seed, $2 anchor, $3 number of customers. Customers signed up during the
/// three years before the sales window, so none buys before existing.
pub(super) const INSERT_CUSTOMERS: &str = "INSERT INTO customers (id, name, created_at)
     SELECT g.id,
            fn.names[1 + floor(cardinality(fn.names) * pg_temp.seed_u(g.id, $1, 2001))::integer]
              || ' ' ||
            ln.names[1 + floor(cardinality(ln.names) * pg_temp.seed_u(g.id, $1, 2002))::integer],
            to_timestamp(((($2::date - interval '3 years')::date - date '1970-01-01')::bigint
                          - 1 - floor(1095 * pg_temp.seed_u(g.id, $1, 2003))::bigint) * 86400
                         + floor(86400 * pg_temp.seed_u(g.id, $1, 2004))::bigint)
     FROM generate_series(1, $3::bigint) AS g(id),
          (VALUES (ARRAY['Ana', 'Maria', 'Juliana', 'Fernanda', 'Camila', 'Beatriz', 'Larissa', 'Patrícia',
                         'Aline', 'Bruna', 'Letícia', 'Mariana', 'Gabriela', 'Amanda', 'Vanessa', 'Carla',
                         'Luana', 'Renata', 'Débora', 'Tatiane', 'João', 'José', 'Pedro', 'Lucas', 'Gabriel',
                         'Rafael', 'Felipe', 'Bruno', 'Gustavo', 'Thiago', 'Rodrigo', 'Marcelo', 'André',
                         'Carlos', 'Eduardo', 'Fernando', 'Diego', 'Leonardo', 'Matheus', 'Vinícius'])) AS fn(names),
          (VALUES (ARRAY['Silva', 'Santos', 'Oliveira', 'Souza', 'Rodrigues', 'Ferreira', 'Alves', 'Pereira',
                         'Lima', 'Gomes', 'Costa', 'Ribeiro', 'Martins', 'Carvalho', 'Almeida', 'Lopes',
                         'Soares', 'Fernandes', 'Vieira', 'Barbosa', 'Rocha', 'Dias', 'Nascimento', 'Andrade',
                         'Moreira', 'Nunes', 'Marques', 'Machado', 'Mendes', 'Freitas', 'Cardoso', 'Ramos',
                         'Gonçalves', 'Santana', 'Teixeira', 'Araújo', 'Pinto', 'Correia', 'Moura',
                         'Cavalcanti'])) AS ln(names)";

pub(super) const CREATE_SEED_DAYS: &str = "CREATE TEMP TABLE seed_days (
       idx      bigint PRIMARY KEY,
       day      date   NOT NULL,
       first_id bigint NOT NULL,
       last_id  bigint NOT NULL
     ) ON COMMIT DROP";

/// $1 seed, $2 anchor, $3 number of sales. Splits the sale ids 1..N over the
/// days of the window in proportion to a daily weight: weekday shape
/// (Fri-Sun busiest), ~60% growth over the three years, a December peak and
/// +-10% daily noise. Ids therefore follow the calendar like a real
/// auto-increment key, which also keeps the heap ordered by day. The weights
/// are exact numerics so the cumulative split is platform independent and
/// the last day ends exactly at N.
pub(super) const INSERT_SEED_DAYS: &str = "INSERT INTO seed_days (idx, day, first_id, last_id)
     WITH d AS (
       SELECT day::date AS day, row_number() OVER (ORDER BY day) AS idx, count(*) OVER () AS n_days
       -- timestamp (not timestamptz) bounds: the calendar must not depend on
       -- the session's TimeZone setting.
       FROM generate_series((($2::date - interval '3 years')::date + 1)::timestamp,
                            $2::date::timestamp, interval '1 day') AS day
     ), w AS (
       SELECT idx, day,
              CASE extract(isodow FROM day)
                WHEN 1 THEN 0.78 WHEN 2 THEN 0.82 WHEN 3 THEN 0.88 WHEN 4 THEN 0.97
                WHEN 5 THEN 1.32 WHEN 6 THEN 1.45 ELSE 1.25 END
              * (1 + 0.6 * (idx - 1) / greatest(n_days - 1, 1))
              * CASE extract(month FROM day)
                  WHEN 12 THEN 1.15 WHEN 1 THEN 0.92 WHEN 2 THEN 0.95 WHEN 7 THEN 1.05 ELSE 1 END
              * round((0.9 + 0.2 * pg_temp.seed_u(idx, $1, 3001))::numeric, 6) AS weight
       FROM d
     ), c AS (
       SELECT idx, day, weight, sum(weight) OVER (ORDER BY idx) AS hi, sum(weight) OVER () AS total
       FROM w
     )
     SELECT idx, day,
            round($3::bigint * (hi - weight) / total)::bigint + 1,
            round($3::bigint * hi / total)::bigint
     FROM c";

/// $1 seed, $2 first sale id, $3 last sale id, $4 number of customers.
///
/// Layers, innermost first (`OFFSET 0` keeps the planner from flattening a
/// layer and re-evaluating its hash expressions once per reference):
/// - `g`/`a`: sale ids of the chunk with their local day and line count;
/// - `b`: the first `product_sales` id of each sale (running sum of lines,
///   continuing after the previous chunk, so line ids are 1..M without gaps);
/// - `c`: every uniform value a sale needs, one salt per column; the up to
///   five order lines are unrolled into columns so that the sale total needs
///   no join or aggregation;
/// - `d`: channel, products and quantities;
/// - `e`: all remaining columns, prices in integer cents (exact and cheap).
///
/// Local times follow the lunch (11-14h) and dinner (18-22h) peaks and are
/// stored as UTC-3 (America/Sao_Paulo has had no daylight saving since 2019).
/// Within a day they are stratified by id, so `created_at` never decreases
/// as the id grows, like a real auto-increment key; the heap is then in
/// `created_at` order and a month of sales sits on a few hundred contiguous
/// pages instead of being spread over each day's pages.
/// Cancellations: 2% in person, 7% delivery (about 5% overall). Delivery fee
/// and delivery time only on delivery channels; no delivery time for
/// cancelled orders; 45% of in-person sales are anonymous.
pub(super) const INSERT_SALES_CHUNK: &str = "WITH s AS MATERIALIZED (
       SELECT e.*,
              e.c1 + coalesce(e.c2, 0) + coalesce(e.c3, 0) + coalesce(e.c4, 0) + coalesce(e.c5, 0)
                AS subtotal_cents
       FROM (
         SELECT d.id, d.item_base, d.n_items, d.channel_id,
                d.p1, d.p2, d.p3, d.p4, d.p5, d.q1, d.q2, d.q3, d.q4, d.q5,
                d.q1 * (arr.price_cents)[d.p1] AS c1,
                d.q2 * (arr.price_cents)[d.p2] AS c2,
                d.q3 * (arr.price_cents)[d.p3] AS c3,
                d.q4 * (arr.price_cents)[d.p4] AS c4,
                d.q5 * (arr.price_cents)[d.p5] AS c5,
                (arr.store_ids)[1 + floor(cardinality(arr.store_ids) * d.u_store)::integer] AS store_id,
                CASE WHEN d.channel_id = 1 AND d.u_anon < 0.45 THEN NULL
                     ELSE 1 + (floor($4 * pg_temp.seed_skew(d.u_customer))::bigint * 7919) % $4
                END::integer AS customer_id,
                to_timestamp(((d.day - date '1970-01-01')::bigint * 86400
                    + pg_temp.seed_time_of_day(d.day_position)
                    + 3 * 3600)::double precision) AS created_at,
                CASE WHEN d.u_status < CASE WHEN d.channel_id = 1 THEN 0.02 ELSE 0.07 END
                     THEN 'CANCELLED' ELSE 'COMPLETED' END AS status,
                CASE WHEN d.u_has_discount < 0.15 THEN 5 + floor(16 * d.u_discount)::integer
                     ELSE 0 END AS discount_pct,
                CASE WHEN d.channel_id = 1 OR d.u_free_delivery < 0.25 THEN 0
                     ELSE 399 + 100 * floor(10 * d.u_fee)::integer END AS fee_cents,
                CASE WHEN d.channel_id = 1 THEN 1 + floor(6 * d.u_people * d.u_people)
                     ELSE 1 + floor(4 * d.u_people * d.u_people) END::integer AS people_quantity,
                (240 + 90 * d.n_items + floor(900 * d.u_production))::integer AS production_seconds,
                CASE WHEN d.channel_id = 1 OR d.u_status < 0.07 THEN NULL
                     ELSE 900 + floor(1350 * (d.u_delivery1 + d.u_delivery2)) END::integer
                  AS delivery_seconds
         FROM (
           SELECT c.*,
                  CASE WHEN c.u_channel < 0.40 THEN 1 WHEN c.u_channel < 0.68 THEN 2
                       WHEN c.u_channel < 0.76 THEN 3 WHEN c.u_channel < 0.88 THEN 4
                       WHEN c.u_channel < 0.95 THEN 5 ELSE 6 END::smallint AS channel_id,
                  pg_temp.seed_product(0, c.u_p1) AS p1,
                  pg_temp.seed_product(c.u_k2, c.u_p2) AS p2,
                  pg_temp.seed_product(c.u_k3, c.u_p3) AS p3,
                  pg_temp.seed_product(c.u_k4, c.u_p4) AS p4,
                  pg_temp.seed_product(c.u_k5, c.u_p5) AS p5,
                  pg_temp.seed_quantity(c.u_q1) AS q1,
                  pg_temp.seed_quantity(c.u_q2) AS q2,
                  pg_temp.seed_quantity(c.u_q3) AS q3,
                  pg_temp.seed_quantity(c.u_q4) AS q4,
                  pg_temp.seed_quantity(c.u_q5) AS q5
           FROM (
             SELECT b.id, b.day, b.n_items, b.item_base,
                    (b.day_index + pg_temp.seed_u(b.id, $1, 3)) / b.day_sales AS day_position,
                    pg_temp.seed_u(b.id, $1, 1) AS u_channel,
                    pg_temp.seed_u(b.id, $1, 2) AS u_store,
                    pg_temp.seed_u(b.id, $1, 5) AS u_status,
                    pg_temp.seed_u(b.id, $1, 6) AS u_anon,
                    pg_temp.seed_u(b.id, $1, 7) AS u_customer,
                    pg_temp.seed_u(b.id, $1, 9) AS u_has_discount,
                    pg_temp.seed_u(b.id, $1, 10) AS u_discount,
                    pg_temp.seed_u(b.id, $1, 11) AS u_free_delivery,
                    pg_temp.seed_u(b.id, $1, 12) AS u_fee,
                    pg_temp.seed_u(b.id, $1, 13) AS u_delivery1,
                    pg_temp.seed_u(b.id, $1, 14) AS u_delivery2,
                    pg_temp.seed_u(b.id, $1, 15) AS u_people,
                    pg_temp.seed_u(b.id, $1, 16) AS u_production,
                    pg_temp.seed_u(b.id * 8 + 1, $1, 21) AS u_p1,
                    pg_temp.seed_u(b.id * 8 + 1, $1, 23) AS u_q1,
                    CASE WHEN b.n_items >= 2 THEN pg_temp.seed_u(b.id * 8 + 2, $1, 21) END AS u_p2,
                    CASE WHEN b.n_items >= 2 THEN pg_temp.seed_u(b.id * 8 + 2, $1, 22) END AS u_k2,
                    CASE WHEN b.n_items >= 2 THEN pg_temp.seed_u(b.id * 8 + 2, $1, 23) END AS u_q2,
                    CASE WHEN b.n_items >= 3 THEN pg_temp.seed_u(b.id * 8 + 3, $1, 21) END AS u_p3,
                    CASE WHEN b.n_items >= 3 THEN pg_temp.seed_u(b.id * 8 + 3, $1, 22) END AS u_k3,
                    CASE WHEN b.n_items >= 3 THEN pg_temp.seed_u(b.id * 8 + 3, $1, 23) END AS u_q3,
                    CASE WHEN b.n_items >= 4 THEN pg_temp.seed_u(b.id * 8 + 4, $1, 21) END AS u_p4,
                    CASE WHEN b.n_items >= 4 THEN pg_temp.seed_u(b.id * 8 + 4, $1, 22) END AS u_k4,
                    CASE WHEN b.n_items >= 4 THEN pg_temp.seed_u(b.id * 8 + 4, $1, 23) END AS u_q4,
                    CASE WHEN b.n_items >= 5 THEN pg_temp.seed_u(b.id * 8 + 5, $1, 21) END AS u_p5,
                    CASE WHEN b.n_items >= 5 THEN pg_temp.seed_u(b.id * 8 + 5, $1, 22) END AS u_k5,
                    CASE WHEN b.n_items >= 5 THEN pg_temp.seed_u(b.id * 8 + 5, $1, 23) END AS u_q5
             FROM (
               SELECT a.id, a.day, a.day_index, a.day_sales, a.n_items,
                      coalesce((SELECT max(ps.id) FROM product_sales ps), 0)
                        + sum(a.n_items) OVER (ORDER BY a.id) - a.n_items AS item_base
               FROM (
                 SELECT g.id, g.day, g.day_index, g.day_sales,
                        CASE WHEN g.u_items < 0.27 THEN 1 WHEN g.u_items < 0.57 THEN 2
                             WHEN g.u_items < 0.77 THEN 3 WHEN g.u_items < 0.90 THEN 4
                             ELSE 5 END AS n_items
                 FROM (
                   SELECT sd.day, id, pg_temp.seed_u(id, $1, 8) AS u_items,
                          -- stratified position within the day: the k-th sale
                          -- of a day falls in the k-th of n equal slices
                          (id - sd.first_id)::double precision AS day_index,
                          (sd.last_id - sd.first_id + 1)::double precision AS day_sales
                   FROM pg_temp.seed_days sd,
                        generate_series(greatest(sd.first_id, $2), least(sd.last_id, $3)) AS id
                   WHERE sd.last_id >= $2 AND sd.first_id <= $3
                   OFFSET 0
                 ) g
               ) a
             ) b
             OFFSET 0
           ) c
           OFFSET 0
         ) d,
         (SELECT (SELECT array_agg((p.price * 100)::integer ORDER BY p.id) FROM products p)
                   AS price_cents,
                 (SELECT array_agg(sb.store_id ORDER BY sb.bucket) FROM pg_temp.seed_store_buckets sb)
                   AS store_ids) arr
       ) e
     ),
     inserted_lines AS (
       INSERT INTO product_sales (id, sale_id, product_id, quantity, total_price)
       SELECT x.item_base + x.line, x.id, x.product_id, x.quantity, x.cents * 0.01
       FROM (
         SELECT s.id, s.item_base, s.n_items,
                unnest(ARRAY[1, 2, 3, 4, 5]) AS line,
                unnest(ARRAY[s.p1, s.p2, s.p3, s.p4, s.p5]) AS product_id,
                unnest(ARRAY[s.q1, s.q2, s.q3, s.q4, s.q5]) AS quantity,
                unnest(ARRAY[s.c1, s.c2, s.c3, s.c4, s.c5]) AS cents
         FROM s
       ) x
       WHERE x.line <= x.n_items
     )
     INSERT INTO sales (id, store_id, channel_id, customer_id, created_at, status, total_amount,
                        total_discount, delivery_fee, people_quantity, production_seconds,
                        delivery_seconds)
     SELECT s.id, s.store_id, s.channel_id, s.customer_id, s.created_at, s.status,
            (s.subtotal_cents - s.discount_cents + s.fee_cents) * 0.01,
            s.discount_cents * 0.01,
            s.fee_cents * 0.01,
            s.people_quantity, s.production_seconds, s.delivery_seconds
     FROM (SELECT s.*, (s.subtotal_cents * s.discount_pct + 50) / 100 AS discount_cents FROM s) s";

pub(super) const ANALYZE: &str = "ANALYZE channels, stores, products, customers, sales, product_sales";
