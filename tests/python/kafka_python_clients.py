"""kafka-python (an independent pure-Python client): producer, group consumer, commit."""
import sys

from kafka import KafkaConsumer, KafkaProducer

BOOTSTRAP = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks='all', compression_type='gzip')
futures = [producer.send('kp-topic', key=f'k{i}'.encode(), value=f'value-{i}'.encode(),
                         headers=[('h', b'1')]) for i in range(30)]
offsets = [f.get(timeout=30).offset for f in futures]
assert offsets == list(range(30)), offsets
producer.close()

consumer = KafkaConsumer('kp-topic', bootstrap_servers=BOOTSTRAP, group_id='kp-group',
                         auto_offset_reset='earliest', enable_auto_commit=False,
                         consumer_timeout_ms=15000)
values = []
for msg in consumer:
    values.append(msg.value.decode())
    assert msg.headers == [('h', b'1')], msg.headers
    if len(values) == 30:
        break
consumer.commit()
consumer.close()
assert values == [f'value-{i}' for i in range(30)], values
print('kafka-python ok')
