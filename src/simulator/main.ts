/**
 * Runs the WeChat API simulator as its own process:
 *
 *   node dist/src/simulator/main.js [--host 127.0.0.1] [--port 0] [--latency-ms 0]
 *     [--app-id ID] [--app-secret SECRET] [--token-ttl 7200] [--daily-limit 100000]
 *     [--no-record-bodies] [--receipt-url URL] [--receipt-token T] [--receipt-aes-key K]
 *     [--receipt-delay-ms N]
 *
 * (`mega simulator` passes the defaults of config/wechat.ini, which its usage text shows.)
 *
 * Prints one line of JSON `{"url":"http://127.0.0.1:PORT","port":PORT}` on stdout once listening;
 * closes and exits 0 on SIGTERM/SIGINT. Bad arguments: a message on stderr and exit code 2.
 * Everything else (faults, reset, record) goes through the /_sim/* control endpoints.
 */

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { WechatSimulator, type SimulatorOptions } from './simulator.js';
import { validateReceiptsPatch, type ReceiptsPatch } from './receipts-config.js';

function intArg(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

// Kept within 80 columns: it is printed as is, never wrapped.
const USAGE = `Usage: mega simulator [options]

The bundled WeChat API simulator, for tests and demos. Once it listens it
prints its URL and port as one line of JSON; Ctrl-C stops it.

Options:
  --host H            address to listen on (default 127.0.0.1)
  --port P            port (default 9502; 0 = any free port)
  --latency-ms N      delay before every answer, in ms (default 0)
  --app-id ID         the app id it accepts (default wx_demo_app)
  --app-secret S      the secret it accepts (default demo_secret)
  --token-ttl S       lifetime of the tokens it issues, in s (default 7200)
  --daily-limit N     messages a day before errcode 45009 (default 100000)
  --no-record-bodies  keep only openid, template_id and client_msg_id of
                      each message in the record
  --receipt-url URL   push a TEMPLATESENDJOBFINISH receipt to this server
                      URL for every accepted message (default: none)
  --receipt-token T   the token receipts are signed with
                      (default simulator_token)
  --receipt-aes-key K
                      safe mode, with this EncodingAESKey (43 characters)
  --receipt-delay-ms N
                      wait before each receipt, in ms (default 0)
  -h, --help          this text

The defaults are those of config/wechat.ini. Faults, reset and the record
of what it received: the /_sim/* endpoints, see docs/SIMULATOR.md.
`;

export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  let opts: SimulatorOptions;
  try {
    const { values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'latency-ms': { type: 'string' },
        'app-id': { type: 'string' },
        'app-secret': { type: 'string' },
        'token-ttl': { type: 'string' },
        'daily-limit': { type: 'string' },
        'no-record-bodies': { type: 'boolean' },
        'receipt-url': { type: 'string' },
        'receipt-token': { type: 'string' },
        'receipt-aes-key': { type: 'string' },
        'receipt-delay-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help === true) {
      process.stdout.write(USAGE);
      return;
    }
    opts = {};
    if (values.host !== undefined) opts.host = values.host;
    const port = intArg('port', values.port, 0);
    if (port !== undefined) {
      if (port > 65535) throw new Error('--port must be <= 65535');
      opts.port = port;
    }
    const latency = intArg('latency-ms', values['latency-ms'], 0);
    if (latency !== undefined) opts.latencyMs = latency;
    const ttl = intArg('token-ttl', values['token-ttl'], 1);
    if (ttl !== undefined) opts.tokenTtlSeconds = ttl;
    const limit = intArg('daily-limit', values['daily-limit'], 0);
    if (limit !== undefined) opts.dailyLimit = limit;
    if (values['app-id'] !== undefined) opts.appId = values['app-id'];
    if (values['app-secret'] !== undefined) opts.appSecret = values['app-secret'];
    if (values['no-record-bodies'] === true) opts.recordBodies = false;
    const receipts: ReceiptsPatch = {};
    if (values['receipt-url'] !== undefined) receipts.url = values['receipt-url'];
    if (values['receipt-token'] !== undefined) receipts.token = values['receipt-token'];
    if (values['receipt-aes-key'] !== undefined) receipts.encodingAesKey = values['receipt-aes-key'];
    const receiptDelay = intArg('receipt-delay-ms', values['receipt-delay-ms'], 0);
    if (receiptDelay !== undefined) receipts.delayMs = receiptDelay;
    // Checked here so a bad value is a usage error (exit 2), not a failed start.
    if (Object.keys(receipts).length > 0) opts.receipts = validateReceiptsPatch(receipts);
  } catch (err) {
    process.stderr.write(`wechat simulator: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
    return;
  }

  let sim: WechatSimulator;
  try {
    sim = await WechatSimulator.start(opts);
  } catch (err) {
    process.stderr.write(`wechat simulator: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
    return;
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) {
      process.exit(1); // second signal: give up waiting
    }
    stopping = true;
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`${JSON.stringify({ url: sim.url, port: sim.port })}\n`);
}

function invokedDirectly(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(entry)).href;
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  void main();
}
