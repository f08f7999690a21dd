"""
test_openrpc: schema/openrpc.json is the contract, so its examples must be
true. rpc.discover must return the document itself; every method has an
example; a method the document does not name answers -32601; and every
example, replayed against this module's fresh cluster in the order the
document's info.description prescribes (method by method, each method's
examples in order), answers exactly its result (types too: 3 is not 3.0)
once the pairing's "x-ignore" JSON Pointers are removed from both sides.
An "x-eventually" example is repeated until it matches, for up to
EVENTUALLY_S.
"""

import json
import os
import time

from harness import POLL_S, rpc

CLUSTER = {'instances': 1, 'frontends': 1}

DOCUMENT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'schema', 'openrpc.json')
EVENTUALLY_S = 5.0
METHOD_NOT_FOUND = -32601
UNKNOWN_METHOD = 'no.such.method'
EXAMPLE_KEYS = {'name', 'description', 'params', 'result'}
EXAMPLE_EXTENSIONS = {'x-ignore', 'x-eventually'}
MAX_DIFFS = 20


def load_document():
    with open(DOCUMENT, encoding='utf-8') as f:
        return json.load(f)


def compact(value):
    return json.dumps(value, separators=(',', ':'), ensure_ascii=False)


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


def json_diff(expected, got, path=''):
    """The JSON Pointers where GOT differs from EXPECTED, each with both
    values, as lines of text."""
    if type(expected) is not type(got):
        return ['%s: expected %s, got %s' % (path or '/', compact(expected),
                                             compact(got))]
    if isinstance(expected, dict):
        lines = []
        for k in expected:
            sub = path + '/' + k.replace('~', '~0').replace('/', '~1')
            if k not in got:
                lines.append('%s: missing (expected %s)' % (sub, compact(expected[k])))
            else:
                lines += json_diff(expected[k], got[k], sub)
        for k in got:
            if k not in expected:
                sub = path + '/' + k.replace('~', '~0').replace('/', '~1')
                lines.append('%s: unexpected %s' % (sub, compact(got[k])))
        return lines
    if isinstance(expected, list):
        lines = []
        for i, (x, y) in enumerate(zip(expected, got)):
            lines += json_diff(x, y, '%s/%d' % (path, i))
        if len(expected) != len(got):
            lines.append('%s: %d elements, expected %d' % (path or '/', len(got),
                                                           len(expected)))
        return lines
    if expected != got:
        return ['%s: expected %s, got %s' % (path or '/', compact(expected),
                                             compact(got))]
    return []


def pointer_tokens(pointer):
    """The reference tokens of an RFC 6901 JSON Pointer (not the root)."""
    assert pointer.startswith('/'), 'JSON Pointer %r must start with /' % pointer
    return [t.replace('~1', '/').replace('~0', '~')
            for t in pointer[1:].split('/')]


def remove_pointer(value, pointer):
    """Removes what POINTER names from VALUE (in place), if it is there.
    Returns True if something was removed."""
    tokens = pointer_tokens(pointer)
    for token in tokens[:-1]:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return False
    last = tokens[-1]
    if isinstance(value, dict) and last in value:
        del value[last]
        return True
    if isinstance(value, list) and last.isdigit() and int(last) < len(value):
        del value[int(last)]
        return True
    return False


def without(value, pointers):
    """(a copy of VALUE with every pointer of POINTERS removed, the set of
    those pointers that named something)."""
    value = json.loads(json.dumps(value))
    return value, {p for p in pointers if remove_pointer(value, p)}


