"""
test_reshard: live resharding (schema/resharding.md). A cluster of two
aggregators grows to three and four and shrinks back to two under a steady
load of counter events sent with batch ids and retried on failure; every
counter must be exact at the end.
"""

import math
import threading
import time
import uuid

from harness import eventually, rpc, rpc_result

CLUSTER = {'instances': 2, 'frontends': 2}
METRICS = 64
EVENTS = 20              # per call
MOVE_WAIT_S = 60


def names():
    return ['reshard.c%02d' % i for i in range(METRICS)]


DUPLICATE_EVERY = 5       # every 5th call is sent again, as a client retry


class Load:
    """Calls events.record in a loop from two threads, each call with a
    batch id, retried until accepted, and every DUPLICATE_EVERY-th call
    sent once more through the other frontend (a retry after a lost
    answer); counts what was sent per metric."""

    def __init__(self, urls):
        self.urls = urls
        self.sent = {n: 0 for n in names()}
        self.calls = 0
        self.retries = 0
        self.duplicates = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error = None
        self.threads = [threading.Thread(target=self.run, args=(t,),
                                         daemon=True) for t in range(2)]

    def call(self, url, events, batch):
        """One events.record call, retried until accepted."""
        attempt = 0
        while True:
            resp = rpc(self.urls[(self.urls.index(url) + attempt)
                                 % len(self.urls)], 'events.record',
                       {'events': events, 'batch': batch})
            if 'result' in resp:
                assert resp['result']['accepted'] == EVENTS, resp
                return
            attempt += 1
            with self.lock:
                self.retries += 1
            assert attempt < 100, resp
            time.sleep(0.05)

    def run(self, t):
        k = t * EVENTS
        try:
            while not self.stop.is_set():
                events = [{'name': names()[(k + j) % METRICS],
                           'type': 'counter', 'value': 1}
                          for j in range(EVENTS)]
                batch = str(uuid.uuid4())
                n = k // EVENTS
                self.call(self.urls[n % len(self.urls)], events, batch)
                if n % DUPLICATE_EVERY == 0:
                    self.call(self.urls[(n + 1) % len(self.urls)], events,
                              batch)
                with self.lock:
                    for e in events:
                        self.sent[e['name']] += 1
                    self.calls += 1
                    self.duplicates += n % DUPLICATE_EVERY == 0
                k += 2 * EVENTS
        except BaseException as e:          # reported by join()
            self.error = e

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        return False

    def check(self):
        assert self.error is None, self.error


def status(env):
    return rpc_result(env.cluster.frontend_url(0), 'cluster.status')


def settled(env, instances):
    """Every instance of the map answers, is on the frontend's map
    version, and no move is in progress."""
    def check():
        st = status(env)
        ok = (st['instance_count'] == instances and not st['unreachable']
              and not st['move_in_progress']
              and all(i['map_version'] == st['map_version']
                      for i in st['instances']))
        return ok, st
    return eventually(check, MOVE_WAIT_S, 'the move to %d instances' % instances)


def reshard(env, instances):
    before = status(env)
    r = rpc_result(env.cluster.frontend_url(0), 'cluster.reshard',
                   {'instances': instances})
    assert r['previous_version'] == before['map_version'], (r, before)
    assert r['version'] == before['map_version'] + 1, r
    st = settled(env, instances)
    assert st['moved_slots'] == r['moved_slots'], (st['moved_slots'], r)
    return r, st


def exact(env, load):
    def check():
        got = {}
        for i in range(0, METRICS, 32):
            part = names()[i:i + 32]
            got.update(rpc_result(env.cluster.frontend_url(0), 'metrics.query',
                                  {'names': part})['metrics'])
        counts = {n: (m or {}).get('count', 0) for n, m in got.items()}
        return counts == load.sent, {n: (counts[n], load.sent[n])
                                     for n in counts
                                     if counts[n] != load.sent[n]}
    eventually(check, MOVE_WAIT_S, 'exact counts')


