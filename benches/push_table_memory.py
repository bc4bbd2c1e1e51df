"""What a push query over a large table costs the server: resident memory before and after it
starts, and how long until its first change arrives.

Usage: python3 benches/push_table_memory.py SERVER_PID PG_PORT TABLE KEY
TABLE is a table declared on a topic with a BIGINT key column `k` and a STRING column `v`
(benches/pull_lookup.py makes `lookup_t`); KEY is a key it holds. The script opens
`SELECT k, v FROM TABLE EMIT CHANGES` as a cursor, writes a new value for KEY, and fetches
the change (it must come as an 'update'). See benches/RESULTS.md.
"""
import sys
import time

import psycopg

pid, pg_port, table, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def memory():
    fields = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            name, _, value = line.partition(':')
            if name in ('VmRSS', 'VmHWM'):
                fields[name] = int(value.split()[0]) // 1024
    return fields


before = memory()
dsn = f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy'
with psycopg.connect(dsn) as conn, psycopg.connect(dsn, autocommit=True) as writer:
    conn.execute("SET eddy.fetch_timeout = '600s'")
    started = time.perf_counter()
    conn.execute(f'DECLARE c CURSOR FOR SELECT k, v FROM {table} EMIT CHANGES')
    declared = time.perf_counter() - started
    writer.execute(f"INSERT INTO {table} (k, v) VALUES ({key}, 'changed')")
    got = conn.execute('FETCH 1 FROM c').fetchall()
    first = time.perf_counter() - started
    assert got == [(key, 'changed', 'update')], got
    during = memory()
print(f'before: RSS {before["VmRSS"]} MiB; with the push query: RSS {during["VmRSS"]} MiB, '
      f'peak {during["VmHWM"]} MiB; DECLARE {declared:.2f} s, first change {first:.2f} s')
