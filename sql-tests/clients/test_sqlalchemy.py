"""SQLAlchemy 2's inspector (postgresql+psycopg dialect) against a real eddy server: the
catalog queries ORMs, migration tools and notebooks send to list tables, views and columns."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import TABLE_COLUMNS, not_supported_yet


@pytest.fixture
def engine(server):
    engine = sa.create_engine(
        f"postgresql+psycopg://eddy@{server.host}:{server.port}/eddy",
        isolation_level="AUTOCOMMIT",
    )
    yield engine
    engine.dispose()


def test_inspector_lists_tables_and_views(engine, name):
    table = name("sa_t")
    view = name("sa_mv")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({TABLE_COLUMNS})")
        conn.exec_driver_sql(
            f"CREATE MATERIALIZED VIEW {view} AS SELECT s, count(*) AS n FROM {table} GROUP BY s"
        )
    try:
        inspector = sa.inspect(engine)
        assert inspector.default_schema_name == "public"
        assert inspector.get_schema_names() == ["information_schema", "public"]
        tables = inspector.get_table_names()
        assert table in tables and view not in tables
        materialized = inspector.get_materialized_view_names()
        assert view in materialized and table not in materialized
        assert inspector.get_view_names() == ["eddy_checkpoints", "eddy_jobs"]
        assert inspector.get_foreign_keys(table) == []
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP MATERIALIZED VIEW {view}")
            conn.exec_driver_sql(f"DROP TABLE {table}")


def test_inspector_columns(engine, name):
    table = name("sa_cols")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({TABLE_COLUMNS})")
    try:
        columns = sa.inspect(engine).get_columns(table)
        assert [(c["name"], str(c["type"]), c["nullable"]) for c in columns] == [
            ("a", "BIGINT", True),
            ("ts", "TIMESTAMP", True),
            ("s", "TEXT", True),
        ]
        assert columns[1]["type"].precision == 3
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")


@not_supported_yet(
    "SQLAlchemy's primary-key, unique-constraint and index reflection (and so Table autoload) "
    "unnest pg_index/pg_constraint int2vector columns, which the catalogs hold as text"
)
def test_inspector_keys_and_autoload(engine, name):
    table = name("sa_keys")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({TABLE_COLUMNS})")
    try:
        inspector = sa.inspect(engine)
        assert inspector.get_pk_constraint(table)["constrained_columns"] == []
        assert inspector.get_indexes(table) == []
        loaded = sa.Table(table, sa.MetaData(), autoload_with=engine)
        assert [c.name for c in loaded.columns] == ["a", "ts", "s"]
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")
