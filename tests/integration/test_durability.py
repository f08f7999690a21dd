"""
test_durability: an aggregator's state lives on its disk. Killed with
SIGKILL in the middle of a load, restarted, it loses no acknowledged event
and counts none twice (write-ahead log, replay, sub-batch keys); stopped
cleanly it restarts from its snapshot with nothing to replay.
"""

import json
import random
import signal
import time

from harness import eventually, query_metrics, rpc_result

CLUSTER = {'instances': 2, 'frontends': 1}

SEED = 4242
METRICS = 20
BATCHES = 120
BATCH_EVENTS = 200
KILL_EVERY = 15           # batches between two kills of aggregator 0
SETTLE_S = 30


def counts(url, names):
    return {n: (None if m is None else (m['count'], m['sum']))
            for n, m in query_metrics(url, names).items()}


def settled_counts(url, names, expected):
    """(done, counts) for eventually(). While the owner reconnects after
    its log failed, a query the cache cannot answer may get 1202 (instance
    unavailable): not settled yet, rather than a failure."""
    try:
        got = counts(url, names)
    except AssertionError as e:
        if '"code": 1202' not in str(e):
            raise
        return False, str(e)[-200:]
    return got == expected, got


def status_of(url, instance):
    st = rpc_result(url, 'cluster.status')
    for inst in st['instances']:
        if inst['instance'] == instance:
            return inst
    raise AssertionError('instance %d missing: %s' % (instance, st))


def test_sigkill_loses_nothing(env):
    url = env.cluster.frontend_url(0)
    rng = random.Random(SEED)
    names = ['durable.c%02d' % i for i in range(METRICS)]
    want = {n: [0, 0] for n in names}
    kills = 0
    for b in range(BATCHES):
        events = []
        for _ in range(BATCH_EVENTS):
            n = rng.choice(names)
            v = rng.randint(1, 9)
            events.append({'name': n, 'type': 'counter', 'value': v})
        r = rpc_result(url, 'events.record', {'events': events})
        assert r == {'accepted': BATCH_EVENTS, 'rejected': []}, r
        for e in events:
            want[e['name']][0] += 1
            want[e['name']][1] += e['value']
        if b % KILL_EVERY == KILL_EVERY - 1:
            env.cluster.kill_aggregator(0, signal.SIGKILL)
            kills += 1
            env.cluster.start_aggregator(0)
    expected = {n: (c, float(s)) for n, (c, s) in want.items()}
    eventually(lambda: (counts(url, names) == expected, counts(url, names)),
               SETTLE_S, 'exact counts after %d kills' % kills)
    st = status_of(url, 0)
    assert st['durable'] is True, st
    d = st['durability']
    assert d['log_errors'] == 0, d
    assert d['replayed_records'] > 0, d      # the last start replayed
    print('    %d kills; instance 0: %s' % (kills, json.dumps(d)))


def test_clean_restart_from_snapshot(env):
    url = env.cluster.frontend_url(0)
    name = 'durable.snap'
    rpc_result(url, 'events.record', {'events': [
        {'name': name, 'type': 'percentile', 'value': float(v)}
        for v in range(1, 1001)]})
    before = eventually(
        lambda: (counts(url, [name])[name] == (1000, 500500.0),
                 counts(url, [name])[name]), SETTLE_S, 'applied')
    for i in range(2):
        env.cluster.stop_aggregator(i)
        env.cluster.start_aggregator(i)
    st = status_of(url, 0)
    assert st['durability']['replayed_records'] == 0, st  # all in snapshot
    env.servers.flush_memcached()
    assert counts(url, [name])[name] == before
    m = rpc_result(url, 'metrics.query', {'names': [name]})['metrics'][name]
    assert (m['min'], m['max']) == (1.0, 1000.0), m


CRASH_POINTS = ['logged', 'synced', 'applied']   # see services/aggregator
CRASH_AFTER = 3          # the Nth time the point is reached
DIE_WAIT_S = 20


def owned_by(instance, prefix, count):
    from test_cluster import owner
    names, i = [], 0
    while len(names) < count:
        name = '%s.%d' % (prefix, i)
        if owner(name) == instance:
            names.append(name)
        i += 1
    return names


def send_until_dead(url, agg, names, rng, want):
    """Records batches until AGG has died; returns the batches sent."""
    deadline = time.monotonic() + DIE_WAIT_S
    sent = 0
    while agg.running() or sent < 3:
        assert time.monotonic() < deadline, 'the crash point was not reached'
        events = [{'name': rng.choice(names), 'type': 'counter', 'value': 1}
                  for _ in range(50)]
        r = rpc_result(url, 'events.record', {'events': events})
        assert r['accepted'] == 50, r
        for e in events:
            want[e['name']] += 1
        sent += 1
        time.sleep(0.02)
    return sent


