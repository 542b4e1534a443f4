/**
 * The import rules of docs/ARCHITECTURE.md, checked on the source: every folder of src/ has a
 * layer, an import may only point to a lower layer or within its own folder, the daemon never
 * reaches the simulator, and no two files import each other in a circle.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../protocol/helpers.js';

/** Lowest first. A folder (or top-level file) of src/ may import only from layers below its own, and from itself. */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'backoff.ts', 'secret-compare.ts', 'log'],
  ['config', 'protocol', 'db', 'queue', 'wechat', 'metrics'],
  ['templates', 'jobs', 'client', 'simulator', 'ledger', 'webhook', 'cluster'],
  ['workers', 'tasks', 'callback'],
  ['dispatch', 'http'],
  ['server'],
  ['cli'],
  ['index.ts'],
];

/** Folders the daemon process loads: none of them may import the simulator, a test tool. */
const DAEMON = ['errors.ts', 'backoff.ts', 'secret-compare.ts', 'metrics', 'http', 'tasks', 'client', 'log', 'config', 'protocol', 'db', 'queue', 'wechat', 'templates', 'jobs', 'ledger', 'webhook', 'cluster', 'callback', 'workers', 'dispatch', 'server'];

export interface ImportEdge {
  from: string;
  to: string;
}

/** Relative imports and re-exports of every .ts file under `dir`, as paths relative to `dir`. */
export function importsOf(dir: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const walk = (sub: string): void => {
    for (const entry of readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = path.posix.join(sub, entry.name);
      if (entry.isDirectory()) walk(rel);
      else if (entry.name.endsWith('.ts')) {
        const text = readFileSync(path.join(dir, rel), 'utf8');
        for (const m of text.matchAll(/^\s*(?:import|export)\b[^'";]*?\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]|^\s*import\s+['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/gm)) {
          const spec = (m[1] ?? m[2] ?? m[3])!.replace(/\.js$/, '.ts');
          edges.push({ from: rel, to: path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)) });
        }
      }
    }
  };
  walk('');
  return edges;
}

const unitOf = (file: string): string => file.split('/')[0]!;

export function layerViolations(edges: readonly ImportEdge[], layers = LAYERS): string[] {
  const rank = new Map<string, number>();
  layers.forEach((units, i) => units.forEach((u) => rank.set(u, i)));
  const problems: string[] = [];
  for (const { from, to } of edges) {
    const a = unitOf(from);
    const b = unitOf(to);
    if (a === b) continue;
    const ra = rank.get(a);
    const rb = rank.get(b);
    if (ra === undefined) problems.push(`${from}: src/${a} has no layer in docs/ARCHITECTURE.md`);
    else if (rb === undefined) problems.push(`${from} imports ${to}: src/${b} has no layer in docs/ARCHITECTURE.md`);
    else if (rb >= ra) problems.push(`${from} imports ${to}: ${a} may not import ${b} (same or higher layer)`);
    if (b === 'simulator' && DAEMON.includes(a)) problems.push(`${from} imports ${to}: the daemon never loads the simulator`);
  }
  return [...new Set(problems)];
}

/** Every circle of imports between files, each as the list of its files. */
export function importCycles(edges: readonly ImportEdge[]): string[][] {
  const next = new Map<string, string[]>();
  for (const { from, to } of edges) next.set(from, [...(next.get(from) ?? []), to]);
  const cycles: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string): void => {
    state.set(file, 'open');
    stack.push(file);
    for (const to of next.get(file) ?? []) {
      if (state.get(to) === 'open') cycles.push(stack.slice(stack.indexOf(to)));
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of [...next.keys()].sort()) if (!state.has(file)) visit(file);
  return cycles;
}

describe('import rules (docs/ARCHITECTURE.md)', () => {
  const edges = importsOf(path.join(repoRoot(), 'src'));

  it('reads the imports of src/', () => {
    assert.ok(edges.length > 50, `found ${edges.length} imports`);
    assert.ok(edges.some((e) => e.from === 'server/daemon.ts' && e.to === 'queue/index.ts'));
  });

  it('every import points down the layers, and the daemon never loads the simulator', () => {
    assert.deepEqual(layerViolations(edges), []);
  });

  it('no file imports itself through a circle', () => {
    assert.deepEqual(importCycles(edges).map((c) => c.join(' -> ')), []);
  });

  it('the checks catch a wrong-way import, a simulator import and a circle', () => {
    const bad: ImportEdge[] = [
      { from: 'queue/a.ts', to: 'server/daemon.ts' },
      { from: 'server/daemon.ts', to: 'simulator/simulator.ts' },
      { from: 'cli/a.ts', to: 'cli/b.ts' },
      { from: 'cli/b.ts', to: 'cli/a.ts' },
      { from: 'nowhere/x.ts', to: 'errors.ts' },
    ];
    assert.deepEqual(layerViolations(bad), [
      'queue/a.ts imports server/daemon.ts: queue may not import server (same or higher layer)',
      'server/daemon.ts imports simulator/simulator.ts: the daemon never loads the simulator',
      'nowhere/x.ts: src/nowhere has no layer in docs/ARCHITECTURE.md',
    ]);
    assert.deepEqual(importCycles(bad), [['cli/a.ts', 'cli/b.ts']]);
  });
});
