"""
test_query_cache: metrics.query through a frontend's query cache
(services/frontend/qcache.c, on by default) answers exactly what a
frontend without it (--query-cache 0) answers, and never older data.

A frontend keeps the closed buckets it has read and reads them again only
when the open value's closed marks show that a closed value of their ring
was written since (schema/cache-value.md). So after a flush that touched
a closed bucket with a late event, the next query must show it, in both
cache value versions: in version 2 the bucket first travels inside the
open value and gets its own value once quiet; in version 1 its own value
is written at once. While the only aggregator is stopped (SIGSTOP) a query
cannot ask it, so the answer must come from memcached and the cache.
"""

import signal
import time

from harness import Cluster, eventually, free_port, rpc, rpc_result

CLUSTER = {'instances': 1, 'frontends': 1}

WAIT_S = 10
SETTLE_S = 2.0           # past 4 quiet flushes of 250 ms, with margin
FLUSHES_S = 0.6          # two flushes
WINDOWS = ('1m', '10m', '1h', '1d', 'all')
TRIES = 3                # a bucket edge may pass between two queries


def record(url, events):
    assert rpc_result(url, 'events.record',
                      {'events': events})['accepted'] == len(events)


def counters(name, times_values):
    return [{'name': name, 'type': 'counter', 'value': v, 'time': t}
            for t, v in times_values]


def events_applied(url):
    st = rpc_result(url, 'cluster.status')
    return sum(i['stats']['events_applied'] for i in st['instances'])


def flushed(url, applied):
    """Waits until APPLIED events are applied in all, then two flushes."""
    eventually(lambda: (events_applied(url) == applied, events_applied(url)),
               WAIT_S, '%d events applied' % applied)
    time.sleep(FLUSHES_S)


def cache_stats(url):
    return rpc_result(url, 'cluster.status')['frontend']['query_cache']


def add_plain_frontend(cluster):
    """One more frontend of the cluster, without the query cache; its
    index."""
    first = cluster.frontends[0]
    argv = list(first.argv)
    port = free_port()
    argv[argv.index('--http-port') + 1] = str(port)
    d = cluster._daemon('frontend-plain-%d' % len(cluster.frontends),
                        argv + ['--query-cache', '0'], port)
    cluster.frontends.append(d)
    d.start()
    d.wait_ready()
    return len(cluster.frontends) - 1


def stopped(cluster):
    """A context in which the only aggregator is stopped."""
    class Stopped:
        def __enter__(self):
            cluster.aggregators[0].send_signal(signal.SIGSTOP)

        def __exit__(self, *exc):
            cluster.aggregators[0].send_signal(signal.SIGCONT)
            return False
    return Stopped()


def query(url, names, **params):
    """The metrics of one metrics.query, or its error."""
    resp = rpc(url, 'metrics.query', dict(params, names=names))
    if 'error' in resp:
        return resp['error']
    return resp['result']['metrics']


def without_rate(metrics):
    """METRICS with the top-level rates left out: they divide by the time
    since the window's oldest bucket, which moves between two queries."""
    if not isinstance(metrics, dict) or 'code' in metrics:
        return metrics
    return {k: (None if v is None else {f: x for f, x in v.items() if f != 'rate'})
            for k, v in metrics.items()}


def assert_same(cluster, cached, plain, names):
    """Every window, with the merged state, with and without series,
    answered from memcached alone: the cached frontend and the plain one
    agree exactly."""
    for window in WINDOWS:
        for series in (False, True):
            for attempt in range(TRIES):
                with stopped(cluster):
                    a = query(cluster.frontend_url(cached), names,
                              window=window, series=series, state=True)
                    b = query(cluster.frontend_url(plain), names,
                              window=window, series=series, state=True)
                if without_rate(a) == without_rate(b) or attempt == TRIES - 1:
                    break
            assert isinstance(a, dict), (window, a)
            assert without_rate(a) == without_rate(b), (window, series, a, b)


def count_sum(cluster, k, name, window):
    """(count, sum) of counter NAME from frontend K, from memcached alone."""
    with stopped(cluster):
        m = query(cluster.frontend_url(k), [name], window=window)
    assert isinstance(m, dict), m
    return None if m[name] is None else (m[name]['count'], m[name]['sum'])


def assert_served(before, after, marks):
    """Between two cache_stats: with closed marks (version 2) the query
    read no closed value; without them (version 1) it read them again but
    decoded none."""
    if marks:
        assert after['closed_read'] == before['closed_read'], (before, after)
    else:
        assert after['closed_read'] > before['closed_read'], (before, after)
        assert after['closed_decoded'] == before['closed_decoded'], \
            (before, after)


