"""The HTTP endpoint with clients nobody here wrote: requests and httpx (HTTP/1.1 and HTTP/2
with prior knowledge) against Confluent's REST Proxy shapes, the PyPI `ksql` client against
ksqlDB's REST API, and librdkafka (confluent-kafka) reading what HTTP produced.

argv: http base URL, Kafka bootstrap, mode ('rest', 'ksql' or 'auth')."""
import base64
import collections
import collections.abc
import json
import sys
import threading
import time
import types

import httpx
import requests
from confluent_kafka import Consumer, Producer

BASE = sys.argv[1]
BOOTSTRAP = sys.argv[2]
MODE = sys.argv[3]
V2_JSON = 'application/vnd.kafka.json.v2+json'
V2_BINARY = 'application/vnd.kafka.binary.v2+json'


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def consume_all(topic, want, timeout=30):
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'check-' + topic + str(time.time()),
                  'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline and len(out) < want:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append(m)
    c.close()
    return out


def rest_proxy():
    # v2 metadata
    check(requests.get(BASE + '/brokers').json() == {'brokers': [0]}, 'brokers')
    # produce, json embedded format: the topic is created as Kafka auto-creates it
    r = requests.post(BASE + '/topics/clicks', headers={'Content-Type': V2_JSON},
                      data=json.dumps({'records': [{'key': 'u1', 'value': {'page': '/a', 'n': 1}},
                                                   {'value': {'page': '/b', 'n': 2}},
                                                   {'key': 'u1', 'value': None}]}))
    check(r.status_code == 200, f'json produce: {r.status_code} {r.text}')
    check(r.headers['content-type'].startswith('application/vnd.kafka.v2+json'), r.headers['content-type'])
    body = r.json()
    check(body['key_schema_id'] is None and body['value_schema_id'] is None, body)
    check([o['offset'] for o in body['offsets']] == [0, 1, 2], body)
    check(all(o['error_code'] is None for o in body['offsets']), body)
    check('clicks' in requests.get(BASE + '/topics').json(), 'topic listed')
    t = requests.get(BASE + '/topics/clicks').json()
    check(t['name'] == 'clicks' and t['partitions'][0]['replicas'][0]['in_sync'] is True, t)
    check(t['configs']['cleanup.policy'] == 'delete', t)
    check(requests.get(BASE + '/topics/clicks/partitions/0').json()['leader'] == 0, 'partition 0')
    check(requests.get(BASE + '/topics/clicks/partitions/0/offsets').json() == {'beginning_offset': 0, 'end_offset': 3},
          'offsets')
    msgs = consume_all('clicks', 3)
    check(len(msgs) == 3, f'consumed {len(msgs)}')
    check(msgs[0].key() == b'"u1"' and json.loads(msgs[0].value()) == {'page': '/a', 'n': 1}, msgs[0].value())
    check(msgs[1].key() is None, 'no key')
    check(msgs[2].value() is None, 'a null value is a tombstone')

    # binary embedded format, to a chosen partition of a 3-partition topic (v3 creates it)
    r = requests.post(BASE + '/v3/clusters/eddy/topics', json={'topic_name': 'bin', 'partitions_count': 3})
    check(r.status_code == 201 and r.json()['partitions_count'] == 3, r.text)
    payload = bytes(range(256))
    r = requests.post(BASE + '/topics/bin/partitions/2', headers={'Content-Type': V2_BINARY},
                      data=json.dumps({'records': [{'key': base64.b64encode(b'k').decode(),
                                                    'value': base64.b64encode(payload).decode()}]}))
    check(r.status_code == 200 and r.json()['offsets'][0]['partition'] == 2, r.text)
    msgs = consume_all('bin', 1)
    check(msgs[0].partition() == 2 and msgs[0].value() == payload and msgs[0].key() == b'k', 'binary bytes')
    # The same key always lands in the same partition (Kafka's murmur2 partitioner).
    parts = set()
    for _ in range(5):
        r = requests.post(BASE + '/topics/bin', headers={'Content-Type': V2_BINARY},
                          data=json.dumps({'records': [{'key': base64.b64encode(b'same').decode(), 'value': 'AA=='}]}))
        parts.add(r.json()['offsets'][0]['partition'])
    check(len(parts) == 1, f'one key, partitions {parts}')

    # errors, with the REST Proxy's codes
    r = requests.get(BASE + '/topics/nope')
    check(r.status_code == 404 and r.json()['error_code'] == 40401, r.text)
    r = requests.get(BASE + '/topics/clicks/partitions/7')
    check(r.status_code == 404 and r.json()['error_code'] == 40402, r.text)
    r = requests.post(BASE + '/topics/clicks/partitions/7', headers={'Content-Type': V2_JSON},
                      data=json.dumps({'records': [{'value': 1}]}))
    check(r.status_code == 404 and r.json()['error_code'] == 40402, r.text)
    r = requests.post(BASE + '/topics/clicks', headers={'Content-Type': V2_JSON}, data='{"records": [')
    check(r.status_code == 400, r.text)
    r = requests.post(BASE + '/topics/clicks', headers={'Content-Type': V2_BINARY},
                      data=json.dumps({'records': [{'value': 'not base64!'}]}))
    check(r.status_code == 422 and r.json()['error_code'] == 42205, r.text)
    r = requests.post(BASE + '/topics/clicks', headers={'Content-Type': 'text/plain'}, data='x')
    check(r.status_code == 415, r.text)
    r = requests.post(BASE + '/topics/clicks', headers={'Content-Type': 'application/vnd.kafka.cbor.v2+json'},
                      data='{"records":[]}')
    check(r.status_code == 415, r.text)
    # nothing failed above was written
    check(requests.get(BASE + '/topics/clicks/partitions/0/offsets').json()['end_offset'] == 3, 'no partial writes')
    # A body past the limit (the test server's --http-max-body-bytes) gets 413, and the
    # server goes on.
    big = json.dumps({'records': [{'value': 'x' * 300_000}]})
    r = requests.post(BASE + '/topics/clicks', headers={'Content-Type': V2_JSON}, data=big)
    check(r.status_code == 413, f'big body: {r.status_code}')
    check(requests.get(BASE + '/brokers').status_code == 200, 'alive after 413')

    # v3: clusters, topics, partitions, records one at a time and streamed
    clusters = requests.get(BASE + '/v3/clusters').json()
    check(clusters['kind'] == 'KafkaClusterList' and clusters['data'][0]['cluster_id'] == 'eddy', clusters)
    topics = requests.get(BASE + '/v3/clusters/eddy/topics').json()
    check({'clicks', 'bin'} <= {t['topic_name'] for t in topics['data']}, topics)
    check(requests.get(BASE + '/v3/clusters/other/topics').status_code == 404, 'unknown cluster')
    parts = requests.get(BASE + '/v3/clusters/eddy/topics/bin/partitions').json()
    check([p['partition_id'] for p in parts['data']] == [0, 1, 2], parts)
    r = requests.post(BASE + '/v3/clusters/eddy/topics/events/records',
                      json={'partition_id': 0, 'key': {'type': 'STRING', 'data': 'k1'},
                            'value': {'type': 'JSON', 'data': {'a': 1}},
                            'headers': [], 'timestamp': '2026-01-02T03:04:05.678Z'})
    answer = r.json()
    check(r.status_code == 200 and answer['error_code'] == 200 and answer['offset'] == 0, answer)
    check(answer['value'] == {'type': 'JSON', 'size': 7}, answer)

    def many():
        for i in range(1, 6):
            yield json.dumps({'value': {'type': 'JSON', 'data': {'i': i}}}).encode()
            time.sleep(0.02)
        yield b'{"value": {"type": "BINARY", "data": "***"}}'
        yield b'{"partition_id": 9, "value": {"type": "JSON", "data": 1}}'
    with httpx.Client(timeout=30) as client:
        r = client.post(BASE + '/v3/clusters/eddy/topics/events/records', content=many(),
                        headers={'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked'})
        answers = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    check(r.status_code == 200, r.status_code)
    check([a.get('offset') for a in answers[:5]] == [1, 2, 3, 4, 5], answers)
    check(answers[5]['error_code'] == 400 and 'base64' in answers[5]['message'], answers[5])
    check(answers[6]['error_code'] != 200 and 'Partition 9' in answers[6]['message'], answers[6])
    msgs = consume_all('events', 6)
    check(msgs[0].key() == b'k1' and msgs[0].timestamp()[1] == 1767323045678, (msgs[0].key(), msgs[0].timestamp()))
    check([json.loads(m.value()) for m in msgs[1:6]] == [{'i': i} for i in range(1, 6)], 'streamed values')
    check(requests.delete(BASE + '/v3/clusters/eddy/topics/bin').status_code == 204, 'delete')
    check(requests.get(BASE + '/v3/clusters/eddy/topics/bin').status_code == 404, 'deleted')
    print('rest proxy ok')


