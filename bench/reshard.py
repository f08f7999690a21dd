#!/usr/bin/python3
"""
bench/reshard.py: how long a slot move takes and what it costs ingest.
Prints figures; asserts nothing about speed, only that counts are exact.

Two aggregators hold METRICS metrics (half counters, half percentiles);
LOAD_THREADS threads call events.record (BATCH events each) without a
pause. After --before seconds a third aggregator starts and the cluster
is resharded to three instances; the move lasts until cluster.status shows
no move in progress. The accepted events per second before the move and
during it are compared, and every counter is checked exactly at the end.

    bench/reshard.py --builddir build/cluster [--metrics 20000]

Use a build without sanitizers (scripts/cluster up makes build/cluster).
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

import harness  # noqa: E402

BATCH = 200
LOAD_THREADS = 4
VHOST = 'bench-reshard'


class Load:
    """Threads recording BATCH events per call; accepted events are
    counted per metric and stamped per second."""

    def __init__(self, url, names):
        self.url = url
        self.names = names
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.accepted = []            # (monotonic time, events)
        self.threads = [threading.Thread(target=self.run, args=(k,))
                        for k in range(LOAD_THREADS)]

    def run(self, k):
        i = k * BATCH
        while not self.stop.is_set():
            events = []
            for j in range(BATCH):
                name = self.names[(i + j) % len(self.names)]
                kind = 'counter' if name.startswith('bench.c') \
                    else 'percentile'
                events.append({'name': name, 'type': kind, 'value': 1 + j % 7})
            i += BATCH * LOAD_THREADS
            r = harness.rpc(self.url, 'events.record', {'events': events})
            if 'result' not in r:
                continue
            with self.lock:
                self.accepted.append((time.monotonic(), len(events)))
                for e in events:
                    if e['type'] == 'counter':
                        self.counts[e['name']] = \
                            self.counts.get(e['name'], 0) + 1

    def rate(self, start, end):
        with self.lock:
            n = sum(c for t, c in self.accepted if start <= t < end)
        return n / (end - start)


def moving(url):
    st = harness.rpc_result(url, 'cluster.status')
    return st['move_in_progress'] or bool(st['unreachable']), st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--builddir', required=True)
    ap.add_argument('--metrics', type=int, default=20000)
    ap.add_argument('--before', type=float, default=10.0)
    args = ap.parse_args()
    builddir = os.path.abspath(args.builddir)
    names = (['bench.c%06d' % i for i in range(args.metrics // 2)]
             + ['bench.p%06d' % i for i in range(args.metrics // 2)])
    with harness.Servers() as servers:
        servers.add_vhost(VHOST)
        cluster = harness.Cluster(servers, VHOST, builddir, instances=2,
                                  frontends=1)
        try:
            url = cluster.frontend_url(0)
            load = Load(url, names)
            for t in load.threads:
                t.start()
            time.sleep(args.before)
            t0 = time.monotonic()
            cluster.add_aggregator()
            t1 = time.monotonic()
            r = harness.rpc_result(url, 'cluster.reshard', {'instances': 3})
            t2 = time.monotonic()
            while moving(url)[0]:
                time.sleep(0.05)
            t3 = time.monotonic()
            time.sleep(2)
            load.stop.set()
            for t in load.threads:
                t.join()
            st = moving(url)[1]
            before = load.rate(t0 - args.before + 1, t0)
            during = load.rate(t1, t3)
            metrics_moved = sum(i['moves']['metrics_received']
                                for i in st['instances'])

            def exact():
                got = harness.query_metrics(url, sorted(load.counts))
                wrong = [n for n, c in load.counts.items()
                         if got[n] is None or got[n]['count'] != c]
                return not wrong, len(wrong)
            harness.eventually(exact, 60, 'exact counters')
        finally:
            cluster.stop()
    print('%d metrics on 2 aggregators, %d load threads x %d events per call'
          % (args.metrics, LOAD_THREADS, BATCH))
    print('reshard 2 -> 3: %d slots, %d metrics moved'
          % (r['moved_slots'], metrics_moved))
    print('  start aggregator 2: %.2f s; cluster.reshard answered in %.3f s;'
          ' moves done %.3f s after it' % (t1 - t0, t2 - t1, t3 - t2))
    print('ingest before: %.0f events/s; during the move: %.0f events/s '
          '(ratio %.2f)' % (before, during, during / before if before else 0))
    print('counters exact: yes')


if __name__ == '__main__':
    main()
