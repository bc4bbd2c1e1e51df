// JDBC's protocol path against Eddy (issue 17), with the real PostgreSQL JDBC driver (pgjdbc,
// Debian's libpostgresql-jdbc-java): prepared INSERTs with setTimestamp/setDate/setBigDecimal/
// setBoolean/setLong (pgjdbc sends timestamps as text with a zone offset and type "unspecified"),
// a prepared pull query with a bigint parameter, run past pgjdbc's prepare threshold so later
// executions use named server-side statements and binary results, result column names and
// pg_typeof, and a transaction with a savepoint.
// Usage: java -cp /usr/share/java/postgresql.jar tests/java/PgTyping.java PORT
import java.math.BigDecimal;
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class PgTyping {
    static List<String> failures = new ArrayList<>();

    static void check(String what, Object got, Object want) {
        if (got == null ? want != null : !got.equals(want)) {
            failures.add(what + ": got " + got + ", want " + want);
        } else {
            System.out.println(what + ": ok");
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/eddy?user=eddy&prepareThreshold=2";
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM jreadings (sensor STRING, ts TIMESTAMP, d DATE, amount DECIMAL(12, 2), "
                        + "ok BOOLEAN, n BIGINT) WITH (KAFKA_TOPIC='jreadings', VALUE_FORMAT='JSON', PARTITIONS=1)");
            }
            try (PreparedStatement p = c.prepareStatement(
                    "INSERT INTO jreadings (sensor, ts, d, amount, ok, n) VALUES (?, ?, ?, ?, ?, ?)")) {
                for (int i = 0; i < 4; i++) {
                    p.setString(1, "j" + i);
                    p.setTimestamp(2, Timestamp.valueOf("2026-05-06 07:08:09.123"));
                    p.setDate(3, Date.valueOf("2026-05-06"));
                    p.setBigDecimal(4, new BigDecimal("98765432.10"));
                    p.setBoolean(5, i % 2 == 0);
                    p.setLong(6, 100 + i);
                    check("insert " + i, p.executeUpdate(), 1);
                }
            }
            try (Statement s = c.createStatement()) {
                s.execute("FLUSH");
            }
            try (PreparedStatement q = c.prepareStatement(
                    "SELECT sensor, ts, d, amount, ok, n FROM jreadings WHERE n >= ? ORDER BY n")) {
                for (int run = 0; run < 4; run++) {
                    q.setLong(1, 102);
                    try (ResultSet rs = q.executeQuery()) {
                        List<String> got = new ArrayList<>();
                        while (rs.next()) {
                            got.add(rs.getString(1) + "|" + rs.getTimestamp(2) + "|" + rs.getDate(3) + "|"
                                    + rs.getBigDecimal(4) + "|" + rs.getBoolean(5) + "|" + rs.getLong(6));
                        }
                        check("prepared query, run " + run, got, List.of(
                                "j2|2026-05-06 07:08:09.123|2026-05-06|98765432.10|true|102",
                                "j3|2026-05-06 07:08:09.123|2026-05-06|98765432.10|false|103"));
                    }
                }
            }
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT 1, count(*), pg_typeof(amount) FROM jreadings GROUP BY 3")) {
                ResultSetMetaData md = rs.getMetaData();
                check("column names", List.of(md.getColumnName(1), md.getColumnName(2), md.getColumnName(3)),
                        List.of("?column?", "count", "pg_typeof"));
                rs.next();
                check("pg_typeof", rs.getString(3), "numeric");
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("INSERT INTO jreadings (sensor, n) VALUES ('tx', 1)");
                Savepoint sp = c.setSavepoint("before_second");
                s.execute("INSERT INTO jreadings (sensor, n) VALUES ('tx', 2)");
                c.releaseSavepoint(sp);
                Savepoint sp2 = c.setSavepoint();
                c.rollback(sp2);
                c.commit();
            }
            c.setAutoCommit(true);
            try (Statement s = c.createStatement()) {
                s.execute("FLUSH");
                try (ResultSet rs = s.executeQuery("SELECT count(*) FROM jreadings WHERE sensor = 'tx'")) {
                    rs.next();
                    check("transaction with savepoints", rs.getLong(1), 2L);
                }
            }
        }
        if (!failures.isEmpty()) {
            System.out.println("FAILED:\n" + String.join("\n", failures));
            System.exit(1);
        }
        System.out.println("jdbc typing ok");
    }
}
