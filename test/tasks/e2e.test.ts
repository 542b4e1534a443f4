/**
 * A bulk task end to end: `mega <name> task create|run|show|list` as real processes, a real
 * daemon over real TCP, the simulator over real HTTP, the task store in a real SQLite file.
 *
 * 10,000 recipients, about 5% of them refused by WeChat (43004). The run is interrupted with
 * SIGINT, then killed with SIGKILL, then the daemon is restarted under the third run; it must
 * end with success + fail = total, the counts matching what the simulator answered, the report
 * holding exactly the refusals, and no openid delivered twice on the simulator's record.
 *
 * Replay a failure with the seed it prints: MEGA_CRASH_SEED=<seed>.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { openTaskStore, REPORT_HEADER, type TaskRow, type TaskStore } from '../../src/tasks/index.js';
import { MEGA_BIN } from '../helpers/paths.js';
import { runMega, stopChild } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { killHard, runSeed, seededRandom, SimRecord, startDaemon, type DaemonProcess } from '../helpers/crash.js';
import { freePort } from '../helpers/ports.js';

const TOTAL = 10_000;
const TEMPLATE = {
  touser: '${OPENID}',
  template_id: 'tmpl-bulk',
  data: { first: { value: 'Hello ${name}' }, remark: { value: '${shop}' } },
};

interface Run {
  child: ChildProcess;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startRun(args: string[]): Run {
  const child = spawn(process.execPath, [MEGA_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exit = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  return { child, output: () => out, exit };
}

describe('bulk task end to end', () => {
  const seed = runSeed();
  const random = seededRandom(seed);
  let sim: SimulatorHandle;
  let stack: Stack;
  let daemon: DaemonProcess | undefined;
  let store: TaskStore;
  const runs: Run[] = [];

  before(async () => {
    process.stdout.write(`# bulk task e2e seed ${seed} (replay with MEGA_CRASH_SEED=${seed})\n`);
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET, '--latency-ms', '1']);
    const port = await freePort();
    stack = await startStack({
      simulator: sim,
      templates: { bulk: TEMPLATE },
      ini: {
        server: { listen: [`127.0.0.1:${port}`] },
        setting: { task_worker_num: 2, task_concurrency: 64 },
        queue: { fsync: 'none' },
        log: { log_level: 'info' },
      },
    });
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oBAD', errcode: 43004, errmsg: 'require subscribe' }] });
    store = openTaskStore({ dsn: `sqlite:${stack.dbFile}` });
    await store.init();
  });

  after(async () => {
    for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    await store?.close();
    if (daemon) await stopChild(daemon.child);
    else await stack?.stop();
    await sim?.stop();
  });

  const mega = (...args: string[]): string[] => [stack.name, ...args, '--config-dir', stack.configDir];

  async function waitFinished(id: number, atLeast: number, run: Run, timeoutMs = 60_000): Promise<TaskRow> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = (await store.get(id))!;
      if (t.success + t.fail >= atLeast) return t;
      if (run.child.exitCode !== null || run.child.signalCode !== null) {
        assert.fail(`the run ended (${run.child.exitCode ?? run.child.signalCode}) at ${t.success + t.fail} before ${atLeast}:\n${run.output()}`);
      }
      if (Date.now() > deadline) assert.fail(`task ${id} did not reach ${atLeast} (at ${t.success + t.fail}):\n${run.output()}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('create refuses bad files with line numbers and unknown templates; pause from another shell; resume; show/list', { timeout: 60_000 }, async () => {
    const badFile = path.join(stack.dir, 'bad.txt');
    writeFileSync(badFile, 'oP1\noP 2\noP3\n');
    let r = await runMega(mega('task', 'create', '--key', 'bulk', '--to', badFile));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /1 bad line .*\n {2}line 2: openid "oP 2" contains white space/);
    r = await runMega(mega('task', 'create', '--key', 'no_such_template', '--to', badFile, '--skip-invalid'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /there is no template "no_such_template" in mega_wechat_template/);
    r = await runMega(mega('task', 'show', '999'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /there is no task 999/);

    const file = path.join(stack.dir, 'small.jsonl');
    const n = 3000;
    writeFileSync(file, Array.from({ length: n }, (_, i) => JSON.stringify({ openid: `oSMALL${i}`, name: `S${i}` })).join('\n'));
    r = await runMega(mega('task', 'create', '--key', 'bulk', '--to', file, '--json'));
    assert.equal(r.code, 0, r.stderr);
    const id = (JSON.parse(r.stdout) as { id: number }).id;

    const run = startRun(mega('task', 'run', String(id), '--window', '8'));
    runs.push(run);
    await waitFinished(id, 300, run);
    const paused = await runMega(mega('task', 'pause', String(id)));
    assert.equal(paused.code, 0, paused.stderr);
    assert.match(paused.stdout, new RegExp(`task ${id} paused at \\d+/${n}`));
    const exit = await run.exit;
    assert.equal(exit.code, 0, run.output());
    assert.match(run.output(), new RegExp(`task ${id} paused \\(paused by .*\\) at \\d+/${n}`));
    let row = (await store.get(id))!;
    assert.equal(row.status, 'paused');
    assert.ok(row.success > 0 && row.success < n);

    r = await runMega(mega('task', 'run', String(id)));
    assert.equal(r.code, 1, 'run refuses a paused task');
    assert.match(r.stderr, /is paused .*task resume/);
    r = await runMega(mega('task', 'show', String(id), '--json'));
    assert.equal((JSON.parse(r.stdout) as { status: string }).status, 'paused');

    r = await runMega(mega('task', 'resume', String(id), '--quiet'));
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`task ${id} done: ${n} recipients, ${n} sent, 0 failed`));
    row = (await store.get(id))!;
    assert.deepEqual([row.status, row.success, row.fail, row.message], ['done', n, 0, '']);
    r = await runMega(mega('task', 'show', String(id)));
    assert.match(r.stdout, /status: +done/);
    assert.match(r.stdout, new RegExp(`progress: +100\\.0% \\(${n}/${n}\\)`));
    const sends = (await sim.messages()).filter((m) => m.touser?.startsWith('oSMALL') && m.errcode === 0 && !m.duplicate);
    assert.equal(sends.length, n);
    assert.equal(new Set(sends.map((m) => m.touser)).size, n);
  });

  it(`sends ${TOTAL} recipients exactly once across SIGINT, SIGKILL and a daemon restart`, { timeout: 180_000 }, async () => {
    // a clean record (reset also forgets the failure rule: set it again)
    await sim.post('/_sim/reset', {});
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oBAD', errcode: 43004, errmsg: 'require subscribe' }] });
    const started = Date.now();
    const phases: string[] = [];
    const phase = (name: string): void => {
      phases.push(`${name} ${((Date.now() - started) / 1000).toFixed(1)}s`);
    };
    // ------------------------------------------------ recipients: CSV with a variable per user
    const openids: string[] = [];
    const bad = new Set<string>();
    for (let i = 0; i < TOTAL; i++) {
      const failing = random() < 0.05;
      const openid = `${failing ? 'oBAD' : 'oOK'}${i.toString(36).padStart(4, '0')}x${Math.floor(random() * 1e6)}`;
      openids.push(openid);
      if (failing) bad.add(openid);
    }
    const csv = path.join(stack.dir, 'users.csv');
    writeFileSync(csv, 'openid,name\n' + openids.map((o, i) => `${o},"User ${i}, VIP"`).join('\n') + '\n');
    const vars = path.join(stack.dir, 'vars.json');
    writeFileSync(vars, JSON.stringify({ shop: 'Tea House', name: 'nobody' }));

    const created = await runMega(mega('task', 'create', '--key', 'bulk', '--to', csv, '--vars', vars, '--name', 'spring sale'));
    assert.equal(created.code, 0, created.stderr + created.stdout);
    const id = Number(/task (\d+) created: 10000 recipients \(csv\), template bulk/.exec(created.stdout)?.[1]);
    assert.ok(id > 0, created.stdout);
    const task = (await store.get(id))!;
    phase('created');
    assert.equal(task.status, 'pending');
    assert.equal(task.total, TOTAL);

    // ------------------------------------------------ run 1: Ctrl-C
    const run1 = startRun(mega('task', 'run', String(id), '--window', '64'));
    runs.push(run1);
    await waitFinished(id, 1500, run1);
    phase('run 1 at 1500');
    run1.child.kill('SIGINT');
    const exit1 = await run1.exit;
    phase('run 1 exited');
    assert.equal(exit1.code, 130, run1.output());
    assert.match(run1.output(), new RegExp(`task ${id} stopped \\(SIGINT\\) at \\d+/10000`));
    let row = (await store.get(id))!;
    assert.equal(row.status, 'stopped');
    assert.equal(row.owner, '');
    assert.equal(row.message, 'interrupted by SIGINT');
    const afterSigint = row.success + row.fail;
    assert.ok(afterSigint >= 1500 && afterSigint < TOTAL, `finished ${afterSigint}`);
    assert.match(run1.output(), /task \d+: \d+\/10000 \(\d+\.\d%\) ok \d+ fail \d+ \| [\d.]+\/s \| ETA/, 'plain progress lines (stdout is a pipe)');

    // ------------------------------------------------ run 2: kill -9
    const run2 = startRun(mega('task', 'run', String(id)));
    runs.push(run2);
    await waitFinished(id, afterSigint + 2500, run2);
    phase('run 2 at +2500');
    await killHard(run2.child);
    row = (await store.get(id))!;
    assert.equal(row.status, 'running', 'a killed run leaves the task running with a dead owner');
    const afterKill = row.success + row.fail;
    const shown = await runMega(mega('task', 'show', String(id)));
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /status: +interrupted; continue with: .* task run \d+/);

    // ------------------------------------------------ run 3: the daemon restarts under it
    const run3 = startRun(mega('task', 'run', String(id)));
    runs.push(run3);
    await waitFinished(id, afterKill + 2000, run3);
    phase('run 3 at +2000');
    await stopChild(stack.daemon);
    phase('daemon stopped');
    await new Promise((r) => setTimeout(r, 300)); // the runner finds nobody listening for a moment
    daemon = await startDaemon(stack.configDir, stack.name);
    phase('daemon started');
    const exit3 = await run3.exit;
    phase('run 3 exited');
    // MEGA_TASK_DEBUG=1 shows what the third run printed around the restart
    if (process.env.MEGA_TASK_DEBUG) process.stdout.write(run3.output().replace(/^/gm, '# run 3: '));
    assert.equal(exit3.code, 0, run3.output());
    assert.match(run3.output(), /took over from .*, which is gone/);
    assert.match(run3.output(), new RegExp(`task ${id} done: 10000 recipients, ${TOTAL - bad.size} sent, ${bad.size} failed`));

    // ------------------------------------------------ the store
    row = (await store.get(id))!;
    assert.equal(row.status, 'done');
    assert.equal(row.success + row.fail, TOTAL);
    assert.equal(row.fail, bad.size);
    assert.equal(row.success, TOTAL - bad.size);
    assert.equal(row.position, TOTAL);
    assert.deepEqual(row.doneAbove, []);

    // ------------------------------------------------ the report: exactly the refusals, once each
    const lines = readFileSync(row.report, 'utf8');
    assert.ok(lines.startsWith(REPORT_HEADER));
    const reported = lines.slice(REPORT_HEADER.length).split('\n').filter((l) => l !== '');
    assert.equal(reported.length, bad.size);
    const reportedOpenids = new Set(reported.map((l) => l.split(',')[0]!));
    assert.equal(reportedOpenids.size, bad.size, 'no refusal reported twice');
    assert.deepEqual([...reportedOpenids].sort(), [...bad].sort());
    for (const l of reported) assert.match(l, /^oBAD\w+,43004,require subscribe$/);

    // ------------------------------------------------ the simulator's record
    const record = new SimRecord(sim);
    await record.refresh();
    const byOpenid = record.byOpenid();
    const problems: string[] = [];
    let repeats = 0;
    for (const [i, openid] of openids.entries()) {
      const ms = byOpenid.get(openid) ?? [];
      const delivered = ms.filter((m) => m.errcode === 0 && !m.duplicate);
      repeats += Math.max(0, ms.length - 1);
      const cmids = new Set(ms.map((m) => m.client_msg_id));
      if (ms.length === 0) problems.push(`${openid}: never sent`);
      if (cmids.size > 1 || (ms.length > 0 && ms[0]!.client_msg_id !== `t${id}-${task.nonce}-${i}`)) {
        problems.push(`${openid}: client_msg_ids ${[...cmids].join(', ')}`);
      }
      if (bad.has(openid)) {
        if (delivered.length !== 0 || ms.some((m) => m.errcode !== 43004)) problems.push(`${openid}: a refused openid was answered ${ms.map((m) => m.errcode).join(',')}`);
      } else if (delivered.length !== 1) {
        problems.push(`${openid}: delivered ${delivered.length} times`);
      }
      if (problems.length > 20) break;
    }
    const listed = new Set(openids);
    const strangers = [...byOpenid.keys()].filter((o) => !listed.has(o));
    assert.deepEqual(strangers, []);
    assert.deepEqual(problems, []);
    // the variables: CSV column and --vars
    const k = openids.findIndex((o) => !bad.has(o));
    const sample = record.messages.find((m) => m.touser === openids[k] && m.errcode === 0);
    assert.equal(sample?.data?.first?.value, `Hello User ${k}, VIP`);
    assert.equal(sample?.data?.remark?.value, 'Tea House');

    // ------------------------------------------------ any process sees the result
    const list = await runMega(mega('task', 'list'));
    assert.match(list.stdout, new RegExp(`^${id}\\s+done\\s+bulk\\s+100\\.0% \\(10000/10000\\)\\s+${TOTAL - bad.size}\\s+${bad.size}\\s.*spring sale$`, 'm'));
    const again = await runMega(mega('task', 'run', String(id)));
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already done/);
    process.stdout.write(
      `# ${TOTAL} recipients (${bad.size} refused) in ${((Date.now() - started) / 1000).toFixed(1)} s: ` +
        `SIGINT at ${afterSigint}, SIGKILL at ${afterKill}; ${record.messages.length} sends on the record, ${repeats} repeats (dropped or refused again)\n` +
        `# ${phases.join(', ')}\n`,
    );
  });
});