def test_scale_2_3_4_2_under_load(env):
    cluster = env.cluster
    with Load([cluster.frontend_url(0), cluster.frontend_url(1)]) as load:
        time.sleep(1)
        cluster.add_aggregator()
        r, st = reshard(env, 3)
        assert r['moved_slots'] <= math.ceil(4096 / 3), r
        time.sleep(1)
        cluster.add_aggregator()
        r, st = reshard(env, 4)
        assert r['moved_slots'] <= math.ceil(4096 / 4), r
        time.sleep(1)
        r, st = reshard(env, 2)
        assert r['moved_slots'] == 2048, r
        time.sleep(1)
    load.check()
    # the removed instances have nothing left to do: stop them
    for i in (3, 2):
        cluster.aggregators[i].stop()
    exact(env, load)
    st = status(env)
    assert [i['slots'] for i in st['instances']] == [2048, 2048], st
    print('    %d calls, %d sent twice, %d retries after errors'
          % (load.calls, load.duplicates, load.retries))


def record_counters(url, metrics, value=1, batch=None):
    """One call adding VALUE to every counter of METRICS."""
    params = {'events': [{'name': n, 'type': 'counter', 'value': value}
                         for n in metrics]}
    if batch is not None:
        params['batch'] = batch
    r = rpc_result(url, 'events.record', params)
    assert r == {'accepted': len(metrics), 'rejected': []}, r


def totals(env, metrics, count, total):
    """Waits until every counter of METRICS has COUNT events summing to
    TOTAL."""
    def check():
        got = {}
        for i in range(0, len(metrics), 32):
            got.update(rpc_result(env.cluster.frontend_url(0),
                                  'metrics.query',
                                  {'names': metrics[i:i + 32]})['metrics'])
        wrong = {n: m and [m['count'], m['sum']] for n, m in got.items()
                 if m is None or m['count'] != count or m['sum'] != total}
        return not wrong, wrong
    eventually(check, MOVE_WAIT_S, 'counts %d, sums %d' % (count, total))


def instance_sum(st, section, key):
    return sum(i[section][key] for i in st['instances'])


def test_frontend_with_an_old_map(env):
    """A frontend that keeps the map of version 1 routes its events to
    the old owners, which send them on: every count is exact."""
    cluster = env.cluster
    metrics = ['oldmap.c%02d' % i for i in range(METRICS)]
    st = status(env)
    assert st['map_version'] > 1 and st['instance_count'] == 2, st
    before = instance_sum(st, 'moves', 'stragglers_forwarded')
    k = cluster.add_frontend(env={'TALLY_TEST_NO_MAP_REFRESH': '1'})
    old = cluster.frontend_url(k)
    cluster.start_aggregator(2)
    reshard(env, 3)
    assert rpc_result(old, 'cluster.status')['map_version'] == 1
    for v in (1, 2, 5):
        record_counters(old, metrics, v)
    record_counters(old, metrics, 10, batch=str(uuid.uuid4()))
    totals(env, metrics, 4, 18)
    after = instance_sum(status(env), 'moves', 'stragglers_forwarded')
    assert after > before, (before, after)
    print('    %d sub-batches sent on by the old owners' % (after - before))
    reshard(env, 2)
    cluster.stop_aggregator(2)
    totals(env, metrics, 4, 18)


BATCHES = 100
CRASH_WAIT_S = 30


def test_batch_retried_after_a_move(env):
    """Client batches first sent before a move and retried after it are
    counted once, wherever their batch keys moved."""
    cluster = env.cluster
    metrics = ['retry.c%02d' % i for i in range(METRICS)]
    ids = [str(uuid.uuid4()) for _ in range(BATCHES)]
    for b in ids:
        record_counters(cluster.frontend_url(0), metrics, 1, batch=b)
    totals(env, metrics, BATCHES, BATCHES)
    before = instance_sum(status(env), 'durability',
                          'deduplicated_client_batches')
    cluster.start_aggregator(2)
    reshard(env, 3)
    for b in ids:
        record_counters(cluster.frontend_url(1), metrics, 1, batch=b)
    totals(env, metrics, BATCHES, BATCHES)
    st = status(env)
    assert instance_sum(st, 'durability', 'deduplicated_client_batches') \
        - before == BATCHES, st
    reshard(env, 2)
    cluster.stop_aggregator(2)
    for b in ids:
        record_counters(cluster.frontend_url(0), metrics, 1, batch=b)
    totals(env, metrics, BATCHES, BATCHES)


