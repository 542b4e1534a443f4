/**
 * One way for every command to reach the daemon (src/cli/daemon-link.ts), one TLS policy: the
 * host name is always checked against the daemon's certificate. A daemon serving a certificate
 * for another host name is refused by push, send, tset, template set, template rm and task run
 * alike; the matching certificate works for each; `--connect`, `--tls-cert/--tls-key` mean the
 * same in each. Real daemons over real TLS, certificates made with openssl.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runMega, tempDir } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';

const TEMPLATE = { touser: '${OPENID}', template_id: 't-link', data: { first: { value: 'hi ${OPENID}' } } };

/**
 * A CA and, signed by it, a certificate for 127.0.0.1 and a client certificate; and a daemon's
 * own (self-signed) certificate for another host name only.
 */
function certificates(): Record<'ca' | 'right' | 'rightKey' | 'wrong' | 'wrongKey' | 'client' | 'clientKey', string> {
  const dir = tempDir('mega-link-tls-');
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=mega-link-test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  const sign = (name: string, cn: string, san: string): void => {
    writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  };
  sign('right', '127.0.0.1', 'IP:127.0.0.1');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=daemon.other.invalid', '-addext', 'subjectAltName=DNS:daemon.other.invalid', '-keyout', 'wrong.key', '-out', 'wrong.pem');
  sign('client', 'mega-client', 'DNS:mega-client');
  const p = (f: string) => path.join(dir, f);
  return {
    ca: p('ca.pem'),
    right: p('right.pem'),
    rightKey: p('right.key'),
    wrong: p('wrong.pem'),
    wrongKey: p('wrong.key'),
    client: p('client.pem'),
    clientKey: p('client.key'),
  };
}

