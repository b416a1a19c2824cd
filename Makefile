# Wiregate developer entry points. Everything runs from the project's own .venv.
#
#   make demo   Wiregate in front of an embedded PostgreSQL with fake customer data
#   make test   the whole suite against real servers (see README: "Quick start")

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := protocols policies proxy

.PHONY: venv demo test test-deps bench bench-deps lint clean distclean

venv: $(STAMP)

# Reinstall only when the dependency list changes; the editable install picks up code edits.
$(STAMP): pyproject.toml protocols/postgres/_rows.c protocols/mysql/_rows.c \
		protocols/mysql/_answers.c protocols/_cells.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,dev,fast]'
	touch $@

demo: venv
	$(BIN)/wiregate demo

# WIREGATE_TEST_PG_DSN / WIREGATE_TEST_MYSQL_DSN reach pytest unchanged, whether set in the
# environment or on the command line (make test WIREGATE_TEST_PG_DSN=postgresql://...).
test: venv test-deps
	$(BIN)/python -m pytest -q -rs tests

# $(call apt_missing,PACKAGE:FILE ...,CONSEQUENCE): apt-get install the packages whose FILE is
# missing, as root and when apt-get exists; otherwise one line saying what is not there.
define apt_missing
@missing=; for d in $(1); do test -e "$${d#*:}" || missing="$$missing $${d%%:*}"; done; \
	test -z "$$missing" || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	$$missing >/dev/null; } || echo "make: not installed:$$missing; $(2)"
endef

# Client programs the suite drives besides the Python drivers: psql, pgbench and the mariadb
# client come with the database clients; PgJDBC (what DBeaver uses), MariaDB Connector/J and
# sysbench are Debian packages, installed when missing.
TEST_DEBS := libpostgresql-jdbc-java:/usr/share/java/postgresql.jar \
	libmariadb-java:/usr/share/java/mariadb-java-client.jar sysbench:/usr/bin/sysbench
# The benchmark's other programs: pgbouncer and HAProxy (TCP mode) as the proxies to compare.
BENCH_DEBS := pgbouncer:/usr/sbin/pgbouncer haproxy:/usr/sbin/haproxy sysbench:/usr/bin/sysbench

test-deps:
	$(call apt_missing,$(TEST_DEBS),their tests will be skipped)

bench-deps:
	$(call apt_missing,$(BENCH_DEBS),the benchmark stops at the targets that need them)

# PostgreSQL (pgbench, bulk read), then MySQL/MariaDB (sysbench, bulk read). BENCH_ARGS reach
# bench.py, e.g. BENCH_ARGS="--mysql-only --mysql-targets direct,haproxy" (benchmarks/README.md).
bench: venv bench-deps
	$(BIN)/python benchmarks/bench.py --mysql $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check $(SRC) tests benchmarks
	$(BIN)/mypy $(SRC) tests

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

# Also drops the virtualenv and the demo's embedded database.
distclean: clean
	rm -rf $(VENV) .wiregate-demo
