"""Push queries through cursors: psycopg2 named cursors (DECLARE ... CURSOR WITHOUT HOLD FOR,
FETCH FORWARD n), psycopg 3 server cursors (DECLARE, Describe portal, FETCH, CLOSE), a FETCH
that waits at most eddy.fetch_timeout, and asyncpg (binary results)."""
import asyncio
import sys

import psycopg
import psycopg2

PORT = int(sys.argv[1])
DSN = dict(host='127.0.0.1', port=PORT, dbname='eddy', user='eddy')

with psycopg.connect(**DSN, autocommit=True) as c:
    c.execute("CREATE STREAM clicks (id STRING KEY, page STRING, n INT) "
              "WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON', PARTITIONS=1)")
    for i in range(5):
        c.execute(f"INSERT INTO clicks (id, page, n) VALUES ('c{i}', 'p{i}', {i})")

# psycopg2: a named cursor is DECLAREd in a transaction and read with FETCH FORWARD n.
conn2 = psycopg2.connect(**DSN)
plain = conn2.cursor()
plain.execute("SET 'auto.offset.reset' = 'earliest'")
plain.execute("SET eddy.fetch_timeout = '300ms'")
named = conn2.cursor('clicks_cursor')
named.execute('SELECT id, n FROM clicks EMIT CHANGES')
assert named.fetchmany(2) == [('c0', 0), ('c1', 1)]
assert named.fetchone() == ('c2', 2)
# Only two more rows exist: FETCH returns them when eddy.fetch_timeout expires.
assert named.fetchmany(10) == [('c3', 3), ('c4', 4)]
assert named.fetchmany(10) == []
named.close()
conn2.commit()
conn2.close()
print('psycopg2 named cursor ok')

# psycopg 3: a server-side cursor.
with psycopg.connect(**DSN) as conn3:
    conn3.execute("SET 'auto.offset.reset' = 'earliest'")
    with conn3.cursor(name='pc') as cur:
        cur.execute('SELECT id, page FROM clicks EMIT CHANGES LIMIT 3')
        assert [d.name for d in cur.description] == ['id', 'page'], cur.description
        assert cur.fetchmany(2) == [('c0', 'p0'), ('c1', 'p1')]
        assert cur.fetchall() == [('c2', 'p2')]
    conn3.commit()
print('psycopg 3 server cursor ok')


async def with_asyncpg():
    import asyncpg
    conn = await asyncpg.connect(host='127.0.0.1', port=PORT, database='eddy', user='eddy')
    try:
        # $1 is described with n's type (int4, as Postgres does), so asyncpg sends an int.
        rows = await conn.fetch('SELECT id, n FROM clicks WHERE n >= $1 ORDER BY n', 3)
        assert [tuple(r) for r in rows] == [('c3', 3), ('c4', 4)], rows
        # Binary results of several types, decoded by asyncpg's codecs.
        row = await conn.fetchrow("SELECT CAST(1.5 AS DOUBLE) AS d, TRUE AS b, CAST('2024-01-02' AS DATE) AS day, "
                                  "CAST(7 AS BIGINT) AS big")
        assert (row['d'], row['b'], str(row['day']), row['big']) == (1.5, True, '2024-01-02', 7), row
        print('asyncpg ok')
    finally:
        await conn.close()

asyncio.run(with_asyncpg())
