/**
 * The runner against an in-process fake client (fast, every answer under the test's control);
 * test/tasks/e2e.test.ts runs it for real against a daemon and the simulator.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import path from 'node:path';
import type { MegaResult } from '../../src/client/client.js';
import { BadRequestError, MegaConnectionClosedError, MegaClientTimeoutError, MegaRequestTooLargeError } from '../../src/errors.js';
import {
  createTask,
  openTaskStore,
  pauseTask,
  ProgressTracker,
  REPORT_HEADER,
  TaskRunner,
  TaskStateError,
  type ProgressInfo,
  type TaskClient,
  type TaskRow,
  type TaskRunnerOptions,
  type TaskStore,
} from '../../src/tasks/index.js';
import { decodeDoneAbove } from '../../src/tasks/store.js';
import { tempDir } from '../helpers/processes.js';
import Database from 'better-sqlite3';

type Behaviour = (openid: string, msgid: string, attempt: number) => Promise<MegaResult> | MegaResult;

const ok = (): MegaResult => ({ code: 200, ok: true, message: '{"errcode":0,"errmsg":"ok","msgid":1}', wechat: { errcode: 0, errmsg: 'ok', msgid: 1 } });
const refused = (openid: string, errcode = 43004, errmsg = 'require subscribe'): MegaResult => ({
  code: 400,
  ok: false,
  message: JSON.stringify({ errcode, errmsg, openid }),
  wechat: { errcode, errmsg, openid },
});
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Records every send; answers with `behaviour`, after a short random delay (out of order). */
class FakeClient implements TaskClient {
  readonly calls: Array<{ openid: string; key: string; msgid: string; data: unknown }> = [];
  readonly attempts = new Map<string, number>();
  inFlight = 0;
  maxInFlight = 0;
  destroyed = false;
  closed = false;
  constructor(
    private readonly behaviour: Behaviour,
    /** Called the moment a Send is issued, before anything else happens. */
    private readonly onSend?: (msgid: string) => void,
  ) {}

  async send(openid: string, key: string, data: Record<string, unknown> | null, options: { msgid: string }): Promise<MegaResult> {
    this.onSend?.(options.msgid);
    this.calls.push({ openid, key, msgid: options.msgid, data });
    const attempt = (this.attempts.get(options.msgid) ?? 0) + 1;
    this.attempts.set(options.msgid, attempt);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await sleep(Math.random() * 3);
      return await this.behaviour(openid, options.msgid, attempt);
    } finally {
      this.inFlight--;
    }
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

/**
 * What a kill -9 would leave to send again, watched at every Send: the recipients a Send was
 * issued for (by any run) that the store's row, read at that very moment on a connection of its
 * own, does not record as finished. The next run sends exactly these again.
 */
class ResendWatch {
  /** The most there ever were. */
  worst = 0;
  readonly #issued = new Set<number>();
  readonly #db: Database.Database;
  readonly #row: Database.Statement;
  readonly #id: number;

  constructor(f: Fixture) {
    this.#db = new Database(path.join(f.dir, 'mega.db'), { readonly: true });
    this.#row = this.#db.prepare('SELECT position, done_above FROM mega_task WHERE id = ?');
    this.#id = f.task.id;
  }

  sent(msgid: string): void {
    this.#issued.add(Number(msgid.split('-').pop()));
    const row = this.#row.get(this.#id) as { position: number; done_above: string };
    const above = new Set(decodeDoneAbove(row.done_above));
    let unsaved = 0;
    for (const i of this.#issued) {
      if (i < row.position) this.#issued.delete(i);
      else if (!above.has(i)) unsaved++;
    }
    this.worst = Math.max(this.worst, unsaved);
  }

