"""Point lookups on a large table, as a driver sends them: psycopg, one prepared statement
`SELECT * FROM t WHERE k = %s` (server-side prepared), keys drawn at random.

Usage: python3 benches/pull_lookup.py KAFKA_BOOTSTRAP PG_PORT ROWS LOOKUPS
Creates a topic `lookup_rows` with ROWS JSON records (k BIGINT key, v STRING), declares
`CREATE TABLE lookup_t` over it, waits until its materialization has caught up (FLUSH), then
times LOOKUPS lookups one after another and prints p50 / p99 / max in milliseconds, plus one
full `SELECT COUNT(*)` for comparison. See benches/RESULTS.md.
"""
import json
import random
import sys
import time

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, pg_port, rows, lookups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
TOPIC = 'lookup_rows'

admin = AdminClient({'bootstrap.servers': bootstrap})
for f in admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)]).values():
    f.result()
p = Producer({'bootstrap.servers': bootstrap, 'acks': 'all', 'linger.ms': 20,
              'queue.buffering.max.messages': 1_000_000, 'batch.num.messages': 20_000,
              'compression.type': 'lz4'})
started = time.perf_counter()
for i in range(rows):
    while True:
        try:
            p.produce(TOPIC, key=json.dumps({'k': i}).encode(),
                      value=json.dumps({'v': f'value-{i:010d}'}).encode())
            break
        except BufferError:
            p.poll(0.05)
    if i % 10_000 == 0:
        p.poll(0)
p.flush()
produced = time.perf_counter() - started

with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
    conn.execute(f"CREATE TABLE lookup_t (k BIGINT PRIMARY KEY, v STRING) "
                 f"WITH (KAFKA_TOPIC='{TOPIC}', KEY_FORMAT='JSON', VALUE_FORMAT='JSON')")
    started = time.perf_counter()
    conn.execute('FLUSH')
    materialized = time.perf_counter() - started
    rng = random.Random(7)
    keys = [rng.randrange(rows) for _ in range(lookups)]
    with conn.cursor() as cur:
        for k in keys[:100]:  # warm-up (and the statement is prepared after a few uses)
            cur.execute('SELECT * FROM lookup_t WHERE k = %s', (k,), prepare=True)
            cur.fetchall()
        times = []
        for k in keys:
            t0 = time.perf_counter()
            cur.execute('SELECT * FROM lookup_t WHERE k = %s', (k,), prepare=True)
            got = cur.fetchall()
            times.append(time.perf_counter() - t0)
            assert got == [(k, f'value-{k:010d}')], (k, got)
        times.sort()
        t0 = time.perf_counter()
        try:
            cur.execute('SELECT COUNT(*) FROM lookup_t')
            scan = f'{(time.perf_counter() - t0) * 1000:.0f} ms ({cur.fetchone()[0]} rows)'
        except psycopg.Error as e:
            scan = f'error {e.sqlstate}: {str(e).strip()}'

ms = lambda s: f'{s * 1000:.3f}'  # noqa: E731
print(f'rows={rows} produced in {produced:.1f} s, materialized in {materialized:.1f} s after produce')
print(f'lookups={lookups} p50={ms(times[len(times) // 2])} ms p99={ms(times[int(len(times) * 0.99)])} ms '
      f'max={ms(times[-1])} ms')
print(f'full scan SELECT COUNT(*): {scan}')
