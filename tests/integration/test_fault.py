"""
test_fault: nothing lost, nothing counted twice, while things break.

A load generator with a fixed seed sends a known set of events (totals
computed in advance) through two frontends. Every call carries a batch id;
a call that fails or times out is retried with the same id, at the other
frontend when one is down. Meanwhile, at fixed call counts, a disruptor
SIGKILLs a random aggregator 10 times and restarts it, SIGKILLs a frontend
3 times and restarts it, restarts RabbitMQ once, SIGSTOPs the broker for
5 s, SIGSTOPs one aggregator for 10 s, and flushes memcached. At the end
every counter's count and sum are exact, the unique metric has the same
HyperLogLog registers as a reference recorded without faults, and the counters show that retries,
replays and deduplication really happened.

TALLY_LONG=1 (make check-long) sends 10 times as many calls.
"""

import os
import random
import signal
import threading
import time

from harness import eventually, query_metrics, rpc, rpc_result

CLUSTER = {'instances': 2, 'frontends': 2}

SEED = 7
LONG = os.environ.get('TALLY_LONG') == '1'
CALLS = 1500 if LONG else 300
EVENTS_PER_CALL = 40
COUNTERS = 25
UNIQUE_IDS = 5000
CALL_DEADLINE_S = 60
RETRY_PAUSE_S = 0.2
HTTP_TIMEOUT_S = 5
AGG_KILLS = 10
FE_KILLS = 3
BROKER_STOP_S = 5
AGG_STOP_S = 10
DUPLICATE_EVERY = 25       # calls sent twice on purpose, at the end
SETTLE_S = 90


class Load:
    """The known events and the state of the run."""

    def __init__(self):
        rng = random.Random(SEED)
        self.counters = ['fault.c%02d' % i for i in range(COUNTERS)]
        self.unique = 'fault.users'
        self.calls = []
        self.want = {n: [0, 0] for n in self.counters}
        self.users = set()
        for c in range(CALLS):
            events = []
            for _ in range(EVENTS_PER_CALL):
                if rng.random() < 0.2:
                    user = 'u%d' % rng.randrange(UNIQUE_IDS)
                    self.users.add(user)
                    events.append({'name': self.unique, 'type': 'unique',
                                   'value': user})
                else:
                    name = rng.choice(self.counters)
                    value = rng.randint(1, 1000)
                    self.want[name][0] += 1
                    self.want[name][1] += value
                    events.append({'name': name, 'type': 'counter',
                                   'value': value})
            self.calls.append({'events': events,
                               'batch': 'fault-%d-%08x' % (
                                   c, rng.getrandbits(32))})
        self.retries = 0
        self.lock = threading.Lock()


def send(env, load, params, start_at):
    """Sends one call until it succeeds, alternating frontends."""
    deadline = time.monotonic() + CALL_DEADLINE_S
    k = start_at
    while True:
        fe = env.cluster.frontends[k % 2]
        if fe.running():
            try:
                resp = rpc('http://127.0.0.1:%d' % fe.port, 'events.record',
                           params)
                if 'result' in resp:
                    assert resp['result']['rejected'] == [], resp
                    return
            except (OSError, AssertionError, ValueError):
                pass
        with load.lock:
            load.retries += 1
        assert time.monotonic() < deadline, 'a call never succeeded'
        k += 1
        time.sleep(RETRY_PAUSE_S)


def schedule():
    """The disruptions, in a fixed random order, and the call counts at
    which each starts."""
    rng = random.Random(SEED + 1)
    actions = ['agg-kill'] * AGG_KILLS + ['fe-kill'] * FE_KILLS
    actions += ['broker-restart', 'broker-stop', 'agg-stop',
                'memcached-flush']
    rng.shuffle(actions)
    step = CALLS // (len(actions) + 1)
    return {(i + 1) * step: a for i, a in enumerate(actions)}


