"""Kafka's DescribeAcls (what `kafka-acls --list` asks) answers with Eddy's grants: librdkafka
through confluent-kafka, authenticated with SASL PLAIN. Prints one line per ACL:
topic principal operation permission."""
import sys

from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

BOOTSTRAP, USER, PASSWORD = sys.argv[1:4]
admin = AdminClient({'bootstrap.servers': BOOTSTRAP, 'security.protocol': 'SASL_PLAINTEXT',
                     'sasl.mechanisms': 'PLAIN', 'sasl.username': USER, 'sasl.password': PASSWORD})
every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                         AclPermissionType.ANY)
for acl in admin.describe_acls(every, request_timeout=10).result():
    print(acl.name, acl.principal, acl.operation.name, acl.permission_type.name)
