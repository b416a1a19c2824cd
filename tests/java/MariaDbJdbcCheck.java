import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;

/**
 * Exercises MariaDB Connector/J against a MariaDB endpoint the way DBeaver and Java
 * applications do, and prints one machine-checkable line per check: "KEY value".
 * Arguments: port user password table guarded. With guarded = 1 the endpoint is Wiregate with
 * the agent-rw profile, and a DROP TABLE must be refused. Exits 1 on any unexpected error.
 */
public final class MariaDbJdbcCheck {
    private MariaDbJdbcCheck() {
    }

    private static void out(String key, Object value) {
        System.out.println(key + " " + value);
    }

    public static void main(String[] args) throws Exception {
        String port = args[0];
        String user = args[1];
        String password = args[2];
        String table = args[3];
        boolean guarded = args.length > 4 && args[4].equals("1");
        String url = "jdbc:mariadb://127.0.0.1:" + port + "/test?useServerPrepStmts=true"
                + "&useSsl=false&connectTimeout=10000&socketTimeout=30000";
        try (Connection conn = DriverManager.getConnection(url, user, password)) {
            DatabaseMetaData md = conn.getMetaData();
            out("CONNECTED", md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion());
            out("CATALOG", conn.getCatalog());
            preparedStatements(conn, table);
            batch(conn, table);
            statementQuery(conn, table);
            errorRecovery(conn);
            transaction(conn, table);
            metadata(conn, table);
            if (guarded) {
                refused(conn, table);
            }
        }
        out("DONE", "ok");
    }

    private static long status(Connection conn, String name) throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SHOW SESSION STATUS LIKE '" + name + "'")) {
            rs.next();
            return rs.getLong(2);
        }
    }

    private static void preparedStatements(Connection conn, String table) throws SQLException {
        long prepares = status(conn, "Com_stmt_prepare");
        long executes = status(conn, "Com_stmt_execute");
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO " + table + " (id, label, amount, at) VALUES (?, ?, ?, ?)")) {
            for (int i = 1; i <= 10; i++) {
                ps.setInt(1, i);
                ps.setString(2, "row " + i + " ✓😀");
                ps.setBigDecimal(3, new BigDecimal(i).movePointLeft(2));
                ps.setTimestamp(4, Timestamp.valueOf("2024-02-29 12:00:0" + (i % 10)));
                ps.executeUpdate();
            }
            ps.setInt(1, 11);
            ps.setNull(2, Types.VARCHAR);
            ps.setNull(3, Types.DECIMAL);
            ps.setNull(4, Types.TIMESTAMP);
            ps.executeUpdate();
        }
        StringBuilder results = new StringBuilder();
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT id, label, amount, at FROM " + table + " WHERE id BETWEEN ? AND ? "
                        + "ORDER BY id")) {
            for (int i = 1; i <= 11; i += 5) {
                ps.setInt(1, i);
                ps.setInt(2, i + 1);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        results.append(rs.getInt(1)).append('|').append(rs.getString(2))
                                .append('|').append(rs.getBigDecimal(3)).append('|')
                                .append(rs.getTimestamp(4)).append(';');
                    }
                }
            }
        }
        out("PARAM_RESULTS", results);
        // useServerPrepStmts: COM_STMT_PREPARE/EXECUTE went to the server, once per statement.
        out("SERVER_PREPARES", status(conn, "Com_stmt_prepare") - prepares);
        out("SERVER_EXECUTES", status(conn, "Com_stmt_execute") - executes);
    }

    private static void batch(Connection conn, String table) throws SQLException {
        int total = 0;
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO " + table + " (id, label, amount) VALUES (?, ?, ?)")) {
            for (int i = 100; i < 150; i++) {
                ps.setInt(1, i);
                ps.setString(2, "batch " + i);
                ps.setBigDecimal(3, new BigDecimal(i));
                ps.addBatch();
            }
            for (int n : ps.executeBatch()) {
                total += n == Statement.SUCCESS_NO_INFO ? 1 : n;
            }
        }
        out("BATCH_UPDATED", total);
    }

    private static void statementQuery(Connection conn, String table) throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*), sum(id), sum(amount), "
                     + "min(label), max(label), count(at) FROM " + table)) {
            rs.next();
            out("READBACK", rs.getLong(1) + " " + rs.getLong(2) + " " + rs.getBigDecimal(3)
                    + " [" + rs.getString(4) + "] [" + rs.getString(5) + "] " + rs.getLong(6));
        }
    }

    private static void errorRecovery(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.executeQuery("SELECT * FROM wg_no_such_table_here");
            out("ERROR", "none");
        } catch (SQLException e) {
            out("ERROR", e.getErrorCode() + " " + e.getSQLState());
        }
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT 'after error'")) {
            rs.next();
            out("AFTER_ERROR", rs.getString(1).replace(' ', '_'));
        }
    }

    private static void transaction(Connection conn, String table) throws SQLException {
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.executeUpdate("INSERT INTO " + table + " (id) VALUES (1000)");
            conn.rollback();
            st.executeUpdate("INSERT INTO " + table + " (id) VALUES (1001)");
            conn.commit();
            try (ResultSet rs = st.executeQuery(
                    "SELECT group_concat(id ORDER BY id) FROM " + table + " WHERE id > 999")) {
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
        try (ResultSet rs = md.getTables("test", null, "%", new String[] {"TABLE"})) {
            while (rs.next()) {
                if (rs.getString("TABLE_NAME").equals(table)) {
                    found++;
                }
            }
        }
        out("TABLE_FOUND", found);
        StringBuilder cols = new StringBuilder();
        try (ResultSet rs = md.getColumns("test", null, table, "%")) {
            while (rs.next()) {
                cols.append(rs.getString("COLUMN_NAME")).append(':')
                        .append(rs.getString("TYPE_NAME")).append(':')
                        .append(rs.getInt("NULLABLE")).append(',');
            }
        }
        out("COLUMNS", cols);
        StringBuilder pk = new StringBuilder();
        try (ResultSet rs = md.getPrimaryKeys("test", null, table)) {
            while (rs.next()) {
                pk.append(rs.getString("COLUMN_NAME"));
            }
        }
        out("PRIMARY_KEY", pk);
        List<String> catalogs = new ArrayList<>();
        try (ResultSet rs = md.getCatalogs()) {
            while (rs.next()) {
                catalogs.add(rs.getString(1));
            }
        }
        out("CATALOG_TEST", catalogs.contains("test") ? 1 : 0);
    }

    private static void refused(Connection conn, String table) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("DROP TABLE " + table);
            out("REFUSED", "no");
        } catch (SQLException e) {
            out("REFUSED", e.getErrorCode() + " " + e.getSQLState());
            out("REFUSED_MESSAGE", e.getMessage().replace('\n', ' '));
        }
        try (PreparedStatement ps = conn.prepareStatement("DROP TABLE " + table)) {
            ps.execute();
            out("REFUSED_PREPARED", "no");
        } catch (SQLException e) {
            out("REFUSED_PREPARED", e.getErrorCode() + " " + e.getSQLState());
        }
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*) FROM " + table)) {
            rs.next();
            out("AFTER_REFUSAL", rs.getLong(1));
        }
    }
}
