"""
harness: what tally's integration tests share. Python 3 standard library
plus Debian's python3-pika (AMQP).

    Servers   one private RabbitMQ node and one memcached, in a temp dir,
              on ports below 32768 that were test-bound first; the node
              also has a TLS listener (amqp_tls_port, CA in tls_ca)
    make_ca, make_cert   test certificates with the openssl CLI
    Cluster   M tally-aggregators and F tally-frontends against a vhost of
              those servers; stop() insists on exit code 0 (LeakSanitizer)
    rpc, post_raw, request_raw     HTTP/JSON-RPC clients (http.client)
    publish_ingest, get_rejected   AMQP as "another service" (pika)
    run       a tiny runner: PASS/FAIL per test_* function

Every server and daemon is started in its own session (process group) and
stopped on exit, also on an exception, Ctrl-C or SIGTERM (main.py turns
SIGTERM into KeyboardInterrupt so the context managers unwind).
"""

import http.client
import json
import os
import pwd
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback
import urllib.parse

PORT_MIN = 10000
PORT_MAX = 32767            # below the ephemeral range (32768-60999)
PORT_TRIES = 200
LOG_TAIL_LINES = 40
RABBITMQ_WAIT_S = 60
RABBITMQ_START_TRIES = 3
RABBITMQCTL_TIMEOUT_S = 90
MEMCACHED_WAIT_S = 10
PROCESS_STOP_S = 30
READY_TIMEOUT_S = 30
DAEMON_STOP_S = 20
HTTP_TIMEOUT_S = 30
POLL_S = 0.1
SEND_CHUNK = 65536
CERT_DAYS = 2
OPENSSL_TIMEOUT_S = 30

AMQP_USER = 'guest'
AMQP_PASSWORD = 'guest'
EXCHANGE_INGEST = 'tally.ingest'
INGEST_KEY = 'events'
QUEUE_REJECTED = 'tally.rejected'
# Debian's real scripts: /usr/sbin/rabbitmq* wrap them in `su`, which puts
# the node in a session of its own, out of reach of our process group.
RABBITMQ_BIN = '/usr/lib/rabbitmq/bin'
RABBITMQ_USER = 'rabbitmq'
POLICIES = (
    ('tally-rejected', r'^tally\.rejected$', '{"max-length":100000}'),
    ('tally-agg', r'^tally\.agg\.',
     '{"max-length":1000000,"overflow":"reject-publish"}'),
)

_ports_given = set()


# ---- small helpers ---------------------------------------------------------

def free_port():
    """A TCP port below 32768 that nothing holds now (test-bound on every
    address) and that this process has not handed out before."""
    for _ in range(PORT_TRIES):
        port = random.randint(PORT_MIN, PORT_MAX)
        if port in _ports_given:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(('', port))
        except OSError:
            continue
        finally:
            s.close()
        _ports_given.add(port)
        return port
    raise RuntimeError('no free port found in %d..%d' % (PORT_MIN, PORT_MAX))


def log_tail(path, lines=LOG_TAIL_LINES):
    """The last LINES lines of the file at PATH, as text for a message."""
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
    except OSError as e:
        return '(no log %s: %s)' % (path, e.strerror)
    tail = text.splitlines()[-lines:]
    return '--- last %d lines of %s ---\n%s\n---' % (len(tail), path,
                                                   '\n'.join(tail))


