"""SASL on the Kafka listener: PLAIN and SCRAM-SHA-256/512 with librdkafka (confluent-kafka)
and PLAIN with kafka-python; a wrong password and no SASL at all are refused."""
import sys

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

BOOTSTRAP = sys.argv[1]


def conf(mechanism, password):
    return {'bootstrap.servers': BOOTSTRAP, 'security.protocol': 'SASL_PLAINTEXT', 'sasl.mechanisms': mechanism,
            'sasl.username': 'alice', 'sasl.password': password}


for mechanism in ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512']:
    delivered = []
    p = Producer(dict(conf(mechanism, 's3cret'), **{'message.timeout.ms': 10000}))
    p.produce('secured', value=mechanism.encode(), on_delivery=lambda err, msg: delivered.append(err))
    p.flush(15)
    assert delivered == [None], (mechanism, delivered)
    # The wrong password gets nowhere.
    try:
        AdminClient(conf(mechanism, 'wrong')).list_topics(timeout=5)
        raise SystemExit(f'{mechanism}: wrong password was accepted')
    except KafkaException as e:
        print(f'{mechanism} wrong password refused: {e}')

# Without SASL, nothing but the handshake is answered.
try:
    AdminClient({'bootstrap.servers': BOOTSTRAP}).list_topics(timeout=5)
    raise SystemExit('a client without SASL was served')
except KafkaException as e:
    print(f'plaintext refused: {e}')

from kafka import KafkaProducer  # noqa: E402

kp = KafkaProducer(bootstrap_servers=BOOTSTRAP, security_protocol='SASL_PLAINTEXT', sasl_mechanism='PLAIN',
                   sasl_plain_username='alice', sasl_plain_password='s3cret')
assert kp.send('secured', b'kafka-python').get(timeout=15).offset == 3
kp.close()
print('sasl ok')
