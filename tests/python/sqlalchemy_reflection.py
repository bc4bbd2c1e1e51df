"""SQLAlchemy's PostgreSQL reflection against Eddy (what Superset and many tools sit on).

Usage: sqlalchemy_reflection.py PORT. Expects a stream `orders` and a table `users`
(id STRING PRIMARY KEY, name STRING, score DECIMAL(10, 2)) to exist.
"""
import sys

import sqlalchemy
from sqlalchemy import create_engine, inspect, text

port = sys.argv[1]
engine = create_engine(f"postgresql+psycopg2://eddy@127.0.0.1:{port}/eddy")
insp = inspect(engine)

print("server version", engine.dialect.server_version_info)
assert engine.dialect.server_version_info[0] >= 10, engine.dialect.server_version_info

schemas = insp.get_schema_names()
assert "public" in schemas, schemas

tables = insp.get_table_names()
assert "users" in tables, tables
assert "orders" not in tables, tables  # streams are views
views = insp.get_view_names()
assert "orders" in views, views

cols = {c["name"]: c for c in insp.get_columns("users")}
assert list(cols) == ["id", "name", "score"], cols
assert isinstance(cols["id"]["type"], sqlalchemy.types.TEXT), cols["id"]["type"]
assert isinstance(cols["score"]["type"], sqlalchemy.types.NUMERIC), cols["score"]["type"]
assert cols["score"]["type"].precision == 10 and cols["score"]["type"].scale == 2
assert cols["id"]["nullable"] is False and cols["name"]["nullable"] is True

ocols = {c["name"]: c for c in insp.get_columns("orders")}
assert isinstance(ocols["amount"]["type"], sqlalchemy.types.DOUBLE_PRECISION), ocols["amount"]["type"]
assert isinstance(ocols["ts"]["type"], sqlalchemy.types.TIMESTAMP), ocols["ts"]["type"]

pk = insp.get_pk_constraint("users")
assert pk["constrained_columns"] == ["id"], pk
assert pk["name"] == "users_pkey", pk
assert insp.get_foreign_keys("users") == []
idx = insp.get_indexes("users")
print("indexes", idx)
assert insp.get_unique_constraints("users") == []
assert insp.has_table("users") and not insp.has_table("nope")

# Reflect into a Table object and query it, as Superset does.
meta = sqlalchemy.MetaData()
users = sqlalchemy.Table("users", meta, autoload_with=engine)
assert [c.name for c in users.primary_key.columns] == ["id"]
with engine.connect() as conn:
    rows = conn.execute(sqlalchemy.select(users.c.id, users.c.name).order_by(users.c.id)).fetchall()
    assert [tuple(r) for r in rows] == [("u1", "ann")], rows
    assert conn.execute(text("SELECT version()")).scalar().startswith("PostgreSQL 15")
print("sqlalchemy reflection ok")
