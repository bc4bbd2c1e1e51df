"""The REST Proxy's v2 consumer instances driven with `requests` as kafka-rest's docs show
them, sharing a consumer group with librdkafka (confluent-kafka) consumers.

argv: http base URL, Kafka bootstrap, mode ('consumers', 'admin', 'schemas' or 'limits'),
the Postgres port for 'schemas'."""
import base64
import json
import sys
import threading
import time

import requests
from confluent_kafka import Consumer, TopicPartition

BASE = sys.argv[1]
BOOTSTRAP = sys.argv[2]
MODE = sys.argv[3]
V2 = 'application/vnd.kafka.v2+json'
V2_JSON = 'application/vnd.kafka.json.v2+json'
V2_BINARY = 'application/vnd.kafka.binary.v2+json'


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def produce(topic, partition, values):
    r = requests.post(f'{BASE}/topics/{topic}/partitions/{partition}', headers={'Content-Type': V2_JSON},
                      data=json.dumps({'records': [{'key': f'k{v}', 'value': {'v': v}} for v in values]}))
    check(r.status_code == 200, r.text)


def create(group, body):
    r = requests.post(f'{BASE}/consumers/{group}', headers={'Content-Type': V2}, data=json.dumps(body))
    check(r.status_code == 200, f'create: {r.status_code} {r.text}')
    return r.json()


def post(uri, body=None):
    return requests.post(uri, headers={'Content-Type': V2}, data=None if body is None else json.dumps(body))


def records(uri, accept=V2_JSON, timeout=1000):
    r = requests.get(uri + '/records', params={'timeout': timeout}, headers={'Accept': accept})
    check(r.status_code == 200, f'records: {r.status_code} {r.text}')
    return r.json()


def read_until(uri, want, accept=V2_JSON, seconds=30):
    out = []
    deadline = time.time() + seconds
    while time.time() < deadline and len(out) < want:
        out += records(uri, accept)
    return out


def assignment(uri):
    return sorted((p['topic'], p['partition']) for p in requests.get(uri + '/assignments').json()['partitions'])


class Poller:
    """A librdkafka consumer polling in a thread; what it got and what it owns."""

    def __init__(self, group, topic):
        self.c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': group, 'auto.offset.reset': 'earliest',
                           'enable.auto.commit': True, 'auto.commit.interval.ms': 200,
                           'session.timeout.ms': 10000, 'heartbeat.interval.ms': 500})
        self.c.subscribe([topic])
        self.got, self.owned, self.stop = [], [], False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            m = self.c.poll(0.2)
            self.owned = sorted((p.topic, p.partition) for p in self.c.assignment())
            if m is not None and not m.error():
                self.got.append((m.partition(), m.offset(), json.loads(m.value())))
        self.c.close()

    def close(self):
        self.stop = True
        self.t.join()


def logged_errors(conn, seen, seconds=30):
    """The processing log's errors, once one satisfies `seen` (or the time is up)."""
    deadline, errors = time.time() + seconds, []
    while time.time() < deadline and not any(seen(e) for e in errors):
        errors = [r[0] for r in conn.execute("SELECT error FROM eddy_processing_log").fetchall()]
        time.sleep(0.3)
    return errors


def wait_for(cond, what, seconds=40):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError('timed out: ' + what)


