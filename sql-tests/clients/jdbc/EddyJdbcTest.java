// pgJDBC (Debian's libpostgresql-jdbc-java) against a real Eddy server; run by test_jdbc.py with
// the server's address and a fresh name prefix. Exits non-zero, printing what failed, if
// anything a JDBC user (or DBeaver, which browses through DatabaseMetaData) relies on breaks.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;

public class EddyJdbcTest {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/eddy?user=eddy";
        String table = args[2] + "_t";
        String view = args[2] + "_v";
        try (Connection conn = DriverManager.getConnection(url)) {
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE " + table + " (a BIGINT, ts TIMESTAMP(3), s VARCHAR, "
                        + "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)");
                st.execute("CREATE MATERIALIZED VIEW " + view + " AS SELECT s, count(*) AS n FROM "
                        + table + " GROUP BY s");
            }

            // A prepared statement, executed several times with typed parameters.
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO " + table + " VALUES (?, ?, ?)")) {
                for (int i = 1; i <= 5; i++) {
                    ps.setLong(1, i);
                    ps.setTimestamp(2, Timestamp.valueOf("2024-01-02 03:04:0" + i));
                    ps.setString(3, "row " + i);
                    check(ps.executeUpdate() == 1, "INSERT reports one row");
                }
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT ? * 2 AS doubled")) {
                ps.setLong(1, 21);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 42, "prepared SELECT ? * 2");
                }
            }

            DatabaseMetaData md = conn.getMetaData();
            check(md.getDatabaseProductName().equals("PostgreSQL"), "product name");
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", args[2] + "%", null)) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
                }
            }
            check(tables.contains(table + ":TABLE"), "getTables lists the table: " + tables);
            check(tables.contains(view + ":MATERIALIZED VIEW"),
                    "getTables lists the materialized view: " + tables);

            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", table, "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME") + ":"
                            + rs.getInt("DATA_TYPE") + ":" + rs.getInt("ORDINAL_POSITION"));
                }
            }
            List<String> expected = List.of(
                    "a:int8:" + Types.BIGINT + ":1",
                    "ts:timestamp:" + Types.TIMESTAMP + ":2",
                    "s:text:" + Types.VARCHAR + ":3");
            check(columns.equals(expected), "getColumns: " + columns + " expected " + expected);

            // A server-side cursor (autocommit off + fetch size: pgJDBC fetches from a portal
            // two rows at a time) over a continuous query that never ends by itself.
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(2);
                try (ResultSet rs = st.executeQuery("SELECT a, s FROM " + table)) {
                    for (int i = 1; i <= 3; i++) {
                        check(rs.next(), "cursor row " + i);
                        check(rs.getLong(1) == i, "cursor row " + i + " value " + rs.getLong(1));
                    }
                }
            }
            conn.commit();
            conn.setAutoCommit(true);

            try (Statement st = conn.createStatement()) {
                st.execute("DROP MATERIALIZED VIEW " + view);
                st.execute("DROP TABLE " + table);
            }
        }
        System.out.println("jdbc: all checks passed");
    }
}