def test_crash_points(env):
    # Kill aggregator 0 at each point between logging a group of deliveries
    # and acking it; after a restart every count is exact, and the
    # redelivered messages were recognised by their sub-batch keys.
    url = env.cluster.frontend_url(0)
    rng = random.Random(SEED)
    agg = env.cluster.aggregators[0]
    for point in CRASH_POINTS:
        names = owned_by(0, 'crash.' + point, 5)
        want = {n: 0 for n in names}
        env.cluster.stop_aggregator(0)
        env.cluster.start_aggregator(
            0, env={'TALLY_CRASH_AT': '%s:%d' % (point, CRASH_AFTER)})
        send_until_dead(url, agg, names, rng, want)
        agg.proc = None
        env.cluster.start_aggregator(0)
        expected = {n: (c, float(c)) for n, c in want.items()}
        eventually(lambda: (counts(url, names) == expected,
                            counts(url, names)),
                   SETTLE_S, 'exact counts after a crash at %s' % point)
        d = status_of(url, 0)['durability']
        assert d['replayed_records'] > 0, (point, d)
        assert d['deduplicated_subbatches'] >= 1, (point, d)


def test_crash_during_snapshot(env):
    # The final snapshot of a clean stop is cut short after the snapshot
    # file is in place and before old log segments are trimmed.
    url = env.cluster.frontend_url(0)
    names = owned_by(0, 'crash.snapshot', 3)
    rpc_result(url, 'events.record', {'events': [
        {'name': n, 'type': 'counter', 'value': 2} for n in names] * 10})
    expected = {n: (10, 20.0) for n in names}
    eventually(lambda: (counts(url, names) == expected, counts(url, names)),
               SETTLE_S, 'applied before the stop')
    agg = env.cluster.aggregators[0]
    env.cluster.stop_aggregator(0)
    env.cluster.start_aggregator(0, env={'TALLY_CRASH_AT': 'snapshot:1'})
    agg.send_signal(signal.SIGTERM)
    agg.proc.wait(DIE_WAIT_S)
    assert agg.proc.returncode == -signal.SIGKILL, agg.proc.returncode
    agg.proc = None
    env.cluster.start_aggregator(0)
    env.servers.flush_memcached()
    assert counts(url, names) == expected, counts(url, names)


TMPFS_SIZE_SMALL = '512k'
TMPFS_SIZE_LARGE = '64m'
FILL_CALLS_MAX = 300


def test_disk_full(env):
    # The aggregator's data directory on a tiny tmpfs: appends fail, nothing
    # is acked, /readyz says why; once there is room again every event is
    # applied exactly once and the log is intact.
    import os
    import shutil
    import subprocess
    from harness import request_raw
    if os.geteuid() != 0:
        print('    (skipped: mounting a tmpfs needs root)')
        return
    url = env.cluster.frontend_url(0)
    agg = env.cluster.aggregators[0]
    data = os.path.join(agg.workdir, 'aggregator-data')
    env.cluster.stop_aggregator(0)
    keep = data + '.keep'
    os.rename(data, keep)
    os.mkdir(data)
    subprocess.check_call(['mount', '-t', 'tmpfs', '-o',
                           'size=' + TMPFS_SIZE_SMALL, 'tmpfs', data])
    try:
        for f in os.listdir(keep):
            shutil.copy2(os.path.join(keep, f), data)
        env.cluster.start_aggregator(0)
        names = owned_by(0, 'full', 400)
        want = {n: 0 for n in names}
        full = False
        for call in range(FILL_CALLS_MAX):
            events = [{'name': n, 'type': 'counter', 'value': 1}
                      for n in names]
            r = rpc_result(url, 'events.record', {'events': events})
            assert r['accepted'] == len(names), r
            for n in names:
                want[n] += 1
            status, _, body = request_raw(
                'http://127.0.0.1:%d/readyz' % agg.port, 'GET')
            if status == 503 and b'No space left on device' in body:
                full = True
                break
        assert full, 'the log never ran out of room'
        subprocess.check_call(['mount', '-o',
                               'remount,size=' + TMPFS_SIZE_LARGE, data])
        expected = {n: (c, float(c)) for n, c in want.items()}
        eventually(lambda: settled_counts(url, names, expected),
                   SETTLE_S, 'every event applied once there is room')
        d = status_of(url, 0)['durability']
        assert d['log_errors'] >= 1, d
        env.cluster.stop_aggregator(0)       # clean stop: final snapshot
        env.cluster.start_aggregator(0)      # the log reopens intact
        env.servers.flush_memcached()
        assert counts(url, names) == expected
    finally:
        if env.cluster.aggregators[0].running():
            env.cluster.stop_aggregator(0)
        subprocess.call(['umount', data])
        shutil.rmtree(data, ignore_errors=True)
        os.rename(keep, data)
        env.cluster.start_aggregator(0)


