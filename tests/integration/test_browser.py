"""
test_browser: CORS and tokens as a real browser meets them (Debian's
chromium, headless). A frontend with --tokens and --cors-origins naming
one origin; two static servers on loopback give two origins, "allowed"
and "foreign", that both serve browser/probe.html. Each page makes one
fetch() to the frontend and reports what its JavaScript saw:

    foreign, JSON + write token, events.record   preflight refused: no POST
    foreign, simple (no-cors, text/plain)        POST reaches it: 415
    foreign, JSON + admin token, metrics.delete  preflight refused: no POST
    allowed, JSON + write token, events.record   recorded, result readable

chromium's net log (--log-net-log) shows what each page sent to the
frontend and what came back, the part the page cannot see; the metrics
are then checked from Python with the read token. Each chromium gets its
own profile in a temp dir, and resolves no name but 127.0.0.1.

Without /usr/bin/chromium the test prints SKIP and passes, unless
TALLY_LONG=1 (make check-long), where it fails.
"""

import contextlib
import functools
import html
import http.server
import json
import os
import re
import subprocess
import tempfile
import threading
import urllib.parse

from harness import Cluster, eventually, free_port, rpc_result, stop_process

CLUSTER = None      # ports of the origins are known only at run time

HERE = os.path.dirname(os.path.abspath(__file__))
PAGES = os.path.join(HERE, 'browser')
TOKENS = os.path.join(HERE, 'tokens.test')
CHROMIUM = '/usr/bin/chromium'
LONG = os.environ.get('TALLY_LONG') == '1'
BROWSER_TIMEOUT_S = 60
VIRTUAL_TIME_MS = 10000
QUERY_WAIT_S = 10

WRITE = 'test-write-token'
READ = 'test-read-token'
ADMIN = 'test-admin-token'
FAILED_FETCH = {'error': 'TypeError: Failed to fetch'}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(port):
    """Serves PAGES on 127.0.0.1:PORT from a thread; yields its origin."""
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', port), functools.partial(QuietHandler, directory=PAGES))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield 'http://127.0.0.1:%d' % port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def chromium(url, workdir):
    """Loads URL in a headless chromium with a fresh profile under WORKDIR
    and returns (the DOM after the page ran, path of the net log)."""
    profile = tempfile.mkdtemp(prefix='profile-', dir=workdir)
    netlog = profile + '.netlog.json'
    argv = [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu',
            '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync',
            '--disable-default-apps', '--disable-extensions',
            # Nothing leaves the machine: every other name is "not found".
            '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
            '--user-data-dir=' + profile, '--log-net-log=' + netlog,
            '--virtual-time-budget=%d' % VIRTUAL_TIME_MS, '--dump-dom', url]
    # Its crash database and caches go under the profile, not ~.
    environ = dict(os.environ, HOME=profile, XDG_CONFIG_HOME=profile,
                   XDG_CACHE_HOME=profile)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        proc.communicate()
        raise AssertionError('chromium did not finish %s within %d s'
                             % (url, BROWSER_TIMEOUT_S))
    assert proc.returncode == 0, 'chromium exited %d on %s: %s' % (
        proc.returncode, url, err.decode('utf-8', 'replace')[-2000:])
    return out.decode('utf-8', 'replace'), netlog


def page_report(dom):
    """What probe.html saw, from its dumped DOM; a body it could read is
    parsed as JSON."""
    assert '<title>done</title>' in dom, 'the page did not finish: %s' % dom
    m = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert m, 'no <pre id="out"> in %s' % dom
    seen = json.loads(html.unescape(m.group(1)))
    if seen.get('body'):
        seen['body'] = json.loads(seen['body'])
    return seen


def exchanges(netlog, rpc_url):
    """The requests chromium sent to RPC_URL, from its net log, in order:
    (method, HTTP status or None for no answer, the answer's
    Access-Control-Allow-Origin or None)."""
    with open(netlog, encoding='utf-8') as f:
        log = json.load(f)
    names = {v: k for k, v in log['constants']['logEventTypes'].items()}
    methods, answers = {}, {}
    for e in log['events']:
        name = names.get(e['type'])
        params = e.get('params') or {}
        source = e['source']['id']
        if name == 'URL_REQUEST_START_JOB' and params.get('url') == rpc_url:
            methods.setdefault(source, params['method'])
        elif name == 'HTTP_TRANSACTION_READ_RESPONSE_HEADERS':
            answers[source] = params['headers']
    out = []
    for source, method in methods.items():
        headers = answers.get(source)
        if headers is None:
            out.append((method, None, None))
            continue
        allow = [h.split(':', 1)[1].strip() for h in headers[1:]
                 if h.lower().startswith('access-control-allow-origin:')]
        out.append((method, int(headers[0].split()[1]),
                    allow[0] if allow else None))
    return out


