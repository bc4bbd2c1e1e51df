"""Produce and consume throughput through a librdkafka client (confluent-kafka), acks=all.

Usage: python3 benches/kafka_produce_consume.py BOOTSTRAP RECORD_BYTES RECORDS [TOPIC]
Prints one line: records/s and MB/s for produce and consume, p50/p99 produce latency
(from produce() to the delivery report). Run it against Eddy and against a peer broker on
the same machine; see benches/RESULTS.md.
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
topic = sys.argv[4] if len(sys.argv) > 4 else f'bench-{size}-{int(time.time())}'
PARTITIONS = 3

admin = AdminClient({'bootstrap.servers': bootstrap})
try:
    for f in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
        f.result()
except Exception as e:  # noqa: BLE001 - an existing topic is fine
    print(f'create topic: {e}', file=sys.stderr)

payload = b'x' * size
latencies = []
sent_at = {}
p = Producer({'bootstrap.servers': bootstrap, 'acks': 'all', 'linger.ms': 5,
              'queue.buffering.max.messages': 1_000_000, 'batch.num.messages': 10_000})


def report(err, msg, t0=None):
    if err is not None:
        raise SystemExit(f'delivery failed: {err}')


start = time.perf_counter()
for i in range(count):
    t0 = time.perf_counter()
    while True:
        try:
            p.produce(topic, payload, partition=i % PARTITIONS,
                      on_delivery=lambda err, msg, t0=t0: (report(err, msg), latencies.append(time.perf_counter() - t0)))
            break
        except BufferError:
            p.poll(0.01)
    if i % 1000 == 0:
        p.poll(0)
p.flush(120)
produce_s = time.perf_counter() - start

c = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'bench-{time.time()}', 'enable.auto.commit': False,
              'fetch.max.bytes': 52428800, 'queued.max.messages.kbytes': 262144})
c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
got = 0
start = time.perf_counter()
while got < count:
    msgs = c.consume(10000, timeout=5.0)
    if not msgs:
        break
    got += sum(1 for m in msgs if not m.error())
consume_s = time.perf_counter() - start
c.close()

latencies.sort()
pct = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000  # noqa: E731
mb = count * size / 1e6
print(f'{size} B x {count}: produce {count / produce_s:,.0f} rec/s {mb / produce_s:.1f} MB/s '
      f'p50 {pct(0.5):.1f} ms p99 {pct(0.99):.1f} ms | consume {got / consume_s:,.0f} rec/s {got * size / 1e6 / consume_s:.1f} MB/s')
