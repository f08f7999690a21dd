"""
test_smoke: the shortest path through a running cluster. Three counter
events go in through one frontend and come back out of metrics.query with
an exact count and sum; every daemon answers /healthz.
"""

import json

from harness import eventually, request_raw, rpc_result

CLUSTER = {'instances': 2, 'frontends': 1}

QUERY_WAIT_S = 5
NAME = 'smoke.hits'
VALUES = [1, 2.5, 4]        # exact in binary: the sum must be exactly 7.5


def test_record_then_query(env):
    url = env.cluster.frontend_url(0)
    events = [{'name': NAME, 'type': 'counter', 'value': v} for v in VALUES]
    result = rpc_result(url, 'events.record', {'events': events})
    assert result == {'accepted': 3, 'rejected': []}, \
        'events.record answered %s' % json.dumps(result)

    def query():
        r = rpc_result(url, 'metrics.query', {'names': [NAME], 'window': 'all'})
        m = r['metrics'][NAME]
        done = m is not None and m.get('count') == len(VALUES) \
            and m.get('sum') == sum(VALUES)
        return done, m

    m = eventually(query, QUERY_WAIT_S, 'metrics.query of %s' % NAME)
    assert m['type'] == 'counter', 'type %r' % m['type']
    assert m['window'] == 'all', 'window %r' % m['window']


def test_healthz(env):
    for d in env.cluster.daemons():
        status, headers, body = request_raw(
            'http://127.0.0.1:%d/healthz' % d.port, 'GET')
        assert status == 200, '%s /healthz: HTTP %d %r' % (d.name, status, body)
        assert json.loads(body) == {'status': 'ok'}, \
            '%s /healthz: %r' % (d.name, body)
        assert headers.get('content-type') == 'application/json', \
            '%s /healthz Content-Type %r' % (d.name, headers.get('content-type'))