def rest_big():
    # 3,000 records of 1 KB to one partition: more than one batch may hold (max.message.bytes
    # is 1 MiB), all appended, offsets in order.
    body = {'records': [{'value': {'i': i, 'pad': 'x' * 1000}} for i in range(3000)]}
    r = requests.post(BASE + '/topics/bulk', headers={'Content-Type': V2_JSON}, data=json.dumps(body))
    check(r.status_code == 200, r.text[:300])
    offsets = [o['offset'] for o in r.json()['offsets']]
    check(offsets == list(range(3000)), offsets[:5])
    # A compacted topic takes keyed records only: the keyless one fails alone.
    r = requests.post(BASE + '/v3/clusters/eddy/topics', json={'topic_name': 'compacted', 'partitions_count': 1,
                                                            'configs': [{'name': 'cleanup.policy', 'value': 'compact'}]})
    check(r.status_code == 201, r.text)
    r = requests.post(BASE + '/topics/compacted', headers={'Content-Type': V2_JSON},
                      data=json.dumps({'records': [{'key': 'a', 'value': 1}, {'value': 2}, {'key': 'b', 'value': 3}]}))
    got = r.json()['offsets']
    check(got[0]['offset'] == 0 and got[1]['error_code'] == 2 and got[2]['offset'] == 1, got)
    # /inserts-stream: a stray line is answered and the rest goes on; the target is a name only.
    requests.post(BASE + '/ksql', json={'ksql': "CREATE STREAM ins (a INT) WITH (KAFKA_TOPIC='ins', VALUE_FORMAT='JSON', PARTITIONS=1);"})
    r = requests.post(BASE + '/inserts-stream', data='{"target":"ins"}\n}\n{"a": 5}\n', timeout=10)
    answers = [json.loads(x) for x in r.text.splitlines()]
    check(answers[0]['status'] == 'error' and answers[1] == {'status': 'ok', 'seq': 1}, answers)
    r = requests.post(BASE + '/inserts-stream', data='{"target":"ins (a) VALUES (1); DROP STREAM ins; --"}\n{"a":1}\n')
    check(r.status_code == 400 and 'unknown stream' in r.text, r.text)
    check('INS' in [x['name'] for x in requests.post(BASE + '/ksql', json={'ksql': 'SHOW STREAMS;'}).json()[0]['streams']],
          'the stream is still there')
    # Registry subjects are names, without control characters.
    r = requests.post(BASE + '/subjects/a%00b/versions', json={'schema': '"string"'})
    check(r.status_code == 422 and r.json()['error_code'] == 42208, r.text)
    print('rest big ok')