  close(): void {
    this.#db.close();
  }
}

interface Fixture {
  dir: string;
  store: TaskStore;
  task: TaskRow;
  openids: string[];
}

async function fixture(total: number, openidOf: (i: number) => string = (i) => `oU${i}`): Promise<Fixture> {
  const dir = tempDir('mega-runner-');
  const store = openTaskStore({ dsn: `sqlite:${path.join(dir, 'mega.db')}` });
  await store.init();
  const openids = Array.from({ length: total }, (_, i) => openidOf(i));
  const source = path.join(dir, 'to.jsonl');
  writeFileSync(source, openids.map((o, i) => JSON.stringify({ openid: o, n: String(i) })).join('\n'));
  const { task } = await createTask({ store, key: 'order_paid', source, dir: path.join(dir, 'tasks') });
  return { dir, store, task, openids };
}

function runnerOptions(f: Fixture, client: TaskClient, extra: Partial<TaskRunnerOptions> = {}): TaskRunnerOptions {
  return { store: f.store, id: f.task.id, client, window: 16, saveIntervalMs: 20, retryBaseMs: 5, retryMaxMs: 20, ...extra };
}

async function runOnce(f: Fixture, client: TaskClient, extra: Partial<TaskRunnerOptions> = {}) {
  const runner = await TaskRunner.claim(runnerOptions(f, client, extra));
  assert.ok(runner, 'claimed');
  return runner.run();
}

function reportRows(file: string): string[][] {
  const text = readFileSync(file, 'utf8');
  assert.ok(text.startsWith(REPORT_HEADER));
  return text
    .slice(REPORT_HEADER.length)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(','));
}