def consumers():
    r = requests.post(BASE + '/v3/clusters/eddy/topics', json={'topic_name': 'rc', 'partitions_count': 2})
    check(r.status_code == 201, r.text)
    produce('rc', 0, [0, 1, 2])
    produce('rc', 1, [10, 11, 12])

    # Create, as kafka-rest's quick start does.
    made = create('g1', {'name': 'a', 'format': 'json', 'auto.offset.reset': 'earliest',
                         'auto.commit.enable': 'false'})
    check(made['instance_id'] == 'a' and made['base_uri'].endswith('/consumers/g1/instances/a'), made)
    a = made['base_uri']
    r = requests.post(BASE + '/consumers/g1', headers={'Content-Type': V2}, data=json.dumps({'name': 'a'}))
    check(r.status_code == 409 and r.json()['error_code'] == 40902, r.text)
    r = requests.get(a + '/records', headers={'Accept': V2_JSON})
    check(r.status_code == 409 and r.json()['error_code'] == 40903, 'records before subscribing: ' + r.text)
    r = requests.get(BASE + '/consumers/g1/instances/nobody/records', headers={'Accept': V2_JSON})
    check(r.status_code == 404 and r.json()['error_code'] == 40403, r.text)

    # Subscribe and read everything (the first reads may be empty while the group forms).
    check(post(a + '/subscription', {'topics': ['rc']}).status_code == 204, 'subscribe')
    check(requests.get(a + '/subscription').json() == {'topics': ['rc']}, 'subscription')
    got = read_until(a, 6)
    check(sorted(r['value']['v'] for r in got) == [0, 1, 2, 10, 11, 12], got)
    first = next(r for r in got if r['value']['v'] == 10)
    check(first == {'topic': 'rc', 'key': 'k10', 'value': {'v': 10}, 'partition': 1, 'offset': 0}, first)
    check(assignment(a) == [('rc', 0), ('rc', 1)], assignment(a))
    r = requests.get(a + '/records', headers={'Accept': V2_BINARY})
    check(r.status_code == 406 and r.json()['error_code'] == 40601, r.text)

    # Commit: given offsets are of the last record processed, the group keeps the next one.
    check(post(a + '/offsets', {'offsets': [{'topic': 'rc', 'partition': 0, 'offset': 1}]}).status_code == 204, 'commit')
    r = requests.get(a + '/offsets', headers={'Content-Type': V2},
                     data=json.dumps({'partitions': [{'topic': 'rc', 'partition': 0}, {'topic': 'rc', 'partition': 1}]}))
    check(r.json() == {'offsets': [{'topic': 'rc', 'partition': 0, 'offset': 2, 'metadata': ''}]}, r.text)
    check(post(a + '/offsets').status_code == 204, 'commit what was read')
    r = requests.get(a + '/offsets', headers={'Content-Type': V2}, data=json.dumps({'partitions': [{'topic': 'rc', 'partition': 1}]}))
    check(r.json()['offsets'][0]['offset'] == 3, r.text)

    # Seek: to the beginning of one partition, to an offset of the other.
    check(post(a + '/positions/beginning', {'partitions': [{'topic': 'rc', 'partition': 0}]}).status_code == 204, 'seek')
    again = read_until(a, 3)
    check(sorted(r['value']['v'] for r in again) == [0, 1, 2], again)
    check(post(a + '/positions', {'offsets': [{'topic': 'rc', 'partition': 1, 'offset': 2}]}).status_code == 204, 'seek')
    check([r['value']['v'] for r in read_until(a, 1)] == [12], 'after seeking to offset 2')
    check(post(a + '/positions/end', {'partitions': [{'topic': 'rc', 'partition': 0}]}).status_code == 204, 'seek end')
    check(records(a, timeout=200) == [], 'nothing past the end')
    r = post(a + '/positions', {'offsets': [{'topic': 'other', 'partition': 0, 'offset': 0}]})
    check(r.status_code == 409, 'seek on a partition not assigned: ' + r.text)

    # A librdkafka consumer joins the same group: the partitions are shared, and new
    # records go to whichever member owns their partition, once.
    rd = Poller('g1', 'rc')
    wait_for(lambda: len(assignment(a)) == 1 and len(rd.owned) == 1, 'the group shares two partitions')
    mine, theirs = assignment(a), rd.owned
    check(set(mine).isdisjoint(theirs), (mine, theirs))
    rd_before = len(rd.got)
    produce('rc', 0, [20, 21])
    produce('rc', 1, [30, 31])
    mine_got = read_until(a, 2)
    wait_for(lambda: len(rd.got) >= rd_before + 2, 'librdkafka reads its partition')
    check({r['partition'] for r in mine_got} == {mine[0][1]}, mine_got)
    theirs_new = [g for g in rd.got if g[2]['v'] >= 20]
    check({p for p, _, _ in theirs_new} == {theirs[0][1]} and len(theirs_new) == 2, theirs_new)
    check(sorted([r['value']['v'] for r in mine_got] + [v['v'] for _, _, v in theirs_new]) == [20, 21, 30, 31],
          'each new record read once')
    # v3 sees the group: both members, the assignor, and the lag of the partition the
    # instance read without committing (librdkafka auto-commits its own).
    v3 = BASE + '/v3/clusters/eddy/consumer-groups'
    check('g1' in [g['consumer_group_id'] for g in requests.get(v3).json()['data']], 'g1 listed')
    g1 = requests.get(v3 + '/g1').json()
    check(g1['kind'] == 'KafkaConsumerGroup' and g1['state'] == 'STABLE' and g1['partition_assignor'] in ('range', 'roundrobin'), g1)
    members = requests.get(v3 + '/g1/consumers').json()['data']
    check(sorted(m['client_id'].startswith('rest-proxy-') for m in members) == [False, True], members)
    rest_member = next(m for m in members if m['client_id'] == 'rest-proxy-a')
    owned = requests.get(v3 + '/g1/consumers/' + rest_member['consumer_id'] + '/assignments').json()['data']
    check([(o['topic_name'], o['partition_id']) for o in owned] == mine, owned)

    def lag_of_mine():
        lags = requests.get(v3 + '/g1/lags').json()['data']
        return {(l['partition_id'], l['lag'], l['consumer_id']) for l in lags}
    wait_for(lambda: lag_of_mine() == {(mine[0][1], 2, rest_member['consumer_id']), (theirs[0][1], 0, lag_consumer(v3, theirs[0][1]))},
             'lags: 2 behind on the instance partition, none on librdkafka\'s')
    summary = requests.get(v3 + '/g1/lag-summary').json()
    check(summary['total_lag'] == 2 and summary['max_lag'] == 2 and summary['max_lag_partition_id'] == mine[0][1]
          and summary['max_lag_client_id'] == 'rest-proxy-a', summary)
    check(requests.get(v3 + '/nope').status_code == 404, 'unknown group')
    # Leaving the group hands the partition back.
    check(requests.delete(a).status_code == 204, 'delete')
    r = requests.get(a + '/records', headers={'Accept': V2_JSON})
    check(r.status_code == 404 and r.json()['error_code'] == 40403, r.text)
    wait_for(lambda: len(rd.owned) == 2, 'librdkafka takes both partitions after the instance leaves')
    rd.close()

    # A group a librdkafka consumer leads: the instance joins it and gets its share.
    rd = Poller('g3', 'rc')
    wait_for(lambda: len(rd.owned) == 2, 'librdkafka alone owns both')
    c = create('g3', {'name': 'c', 'format': 'json', 'auto.offset.reset': 'earliest'})['base_uri']
    check(post(c + '/subscription', {'topic_pattern': 'r.'}).status_code == 204, 'subscribe by pattern')
    wait_for(lambda: len(assignment(c)) == 1 and len(rd.owned) == 1,
             'a librdkafka leader assigns the instance a partition')
    check(requests.get(c + '/subscription').json() == {'topics': ['rc']}, 'the pattern matched rc')
    check(requests.delete(c + '/subscription').status_code == 204, 'unsubscribe')
    check(assignment(c) == [], 'nothing assigned after unsubscribing')
    wait_for(lambda: len(rd.owned) == 2, 'librdkafka takes both partitions after the unsubscribe')
    rd.close()
    requests.delete(c)

    # Binary, with partitions assigned by hand (no group membership).
    b = create('g2', {'name': 'b', 'format': 'binary', 'auto.offset.reset': 'earliest'})['base_uri']
    check(post(b + '/assignments', {'partitions': [{'topic': 'rc', 'partition': 1}]}).status_code == 204, 'assign')
    check(assignment(b) == [('rc', 1)], assignment(b))
    got = read_until(b, 5, accept=V2_BINARY)
    check([json.loads(base64.b64decode(r['value'])) for r in got] == [{'v': v} for v in [10, 11, 12, 30, 31]], got)
    check(base64.b64decode(got[0]['key']) == b'"k10"', got[0])
    r = post(b + '/subscription', {'topics': ['rc']})
    check(r.status_code == 409 and r.json()['error_code'] == 40903, 'subscribe after assign: ' + r.text)
    r = post(b + '/assignments', {'partitions': [{'topic': 'rc', 'partition': 9}]})
    check(r.status_code == 404 and r.json()['error_code'] == 40402, r.text)
    # Auto-commit (the default) commits what was returned when the instance closes.
    check(requests.delete(b).status_code == 204, 'delete b')
    rd = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'g2'})
    committed = rd.committed([TopicPartition('rc', 1)], timeout=10)
    check(committed[0].offset == 5, f'auto-committed offset {committed[0].offset}')
    rd.close()

    # Bad requests.
    r = requests.post(BASE + '/consumers/g9', headers={'Content-Type': V2}, data=json.dumps({'format': 'xml'}))
    check(r.status_code == 422, r.text)
    r = requests.post(BASE + '/consumers/g9', headers={'Content-Type': V2},
                      data=json.dumps({'auto.offset.reset': 'sometimes'}))
    check(r.status_code == 422, r.text)
    print('consumers ok')


