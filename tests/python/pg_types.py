"""Every result type Eddy has, read by psycopg 3 in text and in binary with a prepared
statement ($1 parameter): the Postgres type oid and the decoded Python value must match
what Postgres itself would send. Usage: pg_types.py PORT"""
import datetime
import decimal
import sys

import psycopg

port = sys.argv[1]
utc = datetime.timezone.utc
CASES = {
    # name: (expression, type oid, expected Python value)
    "bool": ("true", 16, True),
    "int2": ("arrow_cast(7, 'Int16')", 21, 7),
    "int4": ("CAST(7 AS INT)", 23, 7),
    "int8": ("CAST(7 AS BIGINT)", 20, 7),
    "float4": ("arrow_cast(1.5, 'Float32')", 700, 1.5),
    "float8": ("CAST(1.5 AS DOUBLE)", 701, 1.5),
    "numeric": ("CAST(12.34 AS DECIMAL(10, 2))", 1700, decimal.Decimal("12.34")),
    "text": ("'hé'", 1043, "hé"),
    "bytea": ("arrow_cast('ab', 'Binary')", 17, b"ab"),
    "date": ("DATE '2024-01-02'", 1082, datetime.date(2024, 1, 2)),
    "time": ("TIME '01:02:03'", 1083, datetime.time(1, 2, 3)),
    "timestamp": ("TIMESTAMP '2024-01-02 03:04:05'", 1114, datetime.datetime(2024, 1, 2, 3, 4, 5)),
    "timestamptz": (
        "arrow_cast(TIMESTAMP '2024-01-02 03:04:05', 'Timestamp(Microsecond, Some(\"UTC\"))')",
        1184,
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc),
    ),
    "interval": ("INTERVAL '1 day 2 hours'", 1186, datetime.timedelta(days=1, hours=2)),
    "int[]": ("make_array(1, 2, 3)", 1016, [1, 2, 3]),
    "text[]": ("make_array('a', NULL, 'c')", 1009, ["a", None, "c"]),
    "json (struct)": ("named_struct('a', 1)", 114, {"a": 1}),
}

failures = []
with psycopg.connect(f"host=127.0.0.1 port={port} user=eddy dbname=eddy", autocommit=True) as conn:
    for binary in (False, True):
        for name, (expr, oid, want) in CASES.items():
            cur = conn.cursor(binary=binary)
            cur.execute(f"SELECT {expr} AS v WHERE 1 = %s", (1,), prepare=True)
            got = cur.fetchone()[0]
            got_oid = cur.description[0].type_code
            fmt = "binary" if binary else "text"
            if got_oid != oid or got != want:
                failures.append(f"{fmt} {name}: oid {got_oid} (want {oid}), value {got!r} (want {want!r})")
            else:
                print(f"{fmt} {name}: ok")
if failures:
    print("\n".join(failures))
    sys.exit(1)

# asyncpg encodes parameters by the type Describe reports and reads results in binary.
import asyncio

import asyncpg


async def with_asyncpg():
    conn = await asyncpg.connect(host="127.0.0.1", port=int(port), user="eddy", database="eddy")
    try:
        row = await conn.fetchrow(
            "SELECT $1::BIGINT + 1 AS n, CAST($2 AS INT) * 2 AS m, $3 AS t, INTERVAL '1 day' AS i", 41, 4, "x"
        )
        assert (row["n"], row["m"], row["t"], row["i"]) == (42, 8, "x", datetime.timedelta(days=1)), row
        # Array columns make asyncpg introspect their types (a recursive catalog query with
        # an oid[] parameter).
        row = await conn.fetchrow("SELECT make_array(1, 2, 3) AS a, make_array('x', 'y') AS t")
        assert (row["a"], row["t"]) == ([1, 2, 3], ["x", "y"]), row
    finally:
        await conn.close()


asyncio.run(with_asyncpg())
print("asyncpg: ok")