def import_ksql():
    # ksql 0.10.2 imports `hyper` (a dead HTTP/2 library that does not load on Python 3.10+)
    # for its HTTP/2 calls only; the calls used here are its HTTP/1.1 ones.
    sys.modules.setdefault('hyper', types.SimpleNamespace(HTTPConnection=None))
    for name in ('MutableMapping', 'Mapping', 'Iterable'):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    from ksql import KSQLAPI
    from ksql.errors import KSQLError
    return KSQLAPI, KSQLError


def ksql_api():
    KSQLAPI, KSQLError = import_ksql()
    client = KSQLAPI(BASE)
    check(client.get_ksql_version() == '0.29.0', 'version')
    check(requests.get(BASE + '/healthcheck').json()['isHealthy'] is True, 'healthcheck')

    p = Producer({'bootstrap.servers': BOOTSTRAP})
    for i in range(6):
        p.produce('pageviews', key=f'u{i % 2}', value=json.dumps({'userid': f'u{i % 2}', 'page': f'/p{i}'}))
    p.flush(10)

    client.create_stream(table_name='pageviews_s', columns_type=['userid varchar', 'page varchar'],
                         topic='pageviews', value_format='JSON')
    streams = client.ksql('SHOW STREAMS;')
    names = [s['name'] for s in streams[0]['streams']]
    check('PAGEVIEWS_S' in names, streams)
    created = client.ksql("CREATE TABLE views_per_user AS SELECT userid, COUNT(*) AS n FROM pageviews_s GROUP BY userid EMIT CHANGES;",
                          stream_properties={'ksql.streams.auto.offset.reset': 'earliest'})
    status = created[0]
    check(status['@type'] == 'currentStatus' and status['commandStatus']['status'] == 'SUCCESS', status)
    check(status['commandStatus']['message'].startswith('Created query with ID '), status)
    check(status['commandId'] == 'table/VIEWS_PER_USER/create', status)
    client.ksql("CREATE STREAM gone (a INT) WITH (KAFKA_TOPIC='gone', VALUE_FORMAT='JSON', PARTITIONS=1);")
    dropped = client.ksql('DROP STREAM gone;')[0]
    check(dropped['commandId'] == 'stream/GONE/drop' and dropped['commandStatus']['status'] == 'SUCCESS', dropped)
    # GET /status/<commandId> answers for the commands /ksql ran, 404 otherwise
    got = requests.get(BASE + '/status/table/VIEWS_PER_USER/create')
    check(got.status_code == 200 and got.json()['status'] == 'SUCCESS'
          and got.json()['message'].startswith('Created query with ID '), got.text)
    got = requests.get(BASE + '/status/stream/GONE/drop')
    check(got.status_code == 200 and got.json()['message'] == 'Source `GONE` was dropped.', got.text)
    got = requests.get(BASE + '/status/stream/NEVER_MADE/create')
    check(got.status_code == 404 and got.json()['error_code'] == 40400, got.text)
    queries = client.ksql('SHOW QUERIES;')[0]['queries']
    check(any(q['sinks'] == ['VIEWS_PER_USER'] for q in queries), queries)
    desc = client.ksql('DESCRIBE views_per_user;')[0]['sourceDescription']
    check(desc['type'] == 'TABLE' and [f['name'] for f in desc['fields']] == ['USERID', 'N'], desc)
    check(desc['fields'][0]['type'] == 'PRIMARY_KEY' and desc['writeQueries'], desc)
    props = client.get_properties()
    check(any(x['name'] == 'auto.offset.reset' for x in props), props)
    # ASSERT SCHEMA and ASSERT TOPIC answer ksqlDB's entities, or 417 with what is missing.
    requests.post(BASE + '/subjects/asserted-value/versions', json={'schema': '"string"'}).raise_for_status()
    got = client.ksql("ASSERT SCHEMA SUBJECT 'asserted-value';")[0]
    check(got['@type'] == 'assert_schema' and got['subject'] == 'asserted-value' and got['exists'] is True, got)
    got = client.ksql("ASSERT NOT EXISTS TOPIC nowhere TIMEOUT 100 MILLISECONDS;")[0]
    check(got['@type'] == 'assert_topic' and got['topicName'] == 'nowhere' and got['exists'] is False, got)
    r = requests.post(BASE + '/ksql', json={'ksql': "ASSERT SCHEMA ID 4242 TIMEOUT 100 MILLISECONDS;"})
    check(r.status_code == 417 and r.json()['error_code'] == 41700
          and r.json()['message'] == 'Schema with id 4242 does not exist', r.text)

    # errors: a SELECT on /ksql is 40002; bad SQL is 40001 with the line and column
    try:
        client.ksql('SELECT * FROM pageviews_s;')
        check(False, 'SELECT on /ksql accepted')
    except KSQLError as e:
        check(e.error_code == 40002, e)
    try:
        client.ksql('CREATE STREAM broken (a INT) WITH (KAFKA_TOPIC=;')
        check(False, 'bad SQL accepted')
    except KSQLError as e:
        check(e.error_code == 40001 and str(e.msg).startswith('line 1:'), (e.error_code, e.msg))

    # /query as the CLI and ksql-python read it: a push query with a LIMIT ends by itself
    rows = list(client.query('SELECT userid, page FROM pageviews_s EMIT CHANGES LIMIT 4;',
                             stream_properties={'ksql.streams.auto.offset.reset': 'earliest'}, return_objects=True))
    check(len(rows) == 4 and rows[0] == {'USERID': 'u0', 'PAGE': '/p0'}, rows)
    # a pull query over the table, by key, until its count reaches 3
    deadline = time.time() + 30
    counts = None
    while time.time() < deadline:
        counts = list(client.query("SELECT userid, n FROM views_per_user WHERE userid = 'u1';", return_objects=True))
        if counts == [{'USERID': 'u1', 'N': 3}]:
            break
        time.sleep(0.3)
    check(counts == [{'USERID': 'u1', 'N': 3}], counts)

    # /query-stream over HTTP/2 (prior knowledge): delimited rows, then /close-query ends it
    with httpx.Client(http1=False, http2=True, timeout=30) as h2:
        body = {'sql': 'SELECT userid, page FROM pageviews_s EMIT CHANGES;',
                'properties': {'auto.offset.reset': 'earliest'}}
        with h2.stream('POST', BASE + '/query-stream', json=body) as r:
            check(r.http_version == 'HTTP/2', r.http_version)
            lines = r.iter_lines()
            header = json.loads(next(lines))
            check(header['columnNames'] == ['USERID', 'PAGE'] and header['columnTypes'] == ['STRING', 'STRING'], header)
            first = [json.loads(next(lines)) for _ in range(6)]
            check(first[0] == ['u0', '/p0'] and first[5] == ['u1', '/p5'], first)
            # a record produced now arrives on the open query
            p.produce('pageviews', key='u9', value=json.dumps({'userid': 'u9', 'page': '/live'}))
            p.flush(10)
            check(json.loads(next(lines)) == ['u9', '/live'], 'live row')
            closed = requests.post(BASE + '/close-query', json={'queryId': header['queryId']})
            check(closed.status_code == 200, closed.text)
            rest = list(lines)
            check(rest == [], rest)
        # JSON array shape of a pull query
        r = h2.post(BASE + '/query-stream', headers={'Accept': 'application/json'},
                    json={'sql': 'SELECT userid, n FROM views_per_user;', 'properties': {}})
        arr = r.json()
        known = sorted(row for row in arr[1:] if row[0] in ('u0', 'u1'))
        check(arr[0]['columnNames'] == ['USERID', 'N'] and known == [['u0', 3], ['u1', 3]], arr)
        r = h2.post(BASE + '/query-stream', json={'sql': 'SELEC nothing;', 'properties': {}})
        check(r.status_code == 400 and r.json()['error_code'] == 40001, r.text)
    check(requests.post(BASE + '/close-query', json={'queryId': 'nope'}).status_code == 400, 'unknown query id')

    # A push query ends when its client goes away: SHOW QUERIES stops listing it.
    def push_count():
        return sum(1 for q in client.ksql('SHOW QUERIES;')[0]['queries'] if q['queryType'] == 'PUSH')
    before = push_count()
    with httpx.Client(http2=True, http1=False, timeout=30) as h2:
        body = {'sql': 'SELECT userid, COUNT(*) FROM pageviews_s GROUP BY userid EMIT CHANGES;',
                'properties': {'auto.offset.reset': 'earliest'}}
        with h2.stream('POST', BASE + '/query-stream', json=body) as r:
            next(r.iter_lines())
            check(push_count() == before + 1, 'push query listed while open')
    deadline = time.time() + 20
    while time.time() < deadline and push_count() != before:
        time.sleep(0.2)
    check(push_count() == before, 'push query gone after its client left')

    # /inserts-stream (HTTP/1.1 here): one answer per row, errors by seq
    rows = '{"target":"pageviews_s"}\n{"userid":"u7","page":"/ins"}\n{"nope":1}\n'
    r = requests.post(BASE + '/inserts-stream', data=rows)
    answers = [json.loads(x) for x in r.text.splitlines()]
    check(answers[0] == {'status': 'ok', 'seq': 0} and answers[1]['status'] == 'error' and answers[1]['seq'] == 1, answers)
    msgs = consume_all('pageviews', 8)
    check(json.loads(msgs[-1].value()) == {'userid': 'u7', 'page': '/ins'} or
          any(json.loads(m.value()).get('page') == '/ins' for m in msgs), 'inserted row in the topic')
    print('ksql ok')