RECONNECT_ROUNDS = 5
RECONNECT_PAUSE_S = 0.3


def test_connections_closed_under_load(env):
    # The broker closes every connection of the vhost several times while
    # events stream in. Frontends publish unconfirmed messages again on a
    # new connection, aggregators get redeliveries. Each call records 100
    # events to a metric of its own, so a double count shows: an accepted
    # call counts exactly 100, a failed one 100 or nothing (a failed call
    # may have been applied: that is what client batch ids are for).
    import threading
    from harness import rpc
    url = env.cluster.frontend_url(0)
    outcome = {}                  # metric name -> accepted?
    stop = threading.Event()

    def send():
        call = 0
        while not stop.is_set():
            name = 'reconnect.%d' % call
            call += 1
            events = [{'name': name, 'type': 'counter', 'value': 1}] * 100
            try:
                ok = 'result' in rpc(url, 'events.record', {'events': events})
            except (OSError, AssertionError):
                ok = False
            outcome[name] = ok

    t = threading.Thread(target=send)
    t.start()
    try:
        for _ in range(RECONNECT_ROUNDS):
            time.sleep(RECONNECT_PAUSE_S)
            env.servers.rabbitmqctl('close_all_connections', '-p', env.vhost,
                                    'test: connection closed on purpose')
        time.sleep(RECONNECT_PAUSE_S)
    finally:
        stop.set()
        t.join()
    names = sorted(outcome)

    def exact():
        got = counts(url, names)
        bad = {n: got[n] for n in names
               if got[n] != (100, 100.0)
               and (outcome[n] or got[n] is not None)}
        return not bad, bad

    eventually(exact, SETTLE_S, 'each accepted call counted exactly once')
    time.sleep(1)
    ok, bad = exact()
    assert ok, bad
    st = rpc_result(url, 'cluster.status')
    print('    %d calls, %d failed, %d items republished' % (
        len(names), sum(1 for n in names if not outcome[n]),
        st['frontend']['republished']))


def test_batch_survives_a_crash_of_its_owner(env):
    # A client batch touching both instances; aggregator 0 dies right after
    # applying the first message it gets (the envelope if it is the batch
    # owner, else the forward). After a restart, and after the client
    # retries the call, each event counts once.
    url = env.cluster.frontend_url(0)
    names = owned_by(0, 'crash.batch', 2) + owned_by(1, 'crash.batch', 2)
    events = [{'name': n, 'type': 'counter', 'value': 5} for n in names]
    agg = env.cluster.aggregators[0]
    env.cluster.stop_aggregator(0)
    env.cluster.start_aggregator(0, env={'TALLY_CRASH_AT': 'applied:1'})
    r = rpc_result(url, 'events.record', {'events': events,
                                          'batch': 'crash-batch-1'})
    assert r == {'accepted': 4, 'rejected': []}, r
    deadline = time.monotonic() + DIE_WAIT_S
    while agg.running():
        assert time.monotonic() < deadline, 'aggregator 0 did not crash'
        time.sleep(0.05)
    agg.proc = None
    env.cluster.start_aggregator(0)
    r = rpc_result(url, 'events.record', {'events': events,
                                          'batch': 'crash-batch-1'})
    assert r == {'accepted': 4, 'rejected': []}, r
    expected = {n: (1, 5.0) for n in names}
    eventually(lambda: (counts(url, names) == expected, counts(url, names)),
               SETTLE_S, 'the batch counted once')
    time.sleep(1.5)           # forwards sent again after the crash land
    assert counts(url, names) == expected, counts(url, names)


