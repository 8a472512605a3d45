//! The `service_usage` roll-ups: daily rows and monthly rows (`day` NULL).

use uuid::Uuid;

use super::Conn;
use crate::on_conn;

#[derive(Debug, Default, sqlx::FromRow)]
pub struct Totals {
    pub requests: i64,
    pub successes: i64,
    pub failures: i64,
}

/// The organization's totals for one month, summed over its services' monthly rows.
pub async fn month_totals(
    conn: Conn<'_>,
    organization_id: Uuid,
    year: i32,
    month: i32,
) -> sqlx::Result<Totals> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(request_count), 0) AS BIGINT) AS requests, \
         CAST(COALESCE(SUM(successful_requests), 0) AS BIGINT) AS successes, \
         CAST(COALESCE(SUM(failed_requests), 0) AS BIGINT) AS failures \
         FROM service_usage WHERE organization_id = $1 AND year = $2 AND month = $3 AND day IS NULL",
    )
    .bind(organization_id)
    .bind(year)
    .bind(month)
    .fetch_one(c)
    .await)
}
