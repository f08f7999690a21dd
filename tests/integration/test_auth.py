"""
test_auth: tokens and scopes on a frontend started with --tokens, and a
broker user that may publish to tally.ingest and nothing else.

    write token   records; cannot query, list, see status or delete
    read token    queries, lists, sees status; cannot record or delete
    admin token   deletes
    no token, a wrong token, a malformed header: refused with their codes
    rpc.discover  needs no token
"""

import json
import os
import time

from harness import (AMQP_PASSWORD, EXCHANGE_INGEST, INGEST_KEY, Cluster,
                     eventually, post_raw, rpc, rpc_result)

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = {'instances': 2, 'frontends': 1,
           'extra_args': {'frontend': ['--tokens',
                                       os.path.join(HERE, 'tokens.test')]}}

WRITE = 'test-write-token'
WRITE2 = 'test-write-token-2'
READ = 'test-read-token'
ADMIN = 'test-admin-token'
INGEST_USER = 'tally-ingest-only'


def error(resp):
    return resp.get('error')


def forbidden(method, scope, name):
    return {'code': 1303, 'message': 'Forbidden',
            'data': '%s needs the %s scope, which token "%s" does not have'
                    % (method, scope, name)}


def test_write_token_records_only(env):
    url = env.cluster.frontend_url(0)
    events = [{'name': 'auth.c', 'type': 'counter', 'value': 2}]
    assert rpc_result(url, 'events.record', {'events': events},
                      token=WRITE) == {'accepted': 1, 'rejected': []}
    for method, params, scope in (
            ('metrics.query', {'names': ['auth.c']}, 'read'),
            ('metrics.list', {}, 'read'),
            ('cluster.status', {}, 'read'),
            ('metrics.delete', {'name': 'auth.c'}, 'admin')):
        assert error(rpc(url, method, params, token=WRITE)) == \
            forbidden(method, scope, 'writer'), method


def test_read_token_queries_only(env):
    url = env.cluster.frontend_url(0)
    events = [{'name': 'auth.r', 'type': 'counter', 'value': 5}]
    rpc_result(url, 'events.record', {'events': events}, token=WRITE)

    def counted():
        m = rpc_result(url, 'metrics.query', {'names': ['auth.r']},
                       token=READ)['metrics']['auth.r']
        return m is not None and m['count'] == 1 and m['sum'] == 5, m
    eventually(counted, 10, 'auth.r visible to the read token')
    names = [m['name'] for m in rpc_result(url, 'metrics.list',
                                           {'prefix': 'auth.r'},
                                           token=READ)['metrics']]
    assert names == ['auth.r'], names
    assert len(rpc_result(url, 'cluster.status', {},
                          token=READ)['instances']) == 2
    assert error(rpc(url, 'events.record', {'events': events},
                     token=READ)) == forbidden('events.record', 'write',
                                               'reader')
    assert error(rpc(url, 'metrics.delete', {'name': 'auth.r'},
                     token=READ)) == forbidden('metrics.delete', 'admin',
                                               'reader')


def test_admin_token_deletes(env):
    url = env.cluster.frontend_url(0)
    events = [{'name': 'auth.d', 'type': 'counter', 'value': 1}]
    rpc_result(url, 'events.record', {'events': events}, token=WRITE)
    def recorded():
        m = rpc_result(url, 'metrics.query', {'names': ['auth.d']},
                       token=READ)['metrics']['auth.d']
        return m is not None, m
    eventually(recorded, 10, 'auth.d recorded')
    rpc_result(url, 'metrics.delete', {'name': 'auth.d'}, token=ADMIN)
    assert rpc_result(url, 'metrics.query', {'names': ['auth.d']},
                      token=READ)['metrics'] == {'auth.d': None}
    # admin does not imply the other scopes
    assert error(rpc(url, 'events.record', {'events': events},
                     token=ADMIN)) == forbidden('events.record', 'write',
                                                'ops')


def test_missing_and_wrong_tokens(env):
    url = env.cluster.frontend_url(0)
    events = [{'name': 'auth.x', 'type': 'counter', 'value': 1}]
    assert error(rpc(url, 'events.record', {'events': events})) == {
        'code': 1301, 'message': 'Unauthorized',
        'data': 'events.record needs a token with the write scope: '
                'send Authorization: Bearer <token>'}
    assert error(rpc(url, 'metrics.delete', {'name': 'auth.x'},
                     token='test-admin-tokeN')) == {
        'code': 1302, 'message': 'Invalid token',
        'data': 'the token is not known'}
    status, _, body = post_raw(url, json.dumps(
        {'jsonrpc': '2.0', 'method': 'metrics.query', 'id': 7,
         'params': {'names': ['auth.x']}}).encode(),
        {'Content-Type': 'application/json',
         'Authorization': 'Basic dGVzdDp0ZXN0'})
    assert status == 200
    assert json.loads(body) == {'jsonrpc': '2.0', 'id': 7, 'error': {
        'code': 1302, 'message': 'Invalid token',
        'data': 'the Authorization header must be Bearer <token>'}}
    # nothing of the refused calls got in
    assert rpc_result(url, 'metrics.query', {'names': ['auth.x']},
                      token=READ)['metrics'] == {'auth.x': None}


