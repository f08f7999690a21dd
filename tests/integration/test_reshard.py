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


class Load:
    """Calls events.record in a loop from one thread, each call with a
    batch id, retried until accepted; counts what was sent per metric."""

    def __init__(self, urls):
        self.urls = urls
        self.sent = {n: 0 for n in names()}
        self.calls = 0
        self.retries = 0
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        k = 0
        try:
            while not self.stop.is_set():
                events = [{'name': names()[(k + j) % METRICS],
                           'type': 'counter', 'value': 1}
                          for j in range(EVENTS)]
                batch = str(uuid.uuid4())
                attempt = 0
                while True:
                    url = self.urls[(k + attempt) % len(self.urls)]
                    resp = rpc(url, 'events.record',
                               {'events': events, 'batch': batch})
                    if 'result' in resp:
                        assert resp['result']['accepted'] == EVENTS, resp
                        break
                    attempt += 1
                    self.retries += 1
                    assert attempt < 100, resp
                    time.sleep(0.05)
                for e in events:
                    self.sent[e['name']] += 1
                self.calls += 1
                k += EVENTS
        except BaseException as e:          # reported by join()
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)
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
    print('    %d calls, %d retries' % (load.calls, load.retries))
