"""Postgres typing where drivers rely on it (issue 17), with the real drivers:

- INSERT ... VALUES coerces strings to the column's type as Postgres does (TIMESTAMP with and
  without `T` and zone, DATE, TIME, DECIMAL, BOOLEAN), and takes `TIMESTAMP '...'`, casts,
  `now()` and arithmetic; a string that does not read as the type is refused with 22P02 and
  nothing of the statement is written;
- parameters of INSERT take their column's type in Describe, so asyncpg sends datetimes,
  dates, times, Decimals, bools and ints in binary, and `WHERE n >= $1` is a bigint;
- psycopg2 (client-side `'...'::timestamp` literals) and psycopg 3 (typed text parameters);
- result columns named as Postgres names them (`?column?`, `count`, `date_trunc`, `int4`);
- `pg_typeof`; SAVEPOINT / RELEASE / ROLLBACK TO from SQLAlchemy 2.1's `begin_nested` on both
  the psycopg 3 and the psycopg2 dialect; a WARNING when ROLLBACK follows INSERTs.

Usage: pg_typing.py PORT
"""
import asyncio
import datetime
import decimal
import sys

import asyncpg
import psycopg
import psycopg2
from sqlalchemy import create_engine, text

port = sys.argv[1]
dsn = f"host=127.0.0.1 port={port} user=eddy dbname=eddy"
D = decimal.Decimal
failures = []


def check(what, got, want):
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")
    else:
        print(f"{what}: ok")


def expect_error(conn, sql, sqlstate, fragment):
    try:
        conn.execute(sql)
    except psycopg.Error as e:
        check(f"error of {sql}", (e.sqlstate, fragment in str(e)), (sqlstate, True))
        if fragment not in str(e):
            print("  message:", e)
    else:
        failures.append(f"{sql}: no error")


COLUMNS = "sensor, ts, d, t, amount, ok, n"
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute(
        "CREATE STREAM readings (sensor STRING, ts TIMESTAMP, d DATE, t TIME, amount DECIMAL(12, 2), "
        "ok BOOLEAN, n BIGINT) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON', PARTITIONS=1)"
    )
    # Strings for every type, as psql users write them.
    conn.execute(
        f"INSERT INTO readings ({COLUMNS}) VALUES "
        "('a', '2026-01-01 00:00:00', '2026-01-02', '03:04:05', '12.50', 't', 1), "
        "('b', '2026-01-01T02:00:00+02:00', DATE '2026-01-03', TIME '23:59:59.5', CAST('7' AS DECIMAL(12, 2)), 'no', 2 + 3), "
        "('c', TIMESTAMP '2026-01-01 00:00:01.250', '2026-01-04'::date, NULL, -3.25, true, CAST('9' AS BIGINT)), "
        "('d', now(), current_date, NULL, 1, 'on', NULL)"
    )
    # Refused whole, with Postgres's SQLSTATE and wording.
    expect_error(conn, "INSERT INTO readings (sensor, ts) VALUES ('x', 'not a time')", "22P02",
                 'invalid input syntax for type timestamp: "not a time"')
    expect_error(conn, "INSERT INTO readings (sensor, ok) VALUES ('x', 'maybe')", "22P02",
                 'invalid input syntax for type boolean: "maybe"')
    expect_error(conn, "INSERT INTO readings (sensor, n) VALUES ('x', 'abc')", "22P02",
                 'invalid input syntax for type bigint: "abc"')
    expect_error(conn, "INSERT INTO readings (sensor, d) VALUES ('x', '2026-01-01'), ('x', '2026-13-45')", "22P02",
                 'invalid input syntax for type date: "2026-13-45"')
    conn.execute("FLUSH")
    rows = conn.execute(f"SELECT {COLUMNS} FROM readings WHERE sensor IN ('a', 'b', 'c') ORDER BY sensor").fetchall()
    check("row a", rows[0], ("a", datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 2), datetime.time(3, 4, 5),
                             D("12.50"), True, 1))
    check("row b (zone taken to UTC)", rows[1], ("b", datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 3),
                                               datetime.time(23, 59, 59, 500000), D("7.00"), False, 5))
    check("row c", rows[2], ("c", datetime.datetime(2026, 1, 1, 0, 0, 1, 250000), datetime.date(2026, 1, 4), None,
                             D("-3.25"), True, 9))
    ts, d = conn.execute("SELECT ts, d FROM readings WHERE sensor = 'd'").fetchone()
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    check("now() within a minute", abs((now - ts).total_seconds()) < 60, True)
    check("current_date", d, now.date())
    check("refused statements wrote nothing", conn.execute("SELECT count(*) FROM readings WHERE sensor = 'x'").fetchone(),
          (0,))

    # Postgres's names for computed columns.
    def names(sql):
        cur = conn.execute(sql)
        cur.fetchall()
        return [c.name for c in cur.description]

    check("SELECT 1, 2", names("SELECT 1, 2"), ["?column?", "?column?"])
    check("count(*)", names("SELECT count(*) FROM readings"), ["count"])
    check("date_trunc", names("SELECT date_trunc('hour', ts), sensor FROM readings WHERE sensor = 'a'"),
          ["date_trunc", "sensor"])
    check("casts and CASE", names("SELECT 1::int, CAST('1' AS bigint), CASE WHEN true THEN 1 END, ts::date, n AS m "
                                  "FROM readings WHERE sensor = 'a'"), ["int4", "int8", "case", "ts", "m"])
    check("pg_typeof", conn.execute("SELECT pg_typeof(n), pg_typeof(amount), pg_typeof(ts), pg_typeof(ok), "
                                    "pg_typeof(d) FROM readings WHERE sensor = 'a'").fetchone(),
          ("bigint", "numeric", "timestamp without time zone", "boolean", "date"))
    check("pg_typeof's name", names("SELECT pg_typeof(n) FROM readings WHERE sensor = 'a'"), ["pg_typeof"])

    # psycopg 3 sends typed parameters as text.
    conn.execute(f"INSERT INTO readings ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 ("p3", datetime.datetime(2026, 3, 4, 5, 6, 7, 8000), datetime.date(2026, 3, 4), datetime.time(5, 6, 7),
                  D("0.01"), False, 11))
    conn.execute("FLUSH")
    check("psycopg 3 parameters", conn.execute(f"SELECT {COLUMNS} FROM readings WHERE sensor = %s", ("p3",)).fetchone(),
          ("p3", datetime.datetime(2026, 3, 4, 5, 6, 7, 8000), datetime.date(2026, 3, 4), datetime.time(5, 6, 7),
           D("0.01"), False, 11))

