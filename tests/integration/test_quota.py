"""
test_quota: the quota on distinct metrics (--metrics-max) and the
collection of idle metrics (--idle-expiry-s), on one aggregator holding at
most 3 live metrics and collecting what has been idle for 3 s.

- A fourth metric is refused by the owner: its events go to tally.rejected
  with reason "metric quota reached: ...", while the three keep counting.
- Deleting one frees its place; idle metrics are collected and free theirs.
"""

import json
import time

from harness import eventually, get_rejected, rpc_result

METRICS_MAX = 3
IDLE_S = 3
CLUSTER = {'instances': 1, 'frontends': 1,
           'extra_args': {'aggregator': ['--metrics-max', str(METRICS_MAX),
                                         '--idle-expiry-s', str(IDLE_S),
                                         '--flush-interval-ms', '100']}}
WAIT_S = 15
REASON = 'metric quota reached: this instance holds 3 metrics (--metrics-max)'


def record(url, name, value=1):
    r = rpc_result(url, 'events.record', {'events': [
        {'name': name, 'type': 'counter', 'value': value}]})
    assert r == {'accepted': 1, 'rejected': []}, r


def stats(url):
    [inst] = rpc_result(url, 'cluster.status')['instances']
    return inst


def counted(url, name, count):
    def check():
        m = rpc_result(url, 'metrics.query', {'names': [name]})['metrics'][name]
        return m is not None and m['count'] == count, m
    eventually(check, WAIT_S, '%s counted %d times' % (name, count))


def test_quota_then_delete_then_collection(env):
    url = env.cluster.frontend_url(0)
    get_rejected(env.servers, env.vhost, 0)          # start empty
    for name in ('quota.a', 'quota.b', 'quota.c'):
        record(url, name)
        counted(url, name, 1)
    record(url, 'quota.d', 7)      # the frontend cannot know; the owner can
    got = get_rejected(env.servers, env.vhost, WAIT_S, count=1)
    assert len(got) == 1, got
    headers, body = got[0]
    assert headers['x-tally-reason'] == REASON, headers
    assert json.loads(body) == {'name': 'quota.d', 'type': 'counter',
                                'events': 1, 'reason': REASON}, body
    # the others keep serving
    record(url, 'quota.a', 2)
    counted(url, 'quota.a', 2)
    inst = stats(url)
    assert inst['metrics_max'] == METRICS_MAX, inst
    assert inst['stats']['quota_refused'] == 1, inst['stats']
    assert inst['metrics'] == 3, inst
    assert rpc_result(url, 'metrics.query', {'names': ['quota.d']})[
        'metrics'] == {'quota.d': None}

    # a delete frees a place
    rpc_result(url, 'metrics.delete', {'name': 'quota.b'})
    record(url, 'quota.d', 7)
    counted(url, 'quota.d', 1)
    assert stats(url)['metrics'] == 3

    # idle metrics are collected after IDLE_S and free theirs
    time.sleep(IDLE_S + 1)

    def collected():
        st = stats(url)
        return (st['metrics'] == 0
                and st['stats']['metrics_collected'] >= 3), st
    eventually(collected, WAIT_S, 'idle metrics collected')
    for name in ('quota.e', 'quota.f', 'quota.g'):
        record(url, name)
        counted(url, name, 1)
    assert get_rejected(env.servers, env.vhost, 1) == []
    assert stats(url)['stats']['quota_refused'] == 1