def stop_process(proc, sig=signal.SIGTERM, wait_s=PROCESS_STOP_S):
    """Sends SIG to PROC's process group (PROC was started in a session of
    its own), waits up to WAIT_S, then SIGKILLs the group. Returns the exit
    code (negative: killed by a signal)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            # Still our group while its leader lives: no pid reuse.
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def _openssl(*args):
    """Runs the openssl CLI; raises RuntimeError with its complaint."""
    try:
        done = subprocess.run(['openssl'] + list(args),
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=OPENSSL_TIMEOUT_S)
    except FileNotFoundError:
        raise RuntimeError('openssl not found (apt-get install openssl)')
    if done.returncode != 0:
        raise RuntimeError('openssl %s failed (%d): %s'
                           % (args[0], done.returncode,
                              done.stderr.decode('utf-8', 'replace').strip()))


def make_ca(directory, name):
    """A self-signed P-256 CA in DIRECTORY; returns (cert path, key
    path), NAME.pem and NAME.key."""
    cert = os.path.join(directory, name + '.pem')
    key = os.path.join(directory, name + '.key')
    _openssl('req', '-x509', '-newkey', 'ec',
             '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
             '-days', str(CERT_DAYS), '-subj', '/CN=' + name,
             '-keyout', key, '-out', cert)
    return cert, key


def make_cert(directory, name, ca, san='DNS:localhost,IP:127.0.0.1'):
    """A P-256 server and client certificate for SAN, signed by CA (a
    make_ca pair), in DIRECTORY; returns (cert path, key path)."""
    cert = os.path.join(directory, name + '.pem')
    key = os.path.join(directory, name + '.key')
    csr = os.path.join(directory, name + '.csr')
    ext = os.path.join(directory, name + '.ext')
    with open(ext, 'w') as f:
        f.write('basicConstraints = CA:FALSE\nsubjectAltName = %s\n'
                'extendedKeyUsage = serverAuth, clientAuth\n' % san)
    _openssl('req', '-new', '-newkey', 'ec',
             '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
             '-subj', '/CN=' + name, '-keyout', key, '-out', csr)
    _openssl('x509', '-req', '-in', csr, '-CA', ca[0], '-CAkey', ca[1],
             '-CAcreateserial', '-days', str(CERT_DAYS), '-extfile', ext,
             '-out', cert)
    return cert, key


def wait_for_port(port, proc, wait_s, what, log):
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('%s exited with %d at start\n%s'
                               % (what, proc.returncode, log_tail(log)))
        try:
            socket.create_connection(('127.0.0.1', port), 1).close()
            return
        except OSError:
            time.sleep(POLL_S)
    raise RuntimeError('%s did not listen on %d within %d s\n%s'
                       % (what, port, wait_s, log_tail(log)))


# ---- Servers ---------------------------------------------------------------

class Servers:
    """One private RabbitMQ node and one memcached for a whole test run.

        with Servers() as servers:
            servers.add_vhost('tally-test-smoke')
            ... servers.amqp_port, servers.memcached_port ...

    The node uses its own epmd port too, so nothing of it outlives stop().
    """

    def __init__(self):
        self.dir = None
        self.node = 'tally-test-%d@localhost' % os.getpid()
        self.amqp_port = None
        self.amqp_tls_port = None      # same node, TLS (no client cert)
        self.tls_ca = None             # CA file of the node's certificate
        self.tls_ca_key = None         # its key, to sign more certificates
        self._tls_cert = None          # the node's (cert, key)
        self.dist_port = None
        self.epmd_port = None
        self.memcached_port = None
        self._rabbit = None
        self._memcached = None
        self._env = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- start / stop

    def start(self):
        self.dir = tempfile.mkdtemp(prefix='tally-test-')
        os.chmod(self.dir, 0o755)
        self._make_tls()
        self._start_memcached()
        self._start_rabbitmq()

    def _make_tls(self):
        """A CA and the node's certificate (localhost, 127.0.0.1) in
        DIR/tls, readable by the node's user."""
        tls = os.path.join(self.dir, 'tls')
        os.mkdir(tls)
        ca = make_ca(tls, 'tally-test-ca')
        self._tls_cert = make_cert(tls, 'rabbitmq', ca)
        self.tls_ca, self.tls_ca_key = ca
        if os.geteuid() == 0:
            for name in os.listdir(tls):
                shutil.chown(os.path.join(tls, name), RABBITMQ_USER,
                             RABBITMQ_USER)

    def _write_rabbitmq_conf(self, base):
        """BASE/rabbitmq.conf: a TLS listener beside the plain one
        (RABBITMQ_NODE_PORT), no client certificate asked for."""
        with open(os.path.join(base, 'rabbitmq.conf'), 'w') as f:
            f.write('listeners.ssl.local = 127.0.0.1:%d\n'
                    'ssl_options.cacertfile = %s\n'
                    'ssl_options.certfile = %s\n'
                    'ssl_options.keyfile = %s\n'
                    'ssl_options.verify = verify_none\n'
                    'ssl_options.fail_if_no_peer_cert = false\n'
                    % (self.amqp_tls_port, self.tls_ca, self._tls_cert[0],
                       self._tls_cert[1]))

    def stop(self):
        """Stops both servers (whatever was started) and removes the temp
        dir. Safe to call more than once."""
        errors = []
        if self._rabbit is not None:
            try:
                self._stop_rabbitmq()
            except Exception as e:          # keep going: memcached too
                errors.append('rabbitmq: %s' % e)
            self._rabbit = None
        if self._memcached is not None:
            stop_process(self._memcached)
            self._memcached = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if errors:
            raise RuntimeError('; '.join(errors))

    def _start_memcached(self):
        log = os.path.join(self.dir, 'memcached.log')
        self.memcached_port = free_port()
        with open(log, 'wb') as out:
            self._memcached = subprocess.Popen(
                ['memcached', '-u', 'nobody', '-l', '127.0.0.1',
                 '-p', str(self.memcached_port), '-m', '256', '-U', '0'],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for_port(self.memcached_port, self._memcached, MEMCACHED_WAIT_S,
                      'memcached', log)

    def _rabbit_env(self, base):
        env = dict(os.environ)
        if os.geteuid() == 0:
            home = pwd.getpwnam(RABBITMQ_USER).pw_dir   # its Erlang cookie
            env.update({'HOME': home, 'USER': RABBITMQ_USER,
                        'LOGNAME': RABBITMQ_USER})
        env.update({
            'RABBITMQ_MNESIA_BASE': os.path.join(base, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(base, 'log'),
            'RABBITMQ_NODENAME': self.node,
            'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': str(self.amqp_port),
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            'RABBITMQ_PID_FILE': os.path.join(base, 'pid'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(base, 'enabled_plugins'),
            'RABBITMQ_CONFIG_FILE': os.path.join(base, 'rabbitmq'),
            'ERL_EPMD_PORT': str(self.epmd_port),
        })
        return env

    def _start_rabbitmq(self):
        """Starts the node; retries with new ports when it dies at start
        (a port taken between our test bind and its listen)."""
        for attempt in range(1, RABBITMQ_START_TRIES + 1):
            base = os.path.join(self.dir, 'rabbitmq-%d' % attempt)
            os.mkdir(base)
            if os.geteuid() == 0:
                shutil.chown(base, RABBITMQ_USER, RABBITMQ_USER)
            self.amqp_port = free_port()
            self.amqp_tls_port = free_port()
            self.dist_port = free_port()
            self.epmd_port = free_port()
            self._write_rabbitmq_conf(base)
            self._env = self._rabbit_env(base)
            log = os.path.join(base, 'out.log')
            with open(log, 'wb') as out:
                self._rabbit = subprocess.Popen(
                    [os.path.join(RABBITMQ_BIN, 'rabbitmq-server')],
                    env=self._env, cwd=base, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, **self._as_rabbitmq())
            failure = self._wait_rabbitmq(os.path.join(base, 'pid'), log)
            if failure is None:
                return
            self._stop_rabbitmq()
            self._rabbit = None
            if attempt == RABBITMQ_START_TRIES:
                raise RuntimeError(failure)

    def _as_rabbitmq(self):
        """Popen arguments that drop root to user rabbitmq (the server
        refuses to run as root and needs the cookie it owns)."""
        if os.geteuid() != 0:
            return {}
        return {'user': RABBITMQ_USER, 'group': RABBITMQ_USER,
                'extra_groups': []}

    def _ctl(self, args, **kwargs):
        """Runs rabbitmqctl -n NODE ARGS; Popen keyword arguments."""
        return subprocess.Popen(
            [os.path.join(RABBITMQ_BIN, 'rabbitmqctl'), '-n', self.node]
            + list(args), env=self._env, cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            **self._as_rabbitmq(), **kwargs)

    def _wait_rabbitmq(self, pid_file, log):
        """None once the node is up, else a reason. Watches the server
        while `rabbitmqctl wait` runs, so a node that dies fails fast."""
        wait = self._ctl(['wait', pid_file, '--timeout', str(RABBITMQ_WAIT_S)])
        try:
            while wait.poll() is None:
                if self._rabbit.poll() is not None:
                    return ('rabbitmq-server exited with %d at start\n%s'
                            % (self._rabbit.returncode, log_tail(log)))
                time.sleep(POLL_S)
            output = wait.stdout.read().decode('utf-8', 'replace')
        finally:
            stop_process(wait)
            wait.stdout.close()
        if wait.returncode != 0:
            return ('rabbitmqctl wait failed (%d): %s\n%s'
                    % (wait.returncode, output.strip(), log_tail(log)))
        return None

    def _stop_rabbitmq(self):
        if self._rabbit.poll() is None:
            self.rabbitmqctl_status('stop')
        # The server script waits for the node to exit.
        stop_process(self._rabbit)
        # Our private epmd refuses to die while a node is registered.
        subprocess.run(['epmd', '-port', str(self.epmd_port), '-kill'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=RABBITMQCTL_TIMEOUT_S)

    # -- administration

    def rabbitmqctl_status(self, *args):
        """Runs `rabbitmqctl -n NODE ARGS...`; returns (exit code, output),
        (-1, ...) when it hung past its time limit."""
        ctl = self._ctl(args)
        try:
            out, _ = ctl.communicate(timeout=RABBITMQCTL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process(ctl, signal.SIGKILL)
            out = ctl.stdout.read()
            ctl.returncode = -1
        finally:
            ctl.stdout.close()
        return ctl.returncode, out.decode('utf-8', 'replace')

    def rabbitmqctl(self, *args):
        """Runs `rabbitmqctl -n NODE ARGS...`; returns its output, raises
        with it when it fails."""
        rc, out = self.rabbitmqctl_status(*args)
        if rc != 0:
            raise RuntimeError('rabbitmqctl %s failed (%d): %s'
                               % (' '.join(args), rc, out.strip()))
        return out

    def add_vhost(self, name):
        """Creates vhost NAME with full rights for guest and tally's queue
        length policies."""
        self.rabbitmqctl('add_vhost', name)
        self.rabbitmqctl('set_permissions', '-p', name, AMQP_USER,
                         '.*', '.*', '.*')
        for policy, pattern, definition in POLICIES:
            self.rabbitmqctl('set_policy', '-p', name, policy, pattern,
                             definition, '--apply-to', 'queues')

    def broker_signal(self, sig):
        """Sends SIG (e.g. SIGSTOP, SIGCONT) to the RabbitMQ node's VM."""
        with open(self._env['RABBITMQ_PID_FILE']) as f:
            os.kill(int(f.read().strip()), sig)

    def memcached_signal(self, sig):
        """Sends SIG (e.g. SIGSTOP, SIGCONT) to memcached."""
        os.kill(self._memcached.pid, sig)

    def flush_memcached(self):
        with socket.create_connection(('127.0.0.1', self.memcached_port),
                                      HTTP_TIMEOUT_S) as s:
            s.sendall(b'flush_all\r\n')
            answer = s.recv(64)
        assert answer == b'OK\r\n', 'flush_all answered %r' % answer

    def memcached_address(self):
        return '127.0.0.1:%d' % self.memcached_port


# ---- Cluster ---------------------------------------------------------------

class Daemon:
    """One daemon process: its command line, log and HTTP port."""

    def __init__(self, name, argv, port, workdir):
        self.name = name
        self.argv = argv
        self.port = port
        self.workdir = workdir
        self.log = os.path.join(workdir, 'log')
        self.proc = None

    def start(self, env=None):
        """Starts the daemon; ENV (a dict) adds environment variables."""
        environ = dict(os.environ, **(env or {}))
        with open(self.log, 'ab') as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                env=environ,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s=READY_TIMEOUT_S):
        url = 'http://127.0.0.1:%d/readyz' % self.port
        deadline = time.monotonic() + timeout_s
        last = 'no answer'
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError('%s exited with %d at start\n%s'
                                     % (self.name, self.proc.returncode,
                                        log_tail(self.log)))
            try:
                status, _, body = request_raw(url, 'GET', timeout=1)
                if status == 200:
                    return
                last = '%d %s' % (status, body.decode('utf-8', 'replace'))
            except OSError as e:
                last = str(e)
            time.sleep(POLL_S)
        raise AssertionError('%s not ready within %d s (last: %s)\n%s'
                             % (self.name, timeout_s, last, log_tail(self.log)))

    def stop(self, wait_s=DAEMON_STOP_S):
        """SIGTERM, then the exit code must be 0 within WAIT_S."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                stop_process(proc, signal.SIGKILL)
                raise AssertionError('%s did not exit within %d s of SIGTERM\n%s'
                                     % (self.name, wait_s, log_tail(self.log)))
        if proc.returncode != 0:
            raise AssertionError('%s exited with %d after SIGTERM\n%s'
                                 % (self.name, proc.returncode,
                                    log_tail(self.log)))

    def send_signal(self, sig):
        """Sends SIG (e.g. SIGSTOP, SIGCONT) and returns at once."""
        if self.proc is not None:
            os.killpg(self.proc.pid, sig)

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None:
            stop_process(self.proc, sig)
            self.proc = None


class Cluster:
    """M aggregators (instances 0..M-1) and F frontends on one vhost, each
    with an HTTP port, its own work dir (cwd) and log in a temp dir.

    EXTRA_ARGS is a list of flags for every daemon, or a dict with lists
    under 'all', 'aggregator' and 'frontend'. Use as a context manager or
    call stop(); stop() raises if any daemon did not exit 0 on SIGTERM.
    """

    def __init__(self, servers, vhost, builddir, instances=2, frontends=1,
                 extra_args=None, start=True):
        if isinstance(extra_args, dict):
            common = list(extra_args.get('all', []))
            agg_extra = common + list(extra_args.get('aggregator', []))
            fe_extra = common + list(extra_args.get('frontend', []))
        else:
            agg_extra = fe_extra = list(extra_args or [])
        self.servers = servers
        self.vhost = vhost
        self.dir = tempfile.mkdtemp(prefix='tally-cluster-')
        common = ['--amqp-host', '127.0.0.1',
                  '--amqp-port', str(servers.amqp_port),
                  '--amqp-vhost', vhost,
                  '--amqp-user', AMQP_USER, '--amqp-password', AMQP_PASSWORD,
                  '--memcached', servers.memcached_address(),
                  '--instances', str(instances),
                  '--http-address', '127.0.0.1']
        self.aggregators = []
        for i in range(instances):
            port = free_port()
            argv = [os.path.join(builddir, 'services', 'tally-aggregator'),
                    '--instance', str(i), '--http-port', str(port)]
            self.aggregators.append(self._daemon('aggregator-%d' % i,
                                                 argv + common + agg_extra,
                                                 port))
        self.frontends = []
        for k in range(frontends):
            port = free_port()
            argv = [os.path.join(builddir, 'services', 'tally-frontend'),
                    '--http-port', str(port)]
            self.frontends.append(self._daemon('frontend-%d' % k,
                                               argv + common + fe_extra, port))
        if start:
            self.start()

    def _daemon(self, name, argv, port):
        workdir = os.path.join(self.dir, name)
        os.mkdir(workdir)
        return Daemon(name, argv, port, workdir)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:
                raise
        return False

    def daemons(self):
        return self.aggregators + self.frontends

    def start(self):
        """Starts every daemon (aggregators first) and waits for /readyz.
        On failure stops what runs and raises with the log tail."""
        try:
            for d in self.daemons():
                d.start()
            for d in self.daemons():
                d.wait_ready()
        except BaseException as e:
            self.kill_all()
            if isinstance(e, AssertionError):
                raise AssertionError('%s\n(logs kept in %s)' % (e, self.dir))
            raise

    def stop(self, keep_logs=False):
        """SIGTERMs frontends, then aggregators; each must exit 0 within
        20 s. Raises AssertionError naming every one that did not (with
        its log tail). The temp dir with the logs is removed unless
        KEEP_LOGS or a daemon failed."""
        failures = []
        for d in self.frontends + self.aggregators:
            try:
                d.stop()
            except AssertionError as e:
                failures.append(str(e))
        if failures:
            raise AssertionError('\n'.join(failures)
                                 + '\n(logs kept in %s)' % self.dir)
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill_all(self):
        for d in self.daemons():
            d.kill()

    def kill_aggregator(self, i, sig=signal.SIGKILL):
        """Kills aggregator I's process group with SIG (a crash: its exit
        code is not checked) and waits until it is gone."""
        self.aggregators[i].kill(sig)

    def stop_aggregator(self, i):
        """Clean stop: SIGTERM, must exit 0."""
        self.aggregators[i].stop()

    def start_aggregator(self, i, env=None, wait=True):
        """(Re)starts aggregator I with the same flags, port and work dir
        (ENV adds environment variables); waits for /readyz unless WAIT is
        false."""
        d = self.aggregators[i]
        assert not d.running(), '%s is still running' % d.name
        d.start(env)
        if wait:
            d.wait_ready()

    def add_aggregator(self, wait=True):
        """Starts one more aggregator, numbered after the others, with the
        cluster's flags (so outside its slot map until a reshard gives it
        slots); returns its index."""
        i = len(self.aggregators)
        first = self.aggregators[0]
        argv = list(first.argv)
        argv[argv.index('--instance') + 1] = str(i)
        port = free_port()
        argv[argv.index('--http-port') + 1] = str(port)
        self.aggregators.append(self._daemon('aggregator-%d' % i, argv, port))
        self.aggregators[i].start()
        if wait:
            self.aggregators[i].wait_ready()
        return i

    def add_frontend(self, env=None, wait=True):
        """Starts one more frontend with the cluster's flags (ENV adds
        environment variables); returns its index."""
        k = len(self.frontends)
        argv = list(self.frontends[0].argv)
        port = free_port()
        argv[argv.index('--http-port') + 1] = str(port)
        self.frontends.append(self._daemon('frontend-%d' % k, argv, port))
        self.frontends[k].start(env)
        if wait:
            self.frontends[k].wait_ready()
        return k

    def frontend_url(self, k=0):
        return 'http://127.0.0.1:%d' % self.frontends[k].port

    def aggregator_url(self, i):
        return 'http://127.0.0.1:%d' % self.aggregators[i].port


# ---- HTTP clients ------------------------------------------------------------

def _target(url, default_path):
    u = urllib.parse.urlsplit(url)
    path = u.path or default_path
    if u.query:
        path += '?' + u.query
    return u.hostname, u.port or 80, path


def request_raw(url, method='GET', body=None, headers=None, chunked=False,
                timeout=HTTP_TIMEOUT_S):
    """One HTTP request; returns (status, headers, body bytes) with header
    names lower-cased. A URL without a path goes to /rpc. The body is sent
    in pieces and sending stops as soon as the server answers, so an early
    answer (413 from Content-Length) is read, not lost to a broken pipe.
    CHUNKED sends it with Transfer-Encoding: chunked instead of
    Content-Length."""
    host, port, path = _target(url, '/rpc')
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        names = {k.lower() for k in (headers or {})}
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and 'content-length' not in names:
            if chunked:
                conn.putheader('Transfer-Encoding', 'chunked')
            else:
                conn.putheader('Content-Length', str(len(body)))
        conn.endheaders()
        if body is not None:
            _send_body(conn, body, chunked)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _send_body(conn, body, chunked):
    sock = conn.sock
    pieces = [body[i:i + SEND_CHUNK] for i in range(0, len(body), SEND_CHUNK)]
    if chunked:
        pieces = [b'%x\r\n%s\r\n' % (len(p), p) for p in pieces] + [b'0\r\n\r\n']
    try:
        for p in pieces:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:            # the server answered early
                return
            sock.sendall(p)
    except (BrokenPipeError, ConnectionResetError):
        pass


def post_raw(url, body, headers=None, chunked=False):
    """POSTs BODY (bytes) to URL (/rpc when it has no path); returns
    (status, headers with lower-cased names, body bytes)."""
    return request_raw(url, 'POST', body, headers, chunked)


def rpc(url, method, params=None, id=1, token=None):
    """Calls METHOD on the frontend at URL, with TOKEN as bearer token when
    given; returns the parsed response (None for a notification, id=None).
    Asserts HTTP 200 (204 for a notification)."""
    call = {'jsonrpc': '2.0', 'method': method}
    if params is not None:
        call['params'] = params
    if id is not None:
        call['id'] = id
    headers = {'Content-Type': 'application/json'}
    if token is not None:
        headers['Authorization'] = 'Bearer ' + token
    status, _, body = post_raw(url, json.dumps(call).encode(), headers)
    if id is None:
        assert status == 204, '%s notification: HTTP %d %r' % (method, status, body)
        return None
    assert status == 200, '%s: HTTP %d %r' % (method, status, body)
    return json.loads(body)


def rpc_result(url, method, params=None, token=None):
    """Calls METHOD and returns its result; asserts it is not an error."""
    resp = rpc(url, method, params, token=token)
    assert 'error' not in resp, '%s %s: %s' % (method, json.dumps(params),
                                             json.dumps(resp))
    return resp['result']


QUERY_NAMES_MAX = 100      # names per metrics.query call (the frontend's limit)


def query_metrics(url, names, **params):
    """metrics.query of every name in NAMES, in calls of at most
    QUERY_NAMES_MAX names with the other PARAMS (window, series, state);
    returns {name: result or None}."""
    out = {}
    for i in range(0, len(names), QUERY_NAMES_MAX):
        call = dict(params, names=names[i:i + QUERY_NAMES_MAX])
        out.update(rpc_result(url, 'metrics.query', call)['metrics'])
    return out


# ---- AMQP clients ------------------------------------------------------------

def _amqp(servers, vhost):
    import pika
    params = pika.ConnectionParameters(
        host='127.0.0.1', port=servers.amqp_port, virtual_host=vhost,
        credentials=pika.PlainCredentials(AMQP_USER, AMQP_PASSWORD),
        connection_attempts=3, retry_delay=1)
    return pika.BlockingConnection(params)


def publish_ingest(servers, vhost, body, message_id=None,
                   content_type='application/json'):
    """Publishes BODY (bytes) to exchange tally.ingest, key "events",
    persistent and mandatory, and waits for the broker's confirm (raises
    if it is nacked or unroutable)."""
    import pika
    conn = _amqp(servers, vhost)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(EXCHANGE_INGEST, INGEST_KEY, body,
                         pika.BasicProperties(content_type=content_type,
                                              delivery_mode=2,
                                              message_id=message_id),
                         mandatory=True)
    finally:
        conn.close()


def get_rejected(servers, vhost, max_wait, count=None):
    """Drains queue tally.rejected (basic_get, acked) into a list of
    (headers dict, body bytes). Waits up to MAX_WAIT seconds: for COUNT
    messages when given, else for the first one; then takes whatever else
    is ready. A missing queue counts as empty."""
    import pika
    got = []
    deadline = time.monotonic() + max_wait
    conn = _amqp(servers, vhost)
    try:
        ch = conn.channel()
        while True:
            try:
                method, props, body = ch.basic_get(QUEUE_REJECTED, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 404:
                    raise
                method = None
                ch = conn.channel()
            if method is not None:
                got.append((dict(props.headers or {}), body))
                continue
            enough = len(got) >= count if count is not None else len(got) > 0
            if enough or time.monotonic() >= deadline:
                return got
            conn.sleep(POLL_S)
    finally:
        conn.close()


# ---- the runner --------------------------------------------------------------

def collect(tests):
    """The test_* functions of TESTS (a module, a dict such as globals(),
    or an iterable of functions), in definition order."""
    if isinstance(tests, dict):
        items = list(tests.items())
    elif hasattr(tests, '__dict__') and not callable(tests):
        items = list(vars(tests).items())
    else:
        items = [(f.__name__, f) for f in tests]
    return [(name, f) for name, f in items
            if name.startswith('test_') and callable(f)]


def run(tests, *args, prefix=''):
    """Runs each test_* function of TESTS with ARGS, printing
    `PASS name (1.2 s)` or `FAIL name: reason`. Returns 0 if all passed,
    else 1. KeyboardInterrupt is not caught."""
    failed = 0
    for name, f in collect(tests):
        start = time.monotonic()
        try:
            f(*args)
        except AssertionError as e:
            failed += 1
            print('FAIL %s%s: %s' % (prefix, name, e or 'assertion failed'),
                  flush=True)
            continue
        except Exception:
            failed += 1
            print('FAIL %s%s: %s' % (prefix, name, traceback.format_exc()),
                  flush=True)
            continue
        print('PASS %s%s (%.1f s)' % (prefix, name, time.monotonic() - start),
              flush=True)
    return 1 if failed else 0


def eventually(check, timeout_s, what, interval_s=POLL_S):
    """Calls CHECK, which returns (done, value), until done; returns that
    value. After TIMEOUT_S fails with WHAT and the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, value = check()
        if done:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError('%s: not done within %.1f s (last: %s)'
                                 % (what, timeout_s, json.dumps(value)))
        time.sleep(interval_s)
