"""The overview's confluent-kafka producer and consumer example, unchanged but for the
address (argv[1]) and a bounded poll loop so the test ends."""
import sys
import time

from confluent_kafka import Producer, Consumer

BOOTSTRAP = sys.argv[1]
delivered = []

# Producer
producer = Producer({'bootstrap.servers': BOOTSTRAP})
def delivery_report(err, msg):
    if err:
        print(f'Delivery failed: {err}')
    else:
        print(f'Delivered to {msg.topic()} [{msg.partition()}] at offset {msg.offset()}')
        delivered.append(msg.offset())
producer.produce('orders', key='order-1', value='{"item":"Widget","qty":3}',
                 callback=delivery_report)
producer.flush()  # block until all messages are sent
assert delivered == [0], delivered

# Consumer
consumer = Consumer({
    'bootstrap.servers': BOOTSTRAP,
    'group.id': 'order-processor',
    'auto.offset.reset': 'earliest'
})
consumer.subscribe(['orders'])
received = []
deadline = time.time() + 30
try:
    while time.time() < deadline and not received:
        msg = consumer.poll(timeout=1.0)
        if msg is None:
            continue
        if msg.error():
            print(f'Error: {msg.error()}')
        else:
            print(f'Received: {msg.value().decode()} from partition {msg.partition()}')
            received.append((msg.key(), msg.value()))
finally:
    consumer.close()
assert received == [(b'order-1', b'{"item":"Widget","qty":3}')], received