def auth():
    user, password = 'eddy', sys.argv[4]
    r = requests.get(BASE + '/topics')
    check(r.status_code == 401 and r.json()['error_code'] == 40101, r.text)
    check(r.headers.get('www-authenticate', '').startswith('Basic'), r.headers)
    check(requests.get(BASE + '/topics', auth=(user, 'wrong')).status_code == 401, 'wrong password')
    check(requests.get(BASE + '/topics', auth=(user, password)).status_code == 200, 'right password')
    KSQLAPI, _ = import_ksql()
    client = KSQLAPI(BASE, api_key=user, secret=password)
    check(client.ksql('SHOW STREAMS;')[0]['@type'] == 'streams', 'ksql with Basic auth')
    # A user without grants on a stream's topic: no produce, no schemas for its subject, no
    # /metrics. (Topics no stream or table is over are open to every user, as over Kafka.)
    client.ksql("CREATE USER reader WITH PASSWORD 'r3ader';")
    client.ksql("CREATE STREAM guarded (a INT) WITH (KAFKA_TOPIC='guarded', VALUE_FORMAT='JSON', PARTITIONS=1);")
    r = requests.post(BASE + '/topics/guarded', auth=('reader', 'r3ader'),
                      headers={'Content-Type': V2_JSON}, data=json.dumps({'records': [{'value': {'a': 1}}]}))
    check(r.status_code == 403 and r.json()['error_code'] == 40301, r.text)
    r = requests.post(BASE + '/topics/guarded', auth=(user, password),
                      headers={'Content-Type': V2_JSON}, data=json.dumps({'records': [{'value': {'a': 1}}]}))
    check(r.status_code == 200, r.text)
    check(requests.get(BASE + '/metrics', auth=('reader', 'r3ader')).status_code == 403, 'metrics for superusers')
    check(requests.get(BASE + '/metrics', auth=(user, password)).status_code == 200, 'metrics for eddy')
    r = requests.post(BASE + '/subjects/guarded-value/versions', auth=('reader', 'r3ader'), json={'schema': '"string"'})
    check(r.status_code == 403, r.text)
    # A consumer instance serves the user who made it; others cannot read through it, and a
    # user reads only topics they may read.
    V2 = 'application/vnd.kafka.v2+json'
    r = requests.post(BASE + '/consumers/g', auth=(user, password), headers={'Content-Type': V2},
                      data=json.dumps({'name': 'mine', 'format': 'json', 'auto.offset.reset': 'earliest'}))
    check(r.status_code == 200, r.text)
    mine = r.json()['base_uri']
    r = requests.post(mine + '/assignments', auth=(user, password), headers={'Content-Type': V2},
                      data=json.dumps({'partitions': [{'topic': 'guarded', 'partition': 0}]}))
    check(r.status_code == 204, r.text)
    r = requests.get(mine + '/records', auth=('reader', 'r3ader'), headers={'Accept': V2_JSON})
    check(r.status_code == 404 and r.json()['error_code'] == 40403, 'another user\'s instance: ' + r.text)
    check(requests.delete(mine, auth=('reader', 'r3ader')).status_code == 404, 'no delete of another user\'s instance')
    got = []
    for _ in range(10):
        got += requests.get(mine + '/records', auth=(user, password), headers={'Accept': V2_JSON}).json()
        if got:
            break
    check([g['value'] for g in got] == [{'a': 1}], got)
    r = requests.post(BASE + '/consumers/g', auth=('reader', 'r3ader'), headers={'Content-Type': V2},
                      data=json.dumps({'name': 'theirs'}))
    theirs = r.json()['base_uri']
    r = requests.post(theirs + '/subscription', auth=('reader', 'r3ader'), headers={'Content-Type': V2},
                      data=json.dumps({'topics': ['guarded']}))
    check(r.status_code == 403, r.text)
    print('auth ok')


