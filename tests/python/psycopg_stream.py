"""psycopg's cursor.stream() must see a push query's rows live, one at a time.

The writer inserts one row, then waits until the reader has received it before inserting
the next. If the server buffered rows until the query ended, the writer would time out.
Usage: python3 psycopg_stream.py PORT
"""
import sys
import threading
import time

import psycopg

port = sys.argv[1]
dsn = f"host=127.0.0.1 port={port} user=eddy dbname=eddy"
conn = psycopg.connect(dsn, autocommit=True)
conn.execute("CREATE STREAM ticks (sym STRING KEY, px DOUBLE) WITH (KAFKA_TOPIC='ticks', PARTITIONS=1)")

received = []
seen = threading.Condition()
errors = []


def writer():
    try:
        w = psycopg.connect(dsn, autocommit=True)
        time.sleep(0.5)  # let the push query attach at the end of the stream
        for i in range(3):
            w.execute("INSERT INTO ticks (sym, px) VALUES (%s, %s)", (f"s{i}", str(i + 0.5)))
            with seen:
                if not seen.wait_for(lambda: len(received) > i, timeout=10):
                    errors.append(f"row {i} was not streamed within 10 s")
                    return
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


t = threading.Thread(target=writer)
t.start()
cur = conn.cursor()
for row in cur.stream("SELECT sym, px FROM ticks EMIT CHANGES LIMIT 3"):
    with seen:
        received.append(row)
        seen.notify_all()
t.join()
assert not errors, errors
assert received == [("s0", 0.5), ("s1", 1.5), ("s2", 2.5)], received
print("psycopg stream ok:", received)
