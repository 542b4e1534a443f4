// Messages: the ledger's record of one msgid, or of an openid's latest messages, each with its
// state timeline and WeChat's receipt.

import { api, seg, query } from './api.js';
import { h, table, fmtTime } from './dom.js';
import { notifyError } from './notice.js';

/** The protocol's msgid; anything else can only be an openid. */
const MSGID = /^[A-Za-z0-9_-]{1,64}$/;
const FINAL = new Set(['delivered', 'failed_user_block', 'failed_system', 'rejected', 'dead']);
const LIMIT = 100;

export function mountMessages(root, ctx, params) {
  let stopped = false;
  let generation = 0;

  const input = h('input', { id: 'msg-search', type: 'search', spellcheck: false, autocomplete: 'off', placeholder: 'msgid or openid', value: params.get('q') ?? '' });
  const button = h('button', { id: 'msg-button', type: 'submit', text: 'Search' });
  const form = h('form', { id: 'msg-form', className: 'search-row' }, input, button);
  const results = h('div', { id: 'msg-results', attrs: { 'aria-live': 'polite' } });

  root.append(
    h(
      'div',
      { className: 'card' },
      h('h2', { text: 'Messages' }),
      h('p', { className: 'muted', text: `A msgid shows that message; an openid shows its latest ${LIMIT} messages, newest first.` }),
      form,
      results,
    ),
  );

  async function search(q) {
    const mine = ++generation;
    results.replaceChildren(h('p', { className: 'muted', text: 'searching…' }));
    button.disabled = true;
    try {
      let records = [];
      let kind = 'openid';
      if (MSGID.test(q)) {
        try {
          records = [await api('GET', `/api/v1/messages/${seg(q)}`)];
          kind = 'msgid';
        } catch (err) {
          // an openid may look like a msgid: ask for it as one before saying "not found"
          if (err.status !== 404) throw err;
        }
      }
      if (records.length === 0) records = await api('GET', `/api/v1/messages${query({ openid: q, limit: LIMIT })}`);
      if (stopped || mine !== generation) return;
      show(Array.isArray(records) ? records : [], q, kind);
    } catch (err) {
      if (stopped || mine !== generation) return;
      results.replaceChildren(h('p', { className: 'error', text: err.message }));
      notifyError(err, 'messages');
    } finally {
      if (mine === generation) button.disabled = false;
    }
  }

  function show(records, q, kind) {
    if (records.length === 0) {
      results.replaceChildren(h('p', { className: 'not-found', id: 'msg-not-found', text: 'not found' }));
      return;
    }
    const summary = kind === 'msgid' ? 'message' : `${records.length}${records.length === LIMIT ? '+' : ''} message(s) for openid ${q}`;
    const t = table('msg-table', ['msgid', 'openid', 'key', 'kind', 'state', 'attempts', 'timeline', 'receipt']);
    t.tbody.append(...records.map(recordRow));
    results.replaceChildren(h('p', { className: 'muted', text: summary }), h('div', { className: 'scroll' }, t.table));
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (q === '') {
      results.replaceChildren(h('p', { className: 'muted', text: 'Enter a msgid or an openid.' }));
      return;
    }
    history.replaceState(null, '', `#/messages?q=${encodeURIComponent(q)}`);
    void search(q);
  });

  const initial = input.value.trim();
  if (initial !== '') void search(initial);
  else input.focus();

  return () => {
    stopped = true;
  };
}

function recordRow(r) {
  const steps = [h('li', null, h('span', { className: 'step', text: 'queued' }), ' ', fmtTime(r.queuedAt))];
  if (r.sentAt !== null && r.sentAt !== undefined) steps.push(h('li', null, h('span', { className: 'step', text: 'sent' }), ' ', fmtTime(r.sentAt)));
  if (FINAL.has(r.state)) {
    steps.push(h('li', { className: `final state-${r.state}` }, h('span', { className: 'step', text: r.state }), ' ', fmtTime(r.finalAt)));
  }
  const receipt = [];
  if (r.wechatMsgid) receipt.push(h('div', null, 'WeChat msgid ', h('span', { className: 'mono', text: r.wechatMsgid })));
  if (r.errcode !== null && r.errcode !== undefined) {
    receipt.push(h('div', { className: r.errcode === 0 ? '' : 'error' }, `errcode ${r.errcode}${r.errmsg ? `: ${r.errmsg}` : ''}`));
  } else if (r.errmsg) {
    receipt.push(h('div', { className: 'error', text: r.errmsg }));
  }
  return h(
    'tr',
    { dataset: { msgid: r.msgid, state: r.state } },
    h('td', { className: 'mono', text: r.msgid }),
    h('td', { className: 'mono', text: r.openid }),
    h('td', { className: 'mono', text: r.key }),
    h('td', { text: r.kind }),
    h('td', null, h('span', { className: `badge state-${r.state}`, text: r.state })),
    h('td', { className: 'num', text: r.attempts }),
    h('td', null, h('ol', { className: 'timeline' }, steps)),
    h('td', { className: 'receipt' }, receipt.length ? receipt : '-'),
  );
}
