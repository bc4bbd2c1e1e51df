"""Rebalances with librdkafka: a member that dies without leaving is dropped after its session
timeout and its partitions move to the survivor; the cooperative-sticky assignor passes through."""
import multiprocessing
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
CONF = {'bootstrap.servers': BOOTSTRAP, 'group.id': 'rebalancers', 'auto.offset.reset': 'earliest',
        'session.timeout.ms': 6000, 'heartbeat.interval.ms': 500,
        'partition.assignment.strategy': 'cooperative-sticky'}


def doomed_member(ready):
    c = Consumer(CONF)
    c.subscribe(['shared'])
    while True:
        c.poll(0.2)
        if c.assignment():
            ready.set()


if __name__ == '__main__':
    admin = AdminClient({'bootstrap.servers': BOOTSTRAP})
    for f in admin.create_topics([NewTopic('shared', num_partitions=4, replication_factor=1)]).values():
        f.result()
    ready = multiprocessing.Event()
    child = multiprocessing.Process(target=doomed_member, args=(ready,))
    child.start()
    survivor = Consumer(CONF)
    survivor.subscribe(['shared'])
    deadline = time.time() + 60
    while time.time() < deadline and not (ready.is_set() and len(survivor.assignment()) == 2):
        survivor.poll(0.2)
    assert ready.is_set() and len(survivor.assignment()) == 2, survivor.assignment()
    child.kill()  # no LeaveGroup: only the session timeout can notice
    child.join()
    deadline = time.time() + 60
    while time.time() < deadline and len(survivor.assignment()) != 4:
        survivor.poll(0.2)
    assert len(survivor.assignment()) == 4, survivor.assignment()
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    for i in range(4):
        p.produce('shared', value=f'v{i}', partition=i)
    p.flush(10)
    got = set()
    deadline = time.time() + 30
    while time.time() < deadline and len(got) < 4:
        m = survivor.poll(0.2)
        if m is not None and not m.error():
            got.add(m.partition())
    survivor.close()
    assert got == {0, 1, 2, 3}, got
    print('rebalance ok')
