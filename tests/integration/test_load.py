"""
test_load: the cluster's answers are exact under load. 100,000 events over
1,000 metrics of every type go in through JSON-RPC (batches of calls,
large calls and single calls), 100,000 more through exchange tally.ingest,
with two aggregator instances each owning half the slots. Every counter's
count and sum is exact, every percentile within 1% of the exact
nearest-rank value, every recent list and gauge exact; one unique metric
with 200,000 distinct values is within 3%. Then memcached is flushed and
every answer is still the same.
"""

import json
import math
import random
import time

from harness import (eventually, post_raw, publish_ingest, query_metrics,
                     rpc_result)

CLUSTER = {'instances': 2, 'frontends': 1}

SEED = 20261122
METRICS_PER_TYPE = 200
TYPES = ['counter', 'gauge', 'percentile', 'unique', 'recent']
RPC_EVENTS = 100000
INGEST_EVENTS = 100000
CALL_EVENTS = 1000          # events per large call
INGEST_MESSAGE_EVENTS = 1000
SINGLE_CALLS = 500          # of the RPC events, sent one per call
BATCH_CALLS = 10            # calls per JSON-RPC batch array
DISTINCT = 200000
DISTINCT_CALL = 5000
RECENT_KEEP = 100
QUANTILES = [('p50', 0.5), ('p90', 0.9), ('p95', 0.95), ('p99', 0.99),
             ('p999', 0.999)]
SETTLE_S = 60