def test_outages_fail_fast_and_reads_go_on(env):
    # RabbitMQ silent (SIGSTOP): events.record fails within about a second
    # with a clear error, never a false success, and reads keep working
    # from memcached. memcached silent: reads fall back to the owners.
    # An instance queue at its length limit: "overloaded" for its events
    # only.
    from harness import rpc
    url = env.cluster.frontend_url(0)
    name = owned_by(1, 'outage', 1)[0]
    other = owned_by(0, 'outage', 1)[0]
    rpc_result(url, 'events.record', {'events': [
        {'name': name, 'type': 'counter', 'value': 1}]})
    eventually(lambda: (counts(url, [name])[name] == (1, 1.0),
                        counts(url, [name])), SETTLE_S, 'cached')
    time.sleep(0.5)                     # a flush or two: in memcached
    env.servers.broker_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        resp = rpc(url, 'events.record', {'events': [
            {'name': name, 'type': 'counter', 'value': 1}]})
        took = time.monotonic() - start
        assert resp['error']['code'] == 1201, resp
        assert took < 1.5, took
        got = counts(url, [name])[name]
        assert got == (1, 1.0), ('read during the broker stop', got)
    finally:
        env.servers.broker_signal(signal.SIGCONT)
    time.sleep(2)                       # reconnects
    # The failed call may still have been applied (it reached the broker
    # before it stopped answering): 1201 means "retry with the batch id".
    now = counts(url, [name])[name]
    assert now in ((1, 1.0), (2, 2.0)), now
    env.servers.memcached_signal(signal.SIGSTOP)
    try:
        got = counts(url, [name])[name]
        assert got == now, ('read during the memcached stop', got, now)
    finally:
        env.servers.memcached_signal(signal.SIGCONT)
    env.servers.rabbitmqctl('set_policy', '-p', env.vhost, '--priority', '10',
                            '--apply-to', 'queues', 'full-outage',
                            r'^tally\.agg\.1$',
                            '{"max-length":0,"overflow":"reject-publish"}')
    try:
        time.sleep(1)
        resp = rpc(url, 'events.record', {'events': [
            {'name': name, 'type': 'counter', 'value': 1}]})
        assert resp['error']['code'] == 1201, resp
        assert resp['error']['data'].startswith('overloaded'), resp
        r = rpc_result(url, 'events.record', {'events': [
            {'name': other, 'type': 'counter', 'value': 1}]})
        assert r == {'accepted': 1, 'rejected': []}, r
    finally:
        env.servers.rabbitmqctl('clear_policy', '-p', env.vhost,
                                'full-outage')


def test_broker_alarm_fails_fast(env):
    # A memory alarm (watermark 0) blocks every publishing connection:
    # events.record fails at once with a clear reason instead of hanging,
    # and works again once the alarm clears.
    from harness import rpc
    url = env.cluster.frontend_url(0)
    ev = {'name': 'alarm.c', 'type': 'counter', 'value': 1}
    env.servers.rabbitmqctl('set_vm_memory_high_watermark', '0')
    try:
        deadline = time.monotonic() + SETTLE_S
        while True:
            start = time.monotonic()
            resp = rpc(url, 'events.record', {'events': [ev]})
            took = time.monotonic() - start
            assert took < 1.5, (took, resp)
            if 'error' in resp and 'blocked' in resp['error']['data']:
                break
            assert time.monotonic() < deadline, resp
            time.sleep(0.2)
        assert resp['error']['code'] == 1201, resp
    finally:
        env.servers.rabbitmqctl('set_vm_memory_high_watermark', '0.4')
    eventually(lambda: ('result' in rpc(url, 'events.record',
                                        {'events': [ev]}), None),
               SETTLE_S, 'events.record works again after the alarm')


def test_status_while_replaying(env):
    # A restart with a log to replay (slowed by a test hook): the instance
    # answers cluster.status with "replaying": true and /readyz 503 until
    # the replay is done, then takes its deliveries with nothing lost.
    from harness import request_raw
    url = env.cluster.frontend_url(0)
    names = owned_by(0, 'replaying', 3)
    for i in range(40):
        rpc_result(url, 'events.record', {'events': [
            {'name': n, 'type': 'counter', 'value': 1} for n in names]})
    expected = {n: (40, 40.0) for n in names}
    eventually(lambda: (counts(url, names) == expected, counts(url, names)),
               SETTLE_S, 'applied')
    agg = env.cluster.aggregators[0]
    env.cluster.kill_aggregator(0, signal.SIGKILL)
    env.cluster.start_aggregator(
        0, env={'TALLY_TEST_REPLAY_DELAY_MS': '100'}, wait=False)

    def replaying():
        st = status_of(url, 0) if 0 not in rpc_result(
            url, 'cluster.status')['unreachable'] else None
        return st is not None and st['replaying'] is True, st

    eventually(replaying, SETTLE_S, 'status says replaying')
    status, _, body = request_raw('http://127.0.0.1:%d/readyz' % agg.port,
                                  'GET')
    assert status == 503 and b'replaying' in body, (status, body)
    rpc_result(url, 'events.record', {'events': [
        {'name': n, 'type': 'counter', 'value': 1} for n in names]})
    agg.wait_ready()
    assert status_of(url, 0)['replaying'] is False
    expected = {n: (41, 41.0) for n in names}
    eventually(lambda: (counts(url, names) == expected, counts(url, names)),
               SETTLE_S, 'exact after the replay')
