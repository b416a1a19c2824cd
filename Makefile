# Wiregate developer entry points. Everything runs from the project's own .venv.
#
#   make demo   Wiregate in front of an embedded PostgreSQL with fake customer data
#   make test   the whole suite against real servers (see README: "Quick start")

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := protocols policies proxy

.PHONY: venv demo test test-deps bench lint clean distclean

venv: $(STAMP)

# Reinstall only when the dependency list changes; the editable install picks up code edits.
$(STAMP): pyproject.toml protocols/postgres/_rows.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,dev,fast]'
	touch $@

demo: venv
	$(BIN)/wiregate demo

# WIREGATE_TEST_PG_DSN / WIREGATE_TEST_MYSQL_DSN reach pytest unchanged, whether set in the
# environment or on the command line (make test WIREGATE_TEST_PG_DSN=postgresql://...).
test: venv test-deps
	$(BIN)/python -m pytest -q -rs tests

# Client programs the suite drives besides the Python drivers: psql and pgbench come with the
# PostgreSQL client; PgJDBC (what DBeaver uses) is one Debian package, installed when missing.
test-deps:
	@test -f /usr/share/java/postgresql.jar || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		libpostgresql-jdbc-java >/dev/null; } || echo "make: PgJDBC not installed; its test will be skipped"

bench: venv
	$(BIN)/python benchmarks/bench.py

lint: venv
	$(BIN)/ruff check $(SRC) tests benchmarks
	$(BIN)/mypy $(SRC) tests

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

# Also drops the virtualenv and the demo's embedded database.
distclean: clean
	rm -rf $(VENV) .wiregate-demo
