import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

/**
 * Exercises PgJDBC against a PostgreSQL endpoint and prints one machine-checkable line per
 * check: "KEY value". Arguments: port user password table. Exits 1 on any unexpected error.
 */
public final class JdbcCheck {
    private JdbcCheck() {
    }

    private static void out(String key, Object value) {
        System.out.println(key + " " + value);
    }

    public static void main(String[] args) throws Exception {
        String port = args[0];
        String user = args.length > 1 ? args[1] : "demo";
        String password = args.length > 2 ? args[2] : "demo";
        String table = args.length > 3 ? args[3] : "";
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/test?user=" + user
                + "&password=" + password + "&sslmode=disable&prepareThreshold=1"
                + "&ApplicationName=wiregate-jdbc-check";
        try (Connection conn = DriverManager.getConnection(url)) {
            out("CONNECTED", conn.getMetaData().getDatabaseProductName());
            preparedStatements(conn);
            batchInsert(conn);
            errorRecovery(conn);
            transaction(conn);
            metadata(conn, table);
        }
        out("DONE", "ok");
    }

    private static void preparedStatements(Connection conn) throws SQLException {
        String sql = "SELECT ?::int * 2, ?::text || '!', ?::numeric + 0.5 /* wg-jdbc */";
        StringBuilder results = new StringBuilder();
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 0; i < 6; i++) {
                ps.setInt(1, i);
                ps.setString(2, "ü" + i);
                ps.setBigDecimal(3, new java.math.BigDecimal(i));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    results.append(rs.getInt(1)).append(':').append(rs.getString(2))
                            .append(':').append(rs.getBigDecimal(3)).append(';');
                }
            }
            // While the statement is still open, the server holds it under PgJDBC's name.
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                         "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements "
                         + "WHERE statement LIKE '%wg-jdbc */' AND NOT from_sql")) {
                int named = 0;
                long runs = 0;
                while (rs.next()) {
                    if (rs.getString(1).startsWith("S_")) {
                        named++;
                        runs += rs.getLong(2);
                    }
                }
                out("NAMED_STATEMENTS", named);
                out("NAMED_RUNS", runs);
            }
        }
        out("PARAM_RESULTS", results);
    }

    private static void batchInsert(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE jdbc_batch (id int primary key, label text, "
                    + "amount numeric, at timestamptz)");
        }
        int total = 0;
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO jdbc_batch (id, label, amount, at) VALUES (?, ?, ?, ?)")) {
            for (int i = 1; i <= 100; i++) {
                ps.setInt(1, i);
                ps.setString(2, "row " + i + " ✓");
                ps.setBigDecimal(3, new java.math.BigDecimal(i).movePointLeft(2));
                ps.setTimestamp(4, new java.sql.Timestamp(1700000000000L + i * 1000L));
                ps.addBatch();
            }
            for (int n : ps.executeBatch()) {
                total += n;
            }
        }
        out("BATCH_UPDATED", total);
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*), sum(id), sum(amount), "
                     + "min(label), max(label), max(at) - min(at) FROM jdbc_batch")) {
            rs.next();
            out("READBACK", rs.getLong(1) + " " + rs.getLong(2) + " " + rs.getBigDecimal(3)
                    + " [" + rs.getString(4) + "] [" + rs.getString(5) + "] " + rs.getString(6));
        }
        List<Integer> ids = new ArrayList<>();
        conn.setAutoCommit(false);  // a fetch size only applies inside a transaction
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id FROM jdbc_batch WHERE id % ? = 0 ORDER BY id")) {
            ps.setInt(1, 25);
            ps.setFetchSize(2);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    ids.add(rs.getInt(1));
                }
            }
        } finally {
            conn.commit();
            conn.setAutoCommit(true);
        }
        out("READBACK_FILTERED", ids);
    }

    private static void errorRecovery(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.executeQuery("SELECT 1/0");
            out("ERROR_STATE", "none");
        } catch (SQLException e) {
            out("ERROR_STATE", e.getSQLState());
        }
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT 'after error'")) {
            rs.next();
            out("AFTER_ERROR", rs.getString(1).replace(' ', '_'));
        }
    }

    private static void transaction(Connection conn) throws SQLException {
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.executeUpdate("INSERT INTO jdbc_batch (id) VALUES (1000)");
            conn.rollback();
            st.executeUpdate("INSERT INTO jdbc_batch (id) VALUES (1001)");
            java.sql.Savepoint sp = conn.setSavepoint();
            st.executeUpdate("INSERT INTO jdbc_batch (id) VALUES (1002)");
            conn.rollback(sp);
            conn.commit();
            try (ResultSet rs = st.executeQuery(
                    "SELECT string_agg(id::text, ',' ORDER BY id) FROM jdbc_batch WHERE id > 999")) {
                rs.next();
                out("TX_IDS", rs.getString(1));
            }
        } finally {
            conn.setAutoCommit(true);
        }
    }

    private static void metadata(Connection conn, String table) throws SQLException {
        DatabaseMetaData md = conn.getMetaData();
        int found = 0;
        try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
            while (rs.next()) {
                if (rs.getString("TABLE_NAME").equals(table)) {
                    found++;
                }
            }
        }
        out("TABLE_FOUND", found);
        StringBuilder cols = new StringBuilder();
        try (ResultSet rs = md.getColumns(null, "public", table, "%")) {
            while (rs.next()) {
                cols.append(rs.getString("COLUMN_NAME")).append(':')
                        .append(rs.getString("TYPE_NAME")).append(',');
            }
        }
        out("COLUMNS", cols);
        StringBuilder pk = new StringBuilder();
        try (ResultSet rs = md.getPrimaryKeys(null, "public", table)) {
            while (rs.next()) {
                pk.append(rs.getString("COLUMN_NAME"));
            }
        }
        out("PRIMARY_KEY", pk);
        int schemas = 0;
        try (ResultSet rs = md.getSchemas()) {
            while (rs.next()) {
                if (rs.getString(1).equals("public")) {
                    schemas++;
                }
            }
        }
        out("SCHEMA_PUBLIC", schemas);
        out("SERVER_MAJOR", md.getDatabaseMajorVersion());
    }
}
