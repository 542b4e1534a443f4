/**
 * The TCP port is shared with other services: authentication, TLS, connection limits and
 * timeouts, secrets from the environment.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { encodeFrame, encodePush } from '../../src/protocol/index.js';
import { tempDir } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, startSimulator, startStack, type SimulatorHandle } from '../helpers/stack.js';
import { RawClient } from '../helpers/client.js';
import { TEST_AUTH_TOKEN, TEST_ENV_AUTH_TOKEN } from '../helpers/secrets.js';

const TEMPLATES = { k: { template_id: 't', data: { first: { value: '${OPENID}' } } } };
const auth = (opaque: number, token: string) => encodeFrame({ header: `auth ${token}`, opaque, body: null });

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
function makeCertificates(): Record<'ca' | 'caKey' | 'cert' | 'key' | 'clientCert' | 'clientKey', string> {
  const dir = tempDir('mega-tls-');
  openssl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=mega-test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  for (const [name, cn] of [['server', '127.0.0.1'], ['client', 'mega-client']] as const) {
    openssl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    const ext = path.join(dir, `${name}.ext`);
    execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1\\n' > ${ext}`]);
    openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', ext, '-out', `${name}.pem`);
  }
  const p = (f: string) => path.join(dir, f);
  return { ca: p('ca.pem'), caKey: p('ca.key'), cert: p('server.pem'), key: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key') };
}

describe('hardening', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  it('auth_token: nothing but a correct `auth <token>` first; 401 and a close otherwise', async () => {
    const token = TEST_AUTH_TOKEN;
    const stack = await startStack({ simulator: sim, templates: TEMPLATES, ini: { server: { auth_token: token } } });
    try {
      const noAuth = await stack.connect();
      const r1 = await noAuth.request(encodePush(1, 'oA', 'k', null), 1);
      assert.equal(r1.code, 401);
      await noAuth.waitClosed();

      const wrong = await stack.connect();
      const r2 = await wrong.request(auth(2, token.toLowerCase()), 2);
      assert.equal(r2.code, 401);
      await wrong.waitClosed();

      const good = await stack.connect();
      assert.equal((await good.request(auth(3, token), 3)).code, 200);
      assert.equal((await good.request(encodePush(4, 'oAUTHED', 'k', null), 4)).code, 200);
      good.close();
      const log = readFileSync(path.join(stack.dir, 'logs', 'mega.log'), 'utf8');
      assert.match(log, /authentication failed/);
      assert.ok(!log.includes(token), 'the auth token never reaches the log');
    } finally {
      await stack.stop();
    }
  });

  it('secrets from the environment: MEGA_AUTH_TOKEN and MEGA_APP_SECRET', async () => {
    const stack = await startStack({
      simulator: sim,
      templates: TEMPLATES,
      ini: { wechat: { app_secret: '' } },
      env: { MEGA_AUTH_TOKEN: TEST_ENV_AUTH_TOKEN, MEGA_APP_SECRET: APP_SECRET },
    });
    try {
      const c = await stack.connect();
      assert.equal((await c.request(encodePush(1, 'oENV', 'k', null), 1)).code, 401);
      const c2 = await stack.connect();
      assert.equal((await c2.request(auth(1, TEST_ENV_AUTH_TOKEN), 1)).code, 200);
      const sent = await c2.request(encodeFrame({ header: 'send oENV k', opaque: 2, body: Buffer.from('null') }), 2);
      assert.equal(sent.code, 200, 'the app secret from the environment obtained a token');
      c2.close();
    } finally {
      await stack.stop();
    }
  });

  it('TLS: the same protocol over TLS, and client certificates when tls_ca is set', async () => {
    const certs = makeCertificates();
    const stack = await startStack({ simulator: sim, templates: TEMPLATES, ini: { server: { tls_cert: certs.cert, tls_key: certs.key } } });
    try {
      const c = await RawClient.connectTls(stack.port, { ca: readFileSync(certs.ca) });
      assert.equal((await c.request(encodePush(1, 'oTLS', 'k', null), 1)).code, 200);
      c.close();
      // plain TCP to a TLS port gets no protocol answer
      const plain = await stack.connect();
      plain.write(encodePush(2, 'oPLAIN', 'k', null));
      await plain.waitClosed(5000);
      assert.equal(plain.results.length, 0);
    } finally {
      await stack.stop();
    }

    const mutual = await startStack({
      simulator: sim,
      templates: TEMPLATES,
      ini: { server: { tls_cert: certs.cert, tls_key: certs.key, tls_ca: certs.ca } },
    });
    try {
      const withCert = await RawClient.connectTls(mutual.port, {
        ca: readFileSync(certs.ca),
        cert: readFileSync(certs.clientCert),
        key: readFileSync(certs.clientKey),
      });
      assert.equal((await withCert.request(encodePush(3, 'oMTLS', 'k', null), 3)).code, 200);
      withCert.close();
      await assert.rejects(async () => {
        const without = await RawClient.connectTls(mutual.port, { ca: readFileSync(certs.ca) });
        await without.request(encodePush(4, 'oNOCERT', 'k', null), 4, 3000);
      });
    } finally {
      await mutual.stop();
    }
  });

  it('max_connections, idle_timeout and an incomplete frame that never finishes', async () => {
    const stack = await startStack({
      simulator: sim,
      templates: TEMPLATES,
      ini: { server: { max_connections: 3, idle_timeout: 1, frame_timeout: 1 } },
    });
    try {
      const held = [await stack.connect(), await stack.connect(), await stack.connect()];
      const extra = await stack.connect();
      const [refused] = await extra.waitFor(1);
      assert.equal(refused!.code, 503);
      assert.equal(refused!.message.toString(), 'too many connections');
      await extra.waitClosed();

      // idle connections are closed after idle_timeout
      const started = Date.now();
      await Promise.all(held.map((c) => c.waitClosed(5000)));
      assert.ok(Date.now() - started >= 500, 'not closed before the idle timeout');

      // a frame that starts and never completes
      const partial = await stack.connect();
      partial.write(encodePush(1, 'oPART', 'k', null).subarray(0, 10));
      await partial.waitClosed(5000);
      assert.deepEqual(partial.results.map((r) => [r.code, r.message.toString()]), []);

      const fine = await stack.connect();
      assert.equal((await fine.request(encodePush(2, 'oFINE', 'k', null), 2)).code, 200);
      fine.close();
      assert.match(readFileSync(path.join(stack.dir, 'logs', 'mega.log'), 'utf8'), /incomplete frame timed out/);
    } finally {
      await stack.stop();
    }
  });
});
