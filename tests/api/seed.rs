//! The demo data generator: deterministic per (seed, anchor), and shaped as
//! documented.

use analytics_api::db::seed::{seed_demo, SeedOptions};

use crate::helpers::{anchor, spawn_app, TEST_SALES};

const SALES_CHECKSUM: &str = "SELECT md5(string_agg(concat_ws('|', id, store_id, channel_id, customer_id,
    extract(epoch FROM created_at)::bigint, status, total_amount, total_discount, delivery_fee, people_quantity,
    production_seconds, delivery_seconds), E'\\n' ORDER BY id)) FROM sales";
const LINES_CHECKSUM: &str = "SELECT md5(string_agg(concat_ws('|', id, sale_id, product_id, quantity, total_price),
    E'\\n' ORDER BY id)) FROM product_sales";

async fn checksums(pool: &sqlx::PgPool) -> (String, String) {
    let sales: String = sqlx::query_scalar(SALES_CHECKSUM)
        .fetch_one(pool)
        .await
        .expect("sales checksum");
    let lines: String = sqlx::query_scalar(LINES_CHECKSUM)
        .fetch_one(pool)
        .await
        .expect("lines checksum");
    (sales, lines)
}

#[tokio::test]
async fn the_same_seed_and_anchor_give_identical_data_and_another_seed_does_not() {
    let app = spawn_app().await;
    // The test database is a copy of a template seeded with seed 7.
    let template = checksums(&app.db).await;
    let options = |seed| SeedOptions {
        sales: TEST_SALES,
        seed,
        anchor: anchor(),
    };
    let report = seed_demo(&app.db, &options(7)).await.expect("reseed");
    assert_eq!(report.sales, TEST_SALES);
    assert_eq!(checksums(&app.db).await, template, "same seed, same bytes");
    seed_demo(&app.db, &options(8)).await.expect("reseed");
    assert_ne!(checksums(&app.db).await.0, template.0, "another seed, other data");
}

/// Each invariant query counts violations; all must be zero.
const INVARIANTS: &[(&str, &str)] = &[
    ("six channels with the spec's names", "SELECT 6 - count(*) FROM channels WHERE (id, name, type) IN
        ((1,'Presencial','P'),(2,'iFood','D'),(3,'Rappi','D'),(4,'App','D'),(5,'WhatsApp','D'),(6,'Telefone','D'))"),
    ("50 stores", "SELECT abs(count(*) - 50) FROM stores"),
    ("stores in about 15 cities and several states, SP among them",
        "SELECT (count(DISTINCT city) NOT BETWEEN 12 AND 18)::int + (count(DISTINCT state) < 4)::int
         + (count(*) FILTER (WHERE state = 'SP') = 0)::int FROM stores"),
    ("about 300 products", "SELECT (count(*) NOT BETWEEN 250 AND 350)::int FROM products"),
    ("100,000 customers", "SELECT abs(count(*) - 100000) FROM customers"),
    ("every sale has 1..5 lines", "SELECT count(*) FROM (SELECT s.id FROM sales s LEFT JOIN product_sales p ON p.sale_id = s.id
        GROUP BY s.id HAVING count(p.id) NOT BETWEEN 1 AND 5) x"),
    ("about 2.5 lines per sale", "SELECT ((SELECT count(*) FROM product_sales)::numeric / (SELECT count(*) FROM sales) NOT BETWEEN 2.2 AND 2.8)::int"),
    ("about 5% cancelled", "SELECT (avg((status = 'CANCELLED')::int) NOT BETWEEN 0.03 AND 0.07)::int FROM sales"),
    ("delivery times only on delivery channels", "SELECT count(*) FROM sales s JOIN channels c ON c.id = s.channel_id
        WHERE c.type = 'P' AND s.delivery_seconds IS NOT NULL"),
    ("weekend and meal-time peaks", "SELECT ((avg((extract(dow FROM created_at AT TIME ZONE 'America/Sao_Paulo') IN (0, 5, 6))::int) < 0.45)
        OR (avg((extract(hour FROM created_at AT TIME ZONE 'America/Sao_Paulo') BETWEEN 11 AND 14
             OR extract(hour FROM created_at AT TIME ZONE 'America/Sao_Paulo') BETWEEN 18 AND 22)::int) < 0.7))::int FROM sales"),
    ("sales within the 3 years before the anchor", "SELECT count(*) FROM sales WHERE created_at AT TIME ZONE 'America/Sao_Paulo' >= $1::date + 1
        OR created_at AT TIME ZONE 'America/Sao_Paulo' < $1::date - interval '3 years'"),
];

#[tokio::test]
async fn seeded_data_has_the_documented_shape() {
    let app = spawn_app().await;
    for (what, sql) in INVARIANTS {
        let sql = format!("SELECT ({sql})::int8");
        let query = sqlx::query_scalar::<_, i64>(&sql);
        let query = if sql.contains("$1") {
            query.bind(anchor())
        } else {
            query
        };
        let violations = query.fetch_one(&app.db).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(violations, 0, "{what}");
    }
}

/// `seed` replaces every sale under a table lock: while a server is
/// connected it refuses (with the way out), instead of turning the server's
/// uncached queries into statement timeouts.
#[tokio::test]
async fn seeding_under_a_running_server_is_refused() {
    let app = crate::helpers::spawn_app().await;
    // The server holds at least one pooled connection once it has answered.
    assert_eq!(
        app.query(serde_json::json!({"metrics": ["revenue"]})).await.status(),
        200
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_analytics-api"))
        .args([
            "--config-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            "seed",
            "--sales",
            "10",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("seed runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("server connection(s) are open") && stderr.contains("--force"),
        "{stderr}"
    );
    // Nothing was replaced.
    assert_eq!(
        app.query(serde_json::json!({"metrics": ["sales_count"]}))
            .await
            .status(),
        200
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sales")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, crate::helpers::TEST_SALES as i64);
}