def late_event_seen(cluster, name, marks):
    """A closed bucket the cached frontend has read gets a late event: the
    next query after the flush shows it, before and after it settles, and
    the cache then serves it without reading (version 1: decoding) it
    again."""
    url = cluster.frontend_url(0)
    plain = add_plain_frontend(cluster)
    now = time.time()
    base = events_applied(url)
    # now, and closed 1 min and 10 s buckets of the 1h and 10m windows
    record(url, counters(name, [(now, 1), (now - 600, 2), (now - 1200, 4),
                                (now - 300, 8), (now - 45, 16)]))
    flushed(url, base + 5)
    time.sleep(SETTLE_S)
    assert count_sum(cluster, 0, name, '1h') == (5, 31)
    before = cache_stats(url)
    assert count_sum(cluster, 0, name, '1h') == (5, 31)
    after = cache_stats(url)
    assert_served(before, after, marks)
    if marks:   # four closed buckets kept, and the open value's own
        assert after['closed_kept'] - before['closed_kept'] >= 4, \
            (before, after)

    # a late event into the closed bucket of 10 minutes ago
    record(url, counters(name, [(now - 600, 32)]))
    flushed(url, base + 6)
    assert count_sum(cluster, 0, name, '1h') == (6, 63)
    assert count_sum(cluster, 0, name, '10m') == (3, 25)
    time.sleep(SETTLE_S)                  # settled into its own value
    assert count_sum(cluster, 0, name, '1h') == (6, 63)
    before = cache_stats(url)
    assert count_sum(cluster, 0, name, '1h') == (6, 63)
    assert_served(before, cache_stats(url), marks)

    # one more, which the frontend does not query until it has settled:
    # only the open value's closed mark tells that the bucket changed
    record(url, counters(name, [(now - 1200, 256)]))
    flushed(url, base + 7)
    time.sleep(SETTLE_S)
    assert count_sum(cluster, 0, name, '1h') == (7, 319)

    # and into one the 10m window holds, twice
    record(url, counters(name, [(now - 300, 64)]))
    flushed(url, base + 8)
    assert count_sum(cluster, 0, name, '10m') == (4, 89)
    record(url, counters(name, [(now - 300, 128)]))
    flushed(url, base + 9)
    assert count_sum(cluster, 0, name, '10m') == (5, 217)
    time.sleep(SETTLE_S)
    assert count_sum(cluster, 0, name, '10m') == (5, 217)
    assert count_sum(cluster, 0, name, '1h') == (9, 511)
    assert_same(cluster, 0, plain, [name])


def test_late_event_version2(env):
    late_event_seen(env.cluster, 'qcache.v2.late', True)


def test_late_event_version1(env):
    vhost = env.vhost + '-v1'
    env.servers.add_vhost(vhost)
    with Cluster(env.servers, vhost, env.builddir, instances=1, frontends=1,
                 extra_args={'aggregator': ['--cache-format', '1']}) as c:
        late_event_seen(c, 'qcache.v1.late', False)


def test_same_answers(env):
    """Counters and percentiles over the last day: cached and plain agree
    on every window, also when the cache answers a second time."""
    cluster = env.cluster
    url = cluster.frontend_url(0)
    plain = add_plain_frontend(cluster)
    now = time.time()
    base = events_applied(url)
    events = []
    for i in range(200):
        t = now - (i * 397) % 80000
        events.append({'name': 'qcache.same.c', 'type': 'counter',
                       'value': i % 7 + 0.25, 'time': t})
        events.append({'name': 'qcache.same.p', 'type': 'percentile',
                       'value': (i * 13) % 101 - 20.5, 'time': t})
    record(url, events)
    flushed(url, base + len(events))
    names = ['qcache.same.c', 'qcache.same.p']
    assert_same(cluster, 0, plain, names)
    assert_same(cluster, 0, plain, names)
    # a metric nobody recorded: both ask the owner, which says so
    for k in (0, plain):
        assert query(cluster.frontend_url(k), ['qcache.same.none'],
                     window='1h') == {'qcache.same.none': None}


def test_delete_and_redefine(env):
    """A deleted metric is gone at once from the cached frontend; redefined
    with another type, it shows only its new life."""
    cluster = env.cluster
    url = cluster.frontend_url(0)
    name = 'qcache.redefined'
    now = time.time()
    base = events_applied(url)
    record(url, counters(name, [(now - 600, 1), (now - 30, 2), (now, 3)]))
    flushed(url, base + 3)
    assert count_sum(cluster, 0, name, '1h') == (3, 6)
    assert count_sum(cluster, 0, name, '1h') == (3, 6)

    assert rpc_result(url, 'metrics.delete', {'name': name})['applied']
    eventually(lambda: (query(url, [name], window='1h')[name] is None,
                        query(url, [name], window='1h')),
               WAIT_S, 'the delete seen')
    assert count_sum(cluster, 0, name, '1h') is None

    record(url, [{'name': name, 'type': 'percentile', 'value': 7.5,
                  'time': now - 600}])
    eventually(lambda: (query(url, [name], window='1h')[name] is not None,
                        query(url, [name], window='1h')),
               WAIT_S, 'the new life seen')
    time.sleep(FLUSHES_S)
    with stopped(cluster):
        m = query(url, [name], window='1h')
    assert isinstance(m, dict), m
    assert m[name]['type'] == 'percentile', m
    assert m[name]['count'] == 1 and m[name]['sum'] == 7.5, m