def scrape():
    from prometheus_client.parser import text_string_to_metric_families
    r = requests.get(BASE + '/metrics')
    check(r.status_code == 200 and r.headers['content-type'].startswith('text/plain; version=0.0.4'), r.headers)
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def metrics_endpoint():
    import psycopg
    pg_port = sys.argv[4]
    before = scrape()
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    for i in range(10):
        p.produce('metered', key=str(i % 3), value=json.dumps({'k': i % 3}))
    p.produce('metered', value=b'{not json')
    p.flush(10)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE STREAM metered_s (k INT) WITH (KAFKA_TOPIC='metered', VALUE_FORMAT='JSON')")
        conn.execute("SET 'auto.offset.reset' = 'earliest'")
        conn.execute("CREATE TABLE metered_counts AS SELECT k, COUNT(*) AS n FROM metered_s GROUP BY k")
        # a consumer group that read 4 of the 11 records and committed
        c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'dashboards', 'auto.offset.reset': 'earliest',
                      'enable.auto.commit': False})
        c.subscribe(['metered'])
        got = 0
        deadline = time.time() + 30
        while got < 4 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
                if got == 4:
                    c.commit(message=m, asynchronous=False)
        c.close()
        deadline = time.time() + 30
        qid = None
        while True:
            after = scrape()
            qid = next((dict(labels)['query_id'] for (name, labels) in after
                        if name == 'eddy_query_running' and dict(labels)['query_id'].startswith('CTAS_METERED_COUNTS')), None)
            done = value(after, 'eddy_query_processed_records_total', query_id=qid) >= 11
            if done or time.time() > deadline:
                break
            time.sleep(0.3)
        check(value(after, 'eddy_pg_connections') >= 1, 'a Postgres connection is open')
    check(value(after, 'eddy_query_processed_records_total', query_id=qid) == 11, after)
    check(value(after, 'eddy_query_running', query_id=qid) == 1, 'running')
    check(value(after, 'eddy_query_lag_records', query_id=qid) == 0, 'no lag')
    check(value(after, 'eddy_partition_high_watermark', topic='metered', partition='0') == 11, 'high watermark')
    check(value(after, 'eddy_malformed_records_total') == value(before, 'eddy_malformed_records_total') + 1, 'malformed')
    check(value(after, 'eddy_consumer_group_lag', group='dashboards', topic='metered') == 7, 'group lag')
    produced = value(after, 'eddy_kafka_request_duration_seconds_count', api='Produce')
    check(produced > value(before, 'eddy_kafka_request_duration_seconds_count', api='Produce'), 'produce counted')
    check(value(after, 'eddy_kafka_request_duration_seconds_bucket', api='Produce', le='+Inf') == produced, 'buckets')
    check(value(after, 'eddy_kafka_bytes_total', direction='in') > value(before, 'eddy_kafka_bytes_total', direction='in'), 'bytes in')
    check(value(after, 'eddy_checkpoint_duration_seconds_count') > 0, 'checkpoints')
    check(value(after, 'eddy_http_requests_total', code='2xx') > value(before, 'eddy_http_requests_total', code='2xx'), 'http')
    print('metrics ok')


