"""The key-lookup fast path against the general path, on a table `benches/pull_lookup.py`
loaded (`lookup_t`, ROWS keys): the same prepared lookup (psycopg, `prepare=True`), once as
`SELECT * FROM lookup_t WHERE k = %s` (read by key without DataFusion) and once with
`AND 1 = 1` appended (planned by DataFusion, the key pushed down to the same read).

Usage: python3 benches/pull_lookup_ab.py PG_PORT ROWS LOOKUPS
Prints p50 / p99 / max in milliseconds for each; every result is checked. See benches/RESULTS.md.
"""
import random
import sys
import time

import psycopg

pg_port, rows, lookups = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
    cur = conn.cursor()
    rng = random.Random(3)
    for label, sql in [('fast path', 'SELECT * FROM lookup_t WHERE k = %s'),
                       ('general path (AND 1 = 1)', 'SELECT * FROM lookup_t WHERE k = %s AND 1 = 1')]:
        times = []
        for i in range(lookups + 100):
            k = rng.randrange(rows)
            t0 = time.perf_counter()
            cur.execute(sql, (k,), prepare=True)
            got = cur.fetchall()
            if i >= 100:  # the first 100 warm up (and get the statement prepared)
                times.append(time.perf_counter() - t0)
            assert got == [(k, f'value-{k:010d}')], (k, got)
        times.sort()
        print(f"{label}: p50={times[len(times) // 2] * 1000:.3f} ms "
              f"p99={times[int(len(times) * 0.99)] * 1000:.3f} ms max={times[-1] * 1000:.3f} ms")
