#!/usr/bin/python3
"""
bench/durability.py: what durability costs an aggregator, and how long a
restart takes. Prints figures; asserts nothing about speed.

With one aggregator stopped, CALLS events.record calls of EVENTS events
each (over METRICS counters) fill its queue; then the aggregator starts and
the time until every event is applied gives its apply rate. The same run is
made twice, with the write-ahead log fsynced (the default) and with
TALLY_UNSAFE_NO_FSYNC=1, and the ratio is printed. Finally the aggregator
is killed and restarted, and its replay time for the log size is read from
cluster.status.

    bench/durability.py --builddir build/cluster [--calls 2000]

Use a build without sanitizers (scripts/cluster up makes build/cluster).
"""

import argparse
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

import harness  # noqa: E402

EVENTS = 100
METRICS = 100


def applied(url, names):
    total = 0
    for i in range(0, len(names), 100):
        r = harness.rpc_result(url, 'metrics.query',
                               {'names': names[i:i + 100]})['metrics']
        total += sum(m['count'] for m in r.values() if m is not None)
    return total


def run(servers, builddir, vhost, calls, unsafe):
    servers.add_vhost(vhost)
    cluster = harness.Cluster(servers, vhost, builddir, instances=1,
                              frontends=1)
    try:
        url = cluster.frontend_url(0)
        names = ['bench.d%03d' % i for i in range(METRICS)]
        events = [{'name': names[i % METRICS], 'type': 'counter', 'value': 1}
                  for i in range(EVENTS)]
        cluster.stop_aggregator(0)
        for _ in range(calls):
            harness.rpc_result(url, 'events.record', {'events': events})
        env = {'TALLY_UNSAFE_NO_FSYNC': '1'} if unsafe else None
        cluster.start_aggregator(0, env=env, wait=False)
        start = time.monotonic()
        cluster.aggregators[0].wait_ready()
        while applied(url, names) < calls * EVENTS:
            time.sleep(0.05)
        took = time.monotonic() - start
        cluster.kill_aggregator(0, signal.SIGKILL)
        cluster.start_aggregator(0)
        st = harness.rpc_result(url, 'cluster.status')['instances'][0]
        return took, st['durability']
    finally:
        cluster.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--builddir', required=True)
    ap.add_argument('--calls', type=int, default=2000)
    args = ap.parse_args()
    builddir = os.path.abspath(args.builddir)
    n = args.calls * EVENTS
    with harness.Servers() as servers:
        safe, d = run(servers, builddir, 'bench-fsync', args.calls, False)
        unsafe, _ = run(servers, builddir, 'bench-nofsync', args.calls, True)
    print('%d events in %d messages, one aggregator' % (n, args.calls))
    print('fsync    : %.2f s, %.0f events/s, %.0f messages/s'
          % (safe, n / safe, args.calls / safe))
    print('no fsync : %.2f s, %.0f events/s, %.0f messages/s'
          % (unsafe, n / unsafe, args.calls / unsafe))
    print('durable / unsafe throughput: %.2f' % (unsafe / safe))
    print('restart: replayed %d records, %d bytes of log, in %d ms'
          % (d['replayed_records'], d['wal_bytes'], d['replay_ms']))


if __name__ == '__main__':
    main()