# ROLLBACK cannot take back INSERTs (Eddy has no transactions): the client is warned.
with psycopg.connect(dsn) as tconn:
    notices = []
    tconn.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    tconn.execute("INSERT INTO readings (sensor, n) VALUES ('rb', 1), ('rb', 2)")
    tconn.rollback()
    tconn.execute("SELECT 1")
    tconn.commit()
    check("ROLLBACK after INSERTs warns", [(sev, "2 row(s)" in msg) for sev, msg in notices], [("WARNING", True)])

# psycopg2 renders parameters into the text: '...'::timestamp, '...'::date, 5.05, true.
with psycopg2.connect(dsn) as conn2:
    conn2.autocommit = True
    with conn2.cursor() as cur:
        cur.execute(f"INSERT INTO readings ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    ("p2", datetime.datetime(2026, 4, 5, 6, 7, 8), datetime.date(2026, 4, 5), datetime.time(6, 7, 8),
                     D("5.05"), True, 12))
        cur.execute("FLUSH")
        cur.execute(f"SELECT {COLUMNS} FROM readings WHERE sensor = %s", ("p2",))
        check("psycopg2 parameters", cur.fetchone(), ("p2", datetime.datetime(2026, 4, 5, 6, 7, 8),
                                                      datetime.date(2026, 4, 5), datetime.time(6, 7, 8), D("5.05"),
                                                      True, 12))


async def with_asyncpg():
    conn = await asyncpg.connect(host="127.0.0.1", port=int(port), user="eddy", database="eddy")
    try:
        stmt = await conn.prepare(f"INSERT INTO readings ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        check("asyncpg INSERT parameter types", [t.name for t in stmt.get_parameters()],
              ["text", "timestamp", "date", "time", "numeric", "bool", "int8"])
        row = ("apg", datetime.datetime(2026, 2, 3, 4, 5, 6, 789000), datetime.date(2026, 2, 3), datetime.time(4, 5, 6),
               D("1234567890.12"), False, 42)
        await conn.execute(f"INSERT INTO readings ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)", *row)
        await conn.execute("FLUSH")
        got = await conn.fetchrow(f"SELECT {COLUMNS} FROM readings WHERE n >= $1 AND sensor = $2", 42, "apg")
        check("asyncpg binary parameters, read back", tuple(got) if got else None, row)
        by_time = await conn.fetchval("SELECT count(*) FROM readings WHERE ts >= $1 AND sensor = 'apg'",
                                      datetime.datetime(2026, 2, 3))
        check("asyncpg timestamp parameter in WHERE", by_time, 1)
    finally:
        await conn.close()


asyncio.run(with_asyncpg())

# SQLAlchemy 2.1: a transaction with a nested one (SAVEPOINT / RELEASE / ROLLBACK TO).
for driver in ("psycopg", "psycopg2"):
    engine = create_engine(f"postgresql+{driver}://eddy@127.0.0.1:{port}/eddy")
    sensor = f"sa-{driver}"
    with engine.connect() as c:
        with c.begin():
            c.execute(text("INSERT INTO readings (sensor, n) VALUES (:s, :n)"), {"s": sensor, "n": 1})
            with c.begin_nested():
                c.execute(text("INSERT INTO readings (sensor, n) VALUES (:s, :n)"), {"s": sensor, "n": 2})
            nested = c.begin_nested()
            nested.rollback()
            c.execute(text("FLUSH"))
            count = c.execute(text("SELECT count(*) FROM readings WHERE sensor = :s"), {"s": sensor}).scalar()
        check(f"SQLAlchemy {driver}: begin_nested commits and rolls back", count, 2)
    engine.dispose()

if failures:
    print("FAILED:\n" + "\n".join(failures))
    sys.exit(1)
print("pg typing ok")