def schema_registry():
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import MessageField, SerializationContext

    sr_url = sys.argv[4] if len(sys.argv) > 4 else BASE
    sr = SchemaRegistryClient({'url': BASE})
    v1 = json.dumps({'type': 'record', 'name': 'User', 'namespace': 'demo',
                     'fields': [{'name': 'name', 'type': 'string'}, {'name': 'visits', 'type': 'long'}]})
    v2 = json.dumps({'type': 'record', 'name': 'User', 'namespace': 'demo',
                     'fields': [{'name': 'name', 'type': 'string'}, {'name': 'visits', 'type': 'long'},
                                {'name': 'country', 'type': 'string', 'default': 'NL'}]})
    bad = json.dumps({'type': 'record', 'name': 'User', 'namespace': 'demo',
                      'fields': [{'name': 'name', 'type': 'string'}, {'name': 'visits', 'type': 'long'},
                                 {'name': 'email', 'type': 'string'}]})

    # AvroSerializer registers the schema on its first message (auto-register), then the
    # records carry Confluent's framing: magic byte, schema id, Avro body.
    ser = AvroSerializer(sr, v1)
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    users = [{'name': 'ada', 'visits': 3}, {'name': 'bob', 'visits': 5}]
    for u in users:
        p.produce('users', key=u['name'], value=ser(u, SerializationContext('users', MessageField.VALUE)))
    p.flush(10)
    latest = sr.get_latest_version('users-value')
    check(latest.version == 1 and latest.schema.schema_type == 'AVRO', latest)
    msgs = consume_all('users', 2)
    check(msgs[0].value()[0] == 0 and int.from_bytes(msgs[0].value()[1:5], 'big') == latest.schema_id, 'framing')
    de = AvroDeserializer(sr)
    got = [de(m.value(), SerializationContext('users', MessageField.VALUE)) for m in msgs]
    check(got == users, got)

    # Evolution under BACKWARD (the default): a field with a default is fine, one without
    # is refused with 409 and the reason.
    check(sr.get_compatibility() == 'BACKWARD', 'default level')
    check(sr.test_compatibility('users-value', Schema(v2, 'AVRO')) is True, 'v2 compatible')
    check(sr.test_compatibility('users-value', Schema(bad, 'AVRO')) is False, 'bad incompatible')
    id2 = sr.register_schema('users-value', Schema(v2, 'AVRO'))
    check(id2 != latest.schema_id and sr.get_versions('users-value') == [1, 2], 'v2 registered')
    check(sr.register_schema('users-value', Schema(v2, 'AVRO')) == id2, 'idempotent')
    try:
        sr.register_schema('users-value', Schema(bad, 'AVRO'))
        check(False, 'incompatible schema registered')
    except SchemaRegistryError as e:
        check(e.http_status_code == 409 and 'users-value' in e.error_message and 'email' in e.error_message,
              (e.http_status_code, e.error_message))
    # A reader on v2 reads v1's records, the new field taking its default.
    de2 = AvroDeserializer(sr, v2)
    check(de2(msgs[0].value(), SerializationContext('users', MessageField.VALUE)) ==
          {'name': 'ada', 'visits': 3, 'country': 'NL'}, 'resolution')
    # The same schema under another subject has the same id.
    check(sr.register_schema('archive-value', Schema(v1, 'AVRO')) == latest.schema_id, 'same id')
    found = sr.lookup_schema('users-value', Schema(v2, 'AVRO'))
    check(found.version == 2 and found.schema_id == id2, found)
    check(requests.get(BASE + '/schemas/types').json() == ['JSON', 'PROTOBUF', 'AVRO'], 'types')
    check(requests.get(f'{BASE}/schemas/ids/{id2}/versions').json() == [{'subject': 'users-value', 'version': 2}], 'usages')
    # levels
    check(sr.set_compatibility('users-value', 'NONE') == {'compatibility': 'NONE'}, 'set level')
    sr.register_schema('users-value', Schema(bad, 'AVRO'))
    check(requests.get(BASE + '/config/users-value').json() == {'compatibilityLevel': 'NONE'}, 'subject level')
    r = requests.put(BASE + '/config', json={'compatibility': 'SOMETIMES'})
    check(r.status_code == 422 and r.json()['error_code'] == 42203, r.text)
    # JSON Schema and Protobuf schemas register too
    js = sr.register_schema('orders-value', Schema('{"type": "object", "properties": {"id": {"type": "integer"}}}', 'JSON'))
    check(sr.get_schema(js).schema_type == 'JSON', 'json schema')
    # ... and evolve by Confluent's rules: a changed property type is refused with its
    # errorType and path; a removed property of an open model is fine.
    changed = Schema('{"type": "object", "properties": {"id": {"type": "string"}}}', 'JSON')
    check(sr.test_compatibility('orders-value', changed) is False, 'json type change incompatible')
    try:
        sr.register_schema('orders-value', changed)
        check(False, 'incompatible JSON Schema registered')
    except SchemaRegistryError as e:
        check(e.http_status_code == 409 and 'TYPE_CHANGED' in e.error_message and '#/properties/id' in e.error_message,
              (e.http_status_code, e.error_message))
    check(sr.test_compatibility('orders-value', Schema('{"type": "object", "properties": {}}', 'JSON')) is True,
          'json property removed from an open model')
    pb1 = 'syntax = "proto3";\npackage shop;\nmessage Order { int64 id = 1; string item = 2; }\n'
    sr.register_schema('orders_pb-value', Schema(pb1, 'PROTOBUF'))
    pb_ok = 'syntax = "proto3";\npackage shop;\nmessage Order { int64 id = 1; double price = 3; }\n'
    pb_bad = 'syntax = "proto3";\npackage shop;\nmessage Order { double id = 1; string item = 2; }\n'
    check(sr.test_compatibility('orders_pb-value', Schema(pb_ok, 'PROTOBUF')) is True, 'protobuf field added and removed')
    try:
        sr.register_schema('orders_pb-value', Schema(pb_bad, 'PROTOBUF'))
        check(False, 'incompatible Protobuf schema registered')
    except SchemaRegistryError as e:
        check(e.http_status_code == 409 and 'FIELD_SCALAR_KIND_CHANGED' in e.error_message, (e.http_status_code, e.error_message))
    # errors with Confluent's codes
    r = requests.get(BASE + '/subjects/nope/versions/1')
    check(r.status_code == 404 and r.json()['error_code'] == 40401, r.text)
    r = requests.get(BASE + '/subjects/users-value/versions/9')
    check(r.status_code == 404 and r.json()['error_code'] == 40402, r.text)
    r = requests.get(BASE + '/schemas/ids/999')
    check(r.status_code == 404 and r.json()['error_code'] == 40403, r.text)
    r = requests.post(BASE + '/subjects/x-value/versions', json={'schema': '{"type": "recrd"}'})
    check(r.status_code == 422 and r.json()['error_code'] == 42201, r.text)
    # soft, then permanent deletes
    r = requests.delete(BASE + '/subjects/archive-value?permanent=true')
    check(r.status_code == 404 and r.json()['error_code'] == 40405, r.text)
    check(sr.delete_subject('archive-value') == [1], 'soft delete')
    check('archive-value' not in sr.get_subjects(), 'soft deleted subject hidden')
    check('archive-value' in requests.get(BASE + '/subjects?deleted=true').json(), 'listed with deleted=true')
    check(sr.delete_subject('archive-value', permanent=True) == [1], 'permanent delete')
    check('archive-value' not in requests.get(BASE + '/subjects?deleted=true').json(), 'gone')
    if sr_url != BASE:
        # The registry's own port answers the registry, and nothing else.
        check('users-value' in requests.get(sr_url + '/subjects').json(), 'second port')
        check(requests.get(sr_url + '/topics').status_code == 404, 'only the registry there')
    print('registry ok')


