"""
test_tls: TLS on both sides (schema/tls.md). The shared RabbitMQ node has a
TLS listener with a certificate of the run's test CA (harness.Servers);
here the daemons reach it with --amqp-tls, and the frontend serves HTTPS
with a certificate of the same CA.

    client --HTTPS--> frontend --AMQP/TLS--> RabbitMQ <--AMQP/TLS-- aggregators

Each test starts its own cluster (CLUSTER = None) and checks exact counts,
exact error texts, and that the broker sees every connection as TLS.
Note that rabbitmq-c 0.11 matches the host name only against DNS names of
the certificate, so the daemons connect to "localhost".
"""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile

from harness import Cluster, eventually, make_ca, make_cert, log_tail

CLUSTER = None

READY_WAIT_S = 30
QUERY_WAIT_S = 10
ERROR_WAIT_S = 15
HTTP_TIMEOUT_S = 10
START_ERROR_WAIT_S = 30
NAME = 'tls.hits'
VALUES = [1, 2.5, 4]        # exact in binary: the sum must be exactly 7.5
NOT_CONNECTED = 'the publisher is not connected to RabbitMQ: connect %s:%d (TLS): %s'


def not_connected(env, host, reason):
    """The /readyz answer of a frontend whose publisher cannot connect."""
    return 503, {'ready': False, 'reason': NOT_CONNECTED
                 % (host, env.servers.amqp_tls_port, reason)}


# ---- HTTPS client ------------------------------------------------------------

def https(port, ca, method, path, body=None):
    """One request over HTTPS to 127.0.0.1:PORT trusting only CA; returns
    (status, body bytes)."""
    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection('127.0.0.1', port, context=context,
                                       timeout=HTTP_TIMEOUT_S)
    try:
        headers = {'Content-Type': 'application/json'} if body else {}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def https_rpc(port, ca, method, params):
    status, body = https(port, ca, 'POST', '/rpc', json.dumps(
        {'jsonrpc': '2.0', 'method': method, 'params': params, 'id': 1}).encode())
    assert status == 200, '%s: HTTP %d %r' % (method, status, body)
    return json.loads(body)


def https_readyz(port, ca):
    status, body = https(port, ca, 'GET', '/readyz')
    return status, json.loads(body)


def wait_https_ready(daemon, ca):
    def check():
        assert daemon.running(), '%s exited\n%s' % (daemon.name,
                                                    log_tail(daemon.log))
        try:
            status, body = https_readyz(daemon.port, ca)
        except OSError as e:
            return False, str(e)
        return status == 200, body
    eventually(check, READY_WAIT_S, '%s /readyz over HTTPS' % daemon.name)


# ---- clusters on the TLS listener --------------------------------------------

def tls_args(env, ca=None):
    """Flags that put a daemon on the node's TLS listener, verified with
    CA (default: the run's test CA)."""
    return ['--amqp-host', 'localhost',
            '--amqp-port', str(env.servers.amqp_tls_port),
            '--amqp-tls', '--amqp-cacert', ca or env.servers.tls_ca]


def tls_cluster(env, certs, ca=None, frontends=1):
    """A cluster (not started) of 2 aggregators and FRONTENDS frontends on
    the TLS listener; the frontends serve HTTPS with a certificate of the
    test CA made in CERTS."""
    cert, key = make_cert(certs, 'frontend',
                          (env.servers.tls_ca, env.servers.tls_ca_key))
    openrpc = os.path.join(env.srcdir, 'schema', 'openrpc.json')
    return Cluster(env.servers, env.vhost, env.builddir, instances=2,
                   frontends=frontends, start=False, extra_args={
                       'all': tls_args(env, ca),
                       'frontend': ['--openrpc=' + openrpc,
                                    '--tls-cert', cert, '--tls-key', key]})


def record(port, ca):
    events = [{'name': NAME, 'type': 'counter', 'value': v} for v in VALUES]
    return https_rpc(port, ca, 'events.record', {'events': events})


def unreachable_data(env, reason):
    return 'RabbitMQ is unreachable: connect localhost:%d (TLS): %s' % (
        env.servers.amqp_tls_port, reason)


def wait_record_error(env, port, data):
    """Waits until the frontend on PORT listens and events.record fails
    with 1201 and DATA (before the first connect attempt the reason is
    "not connected yet")."""
    def check():
        try:
            resp = record(port, env.servers.tls_ca)
        except OSError as e:            # not listening yet
            return False, str(e)
        error = resp.get('error', {})
        return error.get('code') == 1201 and error.get('data') == data, resp
    eventually(check, ERROR_WAIT_S, 'events.record error %r' % data)


# ---- tests -------------------------------------------------------------------

