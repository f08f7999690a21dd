"""
test_cases: data-driven protocol tests. Each tests/integration/cases/*.json
file is one HTTP request replayed against this module's own frontend and
the exact answer expected: status, the listed headers, and the body parsed
as JSON and compared exactly (types too: 1 is not 1.0 nor true), or
"body": null for no body at all.

    {"description": "...",
     "request": {"method": "POST", "path": "/rpc",
                 "headers": {"Content-Type": "application/json"},
                 ONE OF "body": <JSON value, sent compact>
                        "body_text": "<raw text, UTF-8>"
                        "body_hex": "<raw bytes in hex>"
                        "body_repeat": {"text": "a", "count": 2000000}
                 (none: no body), "chunked": true (optional)},
     "expect": {"status": 200, "headers": {"Allow": "..."} (optional),
                "body": <exact JSON value> or null},
     "before": [<requests, as "request">] (optional: sent first, each must
                answer 200; then the case waits BEFORE_SETTLE_S so their
                effects reach the cache)}

Cases that need daemon behaviour not yet settled (e.g. the exact
events.record rejection messages, batch and depth limits as the frontend
configures them) are added by the lead.
"""

import binascii
import glob
import json
import os
import time

from harness import request_raw

CLUSTER = {'instances': 1, 'frontends': 1}

CASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cases')
CASE_KEYS = {'description', 'request', 'expect'}
OPTIONAL_CASE_KEYS = {'before'}
BEFORE_SETTLE_S = 1.0
REQUEST_KEYS = {'method', 'path', 'headers', 'chunked'}
BODY_KEYS = {'body', 'body_text', 'body_hex', 'body_repeat'}
EXPECT_KEYS = {'status', 'headers', 'body'}


def load_case(path):
    """The case at PATH, checked for shape (a typo must not pass)."""
    with open(path, encoding='utf-8') as f:
        case = json.load(f)
    name = os.path.basename(path)
    assert isinstance(case, dict) and CASE_KEYS <= set(case) \
        <= CASE_KEYS | OPTIONAL_CASE_KEYS, \
        '%s: needs the keys %s (and maybe %s)' % (
            name, sorted(CASE_KEYS), sorted(OPTIONAL_CASE_KEYS))
    req, expect = case['request'], case['expect']
    unknown = set(req) - REQUEST_KEYS - BODY_KEYS
    assert not unknown, '%s: unknown request keys %s' % (name, sorted(unknown))
    assert 'method' in req and 'path' in req, '%s: request needs method and path' % name
    assert len(set(req) & BODY_KEYS) <= 1, '%s: more than one body' % name
    assert set(expect) - {'headers'} == {'status', 'body'}, \
        '%s: expect needs status and body (and maybe headers)' % name
    return case


def request_body(req):
    if 'body' in req:
        return json.dumps(req['body'], separators=(',', ':'),
                          ensure_ascii=False).encode('utf-8')
    if 'body_text' in req:
        return req['body_text'].encode('utf-8')
    if 'body_hex' in req:
        return binascii.unhexlify(req['body_hex'])
    if 'body_repeat' in req:
        r = req['body_repeat']
        return r['text'].encode('utf-8') * r['count']
    return None


def same_json(a, b):
    """Equal as JSON values, types included (json.loads gives int, float,
    bool, str, None, list, dict)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return a == b


def replay(env, case, name):
    for before in case.get('before', []):
        status, _, body = request_raw(
            env.cluster.frontend_url(0) + before['path'], before['method'],
            request_body(before), before.get('headers', {}))
        assert status == 200, '%s: a "before" request got HTTP %d %r' % (
            name, status, body[:300])
    if case.get('before'):
        time.sleep(BEFORE_SETTLE_S)
    req, expect = case['request'], case['expect']
    url = env.cluster.frontend_url(0) + req['path']
    status, headers, body = request_raw(url, req['method'], request_body(req),
                                        req.get('headers', {}),
                                        chunked=req.get('chunked', False))
    where = '%s (%s)' % (name, case['description'])
    assert status == expect['status'], '%s: HTTP %d, expected %d; body %r' % (
        where, status, expect['status'], body[:300])
    for k, v in expect.get('headers', {}).items():
        assert headers.get(k.lower()) == v, '%s: header %s is %r, expected %r' % (
            where, k, headers.get(k.lower()), v)
    if expect['body'] is None:
        assert body == b'', '%s: expected no body, got %r' % (where, body[:300])
        return
    assert body != b'', '%s: expected a JSON body, got none' % where
    assert headers.get('content-type') == 'application/json', \
        '%s: Content-Type %r' % (where, headers.get('content-type'))
    try:
        got = json.loads(body)
    except ValueError:
        raise AssertionError('%s: body is not JSON: %r' % (where, body[:300]))
    assert same_json(got, expect['body']), '%s:\n  expected %s\n  got      %s' % (
        where, json.dumps(expect['body'], separators=(',', ':')),
        json.dumps(got, separators=(',', ':')))


def _make_test(path):
    name = os.path.basename(path)[:-len('.json')]

    def test(env):
        replay(env, load_case(path), name)
    test.__name__ = 'test_' + name.replace('-', '_')
    return test


for _path in sorted(glob.glob(os.path.join(CASES_DIR, '*.json'))):
    _test = _make_test(_path)
    globals()[_test.__name__] = _test
