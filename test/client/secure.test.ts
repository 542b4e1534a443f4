/**
 * MegaClient and the client commands against daemons with `[server] auth_token` and TLS
 * (`tls_cert`/`tls_key`, and `tls_ca` for client certificates).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MegaAuthError, MegaClient, MegaConnectError, MegaConnectionClosedError } from '../../src/index.js';
import { runMega, tempDir } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';

const TEMPLATES = { k: { template_id: 't', data: { first: { value: 'for ${OPENID}' } } } };
const TOKEN = 'tok-Client-Secret-123';

/** A CA; a server certificate for 127.0.0.1 and a client certificate, both signed by it. */
function certificates(): Record<'ca' | 'cert' | 'key' | 'clientCert' | 'clientKey', string> {
  const dir = tempDir('mega-client-tls-');
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=mega-client-test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const [name, cn] of [['server', '127.0.0.1'], ['client', 'mega-client']] as const) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'san.ext', '-out', `${name}.pem`);
  }
  const p = (f: string) => path.join(dir, f);
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key') };
}

describe('MegaClient and the client commands with auth and TLS', () => {
  let sim: SimulatorHandle;
  const stacks: Stack[] = [];
  const clients: MegaClient[] = [];
  let certs: ReturnType<typeof certificates>;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    certs = certificates();
  });
  after(async () => {
    for (const c of clients) c.destroy();
    for (const s of stacks) await s.stop();
    await sim?.stop();
  });

  const stack = async (server: Record<string, string>): Promise<Stack> => {
    const s = await startStack({ simulator: sim, templates: TEMPLATES, ini: { server } });
    stacks.push(s);
    return s;
  };
  const track = (c: MegaClient): MegaClient => {
    clients.push(c);
    return c;
  };

  it('auth_token: the client authenticates first; a wrong token is MegaAuthError; the CLI uses the config or MEGA_AUTH_TOKEN', async () => {
    const s = await stack({ auth_token: TOKEN });
    const good = track(await MegaClient.connect({ port: s.port, authToken: TOKEN }));
    assert.equal((await good.push('oAUTH1', 'k')).code, 200);
    assert.equal((await good.send('oAUTH2', 'k')).wechat?.errcode, 0);
    await good.close();

    await assert.rejects(
      MegaClient.connect({ port: s.port, authToken: 'tok-client-secret-123' }),
      (e: unknown) => e instanceof MegaAuthError && e.resultCode === 401 && /authentication failed/.test(e.message) && !e.message.includes('tok-'),
    );

    // without a token the daemon answers the request itself with 401 (an answer, so it resolves)
    const none = track(new MegaClient({ port: s.port, reconnect: false }));
    const r = await none.push('oAUTH3', 'k');
    assert.equal(r.code, 401);
    assert.match(r.message, /authentication required/);
    none.destroy();

    const cli = await runMega([s.name, 'push', 'oAUTHCLI', 'k', '--config-dir', s.configDir]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout, 'result 200\n');
    const wrong = await runMega([s.name, 'push', 'oAUTHCLI2', 'k', '--config-dir', s.configDir], { env: { MEGA_AUTH_TOKEN: 'wrong-token' } });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /refused the auth token: result 401 authentication failed/);
    assert.ok(!wrong.stderr.includes('wrong-token'));
  });

  it('TLS: the client verifies the daemon with its CA; the CLI trusts the daemon certificate from the config', async () => {
    const s = await stack({ tls_cert: certs.cert, tls_key: certs.key });
    const c = track(await MegaClient.connect({ port: s.port, tls: { ca: readFileSync(certs.ca) } }));
    assert.equal((await c.push('oTLS1', 'k')).code, 200);
    await c.close();

    // Node's default CAs do not know this one
    await assert.rejects(MegaClient.connect({ port: s.port, tls: true, reconnect: false }), MegaConnectError);

    const cli = await runMega([s.name, 'send', 'oTLSCLI', 'k', '--config-dir', s.configDir]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /^result 200 \{"errcode":0/);
  });

  it('TLS with tls_ca: a client certificate is required; the CLI presents the daemon certificate', async () => {
    const s = await stack({ tls_cert: certs.cert, tls_key: certs.key, tls_ca: certs.ca, auth_token: TOKEN });
    const c = track(
      await MegaClient.connect({
        port: s.port,
        authToken: TOKEN,
        tls: { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) },
      }),
    );
    assert.equal((await c.push('oMTLS1', 'k')).code, 200);
    await c.close();

    await assert.rejects(
      async () => {
        const without = track(await MegaClient.connect({ port: s.port, authToken: TOKEN, reconnect: false, tls: { ca: readFileSync(certs.ca) } }));
        await without.push('oMTLS2', 'k', null, { timeoutMs: 3000 });
      },
      (e: unknown) => e instanceof MegaConnectError || e instanceof MegaConnectionClosedError,
    );

    const cli = await runMega([s.name, 'tset', 'k', '--config-dir', s.configDir]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout, 'result 200\n');
  });
});
