"""
test_limits: the limits whose requests are too big for a case file. Each
answers with its own error, and nothing else is lost.
"""

import json

from harness import post_raw, rpc

CLUSTER = {'instances': 1, 'frontends': 1}

EVENTS_MAX = 10000       # --events-max default
BATCH_MAX = 1000         # --batch-max default
HEADERS = {'Content-Type': 'application/json'}


def test_too_many_events(env):
    url = env.cluster.frontend_url(0)
    events = [{'name': 'limits.c', 'type': 'counter', 'value': 1}] * \
        (EVENTS_MAX + 1)
    resp = rpc(url, 'events.record', {'events': events})
    assert resp == {'jsonrpc': '2.0', 'id': 1, 'error': {
        'code': 1203, 'message': 'Too many events',
        'data': 'at most 10000 events per call, got 10001'}}, resp
    resp = rpc(url, 'events.record', {'events': events[:EVENTS_MAX]})
    assert resp['result'] == {'accepted': EVENTS_MAX, 'rejected': []}, resp


def test_batch_too_long(env):
    url = env.cluster.frontend_url(0)
    call = {'jsonrpc': '2.0', 'method': 'metrics.query', 'id': 1,
            'params': {'names': ['limits.c']}}
    status, _, body = post_raw(url + '/rpc',
                               json.dumps([call] * (BATCH_MAX + 1)).encode(),
                               HEADERS)
    assert status == 200, status
    assert json.loads(body) == {'jsonrpc': '2.0', 'id': None, 'error': {
        'code': 1101, 'message': 'Batch too long',
        'data': 'at most 1000 calls per batch'}}, body[:300]
    status, _, body = post_raw(url + '/rpc',
                               json.dumps([call] * BATCH_MAX).encode(),
                               HEADERS)
    answers = json.loads(body)
    assert status == 200 and len(answers) == BATCH_MAX, (status, body[:300])
    assert all('result' in a for a in answers), body[:300]