def test_batch_retried_during_a_move(env):
    """Retries that reach a slot's new owner before the old owner's batch
    keys do are parked until the keys come, then counted once: the old
    owner (instance 0) dies as the map reaches it, before its handoffs
    are made, and the retries come while it is down."""
    cluster = env.cluster
    metrics = ['park.c%02d' % i for i in range(METRICS)]
    ids = [str(uuid.uuid4()) for _ in range(BATCHES)]
    for b in ids:
        record_counters(cluster.frontend_url(0), metrics, 1, batch=b)
    totals(env, metrics, BATCHES, BATCHES)
    cluster.stop_aggregator(0)
    cluster.start_aggregator(0, env={'TALLY_CRASH_AT': 'map-received:1'})
    cluster.start_aggregator(2)
    rpc_result(cluster.frontend_url(0), 'cluster.reshard', {'instances': 3})
    d = cluster.aggregators[0]
    eventually(lambda: (not d.running(), None), CRASH_WAIT_S,
               'instance 0 to die as the map reaches it')
    d.kill()
    for b in ids:       # frontend 0 made the reshard: it routes by the map
        record_counters(cluster.frontend_url(0), metrics, 1, batch=b)

    def parked():
        st = status(env)
        n = sum(i['moves']['parked_batches'] for i in st['instances']
                if i['instance'] == 2)
        return n > 0, n
    n = eventually(parked, MOVE_WAIT_S, 'batches parked at instance 2')
    cluster.start_aggregator(0)
    st = settled(env, 3)
    assert instance_sum(st, 'moves', 'parked_batches') == 0, st
    totals(env, metrics, BATCHES, BATCHES)
    print('    %d retries parked until the keys came' % n)
    reshard(env, 2)
    cluster.stop_aggregator(2)


# Each trial: a reshard between 2 and 3 instances while VICTIM dies at
# POINT (TALLY_CRASH_AT), then restarts; the counts stay exact.
#   map-installed     the map applied, the handoffs made, nothing acked
#   handoff-received  the new owner merged a handoff, nothing acked
#   forwards-logged   the old owner logged its handoffs as confirmed
CRASH_TRIALS = (
    (3, 0, 'map-installed'),        # old owner
    (2, 0, 'map-installed'),        # new owner (gains instance 2's slots)
    (3, 2, 'handoff-received'),     # new owner
    (2, 2, 'forwards-logged'),      # old owner: the move recorded as done
    (3, 2, 'map-installed'),        # new owner
    (2, 2, 'map-installed'),        # old owner
    (3, 0, 'forwards-logged'),      # old owner
    (2, 1, 'handoff-received'),     # new owner
)


def test_crash_at_each_step(env):
    cluster = env.cluster
    metrics = ['crash.c%02d' % i for i in range(METRICS)]
    sent = 0
    for target, victim, point in CRASH_TRIALS:
        if target == 3 and victim != 2:
            cluster.start_aggregator(2)
        cluster.stop_aggregator(victim)
        cluster.start_aggregator(victim, env={'TALLY_CRASH_AT': point + ':1'})
        record_counters(cluster.frontend_url(0), metrics)
        sent += 1
        rpc_result(cluster.frontend_url(0), 'cluster.reshard',
                   {'instances': target})
        d = cluster.aggregators[victim]
        eventually(lambda: (not d.running(), None), CRASH_WAIT_S,
                   'instance %d to die at %s' % (victim, point))
        d.kill()                        # reaps it
        cluster.start_aggregator(victim)
        record_counters(cluster.frontend_url(1), metrics)
        sent += 1
        settled(env, target)
        totals(env, metrics, sent, sent)
        if target == 2:
            cluster.stop_aggregator(2)
        print('    %s at instance %d (to %d instances): exact'
              % (point, victim, target))
