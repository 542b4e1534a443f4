// Dead letters: the jobs that failed for good, narrowed by openid, key or errcode, and queued
// again one by one or all at once.

import { api, query } from './api.js';
import { h, field, table, emptyRow, fmtTime } from './dom.js';
import { notifyError } from './notice.js';

export function mountDeadLetters(root, ctx, params) {
  let stopped = false;
  let shown = [];

  const openidInput = h('input', { id: 'dlq-openid', type: 'text', spellcheck: false, autocomplete: 'off', value: params.get('openid') ?? '' });
  const keyInput = h('input', { id: 'dlq-key', type: 'text', spellcheck: false, autocomplete: 'off', value: params.get('key') ?? '' });
  const errcodeInput = h('input', { id: 'dlq-errcode', type: 'text', spellcheck: false, autocomplete: 'off', value: params.get('errcode') ?? '' });
  const apply = h('button', { id: 'dlq-apply', type: 'submit', text: 'Filter' });
  const clear = h('button', { id: 'dlq-clear', type: 'button', className: 'secondary', text: 'Clear' });
  const retryAll = h('button', { id: 'dlq-retry-all', type: 'button', className: 'danger', text: 'Retry all' });
  const resultLine = h('div', { id: 'dlq-result', attrs: { 'aria-live': 'polite' } });
  const count = h('span', { id: 'dlq-count', className: 'muted' });
  const filters = h(
    'form',
    { id: 'dlq-filter', className: 'form-row filters' },
    field('openid', openidInput),
    field('template key', keyInput),
    field('errcode', errcodeInput),
    h('div', { className: 'button-row' }, apply, clear),
  );
  const list = table('dlq-table', ['id', 'time', 'openid', 'key', 'client msgid', 'errcode', 'errmsg', 'attempts', '']);
  list.tbody.append(emptyRow(9, 'loading…'));

  root.append(
    h('div', { className: 'card' }, h('div', { className: 'card-head' }, h('h2', { text: 'Dead letters' }), count, h('span', { className: 'actions' }, retryAll)), filters, resultLine, h('div', { className: 'scroll' }, list.table)),
  );

  function filterValues() {
    return { openid: openidInput.value.trim(), key: keyInput.value.trim(), errcode: errcodeInput.value.trim() };
  }

  async function load() {
    const f = filterValues();
    try {
      const letters = await api('GET', `/api/v1/dead-letters${query(f)}`);
      if (stopped) return;
      shown = Array.isArray(letters) ? letters : [];
      render(f);
    } catch (err) {
      if (stopped) return;
      list.tbody.replaceChildren(emptyRow(9, `cannot load: ${err.message}`));
      notifyError(err, 'dead letters');
    }
  }

  function render(f) {
    const filtered = Boolean(f.openid || f.key || f.errcode);
    count.textContent = `${shown.length} ${filtered ? 'matching' : 'in the log'}`;
    if (shown.length === 0) {
      list.tbody.replaceChildren(emptyRow(9, filtered ? 'none match' : 'no dead letters'));
      return;
    }
    list.tbody.replaceChildren(
      ...shown.map((d) => {
        const retry = h('button', { type: 'button', className: 'dlq-retry small', text: 'Retry' });
        retry.addEventListener('click', () => void retryIds([d.id], retry));
        const msgLink = d.clientMsgId
          ? h('a', { href: `#/messages?q=${encodeURIComponent(d.clientMsgId)}`, className: 'mono', text: d.clientMsgId, title: 'its record in the message ledger' })
          : '-';
        return h(
          'tr',
          { dataset: { dlqId: d.id } },
          h('td', { className: 'num', text: d.id }),
          h('td', { className: 'nowrap', text: fmtTime(d.time) }),
          h('td', { className: 'mono', text: d.openid }),
          h('td', { className: 'mono', text: d.key }),
          h('td', null, msgLink),
          h('td', { className: 'num', text: d.errcode }),
          h('td', { className: 'errmsg', text: d.errmsg }),
          h('td', { className: 'num', text: d.attempts }),
          h('td', null, retry),
        );
      }),
    );
  }

  async function retry(selector, button) {
    if (button) button.disabled = true;
    resultLine.className = '';
    resultLine.textContent = 'queueing…';
    try {
      const answer = await api('POST', '/api/v1/dead-letters/retry', selector);
      if (stopped) return;
      const retried = Array.isArray(answer.retried) ? answer.retried.length : 0;
      const missing = Array.isArray(answer.missing) ? answer.missing : [];
      resultLine.textContent = `${retried} queued again${missing.length ? `; not in the log (retried already?): ${missing.join(', ')}` : ''}`;
      resultLine.className = missing.length ? 'warn' : 'ok';
      await load();
    } catch (err) {
      if (stopped) return;
      resultLine.textContent = `not queued: ${err.message}`;
      resultLine.className = 'error';
      notifyError(err, 'retry');
    } finally {
      if (button) button.disabled = false;
    }
  }

  function retryIds(ids, button) {
    return retry({ ids }, button);
  }

  retryAll.addEventListener('click', () => {
    const f = filterValues();
    const filtered = Boolean(f.openid || f.key || f.errcode);
    // {"all": true} takes the whole log, whatever the filter shows
    const text = filtered
      ? 'Queue ALL dead letters again? This takes every entry in the log, not only the ones the filter shows.'
      : `Queue all ${shown.length} dead letters again?`;
    if (!window.confirm(text)) return;
    void retry({ all: true }, retryAll);
  });
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    const f = filterValues();
    history.replaceState(null, '', `#/dead-letters${query(f)}`);
    void load();
  });
  clear.addEventListener('click', () => {
    openidInput.value = '';
    keyInput.value = '';
    errcodeInput.value = '';
    history.replaceState(null, '', '#/dead-letters');
    void load();
  });

  void load();
  return () => {
    stopped = true;
  };
}
