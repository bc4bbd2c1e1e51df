"""SCRAM-SHA-256 from psycopg 3 (libpq): the right password connects, a wrong one gets
SQLSTATE 28P01 with Postgres's message; with `tls`, sslmode=require is used and checked."""
import sys

import psycopg

PORT, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
TLS = len(sys.argv) > 4 and sys.argv[4] == 'tls'
extra = {'sslmode': 'require'} if TLS else {'sslmode': 'disable'}


def connect(password):
    return psycopg.connect(host='127.0.0.1', port=PORT, dbname='eddy', user=USER, password=password, **extra)


with connect(PASSWORD) as conn:
    assert conn.execute('SELECT 1 + 1').fetchone() == (2,)
    assert conn.pgconn.ssl_in_use == TLS, conn.pgconn.ssl_in_use
    # A prepared statement with a parameter and binary results.
    row = conn.execute('SELECT CAST(%s AS BIGINT) * 2', [21], prepare=True, binary=True).fetchone()
    assert row == (42,), row

try:
    connect('wrong').close()
    raise SystemExit('a wrong password was accepted')
except psycopg.OperationalError as e:
    assert f'password authentication failed for user "{USER}"' in str(e), str(e)
print('psycopg scram ok')
