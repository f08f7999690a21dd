"""
test_reshard_edges: the corners of a slot move (schema/resharding.md)
that a steady load does not reach. Slots 1366..2047 move from instance 0
to instance 2 when two instances become three; instance 0 is made to die
when the map reaches it (TALLY_CRASH_AT=map-received: logged, not yet
applied), so its
handoff comes only when it is started again.

- a MAP entry packed into one message after events: the events are
  applied under the old map and handed off with the slot;
- deletes around a move: a metric deleted at the old owner and recorded
  again at the new one keeps its new life; one deleted at the new owner
  before the handoff does not come back;
- while the old owner is down, another reshard is refused;
- thousands of client batches parked at the new owner are released
  without a deep recursion (the new owner runs with a 512 KiB stack).
"""

import json
import resource
import time
import uuid

from busmsg import counter_event, map_entry, message, names_in, subbatch
from harness import _amqp, eventually, post_raw, rpc, rpc_result
from test_reshard import record_counters as record

CLUSTER = {'instances': 2, 'frontends': 1}
MAP2 = ('tally-slotmap 1\nversion 2\ninstances 3\n0-1365 0\n1366-2047 2\n'
        '2048-3412 1\n3413-4095 2\n')
MOVING = (1366, 2047)          # 0 -> 2 in MAP2, the map of 2 -> 3
WAIT_S = 30
PARK_CALLS = 500
PARK_REQUESTS = 8


def publish(env, exchange, key, body, content_type='application/octet-stream'):
    import pika
    conn = _amqp(env.servers, env.vhost)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, key, body,
                         pika.BasicProperties(content_type=content_type,
                                              delivery_mode=2),
                         mandatory=True)
    finally:
        conn.close()


def counts(url, metrics):
    got = rpc_result(url, 'metrics.query', {'names': metrics})['metrics']
    return {n: (m and m['count']) for n, m in got.items()}


def wait_counts(url, want):
    eventually(lambda: (counts(url, list(want)) == want,
                        counts(url, list(want))), WAIT_S, 'counts %s' % want)


def settled(url):
    def check():
        st = rpc_result(url, 'cluster.status')
        return (not st['move_in_progress'] and not st['unreachable']
                and all(i['map_version'] == st['map_version']
                        for i in st['instances'])), st
    return eventually(check, WAIT_S, 'the moves to finish')


def start_fresh(env):
    """Instances 0 and 1 only, on version 1 (what the module starts
    with); instance 2 added once."""
    c = env.cluster
    if len(c.aggregators) < 3:
        c.add_aggregator()


def reshard_with_late_handoff(env):
    """2 -> 3 while instance 0 dies as the map reaches it; returns with
    instance 0 down."""
    c = env.cluster
    c.stop_aggregator(0)
    c.start_aggregator(0, env={'TALLY_CRASH_AT': 'map-received:1'})
    r = rpc_result(c.frontend_url(0), 'cluster.reshard', {'instances': 3})
    d = c.aggregators[0]
    eventually(lambda: (not d.running(), None), WAIT_S,
               'instance 0 to die as the map reaches it')
    d.kill()
    return r


def back_to_two(env):
    c = env.cluster
    url = c.frontend_url(0)
    rpc_result(url, 'cluster.reshard', {'instances': 2})
    settled(url)
    c.stop_aggregator(2)