describe('every command reaches the daemon the same way, with one TLS policy', () => {
  let sim: SimulatorHandle;
  let certs: ReturnType<typeof certificates>;
  const stacks: Stack[] = [];
  let dir: string;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    certs = certificates();
    dir = tempDir();
  });
  after(async () => {
    for (const s of stacks) await s.stop();
    await sim?.stop();
  });

  const stack = async (server: Record<string, string>): Promise<Stack> => {
    const s = await startStack({ simulator: sim, templates: { k: TEMPLATE }, ini: { server } });
    stacks.push(s);
    return s;
  };
  const file = (name: string, text: string): string => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  const delivered = async (prefix: string): Promise<string[]> =>
    (await sim.messages())
      .map((m) => m.touser ?? '')
      .filter((o) => o.startsWith(prefix))
      .sort();
  /** A one-recipient task of template k, ready for `task run`; returns its id. */
  const task = async (s: Stack, openid: string): Promise<string> => {
    const created = await runMega([s.name, 'task', 'create', '--key', 'k', '--to', file(`${openid}.txt`, `${openid}\n`), '--json', '--config-dir', s.configDir]);
    assert.equal(created.code, 0, created.stderr);
    return String((JSON.parse(created.stdout) as { id: number }).id);
  };

  it('a certificate for another host name is refused by push, send, tset, template set, template rm and task run', async () => {
    const s = await stack({ tls_cert: certs.wrong, tls_key: certs.wrongKey });
    const mega = (...args: string[]) => runMega([s.name, ...args, '--config-dir', s.configDir]);
    const id = await task(s, 'oWRONGTASK');
    const commands: Array<[string, string[]]> = [
      ['push', ['push', 'oWRONGPUSH', 'k']],
      ['send', ['send', 'oWRONGSEND', 'k']],
      ['tset', ['tset', 'k']],
      ['template set', ['template', 'set', 'k2', '--file', file('k2.json', JSON.stringify(TEMPLATE))]],
      ['template rm', ['template', 'rm', 'k2']],
      ['task run', ['task', 'run', id, '--plain']],
    ];
    for (const [what, args] of commands) {
      const r = await mega(...args);
      assert.equal(r.code, 1, `${what} must be refused; stdout: ${r.stdout}`);
      assert.match(r.stderr, /cannot reach wechat: cannot connect to 127\.0\.0\.1:\d+: Hostname\/IP does not match certificate's altnames/, what);
      assert.match(r.stderr, /the daemon's TLS certificate is not issued for 127\.0\.0\.1/, what);
    }
    // the row changes are the store's, done before the TSet; nothing reached the daemon
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await delivered('oWRONG'), []);
    const shown = await mega('task', 'show', id, '--json');
    assert.equal((JSON.parse(shown.stdout) as { success: number }).success, 0);
  });

  it('the matching certificate works for each of them', async () => {
    const s = await stack({ tls_cert: certs.right, tls_key: certs.rightKey });
    const mega = (...args: string[]) => runMega([s.name, ...args, '--config-dir', s.configDir]);
    const id = await task(s, 'oRIGHTTASK');

    const push = await mega('push', 'oRIGHTPUSH', 'k');
    assert.equal(push.code, 0, push.stderr);
    assert.equal(push.stdout, 'result 200\n');
    const send = await mega('send', 'oRIGHTSEND', 'k');
    assert.equal(send.code, 0, send.stderr);
    assert.match(send.stdout, /^result 200 \{"errcode":0/);
    const tset = await mega('tset', 'k');
    assert.equal(tset.code, 0, tset.stderr);
    const set = await mega('template', 'set', 'k2', '--file', file('k2-right.json', JSON.stringify(TEMPLATE)));
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /wechat \(pid \d+\) reloaded k2: result 200/);
    const rm = await mega('template', 'rm', 'k2');
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, /template k2 removed; wechat \(pid \d+\) no longer sends it/);
    const run = await mega('task', 'run', id, '--plain');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`task ${id} done: 1 recipients, 1 sent, 0 failed`));

    assert.deepEqual(
      await eventually(async () => {
        const got = await delivered('oRIGHT');
        return got.length === 3 ? got : undefined;
      }, 10000, 'three messages'),
      ['oRIGHTPUSH', 'oRIGHTSEND', 'oRIGHTTASK'],
    );

    // --connect: the host name checked is the one given, for push as for task run
    const connect = (host: string) => ['--connect', `${host}:${s.port}`];
    const byIp = await mega('push', 'oRIGHTCONNECT', 'k', ...connect('127.0.0.1'));
    assert.equal(byIp.code, 0, byIp.stderr);
    const byName = await mega('push', 'oRIGHTNAME', 'k', ...connect('localhost'));
    assert.equal(byName.code, 1);
    assert.match(byName.stderr, /the daemon's TLS certificate is not issued for localhost/);
    const id2 = await task(s, 'oRIGHTNAMETASK');
    const runByName = await mega('task', 'run', id2, '--plain', ...connect('localhost'));
    assert.equal(runByName.code, 1, runByName.stdout);
    assert.match(runByName.stderr, /the daemon's TLS certificate is not issued for localhost/);
    const runByIp = await mega('task', 'run', id2, '--plain', ...connect('127.0.0.1'));
    assert.equal(runByIp.code, 0, runByIp.stderr);

    const both = await mega('push', 'oRIGHTBOTH', 'k', '--connect', `127.0.0.1:${s.port}`, '--port', String(s.port));
    assert.equal(both.code, 1);
    assert.match(both.stderr, /give either --connect or --host\/--port, not both/);
  });

  it('with tls_ca, --tls-cert/--tls-key present a client certificate in push as in task run; without them, the daemon\'s own', async () => {
    const s = await stack({ tls_cert: certs.right, tls_key: certs.rightKey, tls_ca: certs.ca });
    const mega = (...args: string[]) => runMega([s.name, ...args, '--config-dir', s.configDir]);
    const clientFlags = ['--tls-cert', certs.client, '--tls-key', certs.clientKey];

    const push = await mega('push', 'oMTLSPUSH', 'k', ...clientFlags);
    assert.equal(push.code, 0, push.stderr);
    const half = await mega('push', 'oMTLSHALF', 'k', '--tls-cert', certs.client);
    assert.equal(half.code, 1);
    assert.match(half.stderr, /--tls-cert and --tls-key go together/);

    const withFlags = await mega('task', 'run', await task(s, 'oMTLSTASK1'), '--plain', ...clientFlags);
    assert.equal(withFlags.code, 0, withFlags.stderr);
    // the operator on the daemon's host: the daemon's own certificate, which tls_ca signed
    const withoutFlags = await mega('task', 'run', await task(s, 'oMTLSTASK2'), '--plain');
    assert.equal(withoutFlags.code, 0, withoutFlags.stderr);
    await eventually(async () => ((await delivered('oMTLS')).length === 3 ? true : undefined), 10000, 'three messages');
  });
});