describe('task runner', () => {
  it('sends everyone once with a stable msgid, counts answers, reports refusals, keeps the window', async () => {
    const f = await fixture(400, (i) => (i % 10 === 3 ? `oBAD${i}` : `oU${i}`));
    const client = new FakeClient((openid) => (openid.startsWith('oBAD') ? refused(openid) : ok()));
    const progress: ProgressInfo[] = [];
    const out = await runOnce(f, client, { onProgress: (p) => progress.push(p) });
    assert.equal(out.end, 'done');
    assert.equal(out.status, 'done');
    assert.equal(out.task.success, 360);
    assert.equal(out.task.fail, 40);
    assert.equal(out.task.position, 400);
    assert.deepEqual(out.task.doneAbove, []);
    assert.equal(out.task.owner, '');
    assert.ok(out.task.finishedAt > 0);
    assert.equal(client.calls.length, 400);
    assert.ok(client.maxInFlight <= 16 && client.maxInFlight > 1, `in flight ${client.maxInFlight}`);
    assert.ok(client.closed);
    const msgids = new Set(client.calls.map((c) => c.msgid));
    assert.equal(msgids.size, 400);
    for (const c of client.calls) {
      const i = Number(c.openid.replace(/^o(BAD|U)/, ''));
      assert.equal(c.msgid, `t${f.task.id}-${f.task.nonce}-${i}`);
      assert.match(c.msgid, /^[A-Za-z0-9_-]{1,64}$/);
      assert.deepEqual(c.data, { n: String(i) });
      assert.equal(c.key, 'order_paid');
    }
    const rows = reportRows(f.task.report);
    assert.equal(rows.length, 40);
    assert.deepEqual(new Set(rows.map((r) => r[0])), new Set(f.openids.filter((o) => o.startsWith('oBAD'))));
    assert.deepEqual(rows[0]!.slice(1), ['43004', 'require subscribe']);
    const last = progress.at(-1)!;
    assert.deepEqual([last.finished, last.success, last.fail, last.total], [400, 360, 40, 400]);
    // running it again does nothing
    assert.equal(await TaskRunner.claim(runnerOptions(f, new FakeClient(ok))), undefined);
  });

  it('a recipient holds its place in the window until its outcome is saved: a kill -9 at any moment leaves at most `window` to send again', { timeout: 60_000 }, async () => {
    const f = await fixture(2000);
    const watch = new ResendWatch(f);
    let saves = 0;
    const save = f.store.saveProgress.bind(f.store);
    f.store.saveProgress = (...args) => {
      saves++;
      return save(...args);
    };
    const client = new FakeClient(ok, (msgid) => watch.sent(msgid));
    // No save on the clock for a minute: only the window's own saves can keep the run going.
    const out = await runOnce(f, client, { window: 16, saveIntervalMs: 60_000 });
    watch.close();
    assert.equal(out.status, 'done');
    assert.equal(out.task.success, 2000);
    assert.equal(client.calls.length, 2000);
    assert.ok(watch.worst <= 16, `${watch.worst} recipients sent and not saved at once, window 16`);
    // each of those saves waited for a quarter of the window: not one save per answer
    assert.ok(saves > 0 && saves <= 2000 / 4, `${saves} saves`);
  });

  it('the window bound holds across runs: a run sends again what the last one left before anyone new, and retries keep their place', { timeout: 60_000 }, async () => {
    const f = await fixture(1500);
    const watch = new ResendWatch(f);
    let stopped = false;
    let runner: TaskRunner | undefined;
    const first = new FakeClient(
      async (openid, _msgid, attempt) => {
        if (stopped) return new Promise<MegaResult>(() => undefined); // the answers a kill loses
        if (attempt === 1 && Number(openid.slice(2)) % 7 === 0) throw new MegaConnectionClosedError('connection to 127.0.0.1:1 closed before the answer', true);
        return ok();
      },
      (msgid) => {
        watch.sent(msgid);
        if (!stopped && Number(msgid.split('-').pop()) === 600) {
          // Ctrl-C twice: the run ends without the answers in flight, as a kill would leave them
          stopped = true;
          runner!.stop('SIGINT');
          runner!.stop('SIGINT');
        }
      },
    );
    runner = await TaskRunner.claim(runnerOptions(f, first, { window: 16, saveIntervalMs: 60_000 }));
    const out1 = await runner!.run();
    assert.equal(out1.status, 'stopped');
    assert.ok(out1.task.success < 1500);
    const second = new FakeClient(ok, (msgid) => watch.sent(msgid));
    const out2 = await runOnce(f, second, { window: 16, saveIntervalMs: 60_000 });
    watch.close();
    assert.equal(out2.status, 'done');
    assert.equal(out2.task.success, 1500);
    assert.equal(second.calls.length, 1500 - out1.task.success, 'exactly the unfinished');
    const lost = new Set(first.calls.map((c) => c.msgid));
    assert.ok(second.calls.some((c) => lost.has(c.msgid)), 'the answers lost in the first run are sent again');
    assert.ok(watch.worst <= 16, `${watch.worst} recipients sent and not saved at once, window 16`);
  });

  it('a window full of recipients waiting for a retry is sent again: a retry keeps the place it holds', { timeout: 30_000 }, async () => {
    const f = await fixture(40);
    const client = new FakeClient((_openid, _msgid, attempt) => {
      if (attempt === 1) throw new MegaConnectionClosedError('connection to 127.0.0.1:1 closed before the answer', true);
      return ok();
    });
    const out = await runOnce(f, client, { window: 4 });
    assert.equal(out.status, 'done');
    assert.equal(out.task.success, 40);
    assert.deepEqual(new Set(client.attempts.values()), new Set([2]));
    assert.ok(client.maxInFlight <= 4);
  });

  it('sends again (same msgid) after a lost connection, a timeout or a 503, counting each recipient once', async () => {
    const f = await fixture(300);
    const client = new FakeClient((openid, msgid, attempt) => {
      const i = Number(openid.slice(2));
      if (attempt === 1 && i % 7 === 0) throw new MegaConnectionClosedError('connection to 127.0.0.1:1 closed before the answer', true);
      if (attempt === 1 && i % 11 === 0) throw new MegaClientTimeoutError('no answer within 5 ms', 5, true);
      if (attempt <= 2 && i % 13 === 0) return { code: 503, ok: false, message: 'shutting down' };
      return ok();
    });
    const out = await runOnce(f, client);
    assert.equal(out.end, 'done');
    assert.equal(out.task.success, 300);
    assert.equal(out.task.fail, 0);
    for (const [msgid, n] of client.attempts) {
      const i = Number(msgid.split('-').pop());
      // attempt 1 fails on any of the three; attempt 2 only with the 503 rule; attempt 3 always succeeds
      const expected = i % 7 === 0 || i % 11 === 0 || i % 13 === 0 ? (i % 13 === 0 ? 3 : 2) : 1;
      assert.equal(n, expected, `attempts of ${msgid}`);
    }
  });

  it('a 500 pauses the task with its reason; resume sends exactly the rest', async () => {
    const f = await fixture(300);
    let broken = true;
    const first = new FakeClient((openid) => {
      if (broken && openid === 'oU150') return { code: 500, ok: false, message: 'template store unavailable' };
      return ok();
    });
    const out = await runOnce(f, first);
    assert.equal(out.end, 'paused-error');
    assert.equal(out.status, 'paused');
    assert.match(out.message, /answered 500 template store unavailable to the send to oU150 \(recipient 151\)/);
    assert.equal(out.task.status, 'paused');
    assert.equal(out.task.message, out.message);
    assert.ok(out.task.success < 300);
    assert.ok(!new ProgressTracker(300, out.task).isFinished(150));
    assert.ok(first.calls.length < 300, 'stopped taking recipients');

    // `run` refuses a paused task; `resume` continues it
    await assert.rejects(TaskRunner.claim(runnerOptions(f, new FakeClient(ok))), (e: unknown) => e instanceof TaskStateError && /task resume/.test(e.message));
    broken = false;
    const second = new FakeClient(ok);
    const runner = await TaskRunner.claim(runnerOptions(f, second, { resume: true }));
    const done = await runner!.run();
    assert.equal(done.end, 'done');
    assert.equal(done.task.success, 300);
    // answers were never lost here, so everyone was sent exactly once, but oU150 (500, not counted) twice
    const sends = new Map<string, number>();
    for (const c of [...first.calls, ...second.calls]) sends.set(c.openid, (sends.get(c.openid) ?? 0) + 1);
    assert.equal(sends.size, 300);
    for (const [openid, n] of sends) assert.equal(n, openid === 'oU150' ? 2 : 1, openid);
  });

  it('a recipient too large for one frame fails alone (413 in the report); a request refused before sending pauses', async () => {
    const f = await fixture(40);
    const out = await runOnce(f, new FakeClient((openid) => {
      if (openid === 'oU7') throw new MegaRequestTooLargeError('send frame is 3000000 bytes, exceeds maxFrameLength 2465792', 3000000, 2465792);
      return ok();
    }));
    assert.equal(out.end, 'done');
    assert.deepEqual([out.task.success, out.task.fail], [39, 1]);
    assert.deepEqual(reportRows(f.task.report), [['oU7', '413', 'variables too large for one frame (package_max_length)']]);

    const g = await fixture(40);
    const paused = await runOnce(g, new FakeClient((openid) => {
      if (openid === 'oU3') throw new BadRequestError('msgid must be 1-64 characters of [A-Za-z0-9_-]');
      return ok();
    }));
    assert.equal(paused.status, 'paused');
    assert.match(paused.message, /oU3 \(recipient 4\) was refused before sending: msgid must be/);
  });

  it('400 without WeChat JSON (template key not exists) pauses instead of failing everyone', async () => {
    const f = await fixture(50);
    const out = await runOnce(f, new FakeClient(() => ({ code: 400, ok: false, message: 'template key not exists' })));
    assert.equal(out.status, 'paused');
    assert.match(out.message, /400 template key not exists/);
    assert.equal(out.task.fail, 0);
    assert.equal(reportRows(f.task.report).length, 0);
  });

  it('stop() (Ctrl-C) lets the answers in flight come back, saves and ends "stopped"; a second stop() does not wait', async () => {
    const f = await fixture(2000);
    let runner: TaskRunner | undefined;
    let answered = 0;
    const client = new FakeClient(async () => {
      if (++answered === 500) runner!.stop('SIGINT');
      await sleep(5);
      return ok();
    });
    runner = await TaskRunner.claim(runnerOptions(f, client));
    const out = await runner!.run();
    assert.equal(out.end, 'stopped');
    assert.equal(out.status, 'stopped');
    assert.equal(out.message, 'interrupted by SIGINT');
    assert.equal(out.task.owner, '');
    assert.equal(out.task.success, client.calls.length, 'every send in flight was answered and counted');
    assert.ok(client.calls.length < 2000);

    // the second stop: answers that never come are not waited for
    const hanging = new FakeClient(() => new Promise<MegaResult>(() => undefined));
    const r2 = await TaskRunner.claim(runnerOptions(f, hanging));
    setTimeout(() => r2!.stop('SIGINT'), 50);
    setTimeout(() => r2!.stop('SIGINT'), 100);
    const out2 = await r2!.run();
    assert.equal(out2.status, 'stopped');
    assert.ok(hanging.destroyed);
    assert.equal(out2.task.success, out.task.success);

    const r3 = await TaskRunner.claim(runnerOptions(f, new FakeClient(ok)));
    const out3 = await r3!.run();
    assert.equal(out3.status, 'done');
    assert.equal(out3.task.success, 2000);
  });

  it('`task pause` from another process stops the runner within a second', async () => {
    const f = await fixture(5000);
    const client = new FakeClient(async () => {
      await sleep(2);
      return ok();
    });
    const runner = await TaskRunner.claim(runnerOptions(f, client, { saveIntervalMs: 100 }));
    const running = runner!.run();
    await sleep(150);
    const other = openTaskStore({ dsn: `sqlite:${path.join(f.dir, 'mega.db')}` });
    await other.init();
    const t0 = Date.now();
    await pauseTask(other, f.task.id, 'paused by ops');
    const out = await running;
    assert.ok(Date.now() - t0 < 1000, `stopped after ${Date.now() - t0} ms`);
    assert.equal(out.end, 'paused');
    assert.equal(out.status, 'paused');
    assert.equal(out.task.message, 'paused by ops');
    assert.equal(out.task.owner, '');
    assert.ok(out.task.success < 5000);
    assert.equal(out.task.success, client.calls.length);
    await other.close();
  });

  it('claims: refuses a task run by a live process, takes over one whose process is gone', async () => {
    const f = await fixture(20);
    // a live owner: this very process under another name would not count; use our own pid
    assert.ok(await f.store.transition(f.task.id, { status: 'pending', owner: '' }, { status: 'running', owner: `${(await import('node:os')).hostname()}:${process.pid}` }));
    await assert.rejects(
      TaskRunner.claim(runnerOptions(f, new FakeClient(ok), { owner: 'someone:else' })),
      (e: unknown) => e instanceof TaskStateError && /is being run by/.test(e.message),
    );
    // the owner died (kill -9): a pid that does not exist on this host
    const os = await import('node:os');
    const row = (await f.store.get(f.task.id))!;
    assert.ok(await f.store.transition(f.task.id, { status: 'running', owner: row.owner }, { status: 'running', owner: `${os.hostname()}:2147483646` }));
    const notices: string[] = [];
    const runner = await TaskRunner.claim(runnerOptions(f, new FakeClient(ok), { onNotice: (n) => notices.push(n) }));
    assert.match(notices[0]!, /took over from .*:2147483646/);
    assert.equal((await runner!.run()).status, 'done');
    await assert.rejects(TaskRunner.claim(runnerOptions(f, new FakeClient(ok), { id: 999 })), /there is no task 999/);
  });

  it('after a crash, report lines the store never counted are cut, and those recipients are counted once', async () => {
    const f = await fixture(100, (i) => (i < 50 ? `oBAD${i}` : `oU${i}`));
    // a crashed run: it wrote report lines for recipients 0..9 but the store recorded only 0..4
    const t = (await f.store.get(f.task.id))!;
    const tracker = new ProgressTracker(100);
    for (let i = 0; i < 5; i++) tracker.finish(i, false);
    const lines = Array.from({ length: 10 }, (_, i) => `oBAD${i},43004,require subscribe\n`);
    appendFileSync(t.report, lines.join(''));
    const countedSize = t.reportSize + Buffer.byteLength(lines.slice(0, 5).join(''));
    assert.ok(await f.store.transition(t.id, { status: 'pending', owner: '' }, { status: 'running', owner: 'deadhost:1', progress: tracker.snapshot(countedSize) }));
    // an owner on another host is trusted until its heartbeat is old; make it old
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(path.join(f.dir, 'mega.db'));
    db.prepare('UPDATE mega_task SET heartbeat_at = 0 WHERE id = ?').run(t.id);
    db.close();

    const client = new FakeClient((openid) => (openid.startsWith('oBAD') ? refused(openid) : ok()));
    const out = await runOnce(f, client);
    assert.equal(out.status, 'done');
    assert.deepEqual([out.task.success, out.task.fail], [50, 50]);
    assert.equal(client.calls.length, 95, 'the 5 recorded recipients are not sent again');
    const rows = reportRows(t.report);
    assert.equal(rows.length, 50);
    assert.equal(new Set(rows.map((r) => r[0])).size, 50, 'no failure reported twice');
  });

  it('a recipient list changed after create is refused', async () => {
    const f = await fixture(10);
    appendFileSync(f.task.file, '["oSNEAKY",null]\n');
    await assert.rejects(TaskRunner.claim(runnerOptions(f, new FakeClient(ok))), (e: unknown) => e instanceof TaskStateError && /changed since/.test(e.message));
    assert.equal((await f.store.get(f.task.id))!.status, 'pending');
  });

  it('pauses with the last error when nothing but errors happens for offlineLimitMs', async () => {
    const f = await fixture(30);
    const client = new FakeClient(() => {
      throw new MegaConnectionClosedError('connection to 127.0.0.1:1 closed before the answer (ECONNRESET)', true);
    });
    const out = await runOnce(f, client, { offlineLimitMs: 300, retryMaxMs: 50 });
    assert.equal(out.status, 'paused');
    assert.match(out.message, /no progress for 0\.3 s: connection to 127\.0\.0\.1:1 closed/);
    assert.equal(out.task.success + out.task.fail, 0);
  });
});
