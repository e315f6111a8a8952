-- The statement analytics-api runs for the typical dashboard query
--   {"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],
--    "date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}
-- as built by src/model/compile.rs from config/model.toml (metrics sorted by
-- name, dimensions in request order, default ORDER BY the dimensions), with
-- the bind parameters ($1..$6) written as literals. bench/run.sh (db-floor)
-- checks that its `data` equals the API's before timing it with pgbench.
SELECT count(*)::int8 AS total_rows, coalesce(json_agg(q), '[]'::json)::text AS data FROM (SELECT ch.name AS "channel", round((avg(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'))::numeric, 2) AS "average_ticket", round((coalesce(sum(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'), 0))::numeric, 2) AS "revenue", count(*) FILTER (WHERE s.status = 'COMPLETED') AS "sales_count" FROM sales s JOIN channels ch ON ch.id = s.channel_id WHERE s.created_at >= ('2026-10-01'::date::timestamp AT TIME ZONE 'UTC') AND s.created_at < (('2026-10-31'::date + 1)::timestamp AT TIME ZONE 'UTC') GROUP BY 1 ORDER BY "channel" ASC NULLS FIRST LIMIT 10000 OFFSET 0) q;
