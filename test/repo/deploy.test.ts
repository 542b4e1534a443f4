/**
 * The deployment examples in deploy/ stay in step with the daemon: the dashboard and the alert
 * rules use only metric names the daemon exports (a renamed metric would leave a panel empty and
 * an alert silent, with nothing failing), the rule file has the shape Prometheus needs, and the
 * systemd unit and logrotate snippet keep what the daemon relies on (foreground mode, SIGHUP to
 * reopen the log). Checked on the text: Prometheus, Grafana and systemd are not on CI's machine.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';
import { METRIC_NAMES } from '../../src/metrics/index.js';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const read = (rel: string): string => readFileSync(path.join(DEPLOY, rel), 'utf8');

/** The daemon's own metrics: nothing in deploy/ may use another mega_ name. */
const METRICS: readonly string[] = METRIC_NAMES;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(full) : [full];
  });
}

/** Every mega_ metric name in the text, a histogram's _bucket/_sum/_count series as the histogram. */
export function metricNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const [m] of text.matchAll(/(?<![A-Za-z0-9_])mega_[a-z0-9_]+/g)) names.add(m.replace(/_(?:bucket|sum|count)$/, ''));
  return names;
}

interface Rule {
  line: number;
  fields: Map<string, string>;
}

/**
 * The rules of a Prometheus rule file, each as its `key` and `parent.key` fields (values as
 * written), from the indentation alone: enough for the flat shape of alerts.yml, without a YAML
 * library the project does not otherwise need.
 */
export function parseRules(text: string): Rule[] {
  const rules: Rule[] = [];
  let current: { rule: Rule; indent: number; parents: { indent: number; key: string }[] } | undefined;
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '' || raw.trim().startsWith('#')) return;
    const start = /^(\s*)- alert:\s*(.*)$/.exec(raw);
    if (start) {
      const rule: Rule = { line: i + 1, fields: new Map([['alert', start[2]!.trim()]]) };
      rules.push(rule);
      current = { rule, indent: start[1]!.length + 2, parents: [] };
      return;
    }
    if (!current) return;
    const indent = raw.length - raw.trimStart().length;
    if (indent < current.indent) {
      current = undefined; // the rule ended: a sibling list item or an outer key
      return;
    }
    const kv = /^\s*([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$/.exec(raw);
    if (!kv) return; // a line of a block scalar (a multi-line expr)
    while (current.parents.length > 0 && current.parents.at(-1)!.indent >= indent) current.parents.pop();
    const key = [...current.parents.map((p) => p.key), kv[1]!].join('.');
    if (current.parents.length === 0 && indent !== current.indent) return; // deeper text of a block scalar
    current.rule.fields.set(key, kv[2]!.trim());
    if (kv[2]!.trim() === '') current.parents.push({ indent, key: kv[1]! });
  });
  return rules;
}

/** `Key=value` lines of one [Section] of a systemd unit; a repeated key keeps every value. */
function unitSection(text: string, section: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let inside = false;
  for (const line of text.split('\n')) {
    const header = /^\[(.+)\]\s*$/.exec(line);
    if (header) inside = header[1] === section;
    else if (inside && /^[A-Za-z]+=/.test(line)) {
      const at = line.indexOf('=');
      out.set(line.slice(0, at), [...(out.get(line.slice(0, at)) ?? []), line.slice(at + 1).trim()]);
    }
  }
  return out;
}

