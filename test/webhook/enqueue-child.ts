/**
 * Run by sender.test.ts as a separate process (not a test file): starts a sender on the outbox
 * `argv[2]` towards a receiver that is down (`argv[3]`), enqueues `argv[4]` records, prints
 * "durable" once enqueue resolved, and waits to be killed.
 */
import { WebhookSender } from '../../src/webhook/index.js';
import { record } from './helpers.js';

const [dir, url, count] = process.argv.slice(2) as [string, string, string];
const sender = new WebhookSender({ url, dir, fsync: 'always', retryBaseMs: 50, retryMaxMs: 200 });
await sender.start();
await sender.enqueue(Array.from({ length: Number(count) }, (_, i) => record(i)));
process.stdout.write('durable\n');
setInterval(() => undefined, 60_000);