class Model:
    """The expected state of every metric, built as events are made."""

    def __init__(self, now):
        self.rng = random.Random(SEED)
        self.base = math.floor(now) - 50       # all events in the last minute
        self.tick = 0
        self.names = {t: ['load.%s.%03d' % (t, i)
                          for i in range(METRICS_PER_TYPE)] for t in TYPES}
        self.values = {}

    def time(self):
        """Distinct millisecond times, so recent and gauge order is exact."""
        self.tick += 1
        return self.base + (self.tick % 45000) / 1000.0 + \
            (self.tick // 45000) * 0.0001

    def event(self):
        kind = self.rng.choice(TYPES)
        name = self.rng.choice(self.names[kind])
        t = self.time()
        if kind == 'counter':
            value = self.rng.randint(1, 100)
        elif kind == 'percentile':
            value = round(self.rng.lognormvariate(3, 1), 3)
        elif kind == 'unique':
            value = 'u%d' % self.rng.randint(0, 49)
        else:
            value = round(self.rng.uniform(-1000, 1000), 3)
        ev = {'name': name, 'type': kind, 'value': value, 'time': t}
        if kind in ('gauge', 'recent'):
            ev['source'] = 'web-%d' % self.rng.randint(1, 3)
        self.values.setdefault(name, []).append(ev)
        return ev


def check_metric(name, events, got):
    assert got is not None, '%s: null' % name
    kind = events[0]['type']
    assert got['type'] == kind, '%s: type %r' % (name, got['type'])
    if kind == 'counter':
        assert got['count'] == len(events), '%s: count %r != %d' % (
            name, got['count'], len(events))
        assert got['sum'] == sum(e['value'] for e in events), \
            '%s: sum %r' % (name, got['sum'])
    elif kind == 'percentile':
        values = sorted(e['value'] for e in events)
        assert got['count'] == len(values), '%s: count' % name
        for field, q in QUANTILES:
            exact = values[max(1, math.ceil(q * len(values))) - 1]
            assert abs(got[field] - exact) <= 0.01 * abs(exact) + 1e-9, \
                '%s: %s %r vs exact %r' % (name, field, got[field], exact)
    elif kind == 'unique':
        exact = len(set(e['value'] for e in events))
        assert abs(got['distinct'] - exact) <= max(1, 0.03 * exact), \
            '%s: distinct %r vs %d' % (name, got['distinct'], exact)
    elif kind == 'gauge':
        latest = {}
        for e in sorted(events, key=lambda e: e['time']):
            latest[e['source']] = e['value']
        assert got['sources'] == latest, '%s: sources %r vs %r' % (
            name, got['sources'], latest)
    else:
        order = sorted(events, key=lambda e: (e['time'], e['source'],
                                              e['value']), reverse=True)
        want = [(e['value'], e['source']) for e in order[:RECENT_KEEP]]
        have = [(e['value'], e['source']) for e in got['entries']]
        assert have == want, '%s: entries differ (first %r vs %r)' % (
            name, have[:3], want[:3])
        for e, g in zip(order, got['entries']):
            assert abs(g['time'] - e['time']) < 1e-5, '%s: time' % name


def query_all(url, names, window='all'):
    return query_metrics(url, names, window=window)


def rpc_batch(url, calls):
    body = json.dumps([{'jsonrpc': '2.0', 'id': i, 'method': 'events.record',
                        'params': {'events': c}} for i, c in
                       enumerate(calls)]).encode()
    status, _, data = post_raw(url, body, {'Content-Type': 'application/json'})
    assert status == 200, 'HTTP %d' % status
    for resp in json.loads(data):
        assert resp['result']['rejected'] == [], json.dumps(resp)[:300]


def test_load(env):
    url = env.cluster.frontend_url(0)
    model = Model(time.time())
    singles = [model.event() for _ in range(SINGLE_CALLS)]
    for ev in singles:
        r = rpc_result(url, 'events.record', {'events': [ev]})
        assert r == {'accepted': 1, 'rejected': []}, json.dumps(r)
    remaining = RPC_EVENTS - SINGLE_CALLS
    calls = []
    while remaining > 0:
        n = min(CALL_EVENTS, remaining)
        calls.append([model.event() for _ in range(n)])
        remaining -= n
    for i in range(0, len(calls), BATCH_CALLS):
        if i % (2 * BATCH_CALLS) == 0:
            rpc_batch(url, calls[i:i + BATCH_CALLS])
        else:
            for c in calls[i:i + BATCH_CALLS]:
                r = rpc_result(url, 'events.record', {'events': c})
                assert r == {'accepted': len(c), 'rejected': []}, \
                    json.dumps(r)[:300]
    for i in range(INGEST_EVENTS // INGEST_MESSAGE_EVENTS):
        events = [model.event() for _ in range(INGEST_MESSAGE_EVENTS)]
        publish_ingest(env.servers, env.vhost,
                       json.dumps({'events': events}).encode(),
                       message_id='load-%d' % i)
    distinct_name = 'load.distinct'
    for i in range(0, DISTINCT, DISTINCT_CALL):
        events = [{'name': distinct_name, 'type': 'unique',
                   'value': 'user-%d' % k}
                  for k in range(i, i + DISTINCT_CALL)]
        r = rpc_result(url, 'events.record', {'events': events})
        assert r['accepted'] == DISTINCT_CALL, json.dumps(r)[:300]

    names = sorted(model.values)
    total = sum(len(v) for v in model.values.values())
    assert total == RPC_EVENTS + INGEST_EVENTS, total

    def settled():
        got = query_all(url, names)
        counted = sum(g['count'] for n, g in got.items()
                      if g is not None and 'count' in g)
        want = sum(len(model.values[n]) for n in names
                   if model.values[n][0]['type'] in ('counter', 'percentile'))
        return counted == want, {'counted': counted, 'want': want}

    eventually(settled, SETTLE_S, 'every event applied')
    got = query_all(url, names)
    for name in names:
        check_metric(name, model.values[name], got[name])
    d = query_all(url, [distinct_name])[distinct_name]
    assert abs(d['distinct'] - DISTINCT) <= 0.03 * DISTINCT, d

    # The 10-minute window holds every event too: buckets from the cache.
    ten = query_all(url, names, '10m')
    for name in names:
        if model.values[name][0]['type'] == 'counter':
            assert ten[name]['count'] == len(model.values[name]), name

    # memcached flushed: the same answers, from the owners.
    env.servers.flush_memcached()
    again = query_all(url, names)
    for name in names:
        check_metric(name, model.values[name], again[name])
    ten = query_all(url, names, '10m')
    for name in names:
        if model.values[name][0]['type'] == 'counter':
            assert ten[name]['count'] == len(model.values[name]), name