def disrupt(env, what, rng):
    """One disruption; runs while the load goes on."""
    if what == 'agg-kill':
        n = rng.randrange(2)
        env.cluster.kill_aggregator(n, signal.SIGKILL)
        env.cluster.start_aggregator(n)
    elif what == 'fe-kill':
        fe = env.cluster.frontends[rng.randrange(2)]
        fe.kill(signal.SIGKILL)
        fe.start()
        fe.wait_ready()
    elif what == 'broker-restart':
        env.servers.rabbitmqctl('stop_app')
        env.servers.rabbitmqctl('start_app')
    elif what == 'broker-stop':
        env.servers.broker_signal(signal.SIGSTOP)
        time.sleep(BROKER_STOP_S)
        env.servers.broker_signal(signal.SIGCONT)
    elif what == 'agg-stop':
        agg = env.cluster.aggregators[rng.randrange(2)]
        agg.send_signal(signal.SIGSTOP)
        time.sleep(AGG_STOP_S)
        agg.send_signal(signal.SIGCONT)
    else:
        env.servers.flush_memcached()


def query(url, names, state=False):
    return query_metrics(url, names, state=state)


def test_faults(env):
    load = Load()
    plan = schedule()
    rng = random.Random(SEED + 2)
    running = None
    done = []
    try:
        for c, params in enumerate(load.calls):
            if c in plan:
                if running is not None:
                    running.join()       # one disruption at a time
                print('    at call %d: %s' % (c, plan[c]), flush=True)
                running = threading.Thread(target=disrupt,
                                           args=(env, plan[c], rng))
                running.start()
                done.append(plan[c])
            send(env, load, params, c)
    finally:
        if running is not None:
            running.join()
    assert len(done) == len(plan), done
    # Deliberate duplicates: retries of calls that had succeeded.
    duplicates = 0
    for c in range(0, CALLS, DUPLICATE_EVERY):
        send(env, load, load.calls[c], c + 1)
        duplicates += 1
    url = 'http://127.0.0.1:%d' % env.cluster.frontends[0].port
    expected = {n: (c, float(s)) for n, (c, s) in load.want.items()}

    def exact():
        got = query(url, load.counters)
        have = {n: None if m is None else (m['count'], m['sum'])
                for n, m in got.items()}
        return have == expected, have

    try:
        eventually(exact, SETTLE_S, 'exact counters after the faults')
    except AssertionError:
        st = rpc_result(url, 'cluster.status')
        print('    status at failure: %s' % st, flush=True)
        raise
    # The unique metric: the same values recorded again, calmly, into a
    # reference metric must give the same HyperLogLog registers: the
    # canonical encodings of the two states are equal.
    reference = 'fault.users.reference'
    users = sorted(load.users)
    for i in range(0, len(users), 1000):
        rpc_result(url, 'events.record', {'events': [
            {'name': reference, 'type': 'unique', 'value': u}
            for u in users[i:i + 1000]]})
    eventually(lambda: (query(url, [reference])[reference] is not None,
                        query(url, [reference, load.unique])), SETTLE_S,
               'the reference')
    def same_registers():
        got = query(url, [reference, load.unique], state=True)
        return (got[reference]['state'] == got[load.unique]['state']
                and got[reference]['distinct'] == got[load.unique]['distinct'],
                got)

    eventually(same_registers, SETTLE_S, 'unique equal to the reference')
    st = rpc_result(url, 'cluster.status')
    d = [i['durability'] for i in st['instances']]
    skipped = sum(x['deduplicated_client_batches'] for x in d)
    print('    %d calls, %d retries, %d duplicates sent; instances: %s'
          % (CALLS, load.retries, duplicates, d), flush=True)
    assert st['unreachable'] == [], st
    assert load.retries >= 3, load.retries       # faults made calls fail
    assert skipped >= duplicates, (skipped, duplicates)
    # Restarts replayed their logs, and redeliveries were recognised.
    assert sum(x['replayed_records'] for x in d) >= 1, d
    assert sum(x['deduplicated_subbatches'] for x in d) >= 1, d
