"""
test_cluster: behaviour that needs more than one daemon of a kind.

- Two frontends: after metrics.delete returns on one, both answer null
  within 1 s, and events queued before the delete do not bring it back.
- An event for an instance whose queue has no consumer yet is delivered
  once that instance starts.
- A poison message on tally.ingest goes to tally.rejected whole, with the
  reason, and the frontend carries on.
- A type conflict that only the owner can see goes to tally.rejected.
"""

import json
import signal
import threading
import time

from harness import (eventually, get_rejected, publish_ingest, rpc,
                     rpc_result)

CLUSTER = {'instances': 2, 'frontends': 2}

SLOTS = 4096
FNV_OFFSET = 0xcbf29ce484222325
FNV_PRIME = 0x100000001b3
DELETE_VISIBLE_S = 1.0
WAIT_S = 10


def slot(name):
    h = FNV_OFFSET
    for b in name.encode():
        h = ((h ^ b) * FNV_PRIME) & 0xffffffffffffffff
    return h % SLOTS


def owner(name, instances=2):
    """The default map: slot s belongs to instance s * M // 4096
    (schema/slot-map.md)."""
    return slot(name) * instances // SLOTS


def name_owned_by(instance, prefix):
    for i in range(10000):
        name = '%s.%d' % (prefix, i)
        if owner(name) == instance:
            return name
    raise AssertionError('no name for instance %d' % instance)


def count_of(url, name):
    m = rpc_result(url, 'metrics.query', {'names': [name]})['metrics'][name]
    return None if m is None else m['count']


def test_delete_seen_by_both_frontends(env):
    a, b = env.cluster.frontend_url(0), env.cluster.frontend_url(1)
    name = 'cluster.deleted'
    ev = {'name': name, 'type': 'counter', 'value': 1}
    assert rpc_result(a, 'events.record', {'events': [ev] * 3})['accepted'] == 3
    for url in (a, b):
        eventually(lambda: (count_of(url, name) == 3, count_of(url, name)),
                   WAIT_S, 'count 3 before the delete')

    # Events queued behind a stopped owner, then the delete behind them.
    agg = env.cluster.aggregators[owner(name)]
    agg.send_signal(signal.SIGSTOP)
    try:
        r = rpc_result(b, 'events.record', {'events': [ev] * 5})
        assert r == {'accepted': 5, 'rejected': []}, r
        answer = {}
        t = threading.Thread(target=lambda: answer.update(
            rpc(a, 'metrics.delete', {'name': name})))
        t.start()
        time.sleep(0.3)
    finally:
        agg.send_signal(signal.SIGCONT)
    t.join()
    assert answer.get('result') == {'name': name, 'applied': True}, answer
    returned = time.monotonic()
    for url in (a, b):
        eventually(lambda: (count_of(url, name) is None, count_of(url, name)),
                   DELETE_VISIBLE_S, 'null after the delete')
    assert time.monotonic() - returned <= DELETE_VISIBLE_S + 0.5
    time.sleep(0.6)         # a flush or two later, still gone
    for url in (a, b):
        assert count_of(url, name) is None

    # A new life after the delete starts from zero, with any type.
    r = rpc_result(b, 'events.record',
                   {'events': [{'name': name, 'type': 'gauge', 'value': 7}]})
    assert r == {'accepted': 1, 'rejected': []}, r
    got = eventually(lambda: (rpc_result(a, 'metrics.query', {'names': [name]})
                              ['metrics'][name] is not None,
                              rpc_result(a, 'metrics.query', {'names': [name]})
                              ['metrics'][name]), WAIT_S, 'gauge after delete')
    assert got['sources'] == {'': 7}, got


def test_delivered_when_instance_starts(env):
    url = env.cluster.frontend_url(0)
    env.cluster.stop_aggregator(1)
    name = name_owned_by(1, 'cluster.later')
    r = rpc_result(url, 'events.record', {'events': [
        {'name': name, 'type': 'counter', 'value': 2}] * 4})
    assert r == {'accepted': 4, 'rejected': []}, r
    env.cluster.start_aggregator(1)
    eventually(lambda: (count_of(url, name) == 4, count_of(url, name)),
               WAIT_S, 'events applied once instance 1 started')


