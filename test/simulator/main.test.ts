import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { http } from '../wechat/helpers.js';

const MAIN = fileURLToPath(new URL('../../src/simulator/main.js', import.meta.url));

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error('no line within 3 s')), 3000);
    rl.once('line', (line) => {
      clearTimeout(timer);
      rl.close();
      resolve(line);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before printing`)));
  });
}

test('simulator main prints one JSON line with the URL, serves, and exits 0 on SIGTERM', async () => {
  const child = spawn(process.execPath, [MAIN, '--port', '0', '--latency-ms', '5', '--app-id', 'wxMain', '--app-secret', 'mainSecret'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const line = await firstLine(child);
    const info = JSON.parse(line) as { url: string; port: number };
    assert.deepEqual(Object.keys(info), ['url', 'port']);
    assert.equal(info.url, `http://127.0.0.1:${info.port}`);
    const tok = await http(info.url, 'GET', '/cgi-bin/token?grant_type=client_credential&appid=wxMain&secret=mainSecret');
    assert.equal(typeof tok.json.access_token, 'string');
    const stats = await http(info.url, 'GET', '/_sim/stats');
    assert.equal(stats.json.tokenRequests, 1);
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code, signal] = (await exited) as [number | null, string | null];
    assert.equal(signal, null);
    assert.equal(code, 0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

test('simulator main rejects bad arguments with exit code 2', async () => {
  const child = spawn(process.execPath, [MAIN, '--port', 'abc'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 2);
  assert.match(stderr, /--port/);
});

test('simulator main --help prints every option and exits 0 without listening', async () => {
  const child = spawn(process.execPath, [MAIN, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0);
  for (const option of ['--host', '--port', '--latency-ms', '--app-id', '--app-secret', '--token-ttl', '--daily-limit', '--no-record-bodies']) {
    assert.ok(stdout.includes(option), `usage names ${option}`);
  }
  assert.doesNotMatch(stdout, /"url"/);
});