def lag_consumer(v3, partition):
    lags = requests.get(v3 + '/g1/lags').json()['data']
    return next((l['consumer_id'] for l in lags if l['partition_id'] == partition), None)


def admin():
    topic = BASE + '/v3/clusters/eddy/topics/rc'
    configs = requests.get(topic + '/configs').json()
    check(configs['kind'] == 'KafkaTopicConfigList', configs)
    by_name = {c['name']: c for c in configs['data']}
    check(by_name['cleanup.policy']['value'] == 'delete' and by_name['cleanup.policy']['is_default'], by_name)
    r = requests.put(topic + '/configs/retention.ms', json={'value': '3600000'})
    check(r.status_code == 204, r.text)
    one = requests.get(topic + '/configs/retention.ms').json()
    check(one['value'] == '3600000' and not one['is_default'] and one['source'] == 'DYNAMIC_TOPIC_CONFIG', one)
    r = requests.post(topic + '/configs:alter', json={'data': [{'name': 'retention.ms', 'operation': 'DELETE'},
                                                               {'name': 'max.message.bytes', 'value': '2097152'}]})
    check(r.status_code == 204, r.text)
    by_name = {c['name']: c for c in requests.get(topic + '/configs').json()['data']}
    check(by_name['retention.ms']['is_default'] and by_name['max.message.bytes']['value'] == '2097152', by_name)
    check(requests.delete(topic + '/configs/max.message.bytes').status_code == 204, 'reset')
    check(requests.get(topic + '/configs/max.message.bytes').json()['is_default'], 'reset to default')
    r = requests.put(topic + '/configs/no.such.setting', json={'value': '1'})
    check(r.status_code == 404, r.text)
    r = requests.put(topic + '/configs/retention.ms', json={'value': 'soon'})
    check(r.status_code == 400, r.text)
    # The same settings through Kafka's DescribeConfigs.
    from confluent_kafka.admin import AdminClient, ConfigResource
    admin = AdminClient({'bootstrap.servers': BOOTSTRAP})
    check(requests.put(topic + '/configs/retention.ms', json={'value': '7200000'}).status_code == 204, 'set')
    res = ConfigResource(ConfigResource.Type.TOPIC, 'rc')
    described = list(admin.describe_configs([res]).values())[0].result()
    check(described['retention.ms'].value == '7200000', described['retention.ms'])

    # records:batch: one answer per entry, by id, under 207.
    r = requests.post(topic + '/records:batch', json={'entries': [
        {'id': 'a', 'partition_id': 0, 'value': {'type': 'JSON', 'data': {'v': 100}}},
        {'id': 'b', 'partition_id': 7, 'value': {'type': 'JSON', 'data': {'v': 101}}},
        {'id': 'c', 'partition_id': 1, 'key': {'type': 'STRING', 'data': 'kc'}, 'value': {'type': 'JSON', 'data': {'v': 102}}}]})
    check(r.status_code == 207, r.text)
    body = r.json()
    check(sorted(x['id'] for x in body['successes']) == ['a', 'c'] and [x['id'] for x in body['failures']] == ['b'], body)
    check(all(x['topic_name'] == 'rc' and x['offset'] >= 0 for x in body['successes']), body)
    check(body['failures'][0]['error_code'] != 200, body)
    r = requests.post(topic + '/records:batch', json={'entries': [{'id': 'x'}, {'id': 'x'}]})
    check(r.status_code == 400, r.text)
    print('admin ok')


