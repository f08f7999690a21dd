"""
test_cache_format: late events, answered from memcached alone, in both
cache value versions (schema/cache-value.md).

Version 2 (the default) keeps closed buckets that late events still touch
inside the metric's open value, and writes each one's own value once it
has been quiet for 4 flushes. Version 1 (--cache-format 1) writes every
touched bucket at every flush. Either way a query must see every late
event after a flush. While the owning aggregator is stopped (SIGSTOP) a
query cannot fall back to it, so the exact answer must come from the
cache: while buckets are held, after they settle, and after more late
events reopen a settled bucket.
"""

import os
import signal
import subprocess
import time

from harness import Cluster, eventually, rpc, rpc_result

CLUSTER = {'instances': 1, 'frontends': 1}

WAIT_S = 10
SETTLE_S = 2.0           # past 4 quiet flushes of 250 ms, with margin
FLUSHES_S = 0.5          # two flushes: written, not yet settled
WINDOW = '10m'


def record(url, name, events):
    evs = [{'name': name, 'type': 'counter', 'value': v, 'time': t}
           for t, v in events]
    assert rpc_result(url, 'events.record', {'events': evs})['accepted'] == len(evs)


def events_applied(url):
    st = rpc_result(url, 'cluster.status')
    return sum(i['stats']['events_applied'] for i in st['instances'])


def flushed(url, applied):
    """Waits until the aggregator has applied APPLIED events in all, then
    for two flushes. Not by querying: a query the cache cannot answer asks
    the owner, which then rewrites every value of the metric."""
    eventually(lambda: (events_applied(url) == applied, events_applied(url)),
               WAIT_S, '%d events applied' % applied)
    time.sleep(FLUSHES_S)


def from_cache_only(cluster, name):
    """The query's answer while the only aggregator is stopped: what
    memcached holds, or the error of a query that needed the owner."""
    agg = cluster.aggregators[0]
    agg.send_signal(signal.SIGSTOP)
    try:
        resp = rpc(cluster.frontend_url(), 'metrics.query',
                   {'names': [name], 'window': WINDOW})
    finally:
        agg.send_signal(signal.SIGCONT)
    if 'error' in resp:
        return resp['error']
    m = resp['result']['metrics'][name]
    return None if m is None else (m['count'], m['sum'])


def late_events_from_cache(cluster, name):
    url = cluster.frontend_url()
    now = time.time()
    # now, and two 10 s buckets that have closed: late events, held in the
    # open value (version 2) for the next second
    record(url, name, [(now, 1), (now, 2), (now - 35, 4), (now - 35, 8),
                       (now - 25, 16)])
    flushed(url, 5)
    assert from_cache_only(cluster, name) == (5, 31)

    # more late events into the same closed buckets
    record(url, name, [(now - 35, 32), (now - 25, 64)])
    flushed(url, 7)
    assert from_cache_only(cluster, name) == (7, 127)

    # quiet: the buckets settle into their own values; still exact
    time.sleep(SETTLE_S)
    assert from_cache_only(cluster, name) == (7, 127)

    # a late event reopens a settled bucket: the open value's copy is newer
    record(url, name, [(now - 35, 128)])
    flushed(url, 8)
    assert from_cache_only(cluster, name) == (8, 255)
    time.sleep(SETTLE_S)
    assert from_cache_only(cluster, name) == (8, 255)


def test_version2_late_events(env):
    late_events_from_cache(env.cluster, 'cachefmt.v2.late')


def test_version1_late_events(env):
    vhost = env.vhost + '-v1'
    env.servers.add_vhost(vhost)
    with Cluster(env.servers, vhost, env.builddir, instances=1, frontends=1,
                 extra_args={'aggregator': ['--cache-format', '1']}) as c:
        late_events_from_cache(c, 'cachefmt.v1.late')


def test_cache_format_flag_range(env):
    """--cache-format accepts 1 and 2 only, and says so."""
    exe = os.path.join(env.builddir, 'services', 'tally-aggregator')
    for bad in ('0', '3'):
        p = subprocess.run([exe, '--instance', '0', '--cache-format', bad,
                            '--check-config'], capture_output=True, text=True)
        assert p.returncode == 2, p
        assert p.stderr.strip().endswith(
            '--cache-format: %s is out of range 1..2' % bad), p.stderr
