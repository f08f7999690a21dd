"""
test_abuse: the limits against one client hogging a frontend, each with
its own error while others keep being served:

- connections per client address (--connections-per-ip): a request on
  one connection too many gets HTTP 429, error 1106, and the connection is
  closed; the connections within the limit keep working;
- requests per second per client (--rate-limit): per token when the
  request has a good one, else per address; HTTP 429, error 1107.
"""

import http.client
import json
import socket
import time

from harness import HTTP_TIMEOUT_S, eventually
from test_auth import CLUSTER as AUTH_CLUSTER

PER_IP = 4
RATE = 5
CLUSTER = {'instances': 1, 'frontends': 1,
           'extra_args': {'frontend': AUTH_CLUSTER['extra_args']['frontend']
                          + ['--connections-per-ip', str(PER_IP),
                             '--rate-limit', str(RATE)]}}
WRITE = 'test-write-token'
READ = 'test-read-token'
REFILL_S = 1.0 / RATE


def connect(env):
    return http.client.HTTPConnection('127.0.0.1', env.cluster.frontends[0].port,
                                      timeout=HTTP_TIMEOUT_S)


def call(conn, token=None, method='no.such.method'):
    """One JSON-RPC call on CONN (kept alive); returns (status, body)."""
    headers = {'Content-Type': 'application/json'}
    if token is not None:
        headers['Authorization'] = 'Bearer ' + token
    conn.request('POST', '/rpc', json.dumps(
        {'jsonrpc': '2.0', 'method': method, 'id': 1}), headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def raw_call_until_closed(env, token):
    """One call on a new raw connection, read until the server closes it
    (a timeout fails); returns (status, body)."""
    request = json.dumps({'jsonrpc': '2.0', 'method': 'no.such.method',
                          'id': 1}).encode()
    head = ('POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            'Content-Type: application/json\r\n'
            'Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n'
            % (token, len(request))).encode()
    with socket.create_connection(('127.0.0.1', env.cluster.frontends[0].port),
                                  timeout=HTTP_TIMEOUT_S) as sock:
        sock.sendall(head + request)
        data = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    return int(head.split()[1]), json.loads(body)


NOT_FOUND = {'jsonrpc': '2.0', 'id': 1, 'error': {
    'code': -32601, 'message': 'Method not found', 'data': 'no.such.method'}}


def test_connections_per_address(env):
    time.sleep(2 * RATE * REFILL_S)         # full buckets
    conns = [connect(env) for _ in range(PER_IP)]
    try:
        for c in conns:
            assert call(c, READ) == (200, NOT_FOUND)
        status, body = raw_call_until_closed(env, READ)
        assert (status, body) == (429, {
            'jsonrpc': '2.0', 'id': None, 'error': {
                'code': 1106, 'message': 'Too many connections',
                'data': 'at most 4 connections from one client address'}}), body
        time.sleep(2 * REFILL_S)
        for c in conns[:2]:                 # the others are still served
            assert call(c, READ) == (200, NOT_FOUND)
        conns[0].close()

        def fifth_served():
            c = connect(env)
            try:
                status, _ = call(c, WRITE)
                return status == 200, status
            finally:
                c.close()
        eventually(fifth_served, 10, 'a new connection once one closed')
    finally:
        for c in conns:
            c.close()


def burst(conn, token, n):
    """N calls as fast as possible; the statuses."""
    return [call(conn, token)[0] for _ in range(n)]


def test_requests_per_second(env):
    time.sleep(2 * RATE * REFILL_S)         # full buckets
    conn = connect(env)
    try:
        assert burst(conn, WRITE, RATE) == [200] * RATE
        status, body = call(conn, WRITE)
        assert (status, body) == (429, {
            'jsonrpc': '2.0', 'id': None, 'error': {
                'code': 1107, 'message': 'Too many requests',
                'data': 'at most 5 requests per second per client '
                        '(token:writer); retry'}}), body
        # another token has its own bucket, and so has a client without one
        assert burst(conn, READ, RATE) == [200] * RATE
        assert burst(conn, None, RATE) == [200] * RATE
        status, body = call(conn, None)
        assert status == 429 and body['error']['data'] == (
            'at most 5 requests per second per client (ip:127.0.0.1); '
            'retry'), body
        # a bucket refills at RATE per second
        time.sleep(REFILL_S * 1.5)
        assert call(conn, WRITE) == (200, NOT_FOUND)
    finally:
        conn.close()