def schemas():
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    V2_AVRO = 'application/vnd.kafka.avro.v2+json'
    V2_JSONSCHEMA = 'application/vnd.kafka.jsonschema.v2+json'
    user = json.dumps({'type': 'record', 'name': 'User', 'fields': [
        {'name': 'name', 'type': 'string'}, {'name': 'visits', 'type': 'long'},
        {'name': 'email', 'type': ['null', 'string'], 'default': None}]})

    def send(topic, content_type, body):
        return requests.post(f'{BASE}/topics/{topic}', headers={'Content-Type': content_type}, data=json.dumps(body))

    # avro: the schema is registered under users_http-value, records are in Confluent's framing.
    r = send('users_http', V2_AVRO, {'key_schema': '"string"', 'value_schema': user, 'records': [
        {'key': 'ada', 'value': {'name': 'ada', 'visits': 3, 'email': {'string': 'ada@example.org'}}},
        {'value': {'name': 'bob', 'visits': 5}}]})
    check(r.status_code == 200, r.text)
    body = r.json()
    value_id, key_id = body['value_schema_id'], body['key_schema_id']
    check(isinstance(value_id, int) and isinstance(key_id, int) and value_id != key_id, body)
    check([o['offset'] for o in body['offsets']] == [0, 1], body)
    sr = SchemaRegistryClient({'url': BASE})
    check(sr.get_latest_version('users_http-value').schema_id == value_id, 'registered under {topic}-value')
    r = send('users_http', V2_AVRO, {'value_schema_id': value_id, 'records': [{'value': {'name': 'cy', 'visits': 1}}]})
    check(r.status_code == 200 and r.json()['value_schema_id'] == value_id, r.text)
    # Refused whole: a value that does not fit, a missing schema, an incompatible schema.
    r = send('users_http', V2_AVRO, {'value_schema_id': value_id, 'records': [
        {'value': {'name': 'ok', 'visits': 1}}, {'value': {'name': 'bad', 'visits': 'many'}}]})
    check(r.status_code == 422 and r.json()['error_code'] == 42205 and 'visits' in r.json()['message'], r.text)
    r = send('users_http', V2_AVRO, {'records': [{'value': {'name': 'x', 'visits': 1}}]})
    check(r.status_code == 422 and r.json()['error_code'] == 42202, r.text)
    incompatible = json.dumps({'type': 'record', 'name': 'User', 'fields': [
        {'name': 'name', 'type': 'string'}, {'name': 'age', 'type': 'int'}]})
    r = send('users_http', V2_AVRO, {'value_schema': incompatible, 'records': [{'value': {'name': 'x', 'age': 1}}]})
    check(r.status_code == 422 and 'incompatible' in r.json()['message'], r.text)
    check(requests.get(BASE + '/topics/users_http/partitions/0/offsets').json()['end_offset'] == 3, 'nothing partial')

    # What librdkafka with Confluent's deserializer reads, and what an avro consumer instance shows.
    de = AvroDeserializer(sr)
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'avro-http', 'auto.offset.reset': 'earliest'})
    c.subscribe(['users_http'])
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and len(got) < 3:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(de(m.value(), SerializationContext('users_http', MessageField.VALUE)))
            if len(got) == 1:
                check(de(m.key(), SerializationContext('users_http', MessageField.KEY)) == 'ada', m.key())
    c.close()
    check(got == [{'name': 'ada', 'visits': 3, 'email': 'ada@example.org'}, {'name': 'bob', 'visits': 5, 'email': None},
                  {'name': 'cy', 'visits': 1, 'email': None}], got)
    a = create('avro-rest', {'name': 'a', 'format': 'avro', 'auto.offset.reset': 'earliest'})['base_uri']
    check(post(a + '/assignments', {'partitions': [{'topic': 'users_http', 'partition': 0}]}).status_code == 204, 'assign')
    shown = read_until(a, 3, accept=V2_AVRO)
    check([r['value'] for r in shown][:2] == got[:2] and shown[0]['key'] == 'ada', shown)
    requests.delete(a)

    # jsonschema: JSON text behind the framing; read with Confluent's JSONDeserializer.
    order = json.dumps({'type': 'object', 'properties': {'id': {'type': 'integer'}, 'item': {'type': 'string'}}})
    r = send('orders_js', V2_JSONSCHEMA, {'value_schema': order, 'records': [{'value': {'id': 1, 'item': 'tea'}}]})
    check(r.status_code == 200 and isinstance(r.json()['value_schema_id'], int), r.text)
    check(sr.get_latest_version('orders_js-value').schema.schema_type == 'JSON', 'a JSON schema')
    # A value that does not fit its JSON Schema is refused, as kafka-rest refuses it.
    r = send('orders_js', V2_JSONSCHEMA, {'value_schema_id': r.json()['value_schema_id'], 'records': [{'value': {'id': 'one'}}]})
    check(r.status_code == 422 and r.json()['error_code'] == 42205 and '#/id' in r.json()['message'], r.text)
    de = JSONDeserializer(order)
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'js-http', 'auto.offset.reset': 'earliest'})
    c.subscribe(['orders_js'])
    m, deadline = None, time.time() + 30
    while time.time() < deadline and (m is None or m.error()):
        m = c.poll(0.5)
    c.close()
    check(de(m.value(), SerializationContext('orders_js', MessageField.VALUE)) == {'id': 1, 'item': 'tea'}, m.value())
    j = create('js-rest', {'name': 'j', 'format': 'jsonschema', 'auto.offset.reset': 'earliest'})['base_uri']
    check(post(j + '/subscription', {'topics': ['orders_js']}).status_code == 204, 'subscribe')
    check([r['value'] for r in read_until(j, 1, accept=V2_JSONSCHEMA)] == [{'id': 1, 'item': 'tea'}], 'jsonschema consumer')
    requests.delete(j)
    # v3 records in the schema formats: by schema text, then by id.
    v3 = BASE + '/v3/clusters/eddy/topics/users_http/records'
    r = requests.post(v3, json={'value': {'type': 'AVRO', 'schema': user, 'data': {'name': 'dee', 'visits': 9}}})
    check(r.status_code == 200 and r.json()['error_code'] == 200 and r.json()['value']['schema_id'] == value_id, r.text)
    r = requests.post(v3, json={'value': {'schema_id': value_id, 'data': {'name': 'eve', 'visits': 'x'}}})
    check(r.json()['error_code'] == 400 and 'visits' in r.json()['message'], r.text)
    r = requests.post(v3, json={'value': {'schema_id': value_id, 'data': {'name': 'eve', 'visits': 2}}})
    check(r.json()['error_code'] == 200 and r.json()['offset'] == 4, r.text)
    json_sr_in_sql(sr)
    protobuf_in_sql(sr)
    recursive_avro(sr)
    keys_in_sql(sr)
    print('schemas ok')