describe('deploy/: examples in step with the daemon', () => {
  it('the metric names in deploy/ are the daemon\'s, and the dashboard shows every one of them', () => {
    const unknown: string[] = [];
    for (const file of filesUnder(DEPLOY)) {
      for (const name of metricNames(readFileSync(file, 'utf8'))) {
        if (!METRICS.includes(name)) unknown.push(`${path.relative(REPO_ROOT, file)}: ${name}`);
      }
    }
    assert.deepEqual(unknown, []);
    const shown = metricNames(read('grafana/mega-wechat-dashboard.json'));
    assert.deepEqual(METRICS.filter((m) => !shown.has(m)), []);
  });

  it('the metric check itself: suffixes stripped, other names caught, MEGA_ variables ignored', () => {
    const names = metricNames('rate(mega_push_ack_duration_seconds_bucket[5m]) mega_queue_size MEGA_HTTP_TOKEN omega_x');
    assert.deepEqual([...names], ['mega_push_ack_duration_seconds', 'mega_queue_size']);
  });

  it('the Grafana dashboard is importable JSON: a DS_PROMETHEUS input, an instance variable, a query per panel', () => {
    const dash = JSON.parse(read('grafana/mega-wechat-dashboard.json')) as {
      __inputs: { name: string; pluginId: string }[];
      schemaVersion: number;
      uid: string;
      templating: { list: { name: string }[] };
      panels: { id: number; type: string; title: string; datasource?: { uid: string }; targets?: { expr: string }[] }[];
    };
    assert.deepEqual(dash.__inputs.map((i) => [i.name, i.pluginId]), [['DS_PROMETHEUS', 'prometheus']]);
    assert.ok(dash.schemaVersion >= 36, `schemaVersion ${dash.schemaVersion}`);
    assert.ok(dash.templating.list.some((v) => v.name === 'instance'));
    const ids = dash.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    const queried = dash.panels.filter((p) => p.type !== 'row');
    assert.ok(queried.length >= 14, `${queried.length} panels`);
    for (const p of queried) {
      assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', p.title);
      assert.ok(p.targets && p.targets.length > 0, `${p.title} has a query`);
      for (const t of p.targets) assert.match(t.expr, /instance=~"\$instance"/, `${p.title}: ${t.expr}`);
    }
  });

  it('alerts.yml: no tabs, and every rule has alert, expr, labels.severity and annotations.summary/description', () => {
    const text = read('prometheus/alerts.yml');
    assert.ok(!text.includes('\t'), 'YAML forbids tabs for indentation');
    assert.match(text, /^groups:\n/m);
    const rules = parseRules(text);
    assert.ok(rules.length >= 7, `${rules.length} rules`);
    for (const r of rules) {
      const where = `${r.fields.get('alert')} (line ${r.line})`;
      assert.match(r.fields.get('alert') ?? '', /^[A-Za-z][A-Za-z0-9]+$/, where);
      assert.ok(r.fields.has('expr'), `${where}: expr`);
      assert.match(r.fields.get('labels.severity') ?? '', /^(critical|warning|info)$/, `${where}: labels.severity`);
      assert.ok((r.fields.get('annotations.summary') ?? '') !== '', `${where}: annotations.summary`);
      assert.ok((r.fields.get('annotations.description') ?? '') !== '', `${where}: annotations.description`);
    }
    assert.equal(new Set(rules.map((r) => r.fields.get('alert'))).size, rules.length, 'alert names are unique');
    // what the alerts are for: each of these is watched by some rule
    for (const watched of ['up{', 'mega_queue_depth', 'mega_queue_oldest_age_seconds', 'mega_dispatch_paused', 'mega_messages_failed_total', 'mega_access_token_age_seconds', 'mega_quota_remaining']) {
      assert.ok(text.includes(watched), watched);
    }
  });

  it('the rule parser reads nested keys and multi-line exprs, and sees a missing field', () => {
    const rules = parseRules(
      ['groups:', '  - name: g', '    rules:', '      - alert: A', '        expr: |', '          sum(x)', '          > 1', '        labels:', '          severity: warning',
        '        annotations:', '          summary: "s"', '      - alert: B', '        expr: y', '        annotations:', '          summary: "t"', ''].join('\n'),
    );
    assert.deepEqual(rules.map((r) => Object.fromEntries(r.fields)), [
      { alert: 'A', expr: '|', labels: '', 'labels.severity': 'warning', annotations: '', 'annotations.summary': '"s"' },
      { alert: 'B', expr: 'y', annotations: '', 'annotations.summary': '"t"' },
    ]);
  });

  it('alerts.test.yml tests every alert of alerts.yml, and only those', () => {
    const tests = read('prometheus/alerts.test.yml');
    assert.ok(!tests.includes('\t'));
    const alerts = new Set(parseRules(read('prometheus/alerts.yml')).map((r) => r.fields.get('alert')!));
    const tested = new Set([...tests.matchAll(/^\s*alertname:\s*(\S+)/gm)].map((m) => m[1]!));
    assert.deepEqual([...tested].filter((a) => !alerts.has(a)), []);
    assert.deepEqual([...alerts].filter((a) => !tested.has(a)), []);
  });

  it('the systemd unit runs the daemon in the foreground, restarts it on failure, reloads with SIGHUP, reads secrets from an EnvironmentFile', () => {
    const service = unitSection(read('systemd/mega-wechat@.service'), 'Service');
    const one = (key: string): string => {
      const values = service.get(key) ?? [];
      assert.equal(values.length, 1, `one ${key}= in [Service]`);
      return values[0]!;
    };
    assert.equal(one('Type'), 'simple');
    assert.match(one('ExecStart'), /^(?:\S*\/)?mega %i start --foreground --config-dir \/etc\/mega-wechat$/);
    assert.equal(one('Restart'), 'on-failure');
    assert.equal(one('EnvironmentFile'), '/etc/mega-wechat/%i.env');
    assert.match(one('ExecReload'), /kill -HUP \$MAINPID$/);
    assert.equal(one('KillSignal'), 'SIGTERM');
    // `mega <name> stop` waits [server] shutdown_timeout (default 10) + 15 s: systemd must not SIGKILL sooner
    assert.ok(Number(one('TimeoutStopSec')) >= 25, `TimeoutStopSec=${one('TimeoutStopSec')}`);
    assert.equal(one('NoNewPrivileges'), 'yes');
    assert.equal(one('ProtectSystem'), 'strict');
    // the flags it passes are options the CLI defines
    const cli = filesUnder(path.join(REPO_ROOT, 'src/cli')).map((f) => readFileSync(f, 'utf8')).join('\n');
    for (const flag of ['--foreground', '--config-dir']) assert.ok(cli.includes(`.option('${flag}`), flag);
  });

  it('the env example names every secret the config reads from the environment, with placeholders only', () => {
    const example = read('systemd/mega-wechat.env.example');
    const keys = readFileSync(path.join(REPO_ROOT, 'src/config/keys.ts'), 'utf8');
    const secrets = [...keys.matchAll(/\benv: '(MEGA_[A-Z_]+)'/g)].map((m) => m[1]!);
    assert.ok(secrets.includes('MEGA_APP_SECRET'), 'the key table names its environment variables');
    assert.deepEqual(secrets.filter((s) => !new RegExp(`^#?${s}=`, 'm').test(example)), []);
    for (const [, name, value] of example.matchAll(/^(MEGA_[A-Z_]+)=(.*)$/gm)) {
      assert.match(value!, /^replace-with-/, `${name} holds a placeholder`);
    }
  });

  it('the logrotate snippet rotates the daemon\'s logs daily and sends SIGHUP after', () => {
    const text = read('logrotate/mega-wechat');
    assert.match(text, /^\/var\/log\/mega-wechat\/\*\.log \{$/m);
    for (const directive of ['daily', 'rotate 14', 'compress', 'delaycompress', 'missingok', 'notifempty']) {
      assert.match(text, new RegExp(`^\\s+${directive}$`, 'm'), directive);
    }
    const script = /^\s+postrotate\n([\s\S]*?)^\s+endscript$/m.exec(text);
    assert.ok(script, 'postrotate ... endscript');
    assert.match(script[1]!.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n'), /systemctl kill --signal=HUP 'mega-wechat@\*\.service'|kill -HUP/);
  });
});
