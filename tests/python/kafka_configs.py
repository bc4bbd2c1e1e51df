"""Kafka's AlterConfigs and IncrementalAlterConfigs (what kafka-configs --alter sends) against a
table's topic, with librdkafka through confluent-kafka: settings change, but a table's topic
stays compacted (POLICY_VIOLATION). Usage: kafka_configs.py BOOTSTRAP TOPIC."""
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

BOOTSTRAP, TOPIC = sys.argv[1:3]
admin = AdminClient({'bootstrap.servers': BOOTSTRAP})


def outcome(futures):
    for f in futures.values():
        try:
            f.result(timeout=10)
            return 'ok'
        except KafkaException as e:
            return e.args[0].name()


def incremental(**settings):
    entries = [ConfigEntry(k.replace('_', '.'), v, incremental_operation=AlterConfigOpType.SET)
               for k, v in settings.items()]
    return outcome(admin.incremental_alter_configs([ConfigResource('topic', TOPIC, incremental_configs=entries)]))


def configs():
    f = admin.describe_configs([ConfigResource('topic', TOPIC)])
    return {c.name: c.value for c in list(f.values())[0].result(timeout=10).values()}


# The legacy AlterConfigs resets what it does not name: cleanup.policy back to delete. Refused.
legacy = ConfigResource('topic', TOPIC, set_config={'segment.bytes': '262144'})
assert outcome(admin.alter_configs([legacy])) == 'POLICY_VIOLATION'
assert incremental(cleanup_policy='delete') == 'POLICY_VIOLATION'
assert incremental(segment_bytes='not-a-number') == 'INVALID_CONFIG'
assert incremental(segment_bytes='262144') == 'ok'
after = configs()
assert after['segment.bytes'] == '262144' and after['cleanup.policy'] == 'compact', after
print('configs ok')