def recursive_avro(sr):
    """A record whose writer schema is recursive, nested 100,000 deep: logged, not read (its
    reader would recurse once per level), and the server goes on."""
    import psycopg
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import Schema
    pg_port = sys.argv[4]
    rec = json.dumps({'type': 'record', 'name': 'N', 'fields': [{'name': 'next', 'type': ['null', 'N']}]})
    sid = sr.register_schema('deep-value', Schema(rec, 'AVRO'))
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    p.produce('deep', value=b'\x00' + sid.to_bytes(4, 'big') + b'\x02' * 100_000 + b'\x00')
    p.flush(10)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE STREAM deep_in (a INT) WITH (KAFKA_TOPIC='deep', VALUE_FORMAT='AVRO')")
        conn.execute("CREATE STREAM deep_out AS SELECT a FROM deep_in")
        errors = logged_errors(conn, lambda e: 'recursive' in e)
        check(any('recursive' in e for e in errors), errors)
        check(conn.execute("SELECT 1").fetchone() == (1,), 'the server goes on')


def keys_in_sql(sr):
    """KEY_FORMAT='AVRO', 'JSON_SR' and 'PROTOBUF' with Confluent's serializers on the key: key
    columns inferred from {topic}-key, queries that write keys in each format, read back by
    Confluent's deserializers; a key with an unknown schema id goes to the processing log."""
    import psycopg
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    pg_port = sys.argv[4]
    key_ctx = SerializationContext('visits_k', MessageField.KEY)
    value_ctx = SerializationContext('visits_k', MessageField.VALUE)
    key_ser = AvroSerializer(sr, '"string"')
    value_ser = AvroSerializer(sr, json.dumps({'type': 'record', 'name': 'Visit', 'fields': [
        {'name': 'page', 'type': 'string'}, {'name': 'ms', 'type': 'long'}]}))
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    for user, page, ms in [('ada', 'home', 10), ('bob', 'cart', 20), ('ada', 'cart', 30)]:
        p.produce('visits_k', key=key_ser(user, key_ctx), value=value_ser({'page': page, 'ms': ms}, value_ctx))
    p.produce('visits_k', key=b'\x00\x00\x00\x03\xe7\x02x', value=value_ser({'page': 'x', 'ms': 1}, value_ctx))
    p.flush(10)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE STREAM visits_k WITH (KAFKA_TOPIC='visits_k', FORMAT='AVRO')")
        cols = [(c[0], c[1], c[2]) for c in conn.execute("DESCRIBE visits_k").fetchall()][:3]
        check([c[0] for c in cols] == ['rowkey', 'page', 'ms'] and 'KEY' in str(cols[0]).upper(), cols)
        rows = conn.execute("SELECT rowkey, page, ms FROM visits_k ORDER BY ms").fetchall()
        check(rows == [('ada', 'home', 10), ('bob', 'cart', 20), ('ada', 'cart', 30)], rows)
        conn.execute("SET 'auto.offset.reset' = 'earliest'")
        conn.execute("CREATE TABLE per_user_avro WITH (FORMAT='AVRO') AS SELECT rowkey AS who, COUNT(*) AS n FROM visits_k GROUP BY rowkey")
        conn.execute("CREATE TABLE per_user_jsr WITH (FORMAT='JSON_SR') AS SELECT rowkey AS who, page, COUNT(*) AS n FROM visits_k GROUP BY rowkey, page")
        conn.execute("CREATE TABLE per_user_pb WITH (FORMAT='PROTOBUF') AS SELECT rowkey AS who, COUNT(*) AS n FROM visits_k GROUP BY rowkey")
        errors = logged_errors(conn, lambda e: 'schema id 999' in e)
        check(any('key' in e and 'schema id 999' in e for e in errors), errors)

    def latest_by_key(topic, want, read_key, read_value):
        c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': topic + '-check', 'auto.offset.reset': 'earliest'})
        c.subscribe([topic])
        latest, deadline = {}, time.time() + 30
        while time.time() < deadline and latest != want:
            m = c.poll(0.5)
            if m is not None and not m.error():
                k = read_key(m.key(), SerializationContext(topic, MessageField.KEY))
                latest[k] = read_value(m.value(), SerializationContext(topic, MessageField.VALUE))
        c.close()
        check(latest == want, (topic, latest))

    # *_SCHEMA_FULL_NAME names the records Eddy registers.
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE TABLE per_page_named WITH (FORMAT='AVRO', KEY_SCHEMA_FULL_NAME='com.acme.VisitKey', "
                     "VALUE_SCHEMA_FULL_NAME='com.acme.VisitCount') AS SELECT rowkey AS who, page, COUNT(*) AS n FROM visits_k GROUP BY rowkey, page")
    named_key = json.loads(sr.get_latest_version('per_page_named-key').schema.schema_str)
    named_value = json.loads(sr.get_latest_version('per_page_named-value').schema.schema_str)
    check((named_key['namespace'], named_key['name']) == ('com.acme', 'VisitKey')
          and (named_value['namespace'], named_value['name']) == ('com.acme', 'VisitCount'), (named_key, named_value))
    latest_by_key('per_page_named', {('ada', 'home'): 1, ('ada', 'cart'): 1, ('bob', 'cart'): 1},
                  lambda k, ctx: (lambda r: (r['WHO'], r['PAGE']))(AvroDeserializer(sr)(k, ctx)),
                  lambda v, ctx: AvroDeserializer(sr)(v, ctx)['N'])
    # AVRO: a single key is the datum itself, registered as a bare "string".
    key_schema = sr.get_latest_version('per_user_avro-key')
    check(json.loads(key_schema.schema.schema_str) == 'string', key_schema.schema.schema_str)
    latest_by_key('per_user_avro', {'ada': 2, 'bob': 1}, AvroDeserializer(sr), lambda v, ctx: AvroDeserializer(sr)(v, ctx)['N'])
    # JSON_SR: two key columns are one object.
    latest_by_key('per_user_jsr', {('ada', 'home'): 1, ('ada', 'cart'): 1, ('bob', 'cart'): 1},
                  lambda k, ctx: (lambda o: (o['who'], o['page']))(JSONDeserializer(None, schema_registry_client=sr)(k, ctx)),
                  lambda v, ctx: JSONDeserializer(None, schema_registry_client=sr)(v, ctx)['n'])
    # PROTOBUF: a key is always a message (ConnectDefault1 with one field).
    Key = message_class('pk', 'ConnectDefault1', [('who', 'STRING', False)])
    Value = message_class('pv', 'ConnectDefault1', [('n', 'INT64', False)])
    kde = ProtobufDeserializer(Key, {'use.deprecated.format': False})
    vde = ProtobufDeserializer(Value, {'use.deprecated.format': False})
    latest_by_key('per_user_pb', {'ada': 2, 'bob': 1}, lambda k, ctx: kde(k, ctx).who, lambda v, ctx: vde(v, ctx).n)
    # A Protobuf key made by Confluent's serializer reads back as its one field.
    ks = ProtobufSerializer(Key, sr, {'use.deprecated.format': False})
    vs = ProtobufSerializer(Value, sr, {'use.deprecated.format': False})
    p.produce('pb_keyed', key=ks(Key(who='cy'), SerializationContext('pb_keyed', MessageField.KEY)),
              value=vs(Value(n=7), SerializationContext('pb_keyed', MessageField.VALUE)))
    p.flush(10)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE STREAM pb_keyed WITH (KAFKA_TOPIC='pb_keyed', FORMAT='PROTOBUF')")
        rows = conn.execute("SELECT who, n FROM pb_keyed").fetchall()
        check(rows == [('cy', 7)], rows)


