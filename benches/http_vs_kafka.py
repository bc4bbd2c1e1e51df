"""Produce over HTTP beside produce over Kafka, and Avro decode beside JSON decode, on one
running server (benches/RESULTS.md has the command and the figures).

    python3 benches/http_vs_kafka.py HTTP_BASE KAFKA_BOOTSTRAP PG_PORT [RECORDS]

1. The same RECORDS JSON values (about 100 bytes each) produced three ways to fresh topics:
   confluent-kafka (librdkafka, acks=all), REST Proxy v2 (1,000 records per request, one
   connection), REST Proxy v3 streamed (one record per JSON object on one chunked request;
   each is its own append, so this runs on a tenth of the records).
2. RECORDS rows produced as JSON, as Confluent-framed Avro (confluent-kafka's
   AvroSerializer) and as JSON_SR (framed JSON); then one persistent query over each (`CREATE STREAM ... AS SELECT` with a
   filter), timed from creation until /metrics says it has processed every record.
"""
import json
import sys
import time

import httpx
import psycopg
import requests
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

BASE, BOOTSTRAP, PG_PORT = sys.argv[1], sys.argv[2], sys.argv[3]
N = int(sys.argv[4]) if len(sys.argv) > 4 else 200_000
RUN = str(int(time.time()))


def value(i):
    return {'id': i, 'usr': f'user{i % 1000}', 'page': f'/p/{i % 97}', 'amount': i % 500, 'ok': i % 3 == 0}


def rate(label, n, seconds):
    print(f'{label:<44} {n:>9} records {seconds:8.2f} s {n / seconds:>12,.0f} records/s')
    return n / seconds


def kafka_produce(topic, n):
    p = Producer({'bootstrap.servers': BOOTSTRAP, 'acks': 'all', 'linger.ms': 5, 'batch.num.messages': 10000})
    payloads = [json.dumps(value(i)).encode() for i in range(n)]
    t = time.perf_counter()
    for i, v in enumerate(payloads):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=v)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    return time.perf_counter() - t


def http_v2_produce(topic, n, per_request=1000):
    bodies = [json.dumps({'records': [{'key': str(i), 'value': value(i)} for i in range(s, min(s + per_request, n))]})
              for s in range(0, n, per_request)]
    session = requests.Session()
    headers = {'Content-Type': 'application/vnd.kafka.json.v2+json'}
    t = time.perf_counter()
    for body in bodies:
        r = session.post(f'{BASE}/topics/{topic}', data=body, headers=headers)
        assert r.status_code == 200, r.text
    return time.perf_counter() - t


def http_v3_stream(topic, n):
    requests.post(f'{BASE}/v3/clusters/eddy/topics', json={'topic_name': topic, 'partitions_count': 1})
    chunks = [json.dumps({'key': {'type': 'STRING', 'data': str(i)}, 'value': {'type': 'JSON', 'data': value(i)}}).encode()
              for i in range(n)]
    t = time.perf_counter()
    with httpx.Client(timeout=600) as c:
        r = c.post(f'{BASE}/v3/clusters/eddy/topics/{topic}/records', content=iter(chunks),
                   headers={'Content-Type': 'application/json'})
        answers = r.text.count('"error_code":200')
    assert answers == n, (answers, r.text[:300])
    return time.perf_counter() - t


def processed(query_prefix):
    text = requests.get(f'{BASE}/metrics').text
    for line in text.splitlines():
        if line.startswith('eddy_query_processed_records_total{') and f'query_id="{query_prefix}' in line:
            return int(float(line.rsplit(' ', 1)[1]))
    return 0


def decode_run(conn, fmt, topic, n):
    name = f'{fmt.lower()}_in_{RUN}'
    if fmt in ('AVRO', 'JSON_SR'):
        conn.execute(f"CREATE STREAM {name} WITH (KAFKA_TOPIC='{topic}', VALUE_FORMAT='{fmt}')")
    else:
        conn.execute(f"CREATE STREAM {name} (id BIGINT, usr STRING, page STRING, amount BIGINT, ok BOOLEAN) "
                     f"WITH (KAFKA_TOPIC='{topic}', VALUE_FORMAT='JSON')")
    out = f'{fmt.lower()}_out_{RUN}'
    t = time.perf_counter()
    conn.execute(f"CREATE STREAM {out} AS SELECT id, usr, amount FROM {name} WHERE amount > 250")
    query = f'CSAS_{out.upper()}'
    while processed(query) < n:
        time.sleep(0.05)
    return time.perf_counter() - t


def main():
    print(f'{N} records; server {BASE}, {BOOTSTRAP}')
    kafka = rate('produce: Kafka (librdkafka, acks=all)', N, kafka_produce(f'bench_kafka_{RUN}', N))
    v2 = rate('produce: REST Proxy v2 (1,000 per request)', N, http_v2_produce(f'bench_v2_{RUN}', N))
    n3 = max(N // 10, 1)
    v3 = rate('produce: REST Proxy v3 streamed (one append each)', n3, http_v3_stream(f'bench_v3_{RUN}', n3))
    print(f'ratio REST v2 / Kafka: {v2 / kafka:.2f}; REST v3 streamed / Kafka: {v3 / kafka:.3f}')

    sr = SchemaRegistryClient({'url': BASE})
    schema = json.dumps({'type': 'record', 'name': 'PageView', 'fields': [
        {'name': 'id', 'type': 'long'}, {'name': 'usr', 'type': 'string'}, {'name': 'page', 'type': 'string'},
        {'name': 'amount', 'type': 'long'}, {'name': 'ok', 'type': 'boolean'}]})
    avro_topic, json_topic, sr_topic = f'bench_avro_{RUN}', f'bench_json_{RUN}', f'bench_jsonsr_{RUN}'
    ser = AvroSerializer(sr, schema)
    from confluent_kafka.schema_registry import Schema
    json_schema = json.dumps({'type': 'object', 'properties': {
        'id': {'type': 'integer'}, 'usr': {'type': 'string'}, 'page': {'type': 'string'},
        'amount': {'type': 'integer'}, 'ok': {'type': 'boolean'}}})
    frame = b'\x00' + sr.register_schema(f'{sr_topic}-value', Schema(json_schema, 'JSON')).to_bytes(4, 'big')
    p = Producer({'bootstrap.servers': BOOTSTRAP, 'linger.ms': 5, 'batch.num.messages': 10000})
    ctx = SerializationContext(avro_topic, MessageField.VALUE)
    for i in range(N):
        while True:
            try:
                p.produce(avro_topic, value=ser(value(i), ctx))
                p.produce(json_topic, value=json.dumps(value(i)).encode())
                p.produce(sr_topic, value=frame + json.dumps(value(i)).encode())
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    with psycopg.connect(f'host=127.0.0.1 port={PG_PORT} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("SET 'auto.offset.reset' = 'earliest'")
        j = rate('decode: JSON values, filter + project query', N, decode_run(conn, 'JSON', json_topic, N))
        a = rate('decode: AVRO values, filter + project query', N, decode_run(conn, 'AVRO', avro_topic, N))
        js = rate('decode: JSON_SR values, filter + project query', N, decode_run(conn, 'JSON_SR', sr_topic, N))
    print(f'ratio AVRO / JSON decode: {a / j:.2f}; JSON_SR / JSON: {js / j:.2f}')


main()
