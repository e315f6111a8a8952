-- The statement analytics-api runs for the typical dashboard query
--   {"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}
-- captured from the server's sqlx debug log by bench/run.sh (db-floor), with
-- the bind parameters written as literals (regenerated on every db-floor run;
-- time zone 'America/Sao_Paulo' and LIMIT 10000 come from config/model.toml).
SELECT count(*)::int8 AS total_rows, coalesce(array_to_json(array_agg(q)), '[]'::json)::text AS data FROM (SELECT ch.name AS "channel", round((avg(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'))::numeric, 2) AS "average_ticket", round((coalesce(sum(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'), 0))::numeric, 2) AS "revenue", count(*) FILTER (WHERE s.status = 'COMPLETED') AS "sales_count" FROM sales s JOIN channels ch ON ch.id = s.channel_id WHERE s.created_at >= ('2026-10-01'::date::timestamp AT TIME ZONE 'America/Sao_Paulo') AND s.created_at < (('2026-10-31'::date + 1)::timestamp AT TIME ZONE 'America/Sao_Paulo') GROUP BY 1 ORDER BY "channel" ASC NULLS FIRST LIMIT 10000 OFFSET 0) q;
