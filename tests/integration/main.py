#!/usr/bin/python3
"""
main: runs tally's integration tests. Starts one private RabbitMQ node and
one memcached (harness.Servers), then for every tests/integration/test_*.py
module (or only those named on the command line):

    vhost tally-test-<name> --> Cluster(**module.CLUSTER) --> test_*(env)
                                --> cluster.stop(): every daemon exits 0

A module may set CLUSTER (keyword arguments for harness.Cluster, or None
to start no cluster). Each test function gets one argument, an Env with
servers, vhost, builddir, srcdir and cluster. Exits 1 if anything failed.

    main.py [--builddir DIR] [test_smoke ...]
"""

import argparse
import glob
import importlib
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True      # no __pycache__ in the source tree

import harness  # noqa: E402

DEFAULT_CLUSTER = {'instances': 2, 'frontends': 1}


class Env:
    """What a test module's functions get."""

    def __init__(self, servers, vhost, builddir, srcdir, cluster):
        self.servers = servers
        self.vhost = vhost
        self.builddir = builddir
        self.srcdir = srcdir
        self.cluster = cluster


def cluster_shape(shape, srcdir):
    """SHAPE (a module's CLUSTER) with the frontends pointed at the
    source tree's OpenRPC document, ahead of the module's own flags."""
    shape = dict(shape)
    extra = shape.get('extra_args') or {}
    if not isinstance(extra, dict):
        extra = {'all': extra}
    extra = {k: list(v) for k, v in extra.items()}
    openrpc = os.path.join(srcdir, 'schema', 'openrpc.json')
    if os.path.exists(openrpc):
        extra['frontend'] = ['--openrpc=' + openrpc] + extra.get('frontend', [])
    shape['extra_args'] = extra
    return shape


def on_signal(signum, frame):
    # Once is enough: let the cleanup run undisturbed.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise KeyboardInterrupt('signal %d' % signum)


def run_module(servers, args, name):
    """Runs one module against its own vhost and cluster; 0 if all passed."""
    module = importlib.import_module(name)
    vhost = 'tally-test-' + name[len('test_'):]
    servers.add_vhost(vhost)
    shape = getattr(module, 'CLUSTER', DEFAULT_CLUSTER)
    cluster = None
    if shape is not None:
        try:
            cluster = harness.Cluster(servers, vhost, args.builddir,
                                      **cluster_shape(shape, args.srcdir))
        except AssertionError as e:
            print('FAIL %s: the cluster did not start: %s' % (name, e), flush=True)
            return 1
    env = Env(servers, vhost, args.builddir, args.srcdir, cluster)
    try:
        failed = harness.run(module, env, prefix=name + '.')
    except BaseException:           # Ctrl-C, SIGTERM: no daemon left behind
        if cluster is not None:
            cluster.kill_all()
        raise
    if cluster is not None:
        try:
            cluster.stop(keep_logs=failed != 0)
        except AssertionError as e:
            print('FAIL %s.shutdown: %s' % (name, e), flush=True)
            failed = 1
        else:
            if failed:
                print('(%s: daemon logs kept in %s)' % (name, cluster.dir))
    return failed


def main():
    parser = argparse.ArgumentParser(description='tally integration tests')
    parser.add_argument('--builddir',
                        default=os.environ.get('TALLY_BUILD_DIR', os.getcwd()))
    parser.add_argument('modules', nargs='*',
                        help='test modules to run (default: all)')
    args = parser.parse_args()
    args.builddir = os.path.abspath(args.builddir)
    args.srcdir = os.path.dirname(os.path.dirname(HERE))

    names = sorted(os.path.basename(p)[:-3]
                   for p in glob.glob(os.path.join(HERE, 'test_*.py')))
    if args.modules:
        wanted = [m[:-3] if m.endswith('.py') else m for m in args.modules]
        unknown = [m for m in wanted if m not in names]
        if unknown:
            parser.error('no such test module: %s' % ', '.join(unknown))
        names = wanted

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    start = time.monotonic()
    failed = []
    try:
        with harness.Servers() as servers:
            print('servers: rabbitmq %s on 127.0.0.1:%d, memcached on %s'
                  % (servers.node, servers.amqp_port,
                     servers.memcached_address()), flush=True)
            for name in names:
                try:
                    if run_module(servers, args, name):
                        failed.append(name)
                except Exception:
                    print('FAIL %s: %s' % (name, traceback.format_exc()),
                          flush=True)
                    failed.append(name)
    except KeyboardInterrupt as e:
        print('interrupted (%s); servers stopped' % (e or 'Ctrl-C'), flush=True)
        return 1
    except RuntimeError as e:
        print('FAIL servers: %s' % e, flush=True)
        return 1
    print('%d module(s) in %.1f s; %s' % (len(names), time.monotonic() - start,
                                          'failed: ' + ', '.join(failed)
                                          if failed else 'all passed'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