def test_record_and_query_over_tls(env):
    ca = env.servers.tls_ca
    certs = tempfile.mkdtemp(prefix='tally-tls-')
    cluster = tls_cluster(env, certs)
    try:
        for d in cluster.daemons():
            d.start()
        for d in cluster.aggregators:
            d.wait_ready()
        fe = cluster.frontends[0]
        wait_https_ready(fe, ca)

        resp = record(fe.port, ca)
        assert resp.get('result') == {'accepted': 3, 'rejected': []}, \
            'events.record answered %s' % json.dumps(resp)

        def query():
            r = https_rpc(fe.port, ca, 'metrics.query',
                          {'names': [NAME], 'window': 'all'})
            m = r.get('result', {}).get('metrics', {}).get(NAME)
            done = m is not None and m.get('count') == len(VALUES) \
                and m.get('sum') == sum(VALUES)
            return done, r
        eventually(query, QUERY_WAIT_S, 'metrics.query of %s' % NAME)

        # Plain HTTP to the HTTPS port gets no HTTP answer.
        plain = http.client.HTTPConnection('127.0.0.1', fe.port,
                                           timeout=HTTP_TIMEOUT_S)
        try:
            plain.request('GET', '/healthz')
            plain.getresponse()
            raise AssertionError('plain HTTP got an answer from the HTTPS port')
        except (http.client.RemoteDisconnected, ConnectionResetError):
            pass
        finally:
            plain.close()

        # Every connection of the vhost came in over TLS: 2 per frontend
        # (publisher, inbox) and at least one per aggregator.
        rows = env.servers.rabbitmqctl(
            'list_connections', '-p', env.vhost, '-q', '--no-table-headers',
            'ssl', 'port').split('\n')
        rows = [r.split() for r in rows if r.strip()]
        assert len(rows) >= 4, 'connections: %r' % rows
        assert all(r == ['true', str(env.servers.amqp_tls_port)]
                   for r in rows), 'connections (ssl, port): %r' % rows
        cluster.stop()
    finally:
        cluster.kill_all()
        shutil.rmtree(certs, ignore_errors=True)


def test_wrong_ca_not_ready(env):
    """A frontend whose CA did not sign the broker's certificate never
    connects; /readyz says so and events.record names the TLS failure."""
    certs = tempfile.mkdtemp(prefix='tally-tls-')
    wrong = make_ca(certs, 'wrong-ca')
    cluster = tls_cluster(env, certs, ca=wrong[0])
    fe = cluster.frontends[0]
    try:
        fe.start()
        data = unreachable_data(env, 'SSL peer cert verification failed')
        wait_record_error(env, fe.port, data)
        assert https_readyz(fe.port, env.servers.tls_ca) == not_connected(
            env, 'localhost', 'SSL peer cert verification failed')
        with open(fe.log) as f:
            log = f.read()
        assert ('publisher: connect localhost:%d (TLS): SSL peer cert '
                'verification failed' % env.servers.amqp_tls_port) in log, \
            log_tail(fe.log)
        cluster.stop()
    finally:
        cluster.kill_all()
        shutil.rmtree(certs, ignore_errors=True)


def test_hostname_verification(env):
    """The broker's certificate names localhost (DNS) and 127.0.0.1 (IP);
    rabbitmq-c checks DNS names only, so --amqp-host 127.0.0.1 fails the
    name check, unless --amqp-tls-verify-hostname=0."""
    certs = tempfile.mkdtemp(prefix='tally-tls-')
    cluster = tls_cluster(env, certs, frontends=2)
    strict, lax = cluster.frontends
    for d in (strict, lax):
        d.argv += ['--amqp-host', '127.0.0.1']
    lax.argv += ['--amqp-tls-verify-hostname=0']
    try:
        strict.start()
        lax.start()
        wait_https_ready(lax, env.servers.tls_ca)
        wait_record_error(env, strict.port,
                          'RabbitMQ is unreachable: connect 127.0.0.1:%d '
                          '(TLS): SSL hostname verification failed'
                          % env.servers.amqp_tls_port)
        assert https_readyz(strict.port, env.servers.tls_ca) == not_connected(
            env, '127.0.0.1', 'SSL hostname verification failed')
        cluster.stop()
    finally:
        cluster.kill_all()
        shutil.rmtree(certs, ignore_errors=True)


def test_start_errors(env):
    """Bad TLS options stop either daemon at start with a clear message."""
    certs = tempfile.mkdtemp(prefix='tally-tls-')
    cert, key = make_cert(certs, 'frontend',
                          (env.servers.tls_ca, env.servers.tls_ca_key))
    missing = os.path.join(certs, 'missing.pem')
    cases = [
        (['--amqp-tls'],
         'amqp-tls needs --amqp-cacert, the CA that signs the broker\'s '
         'certificate'),
        (['--amqp-tls', '--amqp-cacert', missing],
         'amqp-cacert: cannot read %s: No such file or directory' % missing),
        (['--amqp-tls', '--amqp-cacert', env.servers.tls_ca,
          '--amqp-cert', cert],
         'amqp-cert and amqp-key go together (only --amqp-cert is set)'),
    ]
    try:
        for daemon, first in (('tally-frontend', []),
                              ('tally-aggregator', ['--instance', '0'])):
            for args, message in cases:
                argv = [os.path.join(env.builddir, 'services', daemon)] \
                    + first + args
                done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                      capture_output=True, cwd=certs,
                                      timeout=START_ERROR_WAIT_S)
                stderr = done.stderr.decode('utf-8', 'replace')
                assert done.returncode == 1 and \
                    '%s: %s\n' % (daemon, message) in stderr, \
                    '%s %s: exit %d, stderr %r' % (daemon, args,
                                                   done.returncode, stderr)
        # HTTPS needs both files; the frontend stops (no broker needed).
        argv = [os.path.join(env.builddir, 'services', 'tally-frontend'),
                '--openrpc=' + os.path.join(env.srcdir, 'schema',
                                            'openrpc.json'),
                '--http-port', '0', '--tls-key', key]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, cwd=certs,
                              capture_output=True, timeout=START_ERROR_WAIT_S)
        stderr = done.stderr.decode('utf-8', 'replace')
        expected = ('tally-frontend: HTTPS needs both a certificate and a key '
                    '(only the key is set)\n')
        assert done.returncode == 1 and expected in stderr, \
            'exit %d, stderr %r' % (done.returncode, stderr)
    finally:
        shutil.rmtree(certs, ignore_errors=True)