def registry_after_restart():
    from confluent_kafka.schema_registry import SchemaRegistryClient
    sr = SchemaRegistryClient({'url': BASE})
    check(sr.get_versions('users-value') == [1, 2, 3], 'versions survive a restart')
    check(sr.get_compatibility('users-value') == 'NONE', 'levels survive a restart')
    print('registry after restart ok')


def avro_format():
    import psycopg
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    pg_port = sys.argv[4]
    sr = SchemaRegistryClient({'url': BASE})
    schema = json.dumps({'type': 'record', 'name': 'Order', 'namespace': 'shop', 'fields': [
        {'name': 'id', 'type': 'long'},
        {'name': 'customer', 'type': 'string'},
        {'name': 'amount', 'type': {'type': 'bytes', 'logicalType': 'decimal', 'precision': 10, 'scale': 2}},
        {'name': 'placed', 'type': {'type': 'long', 'logicalType': 'timestamp-millis'}},
        {'name': 'note', 'type': ['null', 'string'], 'default': None},
        {'name': 'tags', 'type': {'type': 'array', 'items': 'string'}},
        {'name': 'address', 'type': {'type': 'record', 'name': 'Address', 'fields': [
            {'name': 'city', 'type': 'string'}, {'name': 'zip', 'type': 'int'}]}},
        {'name': 'status', 'type': {'type': 'enum', 'name': 'Status', 'symbols': ['NEW', 'PAID']}},
    ]})
    from decimal import Decimal
    from datetime import datetime, timezone
    ser = AvroSerializer(sr, schema)
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    orders = [
        {'id': 1, 'customer': 'ada', 'amount': Decimal('10.25'), 'placed': datetime(2026, 1, 2, tzinfo=timezone.utc),
         'note': None, 'tags': ['a', 'b'], 'address': {'city': 'Delft', 'zip': 2611}, 'status': 'NEW'},
        {'id': 2, 'customer': 'bob', 'amount': Decimal('-3.10'), 'placed': datetime(2026, 1, 3, tzinfo=timezone.utc),
         'note': 'gift', 'tags': [], 'address': {'city': 'Gouda', 'zip': 2801}, 'status': 'PAID'},
        {'id': 3, 'customer': 'ada', 'amount': Decimal('5.00'), 'placed': datetime(2026, 1, 4, tzinfo=timezone.utc),
         'note': None, 'tags': ['c'], 'address': {'city': 'Delft', 'zip': 2611}, 'status': 'PAID'},
    ]
    for o in orders:
        p.produce('orders_avro', key=str(o['id']), value=ser(o, SerializationContext('orders_avro', MessageField.VALUE)))
    # A record that is not Avro at all, and one with an unknown schema id: logged and skipped.
    p.produce('orders_avro', value=b'{"id": 4}')
    p.produce('orders_avro', value=b'\x00\x00\x00\x03\xe7\x02')
    p.flush(10)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        # No columns: they come from the subject orders_avro-value.
        conn.execute("CREATE STREAM orders WITH (KAFKA_TOPIC='orders_avro', VALUE_FORMAT='AVRO')")
        cols = conn.execute("DESCRIBE orders").fetchall()
        names = [c[0] for c in cols]
        check(names[:8] == ['id', 'customer', 'amount', 'placed', 'note', 'tags', 'address', 'status'], cols)
        rows = conn.execute("SELECT id, customer, amount, note, tags, address->city, status, placed FROM orders ORDER BY id").fetchall()
        check(len(rows) == 3, rows)
        check(rows[0][:4] == (1, 'ada', Decimal('10.25'), None) and rows[1][2] == Decimal('-3.10') and rows[1][3] == 'gift', rows)
        check(rows[0][5] == 'Delft' and rows[1][6] == 'PAID', rows)
        # A query writing AVRO registers its output schema under {topic}-value.
        conn.execute("SET 'auto.offset.reset' = 'earliest'")
        conn.execute("CREATE TABLE spend WITH (KAFKA_TOPIC='spend', VALUE_FORMAT='AVRO') AS "
                     "SELECT customer, SUM(amount) AS total, COUNT(*) AS n FROM orders GROUP BY customer")
        conn.execute("CREATE STREAM big WITH (KAFKA_TOPIC='big', VALUE_FORMAT='AVRO') AS "
                     "SELECT id, customer, amount, address FROM orders WHERE amount > 1")
        # The persistent queries log the two bad records, with why, and go on.
        deadline = time.time() + 30
        while True:
            errors = [r[0] for r in conn.execute("SELECT error FROM eddy_processing_log").fetchall()]
            if len(errors) >= 4 or time.time() > deadline:
                break
            time.sleep(0.3)
        check(any('magic byte' in e for e in errors) and any('schema id 999' in e for e in errors), errors)
        # A column declared DECIMAL(10, 4) over the producer's decimal(10, 2): read and written
        # at the schema's scale.
        conn.execute("CREATE STREAM orders4 (id BIGINT, amount DECIMAL(10, 4)) WITH (KAFKA_TOPIC='orders_avro', VALUE_FORMAT='AVRO')")
        amounts = conn.execute("SELECT amount FROM orders4 ORDER BY id").fetchall()
        check([a[0] for a in amounts] == [Decimal('10.25'), Decimal('-3.10'), Decimal('5.00')], amounts)
        # INSERT ... SELECT into a stream whose schema a producer made is refused, not half done.
        try:
            conn.execute("INSERT INTO orders4 SELECT id, amount FROM orders")
            check(False, 'INSERT ... SELECT into a producer-schema stream accepted')
        except psycopg.Error as e:
            check(e.sqlstate == '0A000' and 'came from a producer' in str(e), (e.sqlstate, str(e)))
    latest = sr.get_latest_version('spend-value')
    check('KsqlDataSourceSchema' in latest.schema.schema_str and 'TOTAL' in latest.schema.schema_str, latest.schema.schema_str)
    de = AvroDeserializer(sr)
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'avro-check', 'auto.offset.reset': 'earliest'})
    c.subscribe(['spend', 'big'])
    spend, big = {}, []
    deadline = time.time() + 30
    while time.time() < deadline and (len(big) < 2 or spend.get('ada', {}).get('N') != 2):
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        v = de(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
        if m.topic() == 'spend':
            spend[m.key().decode()] = v
        else:
            big.append(v)
    c.close()
    check(spend.get('ada') == {'TOTAL': Decimal('15.25'), 'N': 2}, spend)
    check(sorted(b['ID'] for b in big) == [1, 3] and big[0]['ADDRESS']['city'] == 'Delft', big)
    print('avro ok')


def tls():
    """With --tls-cert and passwords: HTTPS only, HTTP/2 by ALPN, Basic credentials required."""
    password, cert = sys.argv[4], sys.argv[5]
    check(BASE.startswith('https://'), BASE)
    r = requests.get(BASE + '/info', verify=cert, auth=('eddy', password))
    check(r.status_code == 200 and r.json()['KsqlServerInfo']['serverStatus'] == 'RUNNING', r.text)
    check(requests.get(BASE + '/brokers', verify=cert).status_code == 401, 'credentials required')
    with httpx.Client(http2=True, verify=cert, auth=('eddy', password)) as client:
        r = client.get(BASE + '/brokers')
        check(r.status_code == 200 and r.http_version == 'HTTP/2', (r.status_code, r.http_version))
    try:
        requests.get(BASE.replace('https://', 'http://') + '/info', timeout=5)
        check(False, 'plain HTTP answered on the TLS port')
    except requests.exceptions.RequestException:
        pass
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    sr = SchemaRegistryClient({'url': BASE, 'basic.auth.user.info': 'eddy:' + password, 'ssl.ca.location': cert})
    sid = sr.register_schema('tls-value', Schema('"string"', 'AVRO'))
    check(sr.get_schema(sid).schema_str == '"string"', 'registry over TLS')
    print('tls ok')


{'rest': rest_proxy, 'tls': tls, 'rest-big': rest_big, 'ksql': ksql_api, 'auth': auth, 'metrics': metrics_endpoint, 'avro': avro_format,
 'registry': schema_registry, 'registry-restart': registry_after_restart}[MODE]()