def test_batch_ids_scoped_by_token(env):
    """A retry with the same batch id and token counts once; the same id
    under another token is another batch (schema/dedup.md)."""
    url = env.cluster.frontend_url(0)
    params = {'events': [{'name': 'auth.batch', 'type': 'counter',
                          'value': 1}], 'batch': 'same-id'}
    for token in (WRITE, WRITE, WRITE2, WRITE2):
        assert rpc_result(url, 'events.record', params, token=token) == \
            {'accepted': 1, 'rejected': []}

    def counted():
        m = rpc_result(url, 'metrics.query', {'names': ['auth.batch']},
                       token=READ)['metrics']['auth.batch']
        return m is not None and m['count'] == 2, m
    eventually(counted, 10, 'one batch per token')
    time.sleep(0.5)
    assert counted()[0]


def test_discover_needs_no_token(env):
    doc = rpc_result(env.cluster.frontend_url(0), 'rpc.discover')
    assert doc['openrpc'].startswith('1.'), doc['openrpc']


def test_batch_checks_each_call(env):
    """One HTTP request, one token: each call of the batch gets its own
    verdict."""
    url = env.cluster.frontend_url(0)
    batch = [{'jsonrpc': '2.0', 'id': 1, 'method': 'events.record',
              'params': {'events': [{'name': 'auth.b', 'type': 'counter',
                                     'value': 1}]}},
             {'jsonrpc': '2.0', 'id': 2, 'method': 'metrics.delete',
              'params': {'name': 'auth.b'}},
             {'jsonrpc': '2.0', 'id': 3, 'method': 'rpc.discover'}]
    status, _, body = post_raw(url, json.dumps(batch).encode(),
                               {'Content-Type': 'application/json',
                                'Authorization': 'Bearer ' + WRITE})
    assert status == 200
    got = {r['id']: r for r in json.loads(body)}
    assert got[1]['result'] == {'accepted': 1, 'rejected': []}, got[1]
    assert got[2]['error'] == forbidden('metrics.delete', 'admin', 'writer')
    assert 'result' in got[3]


def test_ingest_only_broker_user(env):
    """A user with configure "^$", write "^tally\\.ingest$", read "^$" can
    publish events to tally.ingest and nothing else (README, "Broker
    users")."""
    import pika
    servers = env.servers
    servers.rabbitmqctl('add_user', INGEST_USER, AMQP_PASSWORD)
    servers.rabbitmqctl('set_permissions', '-p', env.vhost, INGEST_USER,
                        '^$', r'^tally\.ingest$', '^$')
    params = pika.ConnectionParameters(
        host='127.0.0.1', port=servers.amqp_port, virtual_host=env.vhost,
        credentials=pika.PlainCredentials(INGEST_USER, AMQP_PASSWORD))
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        body = json.dumps({'events': [{'name': 'auth.ingest',
                                       'type': 'counter', 'value': 3}]})
        ch.basic_publish(EXCHANGE_INGEST, INGEST_KEY, body.encode(),
                         pika.BasicProperties(
                             content_type='application/json',
                             delivery_mode=2),
                         mandatory=True)
        for exchange, key in (('tally.events', '0'), ('tally.control', ''),
                              ('tally.rpc', '0'), ('', 'tally.rejected')):
            ch = conn.channel()
            ch.confirm_delivery()   # so that publish waits for the verdict
            try:
                ch.basic_publish(exchange, key, b'forged')
                raise AssertionError('published to %r' % exchange)
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 403, (exchange, e)
        try:
            conn.channel().basic_get('tally.agg.0')
            raise AssertionError('read tally.agg.0')
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 403, e
    finally:
        conn.close()
    url = env.cluster.frontend_url(0)

    def counted():
        m = rpc_result(url, 'metrics.query', {'names': ['auth.ingest']},
                       token=READ)['metrics']['auth.ingest']
        return m is not None and m['count'] == 1 and m['sum'] == 3, m
    eventually(counted, 10, 'the ingest-only user\'s events counted')


TALLY_USER = 'tally-own'
# README, "Broker users": configure, write, read
TALLY_PERMISSIONS = (r'^(tally\..*|amq\.gen-.*)$',
                     r'^(tally\..*|amq\.gen-.*|amq\.default)$',
                     r'^(tally\..*|amq\.gen-.*)$')


def test_tally_user_permissions(env):
    """The daemons work with nothing more than the permissions README
    gives tally's own user: record, query, list, status and delete."""
    servers = env.servers
    vhost = 'tally-test-own-user'
    servers.add_vhost(vhost)
    servers.rabbitmqctl('add_user', TALLY_USER, AMQP_PASSWORD)
    servers.rabbitmqctl('set_permissions', '-p', vhost, TALLY_USER,
                        *TALLY_PERMISSIONS)
    with Cluster(servers, vhost, env.builddir, instances=2, frontends=1,
                 extra_args=['--amqp-user', TALLY_USER]) as cluster:
        url = cluster.frontend_url(0)
        names = ['own.a', 'own.b', 'own.c']
        r = rpc_result(url, 'events.record', {'events': [
            {'name': n, 'type': 'counter', 'value': 2} for n in names]})
        assert r == {'accepted': 3, 'rejected': []}, r

        def counted():
            m = rpc_result(url, 'metrics.query', {'names': names})['metrics']
            return all(m[n] is not None and m[n]['sum'] == 2
                       for n in names), m
        eventually(counted, 10, 'events of tally\'s own user counted')
        status = rpc_result(url, 'cluster.status')
        assert status['unreachable'] == [], status
        rpc_result(url, 'metrics.delete', {'name': 'own.a'})
        assert rpc_result(url, 'metrics.query', {'names': ['own.a']})[
            'metrics'] == {'own.a': None}
