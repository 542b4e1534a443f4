// The notice area (#notice): the API's error messages and short confirmations, as text.

import { h } from './dom.js';

let area = null;
let textEl = null;
let hideTimer = null;
let current = 0;

export function initNotice(el) {
  area = el;
  textEl = h('span', { className: 'notice-text' });
  const close = h('button', {
    type: 'button',
    id: 'notice-close',
    className: 'link',
    text: '×',
    title: 'Dismiss',
    attrs: { 'aria-label': 'Dismiss' },
    on: { click: () => clearNotice() },
  });
  area.replaceChildren(textEl, close);
  area.hidden = true;
}

/**
 * Shows `message` ('error' stays until dismissed or replaced; 'info' fades after 5 s).
 * Returns a handle for clearNotice(handle), which clears only that notice.
 */
export function notify(message, kind = 'error') {
  if (!area) return 0;
  current += 1;
  if (hideTimer !== null) clearTimeout(hideTimer);
  hideTimer = null;
  textEl.textContent = String(message);
  area.className = `notice notice-${kind}`;
  area.dataset.kind = kind;
  area.hidden = false;
  if (kind !== 'error') {
    const mine = current;
    hideTimer = setTimeout(() => clearNotice(mine), 5000);
  }
  return current;
}

/** Shows an error thrown by api() (or anything else). */
export function notifyError(err, prefix) {
  // a 401 has already put the login form up, which says why
  if (err && err.status === 401) return 0;
  const message = err instanceof Error ? err.message : String(err);
  return notify(prefix ? `${prefix}: ${message}` : message, 'error');
}

export function clearNotice(handle) {
  if (!area) return;
  if (handle !== undefined && handle !== current) return;
  if (hideTimer !== null) clearTimeout(hideTimer);
  hideTimer = null;
  textEl.textContent = '';
  area.hidden = true;
}