def test_poison_ingest(env):
    url = env.cluster.frontend_url(0)
    get_rejected(env.servers, env.vhost, 0)          # start empty
    publish_ingest(env.servers, env.vhost, b'{"events": [1, 2', message_id='p1')
    publish_ingest(env.servers, env.vhost, b'\xff\xfe not json',
                   message_id='p2')
    good = {'events': [{'name': 'cluster.ingest', 'type': 'counter',
                        'value': 5},
                       {'name': 'bad name', 'type': 'counter', 'value': 1}]}
    publish_ingest(env.servers, env.vhost, json.dumps(good).encode(),
                   message_id='p3')
    got = get_rejected(env.servers, env.vhost, WAIT_S, count=3)
    reasons = sorted(h.get('x-tally-reason') for h, _ in got)
    assert reasons == [
        'event 1: 1002 name must be 1 to 200 characters of [A-Za-z0-9._:/-]',
        'message p1: body is not valid JSON',
        'message p2: body is not valid JSON'], reasons
    bodies = sorted(body for _, body in got)
    assert b'{"events": [1, 2' in bodies and b'\xff\xfe not json' in bodies
    eventually(lambda: (count_of(url, 'cluster.ingest') == 1,
                        count_of(url, 'cluster.ingest')), WAIT_S,
               'the good event of the ingest message')


def test_owner_sees_type_conflict(env):
    # Two frontends each accept a "first" event of another type: the owner
    # keeps the first it applies and rejects the other with the reason.
    a, b = env.cluster.frontend_url(0), env.cluster.frontend_url(1)
    name = 'cluster.race'
    get_rejected(env.servers, env.vhost, 0)
    ra = rpc_result(a, 'events.record', {'events': [
        {'name': name, 'type': 'counter', 'value': 1}]})
    rb = rpc_result(b, 'events.record', {'events': [
        {'name': name, 'type': 'gauge', 'value': 1}]})
    assert ra['accepted'] == 1
    if rb['accepted'] == 0:      # b already saw the counter in the cache
        assert rb['rejected'][0]['code'] == 1010, rb
        return
    got = get_rejected(env.servers, env.vhost, WAIT_S, count=1)
    assert len(got) == 1, got
    headers, body = got[0]
    assert headers['x-tally-reason'] == (
        'type conflict: cluster.race is a counter, not a gauge'), headers
    assert json.loads(body) == {'name': name, 'type': 'gauge', 'events': 1,
                                'reason': headers['x-tally-reason']}, body


def test_full_queue_retries_only_what_failed(env):
    # One ingest message (without a message_id, so it travels as one part
    # per instance) touches both instances while instance 1's queue
    # refuses everything (max-length 0, reject-publish): the frontend keeps
    # the delivery, publishes again only the part that failed, and counts
    # each event once when the queue takes messages again.
    url = env.cluster.frontend_url(0)
    a, b = name_owned_by(0, 'cluster.full'), name_owned_by(1, 'cluster.full')
    env.servers.rabbitmqctl('set_policy', '-p', env.vhost, '--priority', '10',
                            '--apply-to', 'queues', 'full-1',
                            r'^tally\.agg\.1$',
                            '{"max-length":0,"overflow":"reject-publish"}')
    try:
        time.sleep(1)
        body = {'events': [{'name': a, 'type': 'counter', 'value': 1},
                           {'name': b, 'type': 'counter', 'value': 1}]}
        publish_ingest(env.servers, env.vhost, json.dumps(body).encode())
        eventually(lambda: (count_of(url, a) == 1, count_of(url, a)), WAIT_S,
                   'the part for instance 0')
        time.sleep(2)       # several retries of the refused part
        assert count_of(url, a) == 1, count_of(url, a)
        assert count_of(url, b) is None, count_of(url, b)
    finally:
        env.servers.rabbitmqctl('clear_policy', '-p', env.vhost, 'full-1')
    eventually(lambda: (count_of(url, b) == 1, count_of(url, b)), WAIT_S,
               'the part for instance 1 once its queue takes messages')
    assert count_of(url, a) == 1, count_of(url, a)


