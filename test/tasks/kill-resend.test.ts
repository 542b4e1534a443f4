/**
 * README's promise about `kill -9` of `task run`: the recipients sent again after a kill (a Send
 * went out for them before it, and the next run sends them again) are at most `--window`.
 *
 * A real daemon, the simulator, `mega <name> task run` as a real process killed with SIGKILL
 * several times at random moments (seeded), then run to the end. After each kill the test waits
 * until the daemon and the simulator are idle (every Send the killed run issued has reached the
 * simulator), and marks the simulator's record there. A recipient is *sent again because of kill
 * k* when its client_msg_id is in the record before mark k and again between mark k and mark
 * k+1 (what the next run sent). The test also checks that, in the end, everyone was delivered
 * exactly once with their own msgid and counted once.
 *
 * Replay a failure with the seed it prints: MEGA_CRASH_SEED=<seed>.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { openTaskStore, type TaskStore } from '../../src/tasks/index.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';
import { MEGA_BIN } from '../helpers/paths.js';
import { runMega } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { killHard, runSeed, seededRandom, sleep, SimRecord, type SimStats } from '../helpers/crash.js';

const TOTAL = 12_000;
const WINDOW = 64;
const KILLS = 5;

interface Run {
  child: ChildProcess;
  output: () => string;
}

function startRun(args: string[]): Run {
  const child = spawn(process.execPath, [MEGA_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  return { child, output: () => out };
}

describe('task run killed with SIGKILL', () => {
  const seed = runSeed();
  const random = seededRandom(seed);
  let sim: SimulatorHandle;
  let stack: Stack;
  let store: TaskStore;
  const runs: Run[] = [];

  before(async () => {
    process.stdout.write(`# kill -9 resend seed ${seed} (replay with MEGA_CRASH_SEED=${seed})\n`);
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET, '--latency-ms', '1']);
    stack = await startStack({
      simulator: sim,
      templates: { bulk: { touser: '${OPENID}', template_id: 'tmpl-bulk', data: { first: { value: 'Hello ${name}' } } } },
      ini: { setting: { task_worker_num: 2, task_concurrency: 64 }, queue: { fsync: 'none' }, log: { log_level: 'info' } },
    });
    store = openTaskStore({ dsn: `sqlite:${stack.dbFile}` });
    await store.init();
  });

  after(async () => {
    for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    await store?.close();
    await stack?.stop();
    await sim?.stop();
  });

  const mega = (...args: string[]): string[] => [stack.name, ...args, '--config-dir', stack.configDir];

  async function finished(id: number): Promise<number> {
    const t = (await store.get(id))!;
    return t.success + t.fail;
  }

  /** Until the daemon holds no Send and the simulator has received every one it will: twice in a row, nothing new. */
  async function settle(): Promise<void> {
    const deadline = Date.now() + 60_000;
    let before = -1;
    let quietPolls = 0;
    while (quietPolls < 2) {
      if (Date.now() > deadline) assert.fail('the daemon did not become idle within 60 s');
      const r = await runMega(mega('status', '--json'));
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout) as DaemonStatus;
      const stats = await sim.get<SimStats>('/_sim/stats');
      const idle = s.queue.depth === 0 && s.queue.inFlight === 0 && s.retriesPending === 0 && s.running === 0 && stats.inFlight === 0;
      quietPolls = idle && stats.sendRequests === before ? quietPolls + 1 : 0;
      before = stats.sendRequests;
      await sleep(100);
    }
  }

  it(`after each of ${KILLS} SIGKILLs at random moments, at most --window ${WINDOW} recipients are sent again; in the end everyone exactly once`, { timeout: 300_000 }, async () => {
    const openids = Array.from({ length: TOTAL }, (_, i) => `oK${i.toString(36).padStart(4, '0')}`);
    const file = path.join(stack.dir, 'users.txt');
    writeFileSync(file, openids.join('\n') + '\n');
    const created = await runMega(mega('task', 'create', '--key', 'bulk', '--to', file, '--json'));
    assert.equal(created.code, 0, created.stderr + created.stdout);
    const id = (JSON.parse(created.stdout) as { id: number }).id;
    const task = (await store.get(id))!;

    const record = new SimRecord(sim);
    const marks: number[] = [];
    const moments: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      const from = await finished(id);
      // Mostly mid-stream (answers arriving thousands a second), sometimes right after the
      // next run starts sending (while it sends again what the previous kill left).
      const step = random() < 0.3 ? 1 + Math.floor(random() * 20) : 200 + Math.floor(random() * 600);
      const extraMs = Math.floor(random() * 120);
      const run = startRun(mega('task', 'run', String(id), '--window', String(WINDOW), '--quiet'));
      runs.push(run);
      const deadline = Date.now() + 60_000;
      while ((await finished(id)) < from + step) {
        if (run.child.exitCode !== null) assert.fail(`run ${k + 1} ended (${run.child.exitCode}) before it was killed:\n${run.output()}`);
        if (Date.now() > deadline) assert.fail(`run ${k + 1} did not reach ${from + step}:\n${run.output()}`);
        await sleep(5);
      }
      await sleep(extraMs);
      await killHard(run.child);
      const at = await finished(id);
      assert.ok(at < TOTAL, `run ${k + 1} finished the task before it was killed (make TOTAL larger)`);
      await settle();
      marks.push((await record.refresh()).length);
      const seenAll = new Set(record.messages.map((m) => m.client_msg_id)).size;
      moments.push(`kill ${k + 1} at +${step} finished +${extraMs} ms (saved ${at}, distinct sent ${seenAll})`);
    }
    const left = TOTAL - (await finished(id));
    const t0 = Date.now();
    const last = await runMega(mega('task', 'run', String(id), '--window', String(WINDOW), '--quiet'), { timeoutMs: 120_000 });
    assert.equal(last.code, 0, last.stderr + last.stdout);
    moments.push(`the last run sent ${left} in ${((Date.now() - t0) / 1000).toFixed(1)} s with its start`);
    await settle();
    marks.push((await record.refresh()).length);

    // ------------------------------------------------ sent again because of each kill
    const msgids = record.messages.map((m) => m.client_msg_id ?? '');
    const resent: number[] = [];
    for (let k = 0; k < KILLS; k++) {
      const before = new Set(msgids.slice(0, marks[k]));
      const again = new Set(msgids.slice(marks[k], marks[k + 1]).filter((c) => before.has(c)));
      resent.push(again.size);
    }
    process.stdout.write(`# window ${WINDOW}: recipients sent again after each kill: ${resent.join(', ')}\n# ${moments.join('; ')}\n`);
    for (const [k, n] of resent.entries()) assert.ok(n <= WINDOW, `kill ${k + 1}: ${n} recipients sent again, more than --window ${WINDOW} (${moments[k]})`);

    // ------------------------------------------------ everyone exactly once, with their own msgid
    const row = (await store.get(id))!;
    assert.deepEqual([row.status, row.success, row.fail], ['done', TOTAL, 0]);
    const byOpenid = record.byOpenid();
    const problems: string[] = [];
    for (const [i, openid] of openids.entries()) {
      const ms = byOpenid.get(openid) ?? [];
      const delivered = ms.filter((m) => m.errcode === 0 && !m.duplicate).length;
      if (delivered !== 1) problems.push(`${openid}: delivered ${delivered} times`);
      if (ms.some((m) => m.client_msg_id !== `t${id}-${task.nonce}-${i}`)) problems.push(`${openid}: sent with ${ms.map((m) => m.client_msg_id).join(', ')}`);
      if (problems.length > 20) break;
    }
    assert.deepEqual(problems, []);
    assert.equal(byOpenid.size, TOTAL, 'nobody outside the list');
  });
});