def example_call(method, example):
    """(params object, expected result, x-ignore list, x-eventually) of
    EXAMPLE, checked for shape: a typo must not pass."""
    where = '%s example %r' % (method['name'], example.get('name'))
    unknown = set(example) - EXAMPLE_KEYS - EXAMPLE_EXTENSIONS
    assert not unknown, '%s: unknown keys %s' % (where, sorted(unknown))
    assert 'params' in example and 'result' in example, \
        '%s: needs params and result' % where
    params = {p['name']: p['value'] for p in example['params']}
    assert len(params) == len(example['params']), '%s: a param twice' % where
    ignore = example.get('x-ignore', [])
    assert isinstance(ignore, list), '%s: x-ignore must be a list' % where
    for p in ignore:
        pointer_tokens(p)           # asserts it is a pointer
    expected = example['result']['value']
    eventually = example.get('x-eventually', False)
    assert isinstance(eventually, bool), '%s: x-eventually must be a boolean' % where
    return params, expected, ignore, eventually


def replay(url, method, example):
    """Calls the example; returns None if it matched, else a message."""
    params, expected, ignore, eventually = example_call(method, example)
    want, removed = without(expected, ignore)
    deadline = time.monotonic() + (EVENTUALLY_S if eventually else 0)
    tries = 0
    while True:
        tries += 1
        resp = rpc(url, method['name'], params)
        if 'error' in resp:
            got, diff = None, ['an error: %s' % compact(resp['error'])]
        else:
            got, got_removed = without(resp['result'], ignore)
            if same_json(got, want):
                unused = [p for p in ignore if p not in removed | got_removed]
                if not unused:
                    return None
                return '%s example %r: x-ignore names nothing on either side: %s' \
                    % (method['name'], example['name'], ', '.join(unused))
            diff = json_diff(want, got)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    lines = ['%s example %r (%d call%s%s):' % (
        method['name'], example['name'], tries, '' if tries == 1 else 's',
        ', x-eventually' if eventually else '')]
    lines += ['  params   %s' % compact(params),
              '  expected %s' % compact(want),
              '  got      %s' % (compact(got) if got is not None
                                 else compact(resp))]
    lines += ['  ' + d for d in diff[:MAX_DIFFS]]
    if len(diff) > MAX_DIFFS:
        lines.append('  ... %d more differences' % (len(diff) - MAX_DIFFS))
    return '\n'.join(lines)


def test_discover_is_the_document(env):
    url = env.cluster.frontend_url(0)
    resp = rpc(url, 'rpc.discover', {})
    assert 'error' not in resp, 'rpc.discover: %s' % compact(resp)
    doc = load_document()
    assert same_json(resp['result'], doc), \
        'rpc.discover differs from %s:\n  %s' % (
            DOCUMENT, '\n  '.join(json_diff(doc, resp['result'])[:MAX_DIFFS]))


def test_every_method_has_examples(env):
    doc = load_document()
    names = [m['name'] for m in doc['methods']]
    assert len(names) == len(set(names)), 'a method is listed twice: %s' % names
    bare = [m['name'] for m in doc['methods'] if not m.get('examples')]
    assert not bare, 'methods without examples: %s' % ', '.join(bare)
    for m in doc['methods']:
        for example in m['examples']:
            example_call(m, example)


def test_unknown_method(env):
    doc = load_document()
    assert UNKNOWN_METHOD not in [m['name'] for m in doc['methods']]
    resp = rpc(env.cluster.frontend_url(0), UNKNOWN_METHOD, {})
    assert 'error' in resp and resp['error'].get('code') == METHOD_NOT_FOUND, \
        '%s: expected error %d, got %s' % (UNKNOWN_METHOD, METHOD_NOT_FOUND,
                                           compact(resp))


def test_examples_replay(env):
    """Every example in document order; later examples build on earlier
    ones, so all are replayed and every failure is reported."""
    url = env.cluster.frontend_url(0)
    failures = []
    count = 0
    for method in load_document()['methods']:
        for example in method.get('examples', []):
            count += 1
            failure = replay(url, method, example)
            if failure is not None:
                failures.append(failure)
    assert not failures, '%d of %d examples failed:\n%s' % (
        len(failures), count, '\n'.join(failures))
