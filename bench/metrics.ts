/**
 * What the HTTP side costs (issue 14 part 2): `npm run bench -- --only metrics`.
 *
 * End to end (10,000 Pushes until the simulator delivered them, as run.ts's e2e), one fresh
 * daemon per run, alternately with `[http] listen` empty (no HTTP side, nothing counted) and on,
 * with /metrics scraped every second meanwhile (a Prometheus at a 1 s interval, 15x the usual
 * rate). Target: with metrics >= 0.97 x without, at each latency, medians of the runs.
 * Latencies: 50 ms (the usual end-to-end figure) and 0 ms (the daemon CPU-bound: the
 * instrumentation weighs most there).
 */
import { freePort, type Simulator } from './lib/procs.js';
import { median } from './lib/stats.js';
import { e2eDaemonRun, type E2eRun, type Settings } from './scenarios.js';

export interface MetricsCase {
  latencyMs: number;
  off: E2eRun[];
  on: E2eRun[];
  /** Scrapes answered during the "on" runs, and the largest /metrics body. */
  scrapes: number;
  maxBytes: number;
}

export interface MetricsResults {
  messages: number;
  runs: number;
  cases: MetricsCase[];
}

/** Scrapes /metrics every second until stopped. */
async function scraper(port: number, counter: { scrapes: number; maxBytes: number }): Promise<() => Promise<void>> {
  const url = `http://127.0.0.1:${port}/metrics`;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const res = await fetch(url);
      const text = await res.text();
      if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${text.slice(0, 200)}`);
      counter.scrapes++;
      counter.maxBytes = Math.max(counter.maxBytes, text.length);
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}

export async function metricsBench(sim: Simulator, s: Settings, o: { runs: number; messages: number; warmup: number; latencies: number[] }): Promise<MetricsResults> {
  const results: MetricsResults = { messages: o.messages, runs: o.runs, cases: [] };
  for (const latencyMs of o.latencies) {
    const c: MetricsCase = { latencyMs, off: [], on: [], scrapes: 0, maxBytes: 0 };
    for (let i = 0; i < o.runs; i++) {
      // alternated, and which goes first alternates too: drift hits both alike
      const order = i % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const mode of order) {
        // a port chosen here rather than asked of the daemon: no CLI process next to the run
        const port = mode === 'on' ? await freePort() : 0;
        const r = await e2eDaemonRun(sim, s, {
          latencyMs,
          messages: o.messages,
          warmup: o.warmup,
          extra: { http: { listen: mode === 'on' ? `127.0.0.1:${port}` : '' } },
          ...(mode === 'on' ? { alongside: () => scraper(port, c) } : {}),
        });
        c[mode].push(r);
        s.log(`metrics: e2e ${latencyMs} ms, HTTP side ${mode}: ${Math.round(r.rate)} msg/s (${r.seconds.toFixed(2)} s)`);
      }
    }
    results.cases.push(c);
  }
  return results;
}

export function renderMetrics(r: MetricsResults): string {
  const int = (n: number): string => Math.round(n).toLocaleString('en-US');
  const L = [
    '## The HTTP side\'s cost (metrics)',
    '',
    `End to end, ${int(r.messages)} Pushes per run until delivered, ${r.runs} runs per mode, alternated: a daemon with \`[http] listen\` empty (no HTTP side: nothing is counted) against one with it on and /metrics scraped every second during the run. Medians.`,
    '',
    '| simulator latency | without HTTP side | with metrics, scraped every 1 s | ratio | target | runs without | runs with | scrapes | /metrics size |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const c of r.cases) {
    const off = median(c.off.map((x) => x.rate));
    const on = median(c.on.map((x) => x.rate));
    const ratio = on / off;
    L.push(
      `| ${c.latencyMs} ms | ${int(off)} msg/s | ${int(on)} msg/s | **${ratio.toFixed(3)}** | ≥ 0.97: ${ratio >= 0.97 ? '**met**' : '**not met**'} | ${c.off.map((x) => int(x.rate)).join(' · ')} | ${c.on.map((x) => int(x.rate)).join(' · ')} | ${c.scrapes} | ${int(c.maxBytes)} bytes |`,
    );
  }
  L.push('');
  return L.join('\n');
}
