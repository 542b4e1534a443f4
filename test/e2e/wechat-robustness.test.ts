/**
 * WeChat API robustness, end to end (issue 4): a real daemon process against the simulator
 * (its own process, shared by every test and reset between them) over real HTTP.
 *
 * - one access token for the whole daemon, refreshed exactly once when it expires mid-stream;
 * - errcode -1, HTTP 5xx and hung calls retried until delivered exactly once;
 * - permanent errcodes tried once and dead-lettered;
 * - 45009 pauses dispatch (jobs kept, one probe per quota_retry_interval), `mega <name> resume`;
 * - `[wechat] rate_limit` is a smooth daemon-wide rate;
 * - a failing token endpoint pauses dispatch without burning jobs, shown by `status --json`.
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { encodePush, encodeSend, type Result } from '../../src/protocol/index.js';
import { runMega, type RunResult } from '../helpers/processes.js';
import type { IniSections } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import type { RawClient } from '../helpers/client.js';
import type { ReceivedMessage, SimulatorStats } from '../../src/simulator/index.js';
import type { DaemonStatus as Status, DeadLetter as Dead } from '../../src/server/control-protocol.js';

const TEMPLATE = { touser: '${OPENID}', template_id: 'tmpl-robust', data: { first: { value: 'n=${n}' } } };
const KEY = 'robust';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('WeChat API robustness (issue 4)', () => {
  let sim: SimulatorHandle;
  let stack: Stack | undefined;

  const stats = (): Promise<SimulatorStats> => sim.get<SimulatorStats>('/_sim/stats');
  const record = async (): Promise<ReceivedMessage[]> => (await sim.get<{ messages: ReceivedMessage[] }>('/_sim/messages')).messages;
  const configure = async (patch: Record<string, unknown>): Promise<void> => {
    const res = await fetch(sim.url + '/_sim/config', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(patch),
    });
    assert.equal(res.status, 200, `simulator refused ${JSON.stringify(patch)}: ${await res.text()}`);
  };

  /**
   * A daemon on the shared simulator. timeout_ms defaults to 15 s here: on a loaded machine a
   * 2 s timeout fires on calls WeChat did answer, and the (correct) retry with the same
   * client_msg_id shows up as a duplicate, which the tests not about timeouts treat as a failure.
   */
  async function start(ini: IniSections = {}): Promise<Stack> {
    const merged: IniSections = { ...ini, wechat: { timeout_ms: 15000, ...ini['wechat'] } };
    stack = await startStack({ simulator: sim, templates: { [KEY]: TEMPLATE }, ini: merged });
    return stack;
  }

  function cli(s: Stack, ...args: string[]): Promise<RunResult> {
    return runMega([s.name, ...args, '--config-dir', s.configDir], { timeoutMs: 20000 });
  }

  async function status(s: Stack): Promise<Status> {
    const r = await cli(s, 'status', '--json');
    assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Status;
  }

  async function statusText(s: Stack): Promise<string> {
    const r = await cli(s, 'status', '--json');
    assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
    return r.stdout;
  }

  async function deadLetters(s: Stack): Promise<Dead[]> {
    const r = await cli(s, 'dlq', 'list', '--json');
    assert.equal(r.code, 0, `dlq list --json failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Dead[];
  }

  /** Pipelines one Push per openid on one connection; asserts every answer is 200. */
  async function pushAll(client: RawClient, openids: string[], firstOpaque = 1): Promise<void> {
    const before = client.results.length;
    client.write(Buffer.concat(openids.map((o, i) => encodePush(firstOpaque + i, o, KEY, { n: i }))));
    const results = await client.waitFor(before + openids.length, 30000);
    const mine = results.slice(before);
    assert.equal(mine.length, openids.length);
    const bad = mine.filter((r) => r.code !== 200);
    assert.equal(bad.length, 0, `non-200 push answers: ${bad.slice(0, 3).map((r) => `${r.code} ${r.message.toString()}`).join('; ')}`);
  }

  const ids = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

  /** Waits until every openid has a delivery (errcode 0) in the simulator's record. */
  async function allDelivered(openids: string[], timeoutMs = 20000): Promise<ReceivedMessage[]> {
    const want = new Set(openids);
    let missing = openids.length;
    try {
      return await eventually(async () => {
        const rec = await record();
        const got = new Set(rec.filter((m) => m.errcode === 0 && m.touser !== undefined && want.has(m.touser)).map((m) => m.touser));
        missing = openids.length - got.size;
        return missing === 0 ? rec : undefined;
      }, timeoutMs, `${openids.length} deliveries`);
    } catch (err) {
      throw new Error(`${(err as Error).message}: ${missing} of ${openids.length} never delivered; sim stats ${JSON.stringify(await stats())}`);
    }
  }

  /**
   * Every openid got exactly one delivery (errcode 0, not a repeat), and every attempt for it
   * carried the same client_msg_id. Unless `allowRepeats`, no send repeated a delivered message
   * at all (the simulator flags a repeat of a delivered client_msg_id as `duplicate`; WeChat
   * drops those, so the user still sees the message once).
   */
  function assertExactlyOnce(rec: ReceivedMessage[], openids: string[], allowRepeats = false): void {
    const okByUser = new Map<string, ReceivedMessage[]>();
    for (const m of rec) {
      if (m.errcode !== 0 || m.duplicate || m.touser === undefined) continue;
      const list = okByUser.get(m.touser) ?? [];
      list.push(m);
      okByUser.set(m.touser, list);
    }
    const twice = openids.filter((o) => (okByUser.get(o)?.length ?? 0) !== 1);
    const show = twice
      .slice(0, 3)
      .map((o) => `${o}: ${JSON.stringify(rec.filter((m) => m.touser === o).map((m) => [m.receivedAt, m.status, m.errcode, m.duplicate, m.client_msg_id]))}`);
    assert.equal(twice.length, 0, `${twice.length} openids not delivered exactly once, e.g.\n${show.join('\n')}`);
    if (!allowRepeats) {
      const repeats = rec.filter((m) => m.duplicate);
      assert.equal(repeats.length, 0, `no send repeats a delivered message, e.g. ${JSON.stringify(repeats.slice(0, 3))}`);
    }
    // every attempt for one openid carries the same client_msg_id
    const cmids = new Map<string, Set<string | undefined>>();
    for (const m of rec) {
      if (m.touser === undefined) continue;
      const set = cmids.get(m.touser) ?? new Set();
      set.add(m.client_msg_id);
      cmids.set(m.touser, set);
    }
    const mixed = openids.filter((o) => (cmids.get(o)?.size ?? 0) > 1);
    assert.deepEqual(mixed.slice(0, 5), [], 'every attempt of a job uses the same client_msg_id');
  }

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });
  beforeEach(async () => {
    if (stack) {
      await stack.stop();
      stack = undefined;
    }
    await sim.post('/_sim/reset', {});
  });

  it('1000 pushes through 8 task workers use exactly one access token', async () => {
    const s = await start({ setting: { task_worker_num: 8, task_concurrency: 16 } });
    const client = await s.connect();
    const openids = ids('oONE', 1000);
    await pushAll(client, openids);
    const rec = await allDelivered(openids);
    assertExactlyOnce(rec, openids);
    const st = await stats();
    assert.equal(st.tokenRequests, 1, 'one token fetch for the whole daemon, not one per worker');
    assert.equal(st.delivered, 1000);
    assert.equal(st.sendRequests, 1000, 'no send was repeated');
    const daemon = await eventually(async () => {
      const d = await status(s);
      return d.sent === 1000 ? d : undefined;
    }, 5000, 'status sent = 1000');
    assert.equal(daemon.failed, 0);
    assert.equal(daemon.token.fetches, 1);
    assert.equal(daemon.token.error, null);
    assert.equal(daemon.paused, null);
    assert.equal(daemon.queue.depth, 0);
    client.close();
  });

  it('a token expiring mid-stream is refreshed exactly once, and nothing is lost', async () => {
    // 8 calls in flight, 20 ms each: 1000 messages take ~2.5 s, so expiry lands mid-stream
    const s = await start({ setting: { task_worker_num: 2, task_concurrency: 4 } });
    await configure({ latencyMs: 20 });
    const client = await s.connect();
    const openids = ids('oEXP', 1000);
    await pushAll(client, openids);
    await eventually(async () => (await stats()).delivered >= 500, 20000, 'half delivered');
    await configure({ expireTokenNow: true });
    const midway = (await stats()).delivered;
    assert.ok(midway < 900, `expiry must land mid-stream (delivered ${midway} already)`);
    const rec = await allDelivered(openids, 30000);
    assertExactlyOnce(rec, openids);
    const st = await stats();
    assert.ok((st.byErrcode['42001'] ?? 0) >= 1, `some sends hit the expired token (byErrcode ${JSON.stringify(st.byErrcode)})`);
    assert.equal(st.tokenRequests, 2, 'one fetch at start, exactly one refresh after the expiry');
    assert.equal(st.delivered, 1000);
    assert.equal(st.duplicates, 0);
    assert.deepEqual(await deadLetters(s), []);
    const d = await status(s);
    assert.equal(d.failed, 0, `failedByErrcode ${JSON.stringify(d.failedByErrcode)}`);
    assert.equal(d.token.fetches, 2);
    client.close();
  });

  it('errcode -1, HTTP 5xx and hung calls are retried until each message is delivered exactly once', async () => {
    const s = await start({
      setting: { task_worker_num: 2, task_concurrency: 8 },
      wechat: { retry_base_ms: 50, retry_max: 6, timeout_ms: 1000 },
    });
    const client = await s.connect();
    const all: string[] = [];

    // phase 1: 30 sends answer errcode -1 (system busy)
    await configure({ errcodeBurst: { errcode: -1, count: 30 } });
    const a = ids('oSYS', 100);
    all.push(...a);
    await pushAll(client, a, 1);
    await allDelivered(a);
    assert.equal((await stats()).byErrcode['-1'], 30, 'the whole -1 burst was consumed');

    // phase 2: 30 sends answer HTTP 502 with an HTML body
    await configure({ http5xxBurst: { status: 502, count: 30 } });
    const b = ids('o5XX', 100);
    all.push(...b);
    await pushAll(client, b, 1001);
    await allDelivered(b);
    assert.equal((await stats()).http5xx, 30, 'the whole 502 burst was consumed');

    // phase 3: 6 sends never answered; timeout_ms = 1000 gives up on them and retries
    await configure({ hangBurst: { count: 6 } });
    const c = ids('oHANG', 60);
    all.push(...c);
    const t0 = Date.now();
    await pushAll(client, c, 2001);
    await allDelivered(c);
    const hangPhaseMs = Date.now() - t0;
    assert.equal((await stats()).hung, 6, 'the whole hang burst was consumed');
    assert.ok(hangPhaseMs >= 950, `hung calls are only given up after timeout_ms (took ${hangPhaseMs} ms)`);

    // A call the simulator answered only after timeout_ms (a loaded machine) is retried with the
    // same client_msg_id and flagged as a repeat: allowed, as WeChat drops it; counted below.
    const rec = await record();
    assertExactlyOnce(rec, all, true);
    const st = await stats();
    assert.equal(st.delivered, all.length);
    assert.ok(st.duplicates <= 10, `a few repeats at most (after slow answers), saw ${st.duplicates}`);
    assert.equal(st.sendRequests, all.length + 30 + 30 + 6 + st.duplicates, 'each failed attempt retried once more, nothing else sent');
    await sleep(300);
    assert.deepEqual(await deadLetters(s), [], 'no transient failure ends in the dead-letter log');
    const d = await status(s);
    assert.equal(d.sent, all.length);
    assert.equal(d.failed, 0);
    assert.equal(d.retriesPending, 0);
    client.close();
  });

  it('transient failures beyond retry_max end in the dead-letter log', async () => {
    // retry_max = 2: three attempts, all answered -1 → a permanent failure
    const s = await start({ setting: { task_worker_num: 1, task_concurrency: 1 }, wechat: { retry_base_ms: 20, retry_max: 2 } });
    await configure({ errcodeBurst: { errcode: -1, count: 3 } });
    const client = await s.connect();
    await pushAll(client, ['oGIVEUP']);
    const dead = await eventually(async () => {
      const d = await deadLetters(s);
      return d.length > 0 ? d : undefined;
    }, 10000, 'a dead letter');
    await sleep(300);
    assert.equal((await record()).filter((m) => m.touser === 'oGIVEUP').length, 3, '1 attempt + retry_max retries, then no more');
    assert.equal(dead.length, 1);
    assert.equal(dead[0]!.openid, 'oGIVEUP');
    assert.equal(dead[0]!.errcode, -1);
    assert.equal(dead[0]!.attempts, 3, 'attempts counts the sends WeChat saw (1 + retry_max)');
    const d = await status(s);
    assert.equal(d.failed, 1);
    assert.equal(d.failedByErrcode['-1'], 1);
    client.close();
  });

  it('permanent errcodes are not retried: each such openid is tried once and dead-lettered', async () => {
    const s = await start({ setting: { task_worker_num: 2, task_concurrency: 8 } });
    await configure({ failOpenids: [{ pattern: '^oPERM', errcode: 43004, errmsg: 'require subscribe' }] });
    const client = await s.connect();
    const good = ids('oGOOD', 50);
    const perm = ids('oPERM', 10);
    const mixed: string[] = [];
    for (let i = 0; i < 50; i++) {
      mixed.push(good[i]!);
      if (i % 5 === 0) mixed.push(perm[i / 5]!);
    }
    await pushAll(client, mixed);
    await allDelivered(good);
    const dead = await eventually(async () => {
      const d = await deadLetters(s);
      return d.length >= perm.length ? d : undefined;
    }, 10000, `${perm.length} dead letters`);
    await sleep(500); // a wrongly scheduled retry (retry_base_ms = 50) would show up by now
    const rec = await record();
    for (const o of perm) {
      assert.equal(rec.filter((m) => m.touser === o).length, 1, `${o} sent exactly once`);
    }
    assert.deepEqual(dead.map((e) => e.openid).sort(), [...perm].sort());
    assert.ok(dead.every((e) => e.errcode === 43004 && e.attempts === 1 && e.key === KEY), JSON.stringify(dead[0]));
    assertExactlyOnce(rec, good);
    const d = await status(s);
    assert.equal(d.sent, good.length);
    assert.equal(d.failed, perm.length);
    assert.equal(d.failedByErrcode['43004'], perm.length);
    client.close();
  });

  it('45009 stops dispatch at once, keeps every job, probes once per quota_retry_interval; resume delivers the rest', async () => {
    const s = await start({ setting: { task_worker_num: 2, task_concurrency: 8 }, wechat: { quota_retry_interval: 1 } });
    await configure({ quotaAfter: 100 });
    const client = await s.connect();
    const openids = ids('oQUOTA', 400);
    await pushAll(client, openids);
    await eventually(async () => ((await stats()).byErrcode['45009'] ?? 0) > 0, 10000, 'the first 45009');
    await sleep(500); // calls already in flight when the first 45009 came back
    const settled = await stats();
    await sleep(4000);
    const later = await stats();
    const probes = later.sendRequests - settled.sendRequests;
    assert.ok(probes <= 6, `at most ~one probe per second while paused, saw ${probes} sends in 4 s`);
    assert.ok(probes >= 2, `dispatch probes every quota_retry_interval (1 s), saw ${probes} sends in 4 s`);
    assert.equal(later.delivered, 100);
    assert.equal(later.sendRequests - later.delivered, later.byErrcode['45009'], 'every other send was a 45009');
    assert.ok(later.byErrcode['45009']! <= 16 + 8, `dispatch stopped at once: ${later.byErrcode['45009']} sends answered 45009`);

    const paused = await status(s);
    assert.equal(paused.paused?.reason, 'quota', `status paused: ${JSON.stringify(paused.paused)}`);
    assert.ok(!Number.isNaN(Date.parse(paused.paused!.since)), `paused.since is an ISO time: ${paused.paused!.since}`);
    assert.equal(typeof paused.paused!.detail, 'string');
    assert.equal(paused.failed, 0, 'no job failed for the quota');
    assert.equal(paused.sent, 100);
    assert.equal(paused.queue.depth, 300, 'every undelivered job is still queued');
    // the simulator's quota/get: its daily_limit (100000, quotaAfter is a separate fault) and the 100 sent
    assert.deepEqual(paused.quota, { dailyLimit: 100000, used: 100, remain: 99900 });
    assert.deepEqual(await deadLetters(s), [], 'nothing dead-lettered for the quota');

    // Push is still accepted while paused
    const extra = ids('oQUOTAX', 5);
    await pushAll(client, extra, 1001);

    // lift the quota and resume
    await configure({ quotaAfter: null });
    const resumed = await cli(s, 'resume');
    assert.equal(resumed.code, 0, `resume: ${resumed.stdout}${resumed.stderr}`);
    const rec = await allDelivered([...openids, ...extra]);
    assertExactlyOnce(rec, [...openids, ...extra]);
    const d = await eventually(async () => {
      const x = await status(s);
      return x.sent === 405 ? x : undefined;
    }, 5000, 'status sent = 405');
    assert.equal(d.paused, null);
    assert.equal(d.failed, 0);
    assert.deepEqual(await deadLetters(s), []);
    client.close();
  });

  it('while quota-paused a Send is answered only once it is really delivered; resume ends the pause at once', async () => {
    // quota_retry_interval = 60: within this test only `resume` can end the pause
    const s = await start({ setting: { task_worker_num: 1, task_concurrency: 4 }, wechat: { quota_retry_interval: 60 } });
    await configure({ quotaAfter: 10 });
    const client = await s.connect();
    const openids = ids('oHOLD', 30);
    await pushAll(client, openids);
    await eventually(async () => (await status(s)).paused?.reason === 'quota', 10000, 'a quota pause');

    const sent = client.request(encodeSend(500, 'oSENDPAUSED', KEY, { n: 'send' }), 500, 20000);
    let answer: Result | undefined;
    void sent.then((r) => (answer = r), () => undefined);
    await configure({ quotaAfter: null }); // quota available again, but nobody asked to resume
    const beforeWait = await stats();
    await sleep(1200);
    assert.equal(answer, undefined, `no answer to a Send while paused (got ${answer?.code} ${answer?.message.toString()})`);
    assert.equal((await stats()).sendRequests, beforeWait.sendRequests, 'nothing sent while paused (next probe only in 60 s)');

    const t0 = Date.now();
    const resumed = await cli(s, 'resume');
    assert.equal(resumed.code, 0, `resume: ${resumed.stdout}${resumed.stderr}`);
    const r = await sent;
    assert.equal(r.code, 200, r.message.toString());
    assert.equal((JSON.parse(r.message.toString()) as { errcode: number }).errcode, 0);
    const rec = await allDelivered([...openids, 'oSENDPAUSED'], 10000);
    assert.ok(Date.now() - t0 < 10000, 'resume took effect at once, not at the next probe');
    assertExactlyOnce(rec, [...openids, 'oSENDPAUSED']);
    assert.equal((await status(s)).paused, null);
    assert.deepEqual(await deadLetters(s), []);
    client.close();
  });

  it('rate_limit = 50 holds the whole daemon to a smooth 50 messages per second', async () => {
    const s = await start({ setting: { task_worker_num: 4, task_concurrency: 8 }, wechat: { rate_limit: 50 } });
    const client = await s.connect();
    await pushAll(client, ids('oRATE', 800));
    const first = await eventually(async () => (await record())[0], 10000, 'a first send');
    const t0 = first.receivedAt;
    // sendRate averages the last full seconds (up to 9 of them): ask once they are all busy ones
    await sleep(Math.max(0, t0 + 10100 - Date.now()));
    const mid = await status(s);
    await sleep(Math.max(0, t0 + 11300 - Date.now()));
    const rec = await record();
    await s.stop(); // the remaining jobs stay queued; no need to wait for them
    stack = undefined;

    const from = t0 + 1000;
    const to = t0 + 11000;
    const times = rec.map((m) => m.receivedAt).filter((t) => t >= from && t < to).sort((x, y) => x - y);
    const rate = times.length / 10;
    assert.ok(rate >= 45 && rate <= 55, `rate over 10 s within 10% of 50/s, got ${rate}/s`);
    // smooth, not bursty: no 1 s bucket above 60 or far below 50, and no 200 ms window holds more than 3x its
    // share of 10. A limiter that lets each second's 50 go at once puts ~50 in one window; 30
    // leaves room for arrivals bunched by a busy machine (worker threads or the simulator stalled).
    const buckets = Array.from({ length: 10 }, (_, i) => times.filter((t) => t >= from + i * 1000 && t < from + (i + 1) * 1000).length);
    assert.ok(Math.max(...buckets) <= 60, `no 1 s bucket above 1.2 x 50: ${buckets.join(',')}`);
    assert.ok(Math.min(...buckets) >= 30, `no stop-and-go (a 1 s bucket far below 50): ${buckets.join(',')}`);
    let maxWindow = 0;
    for (let i = 0, j = 0; i < times.length; i++) {
      while (times[i]! - times[j]! >= 200) j++;
      maxWindow = Math.max(maxWindow, i - j + 1);
    }
    assert.ok(maxWindow <= 30, `at most 30 sends in any 200 ms window (smooth), saw ${maxWindow}; 1 s buckets ${buckets.join(',')}`);
    assert.ok(mid.sendRate >= 35 && mid.sendRate <= 65, `status sendRate ≈ 50, got ${mid.sendRate}`);
    client.close();
  });

  it('a failing token endpoint pauses dispatch without burning jobs, and status shows why', async () => {
    await configure({ tokenErrcode: 40164 });
    const s = await start({ setting: { task_worker_num: 2, task_concurrency: 4 } });
    const client = await s.connect();
    const openids = ids('oTOKEN', 20);
    await pushAll(client, openids);

    const failing = await eventually(async () => {
      const text = await statusText(s);
      const st = JSON.parse(text) as Status;
      return st.token.error !== null && st.paused !== null ? { st, text } : undefined;
    }, 10000, 'status showing the token error');
    assert.match(failing.st.token.error!, /40164/);
    assert.equal(failing.st.paused!.reason, 'token');
    assert.ok(!failing.text.includes(APP_SECRET), 'status never shows the app secret');
    assert.equal(failing.st.failed, 0);
    assert.equal(failing.st.quota, null, 'no quota without a token');
    // The first retry comes after the 1 s backoff window, which may not have passed yet when
    // status first shows the error: wait for it rather than racing it.
    const st = await eventually(async () => {
      const now = await stats();
      return now.tokenRequests >= 2 ? now : undefined;
    }, 10000, 'the token endpoint to be tried again while it fails');
    const [dead, queued] = await Promise.all([deadLetters(s), status(s)]);
    assert.equal(st.sendRequests, 0, 'nothing is sent without a token');
    assert.equal(st.delivered, 0);
    assert.deepEqual(dead, [], 'no job burned while the token endpoint fails');
    assert.equal(queued.queue.depth, 20);
    assert.equal(queued.paused?.reason, 'token');

    await configure({ tokenErrcode: null });
    const rec = await allDelivered(openids, 15000);
    assertExactlyOnce(rec, openids);
    const d = await eventually(async () => {
      const x = await status(s);
      return x.sent === 20 ? x : undefined;
    }, 5000, 'status sent = 20');
    assert.equal(d.token.error, null);
    assert.equal(d.paused, null);
    assert.equal(d.failed, 0);
    assert.deepEqual(await deadLetters(s), []);
    const logFile = path.join(s.dir, 'logs', 'mega.log');
    assert.ok(existsSync(logFile), 'the daemon writes its log');
    assert.ok(!readFileSync(logFile, 'utf8').includes(APP_SECRET), 'the log never shows the app secret');
    assert.ok(!s.output().includes(APP_SECRET), 'daemon output never shows the app secret');
    client.close();
  });
});