def test_new_life_survives_a_cache_flush(env):
    # After a delete, a frontend that finds nothing in memcached stamps
    # generation 0; the owner still counts it in the metric's current life.
    url = env.cluster.frontend_url(0)
    name = 'cluster.reborn'
    ev = {'name': name, 'type': 'counter', 'value': 1}
    rpc_result(url, 'events.record', {'events': [ev] * 3})
    eventually(lambda: (count_of(url, name) == 3, count_of(url, name)),
               WAIT_S, 'first life')
    assert rpc_result(url, 'metrics.delete', {'name': name})['applied']
    rpc_result(url, 'events.record', {'events': [ev] * 2})
    eventually(lambda: (count_of(url, name) == 2, count_of(url, name)),
               WAIT_S, 'second life')
    env.servers.flush_memcached()
    time.sleep(1.1)                   # past the frontend's 1 s type cache
    r = rpc_result(url, 'events.record', {'events': [ev] * 5})
    assert r == {'accepted': 5, 'rejected': []}, r
    eventually(lambda: (count_of(url, name) == 7, count_of(url, name)),
               WAIT_S, 'events after the flush counted')


def test_bad_control_message_is_ignored(env):
    # Every frontend and aggregator reads tally.control: a malformed
    # message must not take any of them down (the shutdown check at the end
    # of the module requires a clean exit of each).
    import pika
    from harness import _amqp
    conn = _amqp(env.servers, env.vhost)
    try:
        ch = conn.channel()
        for body in (b'{"op":null,"name":"x"}', b'{"op":"deleted","name":7}',
                     b'[1,2]', b'\x00\xff', b'{"op":"deleted","name":"x",'
                     b'"generation":"high"}'):
            ch.basic_publish('tally.control', '', body,
                             pika.BasicProperties(content_type='application/json'))
    finally:
        conn.close()
    time.sleep(0.5)
    for k in range(2):
        status = rpc_result(env.cluster.frontend_url(k), 'cluster.status')
        assert status['unreachable'] == [], status


def test_client_batch_retries_count_once(env):
    # A client retries a call with the same batch id, at the same frontend
    # and at another one; an ingest message is published twice with one
    # message_id. Each counts once, and the owners say so.
    a, b = env.cluster.frontend_url(0), env.cluster.frontend_url(1)
    names = [name_owned_by(0, 'cluster.batch'), name_owned_by(1,
                                                             'cluster.batch')]
    events = [{'name': n, 'type': 'counter', 'value': 3} for n in names] * 2
    for url in (a, a, b):
        r = rpc_result(url, 'events.record',
                       {'events': events, 'batch': 'retry-0001'})
        assert r == {'accepted': 4, 'rejected': []}, r
    ingest = [n + '.ingest' for n in names]
    body = json.dumps({'events': [{'name': n, 'type': 'counter', 'value': 1}
                                  for n in ingest]}).encode()
    for _ in range(2):
        publish_ingest(env.servers, env.vhost, body, message_id='once-0001')
    for n in names:
        eventually(lambda: (count_of(a, n) == 2, count_of(a, n)), WAIT_S,
                   'the batch counted once')
    for n in ingest:
        eventually(lambda: (count_of(b, n) == 1, count_of(b, n)), WAIT_S,
                   'the ingest message counted once')
    time.sleep(0.5)
    assert [count_of(a, n) for n in names] == [2, 2]
    assert [count_of(b, n) for n in ingest] == [1, 1]
    st = rpc_result(a, 'cluster.status')
    skipped = sum(i['durability']['deduplicated_client_batches']
                  for i in st['instances'])
    assert skipped == 3, st          # two retries and one ingest copy
