//! TEMPORARY compile stub; replaced by the real generator (helper in progress).
pub struct SeedOptions {
    pub sales: u64,
    pub seed: u64,
    pub anchor: chrono::NaiveDate,
}
pub struct SeedReport {
    pub channels: u64,
    pub stores: u64,
    pub products: u64,
    pub customers: u64,
    pub sales: u64,
    pub product_sales: u64,
    pub elapsed: std::time::Duration,
}
pub async fn seed_demo(_pool: &sqlx::PgPool, _options: &SeedOptions) -> Result<SeedReport, sqlx::Error> {
    Err(sqlx::Error::RowNotFound)
}
pub async fn sales_table_is_empty(_pool: &sqlx::PgPool) -> Result<bool, sqlx::Error> {
    Ok(false)
}