def test_map_after_events_in_one_message(env):
    c = env.cluster
    url = c.frontend_url(0)
    names = names_in(MOVING[0], MOVING[1], 8, 'grp')
    for _ in range(5):
        record(url, names)
    wait_counts(url, {n: 5 for n in names})
    start_fresh(env)
    publish(env, 'tally.events', '2', message([subbatch([map_entry(MAP2)], 2)]))
    publish(env, 'tally.events', '1', message([subbatch([map_entry(MAP2)], 2)]))
    time.sleep(1)
    publish(env, 'tally.events', '0',
            message([subbatch([counter_event(n) for n in names], 1),
                     subbatch([map_entry(MAP2)], 2)]))
    publish(env, 'tally.control', '', b'{"op":"map","version":2}',
            'application/json')
    eventually(lambda: (rpc_result(url, 'cluster.status')['map_version'] == 2,
                        None), WAIT_S, 'the frontend on map version 2')
    settled(url)
    wait_counts(url, {n: 6 for n in names})
    record(url, names)
    wait_counts(url, {n: 7 for n in names})
    st = rpc_result(url, 'cluster.status')
    assert [i['moves']['newer_map_subbatches'] for i in st['instances']] \
        == [0, 0, 0], st
    back_to_two(env)


def test_deletes_around_a_move(env):
    c = env.cluster
    url = c.frontend_url(0)
    moving = names_in(MOVING[0], MOVING[1], 16, 'del')
    new_life, gone = moving[:8], moving[8:]
    record(url, new_life)
    for n in new_life:
        rpc_result(url, 'metrics.delete', {'name': n})
    for _ in range(5):
        record(url, gone)
    wait_counts(url, dict({n: None for n in new_life}, **{n: 5 for n in gone}))
    c.start_aggregator(2)
    reshard_with_late_handoff(env)
    record(url, new_life)                # at instance 2, the new life
    for n in gone:                       # deleted at instance 2 first
        rpc_result(url, 'metrics.delete', {'name': n})
    wait_counts(url, dict({n: 1 for n in new_life}, **{n: None for n in gone}))
    c.start_aggregator(0)                # the handoff comes now
    settled(url)
    time.sleep(1)
    wait_counts(url, dict({n: 1 for n in new_life}, **{n: None for n in gone}))
    back_to_two(env)


def test_reshard_refused_while_the_old_owner_is_down(env):
    c = env.cluster
    url = c.frontend_url(0)
    names = names_in(MOVING[0], MOVING[1], 8, 'ovl')
    for _ in range(5):
        record(url, names)
    wait_counts(url, {n: 5 for n in names})
    c.start_aggregator(2)
    reshard_with_late_handoff(env)
    resp = rpc(url, 'cluster.reshard', {'instances': 2})
    assert resp['error'] == {
        'code': 1202, 'message': 'Instance unavailable',
        'data': 'instance 0 did not answer within 1000 ms'}, resp
    c.start_aggregator(0)
    settled(url)
    record(url, names)
    wait_counts(url, {n: 6 for n in names})
    back_to_two(env)
    wait_counts(url, {n: 6 for n in names})


def test_many_parked_batches(env):
    c = env.cluster
    url = c.frontend_url(0)
    c.start_aggregator(2)
    reshard_with_late_handoff(env)
    for _ in range(PARK_REQUESTS):
        calls = [{'jsonrpc': '2.0', 'id': k, 'method': 'events.record',
                  'params': {'batch': str(uuid.uuid4()), 'events': [
                      {'name': 'park.c', 'type': 'counter', 'value': 1}]}}
                 for k in range(PARK_CALLS)]
        status, _, body = post_raw(url, json.dumps(calls).encode(),
                                   {'Content-Type': 'application/json'})
        assert status == 200, (status, body[:200])
        assert all('result' in x for x in json.loads(body)), body[:300]

    def parked():
        st = rpc_result(url, 'cluster.status')
        n = sum(i['moves']['parked_batches'] for i in st['instances'])
        return n > 0, n
    n = eventually(parked, WAIT_S, 'batches parked')
    resource.prlimit(c.aggregators[2].proc.pid, resource.RLIMIT_STACK,
                     (512 * 1024, 512 * 1024))
    c.start_aggregator(0)
    settled(url)
    assert c.aggregators[2].running()
    wait_counts(url, {'park.c': PARK_CALLS * PARK_REQUESTS})
    print('    %d batches parked, then released' % n)
    back_to_two(env)
