SELECT c.column_name AS name,
  CASE WHEN c.udt_schema IN ('public','pg_catalog') THEN format('%s', c.udt_name) ELSE format('"%s"."%s"', c.udt_schema, c.udt_name) END AS "database-type",
  c.ordinal_position - 1 AS "database-position", c.table_schema AS "table-schema", c.table_name AS "table-name",
  pk.column_name IS NOT NULL AS "pk?",
  col_description(format('%I.%I', c.table_schema::text, c.table_name::text)::regclass::oid, c.ordinal_position) AS "field-comment",
  c.column_default AS "column-default", c.is_nullable = 'YES' AS "database-required", c.is_identity = 'YES' AS "database-is-auto-increment"
FROM information_schema.columns c
LEFT JOIN (SELECT tc.table_schema, tc.table_name, kc.column_name FROM information_schema.table_constraints tc
  JOIN information_schema.key_column_usage kc ON tc.constraint_name = kc.constraint_name AND tc.table_schema = kc.table_schema AND tc.table_name = kc.table_name
  WHERE tc.constraint_type = 'PRIMARY KEY') pk
  ON c.table_schema = pk.table_schema AND c.table_name = pk.table_name AND c.column_name = pk.column_name
WHERE c.table_schema !~ '^information_schema|catalog_history|pg_'
ORDER BY "table-schema", "table-name", "database-position"
