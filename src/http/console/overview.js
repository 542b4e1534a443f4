// Overview: the daemon's status every 2 s, the last 15 minutes of sends as an SVG chart, the
// failures by errcode, the pause with its Resume button, and the service's members (JetStream).

import { api } from './api.js';
import { h, svg, replace, setText, table, emptyRow, fmtTime, fmtClock, fmtDuration, fmtRate, fmtCount, poll } from './dom.js';
import { notify, notifyError, clearNotice } from './notice.js';

const REFRESH_MS = 2000;
const CHART_SPAN_SECONDS = 15 * 60;

/** What the common errcodes mean, for the breakdown table. */
const ERRCODES = {
  '-1': 'WeChat busy (retried)',
  '-2': 'no such template in the daemon',
  '-3': 'cannot render the template',
  transport: 'WeChat not reachable',
  40001: 'access token invalid',
  40003: 'invalid openid',
  40014: 'access token invalid',
  40037: 'invalid template_id',
  41028: 'invalid form_id',
  42001: 'access token expired',
  43004: 'user did not follow the account',
  43101: 'user refused the message',
  45009: 'daily quota reached',
  47003: 'template argument invalid',
};

export function mountOverview(root, ctx) {
  const stat = (id, caption, unit) => {
    const value = h('span', { className: 'stat-value', id, text: '-' });
    const sub = h('div', { className: 'stat-sub' });
    const card = h('div', { className: 'stat' }, h('div', { className: 'stat-caption', text: caption }), h('div', null, value, unit ? h('span', { className: 'stat-unit', text: unit }) : null), sub);
    return { value, sub, card };
  };

  const depth = stat('stat-depth', 'Queue depth');
  const inflight = stat('stat-inflight', 'Calls in flight');
  const sent = stat('stat-sent', 'Sent');
  const failed = stat('stat-failed', 'Failed');
  const rate = stat('stat-rate', 'Send rate', '/s');
  const tokenAge = stat('stat-token-age', 'Access token age');
  const quota = stat('stat-quota', 'Daily quota left');
  failed.card.classList.add('stat-failed');

  const pauseState = h('span', { id: 'pause-state', text: '-' });
  const resume = h('button', { id: 'resume-button', type: 'button', text: 'Resume', hidden: true });
  const pauseBox = h('div', { id: 'pause-box', className: 'pause-box' }, h('span', { className: 'pause-caption', text: 'Dispatch: ' }), pauseState, resume);

  const chartPlot = h('div', { className: 'chart-plot' });
  const chartYMax = h('span', { className: 'chart-ymax', text: '' });
  const chartXStart = h('span', { id: 'rate-chart-start', text: '' });
  const chartXEnd = h('span', { text: 'now' });
  const chartMessage = h('p', { className: 'muted chart-message', hidden: true });
  const chart = h(
    'div',
    { className: 'card chart-card' },
    h(
      'div',
      { className: 'card-head' },
      h('h2', { text: 'Sends, last 15 minutes' }),
      h('span', { className: 'legend' }, h('span', { className: 'swatch swatch-sent' }), 'sent ', h('span', { className: 'swatch swatch-failed' }), 'failed (per second)'),
    ),
    h('div', { className: 'chart' }, h('div', { className: 'chart-y' }, chartYMax, h('span', { text: '0' })), chartPlot),
    h('div', { className: 'chart-x' }, chartXStart, chartXEnd),
    chartMessage,
  );

  const errcodes = table('errcode-table', ['errcode', 'count', 'meaning']);
  const members = table('members-table', ['', 'member', 'host', 'pid', 'addresses', 'up', 'send rate']);
  const membersCard = h('div', { className: 'card', id: 'members-card', hidden: true }, h('div', { className: 'card-head' }, h('h2', { text: 'Service members' }), h('span', { className: 'muted', id: 'service-rate' })), members.table);
  const details = h('dl', { className: 'details', id: 'status-details' });

  root.append(
    pauseBox,
    h('div', { className: 'stats' }, depth.card, inflight.card, sent.card, failed.card, rate.card, tokenAge.card, quota.card),
    chart,
    h('div', { className: 'columns' }, h('div', { className: 'card' }, h('h2', { text: 'Failures by errcode' }), errcodes.table), h('div', { className: 'card' }, h('h2', { text: 'Daemon' }), details)),
    membersCard,
  );

  let errorNotice = null;
  let stopped = false;

  resume.addEventListener('click', async () => {
    resume.disabled = true;
    try {
      const answer = await api('POST', '/api/v1/resume', {});
      notify(answer && answer.resumed ? 'Dispatch resumed.' : 'Dispatch was not paused.', 'info');
      await refresh();
    } catch (err) {
      notifyError(err, 'resume');
    } finally {
      resume.disabled = false;
    }
  });

  function showStatus(s) {
    ctx.setName(s.name);
    const q = s.queue ?? {};
    setText(depth.value, intText(q.depth));
    setText(depth.sub, `${intText(q.inFlight)} handed out${q.oldestAgeSeconds === null || q.oldestAgeSeconds === undefined ? '' : `, oldest ${fmtDuration(q.oldestAgeSeconds)}`}`);
    setText(inflight.value, intText(s.running));
    setText(inflight.sub, `${intText(s.retriesPending ?? 0)} retries pending`);
    setText(sent.value, intText(s.sent));
    setText(failed.value, intText(s.failed));
    failed.card.classList.toggle('alert', s.failed > 0);
    setText(rate.value, fmtRate(s.sendRate));
    const svc = s.service;
    setText(rate.sub, svc && svc.rateLimit > 0 ? `limit ${svc.rateShare}/s here, ${svc.rateLimit}/s for the service` : '');

    const token = s.token ?? {};
    setText(tokenAge.value, token.ageSeconds === null || token.ageSeconds === undefined ? 'none yet' : fmtDuration(token.ageSeconds));
    tokenAge.value.dataset.seconds = String(token.ageSeconds ?? '');
    replace(tokenAge.sub, `${intText(token.fetches)} fetches`, token.error ? h('div', { className: 'error', id: 'token-error', text: token.error }) : null);
    tokenAge.card.classList.toggle('alert', Boolean(token.error));

    if (s.quota) {
      setText(quota.value, intText(s.quota.remain));
      setText(quota.sub, `of ${fmtCount(s.quota.dailyLimit)} (${fmtCount(s.quota.used)} used)`);
      quota.card.classList.toggle('alert', s.quota.dailyLimit > 0 && s.quota.remain < s.quota.dailyLimit * 0.1);
    } else {
      setText(quota.value, 'unknown');
      setText(quota.sub, 'quota/get does not answer');
      quota.card.classList.remove('alert');
    }

    showPause(s.paused, svc ? svc.pause : null);
    showErrcodes(s.failedByErrcode ?? {});
    showMembers(svc);
    showDetails(s);
  }

  function showPause(paused, servicePause) {
    const p = paused ?? servicePause;
    if (p) {
      const by = servicePause && servicePause.by ? ` by ${servicePause.by}` : '';
      setText(pauseState, `PAUSED (${p.reason}) since ${fmtTime(p.since)}${by}${p.detail ? `: ${p.detail}` : ''}`);
      pauseState.dataset.paused = 'true';
      pauseState.dataset.reason = String(p.reason);
    } else {
      setText(pauseState, 'running');
      pauseState.dataset.paused = 'false';
      delete pauseState.dataset.reason;
    }
    pauseBox.classList.toggle('paused', Boolean(p));
    resume.hidden = !p;
  }

  function showErrcodes(byCode) {
    const rows = Object.entries(byCode).sort((a, b) => b[1] - a[1]);
    if (rows.length === 0) {
      errcodes.tbody.replaceChildren(emptyRow(3, 'no failures'));
      return;
    }
    errcodes.tbody.replaceChildren(
      ...rows.map(([code, n]) =>
        h('tr', { dataset: { errcode: code } }, h('td', { className: 'num', text: code }), h('td', { className: 'num', text: intText(n) }), h('td', { className: 'muted', text: ERRCODES[code] ?? '' })),
      ),
    );
  }

  function showMembers(svc) {
    membersCard.hidden = !svc;
    if (!svc) return;
    setText(root.querySelector('#service-rate'), `${svc.members.length} daemon(s); rate ${svc.rateLimit === 0 ? 'unlimited' : `${svc.rateLimit}/s, ${svc.rateShare}/s here`}`);
    members.tbody.replaceChildren(
      ...svc.members.map((m) =>
        h(
          'tr',
          { className: m.id === svc.self ? 'self' : '', dataset: { memberId: m.id } },
          h('td', { text: m.id === svc.self ? '*' : '', title: m.id === svc.self ? 'this daemon' : undefined }),
          h('td', { className: 'mono', text: m.id }),
          h('td', { text: m.host }),
          h('td', { className: 'num', text: m.pid }),
          h('td', { className: 'mono', text: (m.addresses ?? []).join(', ') }),
          h('td', { text: fmtDuration(m.uptimeSeconds) }),
          h('td', { className: 'num', text: `${fmtRate(m.sendRate)}/s` }),
        ),
      ),
    );
  }

  function showDetails(s) {
    const rows = [
      ['name', s.name],
      ['pid', s.pid],
      ['uptime', fmtDuration(s.uptimeSeconds)],
      ['listen', Array.isArray(s.listen) ? s.listen.map((a) => `${a.host}:${a.port}`).join(', ') : '-'],
      ['HTTP', s.http ?? 'off'],
      ['connections', s.connections],
      ['templates', s.templates],
      ['task workers', s.workers],
      ['queue backend', s.queue && s.queue.backend ? `${s.queue.backend}${s.queue.stream ? ` (stream ${s.queue.stream})` : ''}` : 'file'],
      ['message ledger', s.ledger ? `${s.ledger.backlog} changes to write${s.ledger.error ? `; ERROR: ${s.ledger.error}` : ''}` : 'off'],
    ];
    details.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v ?? '-' })]));
  }

  function showRate(history) {
    const interval = history && history.intervalSeconds > 0 ? history.intervalSeconds : 10;
    const points = history && Array.isArray(history.points) ? history.points : [];
    if (points.length === 0) {
      chartPlot.replaceChildren();
      chartMessage.hidden = false;
      setText(chartMessage, 'no sends in the last 15 minutes');
      setText(chartYMax, '');
      setText(chartXStart, '');
      return;
    }
    const quiet = points.every((p) => !p.sent && !p.failed);
    chartMessage.hidden = !quiet;
    if (quiet) setText(chartMessage, 'no sends in the last 15 minutes');
    // a slot per interval of the 15 minutes, the newest at the right edge, so the scale of the
    // x axis stays put while the daemon's history fills up after a start
    const slots = Math.max(points.length, Math.round(CHART_SPAN_SECONDS / interval));
    const perSecond = (n) => (typeof n === 'number' ? n : 0) / interval;
    const max = niceMax(Math.max(...points.map((p) => perSecond(p.sent) + perSecond(p.failed)), 0.1));
    const W = slots * 10;
    const H = 100;
    const plot = svg('svg', {
      id: 'rate-chart',
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: 'none',
      role: 'img',
      'aria-label': 'sends per second over the last 15 minutes',
    });
    plot.append(
      svg('line', { x1: 0, x2: W, y1: H / 2, y2: H / 2, class: 'grid-line', 'vector-effect': 'non-scaling-stroke' }),
      svg('line', { x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5, class: 'axis-line', 'vector-effect': 'non-scaling-stroke' }),
    );
    const offset = slots - points.length;
    points.forEach((p, i) => {
      const x = (offset + i) * 10 + 1;
      const sentH = (perSecond(p.sent) / max) * H;
      const failedH = (perSecond(p.failed) / max) * H;
      const tip = svg('title', null, `${fmtClock(p.t)}: ${p.sent} sent, ${p.failed} failed (${fmtRate(perSecond(p.sent))}/s)`);
      const g = svg('g', { class: 'bar' }, tip);
      // a transparent full-height rect gives each interval a hover target for its tooltip
      g.append(svg('rect', { x: x - 1, y: 0, width: 10, height: H, class: 'bar-hit' }));
      if (sentH > 0) g.append(svg('rect', { x, y: H - sentH, width: 8, height: sentH, class: 'bar-sent' }));
      if (failedH > 0) g.append(svg('rect', { x, y: H - sentH - failedH, width: 8, height: failedH, class: 'bar-failed' }));
      plot.append(g);
    });
    chartPlot.replaceChildren(plot);
    setText(chartYMax, `${fmtRate(max)}/s`);
    const first = points[points.length - 1].t - (slots - 1) * interval * 1000;
    setText(chartXStart, fmtClock(first));
  }

  async function refresh() {
    const [status, history] = await Promise.allSettled([api('GET', '/api/v1/status'), api('GET', '/api/v1/rate')]);
    if (stopped) return;
    if (status.status === 'fulfilled' && status.value) {
      showStatus(status.value);
      if (errorNotice !== null) clearNotice(errorNotice);
      errorNotice = null;
      root.classList.remove('stale');
    } else if (status.status === 'rejected') {
      errorNotice = notifyError(status.reason, 'status');
      root.classList.add('stale');
    }
    if (history.status === 'fulfilled') {
      showRate(history.value);
    } else if (history.reason && history.reason.status !== 401) {
      chartPlot.replaceChildren();
      chartMessage.hidden = false;
      setText(chartMessage, `cannot load the send history: ${history.reason.message}`);
    }
  }

  const stopPolling = poll(refresh, REFRESH_MS);

  return () => {
    stopped = true;
    stopPolling();
    if (errorNotice !== null) clearNotice(errorNotice);
  };
}

/** Integers as plain digits (a browser test compares them with `status --json`). */
function intText(n) {
  return typeof n === 'number' && Number.isFinite(n) ? String(n) : '-';
}

/** 1, 2, 5 times a power of ten at or above `v`, for a readable top of the y axis. */
function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
