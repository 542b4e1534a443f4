// Tasks: create one from an uploaded recipients file, and watch them all (every second while
// the page is visible) with Start/Resume, Pause and the failure report.

import { api, seg } from './api.js';
import { h, field, table, emptyRow, setText, fmtTime, fmtShortTime, fmtDuration, fmtRate, parseObject, poll } from './dom.js';
import { notify, notifyError, clearNotice } from './notice.js';

const REFRESH_MS = 1000;
const FORMAT_OF_EXTENSION = { txt: 'plain', csv: 'csv', tsv: 'csv', jsonl: 'jsonl', ndjson: 'jsonl' };
/** Statuses a task can be (re)started from, and the button's word for it. */
const STARTABLE = { pending: 'Start', paused: 'Resume', stopped: 'Resume', failed: 'Resume' };

export function mountTasks(root, ctx, params) {
  let stopped = false;

  // --- the create form --------------------------------------------------------------------
  const keySelect = h('select', { id: 'task-key', required: true }, h('option', { value: '', text: 'loading…' }));
  const nameInput = h('input', { id: 'task-name', type: 'text', autocomplete: 'off', placeholder: 'the file name if empty' });
  const fileInput = h('input', { id: 'task-file', type: 'file', accept: '.txt,.csv,.jsonl', required: true });
  const formatSelect = h(
    'select',
    { id: 'task-format' },
    h('option', { value: 'plain', text: 'plain (one openid a line)' }),
    h('option', { value: 'csv', text: 'csv (openid column + variables)' }),
    h('option', { value: 'jsonl', text: 'jsonl (one object a line)' }),
  );
  const varsInput = h('textarea', { id: 'task-vars', className: 'code', rows: 2, spellcheck: false, placeholder: '{"campaign": "spring"}' });
  const skipInput = h('input', { id: 'task-skip', type: 'checkbox' });
  const startInput = h('input', { id: 'task-start', type: 'checkbox', checked: true });
  const submit = h('button', { id: 'task-submit', type: 'submit', text: 'Create task' });
  const result = h('pre', { id: 'task-form-result', className: 'form-result', hidden: true });
  const form = h(
    'form',
    { id: 'task-form', className: 'card task-form', attrs: { novalidate: true } },
    h('h2', { text: 'New task' }),
    h('div', { className: 'form-row' }, field('Template', keySelect), field('Name', nameInput), field('Recipients file', fileInput), field('Format', formatSelect)),
    field('Variables for everyone (JSON object, optional)', varsInput),
    h(
      'div',
      { className: 'button-row' },
      h('label', { className: 'check' }, skipInput, ' skip invalid lines'),
      h('label', { className: 'check' }, startInput, ' start now'),
      submit,
    ),
    result,
  );

  // --- the list ---------------------------------------------------------------------------
  const list = table('task-list', ['id', 'name', 'template', 'status', 'progress', 'rate', 'ETA', 'sent', 'failed', 'created', '']);
  const emptyLine = emptyRow(11, 'loading…');
  list.tbody.append(emptyLine);
  root.append(form, h('div', { className: 'card' }, h('h2', { text: 'Tasks' }), h('div', { className: 'scroll' }, list.table)));

  /** Row objects by task id; updated in place so a click is never lost to a rebuild. */
  const rows = new Map();
  let errorNotice = null;

  function makeRow(id) {
    const status = h('span', { className: 'badge' });
    const message = h('div', { className: 'task-message' });
    const bar = h('div', { className: 'progress-bar' });
    const failBar = h('div', { className: 'progress-bar progress-fail' });
    const progressText = h('span', { className: 'progress-text' });
    const progress = h('div', { className: 'progress', attrs: { role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 } }, bar, failBar);
    const startButton = h('button', { type: 'button', className: 'task-start-button small', text: 'Start' });
    const pauseButton = h('button', { type: 'button', className: 'task-pause-button small secondary', text: 'Pause' });
    const report = h('a', { className: 'task-report', href: `/api/v1/tasks/${seg(id)}/report`, download: `task-${id}-failures.csv`, text: 'Failure report' });
    const cells = {
      id: h('td', { className: 'num', text: id }),
      name: h('td'),
      key: h('td', { className: 'mono' }),
      status: h('td', { className: 'task-status' }, status, message),
      progress: h('td', { className: 'task-progress' }, progress, progressText),
      rate: h('td', { className: 'num task-rate' }),
      eta: h('td', { className: 'num task-eta' }),
      sent: h('td', { className: 'num task-sent' }),
      failed: h('td', { className: 'num task-failed' }),
      created: h('td', { className: 'nowrap' }),
      actions: h('td', { className: 'actions nowrap' }, startButton, pauseButton, report),
    };
    const tr = h('tr', { dataset: { taskId: id } }, Object.values(cells));
    const row = { tr, cells, status, message, bar, failBar, progress, progressText, startButton, pauseButton, task: null };
    startButton.addEventListener('click', () => void act(row, 'start'));
    pauseButton.addEventListener('click', () => void act(row, 'pause'));
    return row;
  }

  function updateRow(row, t) {
    row.task = t;
    setText(row.cells.name, t.name || '-');
    setText(row.cells.key, t.key);
    setText(row.status, t.status);
    row.status.className = `badge status-${t.status}`;
    row.tr.dataset.status = t.status;
    setText(row.message, t.message || (t.status === 'running' && !t.runningHere ? 'running in another process' : ''));
    const done = (t.success ?? 0) + (t.fail ?? 0);
    const pct = t.total > 0 ? Math.min(100, (done / t.total) * 100) : t.status === 'done' ? 100 : 0;
    const failPct = t.total > 0 ? Math.min(pct, (t.fail / t.total) * 100) : 0;
    // CSSOM, not a style attribute: the CSP allows the one and not the other
    row.bar.style.width = `${(pct - failPct).toFixed(2)}%`;
    row.failBar.style.width = `${failPct.toFixed(2)}%`;
    row.progress.setAttribute('aria-valuenow', pct.toFixed(0));
    setText(row.progressText, `${done} / ${t.total} (${Math.floor(pct)}%)`);
    setText(row.cells.rate, t.status === 'running' ? `${fmtRate(t.rate)}/s` : '-');
    setText(row.cells.eta, t.status === 'running' && t.etaSeconds !== null ? fmtDuration(t.etaSeconds) : '-');
    setText(row.cells.sent, t.success);
    setText(row.cells.failed, t.fail);
    row.cells.failed.classList.toggle('error', t.fail > 0);
    setText(row.cells.created, fmtShortTime(t.createdAt));
    row.cells.created.title = `created ${fmtTime(t.createdAt)}, updated ${fmtTime(t.updatedAt)}`;
    const startWord = STARTABLE[t.status];
    row.startButton.hidden = !startWord;
    if (startWord) setText(row.startButton, startWord);
    row.pauseButton.hidden = t.status !== 'running';
  }

  async function act(row, action) {
    const t = row.task;
    if (!t) return;
    const button = action === 'start' ? row.startButton : row.pauseButton;
    button.disabled = true;
    try {
      const answer = await api('POST', `/api/v1/tasks/${seg(t.id)}/${action}`, {});
      if (stopped) return;
      if (answer && typeof answer === 'object' && answer.id === t.id) updateRow(row, answer);
      notify(`Task ${t.id} ${action === 'start' ? 'started' : 'paused'}.`, 'info');
    } catch (err) {
      notifyError(err, `${action} task ${t.id}`);
    } finally {
      button.disabled = false;
    }
  }

  function showTasks(tasks) {
    const seen = new Set();
    tasks.forEach((t, i) => {
      seen.add(t.id);
      let row = rows.get(t.id);
      if (!row) {
        row = makeRow(t.id);
        rows.set(t.id, row);
      }
      updateRow(row, t);
      const at = list.tbody.children[i];
      if (at !== row.tr) list.tbody.insertBefore(row.tr, at ?? null);
    });
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    if (tasks.length === 0) {
      emptyLine.firstChild.textContent = 'no tasks yet';
      if (!emptyLine.isConnected) list.tbody.append(emptyLine);
    } else {
      emptyLine.remove();
    }
  }

  async function refresh() {
    try {
      const tasks = await api('GET', '/api/v1/tasks');
      if (stopped) return;
      showTasks(Array.isArray(tasks) ? tasks : []);
      if (errorNotice !== null) clearNotice(errorNotice);
      errorNotice = null;
    } catch (err) {
      if (stopped) return;
      if (rows.size === 0) {
        emptyLine.firstChild.textContent = `cannot load the tasks: ${err.message}`;
        if (!emptyLine.isConnected) list.tbody.append(emptyLine);
      }
      errorNotice = notifyError(err, 'tasks');
    }
  }

  async function loadTemplates() {
    try {
      const templates = await api('GET', '/api/v1/templates');
      if (stopped) return;
      const keys = (Array.isArray(templates) ? templates : []).slice().sort((a, b) => a.key.localeCompare(b.key));
      const wanted = keySelect.value || params.get('key') || '';
      if (keys.length === 0) {
        keySelect.replaceChildren(h('option', { value: '', text: 'no templates: make one first' }));
        return;
      }
      keySelect.replaceChildren(
        h('option', { value: '', text: 'choose a template' }),
        ...keys.map((t) => h('option', { value: t.key, text: t.title ? `${t.key} (${t.title})` : t.key })),
      );
      if (keys.some((t) => t.key === wanted)) keySelect.value = wanted;
      else if (keys.length === 1) keySelect.value = keys[0].key;
    } catch (err) {
      if (stopped) return;
      keySelect.replaceChildren(h('option', { value: '', text: 'cannot load the templates' }));
      notifyError(err, 'templates');
    }
  }

  function showResult(text, kind) {
    result.textContent = text;
    result.className = `form-result ${kind}`;
    result.hidden = text === '';
  }

  fileInput.addEventListener('change', () => {
    const file = fileInput.files && fileInput.files[0];
    if (!file) return;
    const ext = /\.([A-Za-z0-9]+)$/.exec(file.name);
    const format = ext ? FORMAT_OF_EXTENSION[ext[1].toLowerCase()] : undefined;
    if (format) formatSelect.value = format;
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = keySelect.value;
    const file = fileInput.files && fileInput.files[0];
    const vars = parseObject(varsInput.value, 'Variables');
    const problems = [];
    if (!key) problems.push('Choose a template.');
    if (!file) problems.push('Choose a recipients file.');
    if (!vars.ok) problems.push(vars.error);
    if (problems.length) {
      showResult(problems.join('\n'), 'error');
      return;
    }
    submit.disabled = true;
    showResult('reading the file…', 'muted');
    try {
      const content = toBase64(await file.arrayBuffer());
      showResult('uploading…', 'muted');
      const task = await api('POST', '/api/v1/tasks', {
        key,
        name: (nameInput.value.trim() || file.name).slice(0, 100),
        format: formatSelect.value,
        content_base64: content,
        variables: vars.value,
        skipInvalid: skipInput.checked,
        start: startInput.checked,
      });
      if (stopped) return;
      const started = task && task.status === 'running';
      showResult(`Task ${task.id} created with ${task.total} recipients${started ? ', running' : ''}.`, 'ok');
      notify(`Task ${task.id} created.`, 'info');
      fileInput.value = '';
      nameInput.value = '';
      await refresh();
      const row = rows.get(task.id);
      if (row) row.tr.classList.add('fresh');
    } catch (err) {
      if (stopped) return;
      // the daemon lists every bad line of the file, one a line: shown as sent
      showResult(err.message, 'error');
      notifyError(err, 'task not created');
    } finally {
      submit.disabled = false;
    }
  });

  void loadTemplates();
  const stopPolling = poll(refresh, REFRESH_MS);
  return () => {
    stopped = true;
    stopPolling();
    if (errorNotice !== null) clearNotice(errorNotice);
  };
}

/** The file's bytes as base64, in chunks: String.fromCharCode(...all) overflows the stack. */
function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  if (typeof bytes.toBase64 === 'function') return bytes.toBase64();
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
