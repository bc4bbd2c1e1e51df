"""librdkafka through confluent-kafka: every codec, headers and timestamps round-trip,
an idempotent producer, a two-member group splitting four partitions, commits that
survive a server restart (argv[2] == 'resume'), and admin create/delete topic."""
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
MODE = sys.argv[2]


def consume(group, topics, want, timeout=40, extra=None):
    conf = {'bootstrap.servers': BOOTSTRAP, 'group.id': group, 'auto.offset.reset': 'earliest',
            'enable.auto.commit': False}
    conf.update(extra or {})
    c = Consumer(conf)
    c.subscribe(topics)
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline and len(out) < want:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append(m)
    c.commit(asynchronous=False) if out else None
    c.close()
    return out


if MODE == 'codecs':
    admin = AdminClient({'bootstrap.servers': BOOTSTRAP})
    fs = admin.create_topics([NewTopic('codecs', num_partitions=1, replication_factor=1)])
    for f in fs.values():
        f.result()
    for codec in ['none', 'gzip', 'snappy', 'lz4', 'zstd']:
        p = Producer({'bootstrap.servers': BOOTSTRAP, 'compression.type': codec, 'enable.idempotence': True,
                      'linger.ms': 5})
        for i in range(20):
            p.produce('codecs', key=f'{codec}-{i}', value=('{"codec":"%s","n":%d,"pad":"%s"}' % (codec, i, 'x' * 200)),
                      headers=[('codec', codec.encode()), ('i', str(i).encode())], timestamp=1_700_000_000_000 + i)
        assert p.flush(30) == 0
    msgs = consume('codec-reader', ['codecs'], 100)
    assert len(msgs) == 100, len(msgs)
    for m in msgs:
        codec, i = m.key().decode().split('-')
        assert dict(m.headers()) == {'codec': codec.encode(), 'i': i.encode()}, m.headers()
        assert m.timestamp()[1] == 1_700_000_000_000 + int(i), m.timestamp()
    # Admin: create and delete a topic.
    fs = admin.create_topics([NewTopic('scratch', num_partitions=3, replication_factor=1)])
    for f in fs.values():
        f.result()
    md = admin.list_topics(timeout=10)
    assert len(md.topics['scratch'].partitions) == 3
    for f in admin.delete_topics(['scratch']).values():
        f.result()
    assert 'scratch' not in admin.list_topics(timeout=10).topics
    print('codecs ok')

elif MODE == 'group':
    admin = AdminClient({'bootstrap.servers': BOOTSTRAP})
    for f in admin.create_topics([NewTopic('events', num_partitions=4, replication_factor=1)]).values():
        f.result()
    p = Producer({'bootstrap.servers': BOOTSTRAP, 'enable.idempotence': True})
    for i in range(200):
        p.produce('events', key=f'k{i}', value=f'v{i}')
    assert p.flush(30) == 0
    # Two members of one group split the four partitions.
    conf = {'bootstrap.servers': BOOTSTRAP, 'group.id': 'splitters', 'auto.offset.reset': 'earliest',
            'enable.auto.commit': False}
    a, b = Consumer(conf), Consumer(conf)
    a.subscribe(['events'])
    b.subscribe(['events'])
    seen = {}
    deadline = time.time() + 60
    while time.time() < deadline and len(seen) < 200:
        for c, name in ((a, 'a'), (b, 'b')):
            m = c.poll(0.2)
            if m is not None and not m.error():
                seen[m.value()] = (name, m.partition())
    parts_a = {p for (n, p) in seen.values() if n == 'a'}
    parts_b = {p for (n, p) in seen.values() if n == 'b'}
    assert len(seen) == 200, len(seen)
    assert parts_a and parts_b and not (parts_a & parts_b), (parts_a, parts_b)
    assert len(a.assignment()) == 2 and len(b.assignment()) == 2, (a.assignment(), b.assignment())
    # Commit half of partition 0 explicitly.
    a.close()
    b.close()
    c = Consumer(conf)
    c.assign([TopicPartition('events', 0, 0)])
    c.commit(offsets=[TopicPartition('events', 0, 7)], asynchronous=False)
    c.close()
    print('group ok')

elif MODE == 'resume':
    conf = {'bootstrap.servers': BOOTSTRAP, 'group.id': 'splitters', 'auto.offset.reset': 'earliest'}
    c = Consumer(conf)
    committed = c.committed([TopicPartition('events', 0)], timeout=10)
    assert committed[0].offset == 7, committed
    c.assign([TopicPartition('events', 0, committed[0].offset)])
    m = None
    deadline = time.time() + 20
    while m is None and time.time() < deadline:
        m = c.poll(0.5)
    assert m is not None and not m.error() and m.offset() == 7, m
    c.close()
    print('resume ok')

elif MODE == 'too-large':
    errors = []
    p = Producer({'bootstrap.servers': BOOTSTRAP, 'message.max.bytes': 5_000_000})
    p.produce('big', value=b'x' * 2_000_000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors
    print('too-large ok')