def message_class(package, name, fields):
    """A Protobuf message class made at run time (no protoc): fields are (name, type, repeated)."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf.message_factory import GetMessageClass
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name=f'{package}_{name}.proto', package=package, syntax='proto3')
    m = fdp.message_type.add(name=name)
    for number, (field, ty, repeated) in enumerate(fields, start=1):
        m.field.add(name=field, number=number, type=getattr(F, 'TYPE_' + ty),
                    label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return GetMessageClass(pool.FindMessageTypeByName(f'{package}.{name}'))


def protobuf_in_sql(sr):
    """VALUE_FORMAT='PROTOBUF' with Confluent's ProtobufSerializer and ProtobufDeserializer
    (which register and read schemas as base64 descriptors), and a .proto registered as text."""
    import psycopg
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    pg_port = sys.argv[4]
    Order = message_class('shop', 'Order', [('id', 'INT64', False), ('item', 'STRING', False),
                                           ('price', 'DOUBLE', False), ('tags', 'STRING', True)])
    ser = ProtobufSerializer(Order, sr, {'use.deprecated.format': False})
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    for i, item, price, tags in [(1, 'tea', 2.5, ['hot']), (2, 'cup', 0.5, []), (3, 'pot', 9.0, ['big', 'hot'])]:
        p.produce('orders_pb', value=ser(Order(id=i, item=item, price=price, tags=tags),
                                         SerializationContext('orders_pb', MessageField.VALUE)))
    p.produce('orders_pb', value=b'\x00\x00\x00\x03\xe7\x00\x08\x01')  # unknown schema id 999
    p.flush(10)
    # A .proto registered as text compiles; a broken one is refused.
    text = 'syntax = "proto3";\npackage x;\nimport "google/protobuf/timestamp.proto";\nmessage Ev { string k = 1; google.protobuf.Timestamp at = 2; map<string, int64> n = 3; }\n'
    check(sr.register_schema('ev-value', Schema(text, 'PROTOBUF')) > 0, 'proto text registered')
    r = requests.post(BASE + '/subjects/bad-value/versions', json={'schema': 'message {', 'schemaType': 'PROTOBUF'})
    check(r.status_code == 422 and r.json()['error_code'] == 42201, r.text)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE STREAM opb WITH (KAFKA_TOPIC='orders_pb', VALUE_FORMAT='PROTOBUF')")
        cols = conn.execute("DESCRIBE opb").fetchall()
        check([(c[0], c[1]) for c in cols[:4]] == [('id', 'BIGINT'), ('item', 'VARCHAR'), ('price', 'DOUBLE'), ('tags', 'ARRAY<VARCHAR>')]
              or [c[0] for c in cols[:4]] == ['id', 'item', 'price', 'tags'], cols)
        rows = conn.execute("SELECT id, item, price, tags FROM opb ORDER BY id").fetchall()
        check(rows == [(1, 'tea', 2.5, ['hot']), (2, 'cup', 0.5, []), (3, 'pot', 9.0, ['big', 'hot'])], rows)
        # A recursive message has no columns: a clear error, and the server lives on (its
        # column inference used to recurse until the stack overflowed).
        rec = 'syntax = "proto3";\nmessage Tree { string a = 1; repeated Tree kids = 2; }\n'
        check(sr.register_schema('rec_pb-value', Schema(rec, 'PROTOBUF')) > 0, 'recursive proto registered')
        try:
            conn.execute("CREATE STREAM rec_pb WITH (KAFKA_TOPIC='rec_pb', VALUE_FORMAT='PROTOBUF', PARTITIONS=1)")
            check(False, 'a recursive message gave columns')
        except psycopg.Error as e:
            check('contains itself' in str(e), e)
        conn.execute("CREATE STREAM ev WITH (KAFKA_TOPIC='ev', VALUE_FORMAT='PROTOBUF', PARTITIONS=1)")
        names = [c[0] for c in conn.execute("DESCRIBE ev").fetchall()]
        check(names[:3] == ['k', 'at', 'n'], names)
        conn.execute("SET 'auto.offset.reset' = 'earliest'")
        conn.execute("CREATE STREAM dearpb WITH (VALUE_FORMAT='PROTOBUF') AS SELECT id, item, price * 2 AS doubled FROM opb WHERE price > 1")
        errors = logged_errors(conn, lambda e: 'schema id 999' in e)
        check(any('schema id 999' in e for e in errors), errors)
    latest = sr.get_latest_version('dearpb-value')
    check(latest.schema.schema_type == 'PROTOBUF' and 'ConnectDefault1' in latest.schema.schema_str, latest.schema.schema_str)
    Out = message_class('out', 'ConnectDefault1', [('id', 'INT64', False), ('item', 'STRING', False), ('doubled', 'DOUBLE', False)])
    de = ProtobufDeserializer(Out, {'use.deprecated.format': False})
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'pb-check', 'auto.offset.reset': 'earliest'})
    c.subscribe(['dearpb'])
    got, deadline = [], time.time() + 30
    while time.time() < deadline and len(got) < 2:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(de(m.value(), SerializationContext('dearpb', MessageField.VALUE)))
    c.close()
    check(sorted((g.id, g.item, g.doubled) for g in got) == [(1, 'tea', 5.0), (3, 'pot', 18.0)], got)
    # Confluent's deserializer reads the writer schema as a base64 descriptor.
    r = requests.get(f'{BASE}/schemas/ids/{latest.schema_id}', params={'format': 'serialized'})
    check(r.status_code == 200 and ' ' not in r.json()['schema'], r.text)

    # The protobuf embedded format: a .proto as value_schema, records in proto3's JSON mapping;
    # read back by a protobuf consumer instance and by Confluent's deserializer.
    proto = 'syntax = "proto3";\npackage shop;\nmessage Order { int64 id = 1; string item = 2; double price = 3; repeated string tags = 4; }\n'
    r = requests.post(BASE + '/topics/orders_pb_http', headers={'Content-Type': 'application/vnd.kafka.protobuf.v2+json'},
                      data=json.dumps({'value_schema': proto, 'records': [{'value': {'id': 7, 'item': 'jug', 'price': 3.5, 'tags': ['x']}}]}))
    check(r.status_code == 200 and isinstance(r.json()['value_schema_id'], int), r.text)
    r = requests.post(BASE + '/topics/orders_pb_http', headers={'Content-Type': 'application/vnd.kafka.protobuf.v2+json'},
                      data=json.dumps({'value_schema_id': r.json()['value_schema_id'], 'records': [{'value': {'id': 'x'}}]}))
    check(r.status_code == 422 and r.json()['error_code'] == 42205, r.text)
    pc = create('pb-rest', {'name': 'p', 'format': 'protobuf', 'auto.offset.reset': 'earliest'})['base_uri']
    check(post(pc + '/subscription', {'topics': ['orders_pb_http']}).status_code == 204, 'subscribe')
    shown = read_until(pc, 1, accept='application/vnd.kafka.protobuf.v2+json')
    check(shown[0]['value'] == {'id': 7, 'item': 'jug', 'price': 3.5, 'tags': ['x']}, shown)
    requests.delete(pc)
    de = ProtobufDeserializer(Order, {'use.deprecated.format': False})
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'pb-http-check', 'auto.offset.reset': 'earliest'})
    c.subscribe(['orders_pb_http'])
    m, deadline = None, time.time() + 30
    while time.time() < deadline and (m is None or m.error()):
        m = c.poll(0.5)
    c.close()
    o = de(m.value(), SerializationContext('orders_pb_http', MessageField.VALUE))
    check((o.id, o.item, o.price, list(o.tags)) == (7, 'jug', 3.5, ['x']), o)


def json_sr_in_sql(sr):
    """VALUE_FORMAT='JSON_SR': columns from the registry, a query writing it, Confluent's
    JSONSerializer and JSONDeserializer on either side."""
    import psycopg
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    pg_port = sys.argv[4]
    schema = json.dumps({'type': 'object', 'title': 'Order', 'properties': {
        'id': {'type': 'integer'}, 'item': {'type': 'string'}, 'price': {'type': 'number'},
        'tags': {'type': 'array', 'items': {'type': 'string'}}}})
    ser = JSONSerializer(schema, sr)
    p = Producer({'bootstrap.servers': BOOTSTRAP})
    for o in [{'id': 1, 'item': 'tea', 'price': 2.5, 'tags': ['hot']}, {'id': 2, 'item': 'cup', 'price': 0.5, 'tags': []},
              {'id': 3, 'item': 'pot', 'price': 9.0, 'tags': ['big', 'hot']}]:
        p.produce('orders_jsr', value=ser(o, SerializationContext('orders_jsr', MessageField.VALUE)))
    p.produce('orders_jsr', value=b'{"id": 4}')  # not framed: to the processing log
    p.flush(10)
    with psycopg.connect(f'host=127.0.0.1 port={pg_port} user=eddy dbname=eddy', autocommit=True) as conn:
        conn.execute("CREATE STREAM ojs WITH (KAFKA_TOPIC='orders_jsr', VALUE_FORMAT='JSON_SR')")
        names = [c[0] for c in conn.execute("DESCRIBE ojs").fetchall()]
        check(names[:4] == ['id', 'item', 'price', 'tags'], names)
        rows = conn.execute("SELECT id, item, price, tags FROM ojs ORDER BY id").fetchall()
        check(rows == [(1, 'tea', 2.5, ['hot']), (2, 'cup', 0.5, []), (3, 'pot', 9.0, ['big', 'hot'])], rows)
        conn.execute("SET 'auto.offset.reset' = 'earliest'")
        conn.execute("CREATE STREAM dear WITH (VALUE_FORMAT='JSON_SR') AS SELECT id, item, price * 2 AS doubled FROM ojs WHERE price > 1")
        errors = logged_errors(conn, lambda e: 'magic byte' in e)
        check(any('magic byte' in e for e in errors), errors)
    latest = sr.get_latest_version('dear-value')
    check(latest.schema.schema_type == 'JSON' and 'doubled' in latest.schema.schema_str, latest.schema.schema_str)
    de = JSONDeserializer(None, schema_registry_client=sr)
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'jsr-check', 'auto.offset.reset': 'earliest'})
    c.subscribe(['dear'])
    got, deadline = [], time.time() + 30
    while time.time() < deadline and len(got) < 2:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(de(m.value(), SerializationContext('dear', MessageField.VALUE)))
    c.close()
    check(sorted(g['id'] for g in got) == [1, 3] and {g['doubled'] for g in got} == {5.0, 18.0}, got)


def limits():
    # The test server allows two instances and closes them after 2 s unused.
    a = create('lg', {'name': 'a'})['base_uri']
    create('lg', {'name': 'b'})
    r = requests.post(BASE + '/consumers/lg', headers={'Content-Type': V2}, data=json.dumps({'name': 'c'}))
    check(r.status_code == 429 and r.json()['error_code'] == 42901, r.text)
    # Kept alive by use, then expired.
    for _ in range(4):
        time.sleep(1)
        check(requests.get(a + '/assignments').status_code == 200, 'in use')
    time.sleep(3.5)
    r = requests.get(a + '/assignments')
    check(r.status_code == 404 and r.json()['error_code'] == 40403, 'expired: ' + r.text)
    create('lg', {'name': 'c'})
    inserts_stream_streams()
    slow_clients()
    print('limits ok')


def raw_http(path, head_extra=''):
    """A socket with an HTTP/1.1 request head for a chunked POST to `path` sent."""
    import socket
    host, port = BASE.split('//')[1].split(':')
    s = socket.create_connection((host, int(port)), timeout=20)
    s.sendall(f'POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{head_extra}\r\n'.encode())
    return s


def chunk(s, text):
    data = text.encode()
    s.sendall(b'%x\r\n%s\r\n' % (len(data), data))


def inserts_stream_streams():
    """/inserts-stream answers each row while the request body is still open."""
    requests.post(BASE + '/ksql', json={'ksql': "CREATE STREAM ins_live (a INT) WITH (KAFKA_TOPIC='ins_live', VALUE_FORMAT='JSON', PARTITIONS=1);"}).raise_for_status()
    s = raw_http('/inserts-stream')
    chunk(s, '{"target": "ins_live"}\n{"a": 1}\n')
    got = b''
    while b'"seq":0' not in got:
        part = s.recv(4096)
        check(part, 'connection closed before the first answer: %r' % got)
        got += part
    check(b'200 OK' in got.split(b'\r\n')[0] and b'"status":"ok"' in got, got)
    chunk(s, '{"a": "x"}\n{"a": 3}\n')
    while b'"seq":2' not in got:
        got += s.recv(4096)
    check(b'"seq":1' in got and b'"status":"error"' in got, got)
    s.sendall(b'0\r\n\r\n')
    s.close()
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'ins-live', 'auto.offset.reset': 'earliest'})
    c.subscribe(['ins_live'])
    values, deadline = [], time.time() + 20
    while time.time() < deadline and len(values) < 2:
        m = c.poll(0.5)
        if m is not None and not m.error():
            values.append(json.loads(m.value())['A'] if 'A' in json.loads(m.value()) else json.loads(m.value())['a'])
    c.close()
    check(values == [1, 3], values)


def slow_clients():
    """A client that stops reading a push query's answer is cut off after the write timeout
    (1.5 s on this server), and its query ends."""
    import httpx
    requests.post(BASE + '/ksql', json={'ksql': "CREATE STREAM flood (s STRING) WITH (KAFKA_TOPIC='flood', VALUE_FORMAT='JSON', PARTITIONS=1);"}).raise_for_status()
    from confluent_kafka import Producer
    p = Producer({'bootstrap.servers': BOOTSTRAP, 'linger.ms': 50})
    for i in range(6000):
        p.produce('flood', value=json.dumps({'s': '%06d' % i + 'x' * 4000}))
        p.poll(0)
    p.flush(30)

    def pushes():
        shown = requests.post(BASE + '/ksql', json={'ksql': 'SHOW QUERIES;'}).json()[0]['queries']
        return sum(1 for q in shown if q['queryType'] == 'PUSH')

    # (A GROUP BY: its push query is listed by SHOW QUERIES; every key is new, so every
    # record is a row of the answer.)
    body = json.dumps({'sql': 'SELECT s, COUNT(*) FROM flood GROUP BY s EMIT CHANGES;',
                       'properties': {'auto.offset.reset': 'earliest'}})
    # HTTP/1.1: the socket is never read.
    s = raw_http('/query-stream', 'Content-Type: application/json\r\n')
    chunk(s, body)
    s.sendall(b'0\r\n\r\n')
    # HTTP/2: a stream whose answer is not read (its flow-control window fills).
    with httpx.Client(http2=True, http1=False, timeout=30) as h2:
        with h2.stream('POST', BASE + '/query-stream', content=body) as r:
            check(r.status_code == 200, r.status_code)
            wait_for(lambda: pushes() >= 1, 'push queries running', seconds=20)
            wait_for(lambda: pushes() == 0, 'push queries of clients that stopped reading ended', seconds=30)
    # The server closed the unread socket: what it holds drains to the end.
    closed = False
    try:
        while s.recv(1 << 20):
            pass
        closed = True
    except ConnectionResetError:
        closed = True
    s.close()
    check(closed, 'the unread connection was closed')
    check(requests.get(BASE + '/info').status_code == 200, 'the server lives on')


{'consumers': consumers, 'admin': admin, 'schemas': schemas, 'limits': limits}[MODE]()