def record_body(name):
    return json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': 'events.record',
                       'params': {'events': [{'name': name, 'type': 'counter',
                                              'value': 1}]}})


def counts(url, names):
    """{name: (count, sum) or None} through metrics.query, read token."""
    got = rpc_result(url, 'metrics.query', {'names': names},
                     token=READ)['metrics']
    return {n: None if m is None else (m['count'], m['sum'])
            for n, m in got.items()}


def test_cross_origin_calls(env):
    if not os.path.exists(CHROMIUM):
        assert not LONG, ('%s is missing; make check-long needs it '
                          '(apt-get install chromium)' % CHROMIUM)
        print('SKIP test_browser: no %s (apt-get install chromium)'
              % CHROMIUM, flush=True)
        return
    allowed_port, foreign_port = free_port(), free_port()
    allowed_origin = 'http://127.0.0.1:%d' % allowed_port
    extra = {'frontend': ['--tokens', TOKENS,
                          '--cors-origins', allowed_origin]}
    with tempfile.TemporaryDirectory(prefix='tally-browser-') as workdir, \
            static_server(allowed_port) as allowed, \
            static_server(foreign_port) as foreign, \
            Cluster(env.servers, env.vhost, env.builddir, instances=1,
                    extra_args=extra) as cluster:
        url = cluster.frontend_url(0)
        rpc_url = url + '/rpc'
        keep = [{'name': 'browser.keep', 'type': 'counter', 'value': 3}]
        rpc_result(url, 'events.record', {'events': keep}, token=WRITE)
        eventually(lambda: (counts(url, ['browser.keep'])['browser.keep']
                            is not None, None), QUERY_WAIT_S,
                   'browser.keep recorded')

        # (what, origin, query of probe.html, what JS sees, what the
        # frontend got and answered)
        pages = (
            ('foreign JSON record', foreign,
             {'body': record_body('browser.foreign.json'), 'token': WRITE},
             FAILED_FETCH, [('OPTIONS', 204, None)]),
            ('foreign simple record', foreign,
             {'body': record_body('browser.foreign.simple'), 'simple': '1'},
             {'type': 'opaque', 'status': 0, 'body': ''},
             [('POST', 415, None)]),
            ('foreign JSON delete', foreign,
             {'body': json.dumps({'jsonrpc': '2.0', 'id': 1,
                                  'method': 'metrics.delete',
                                  'params': {'name': 'browser.keep'}}),
              'token': ADMIN},
             FAILED_FETCH, [('OPTIONS', 204, None)]),
            ('allowed JSON record', allowed,
             {'body': record_body('browser.allowed'), 'token': WRITE},
             {'type': 'cors', 'status': 200,
              'body': {'jsonrpc': '2.0', 'id': 1,
                       'result': {'accepted': 1, 'rejected': []}}},
             [('OPTIONS', 204, allowed_origin),
              ('POST', 200, allowed_origin)]),
        )
        problems = []
        for what, origin, query, want_seen, want_sent in pages:
            query = dict(query, rpc=rpc_url)
            dom, netlog = chromium('%s/probe.html?%s' % (
                origin, urllib.parse.urlencode(query)), workdir)
            seen = page_report(dom)
            sent = exchanges(netlog, rpc_url)
            if seen != want_seen:
                problems.append('%s: the page saw %s, not %s'
                                % (what, seen, want_seen))
            if sent != want_sent:
                problems.append('%s: the frontend got and answered %s, not %s'
                                % (what, sent, want_sent))

        def allowed_counted():
            got = counts(url, ['browser.allowed'])['browser.allowed']
            return got is not None, got
        if not problems:
            eventually(allowed_counted, QUERY_WAIT_S, 'browser.allowed')
        got = counts(url, ['browser.foreign.json', 'browser.foreign.simple',
                           'browser.keep', 'browser.allowed'])
        want = {'browser.foreign.json': None, 'browser.foreign.simple': None,
                'browser.keep': (1, 3), 'browser.allowed': (1, 1)}
        if got != want:
            problems.append('metrics after the pages: %s, not %s'
                            % (got, want))
        assert not problems, '\n  '.join([''] + problems)
