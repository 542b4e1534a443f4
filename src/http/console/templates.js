// Templates: the list, an editor with JSON validation as you type, a preview through the
// daemon's own renderer, Save (write + TSet) and Delete.

import { api, seg } from './api.js';
import { h, field, table, emptyRow, fmtTime, fmtShortTime, parseJson, parseObject } from './dom.js';
import { notify, notifyError } from './notice.js';

/** The protocol's key: 1-32 printable ASCII characters without spaces. */
const KEY = /^[\x21-\x7e]{1,32}$/;
/** A placeholder as the renderer finds it (docs/TEMPLATES.md). */
const PLACEHOLDER = /\$\{([A-Za-z0-9_.-]+)\}/g;
const DEFAULT_TEMPLATE = `{
  "touser": "\${OPENID}",
  "template_id": "",
  "url": "",
  "data": {
    "first": { "value": "\${first}" },
    "remark": { "value": "\${remark}" }
  }
}`;

export function mountTemplates(root, ctx, params) {
  let templates = [];
  /** The row being edited (null: a new one, not saved yet); undefined: none open. */
  let current = undefined;
  let dirty = false;
  let stopped = false;

  // --- list -----------------------------------------------------------------------------
  const list = table('template-list', ['key', 'title', 'updated', 'loaded'], 'grid selectable');
  list.tbody.append(emptyRow(4, 'loading…'));
  const newButton = h('button', { type: 'button', id: 'template-new', text: 'New template' });
  const reloadButton = h('button', { type: 'button', id: 'template-reload', className: 'secondary', text: 'Reload' });
  const listCard = h(
    'div',
    { className: 'card list-card' },
    h('div', { className: 'card-head' }, h('h2', { text: 'Templates' }), h('span', { className: 'actions' }, reloadButton, newButton)),
    h('div', { className: 'scroll' }, list.table),
  );

  // --- editor ---------------------------------------------------------------------------
  const heading = h('h2', { id: 'template-heading', text: 'Template' });
  const keyInput = h('input', { id: 'template-key', type: 'text', spellcheck: false, autocomplete: 'off', placeholder: 'order_paid' });
  const keyError = h('span', { id: 'template-key-error', className: 'error', hidden: true });
  const titleInput = h('input', { id: 'template-title', type: 'text', autocomplete: 'off', placeholder: 'for people; the daemon does not use it' });
  const body = h('textarea', { id: 'template-body', className: 'code', rows: 16, spellcheck: false, attrs: { wrap: 'off', 'aria-describedby': 'template-error' } });
  const bodyError = h('div', { id: 'template-error', className: 'error', attrs: { 'aria-live': 'polite' } });
  const bodyWarning = h('div', { id: 'template-warning', className: 'warning' });
  const meta = h('div', { id: 'template-meta', className: 'muted' });
  const formatButton = h('button', { type: 'button', id: 'template-format', className: 'secondary', text: 'Format JSON' });
  const saveButton = h('button', { type: 'button', id: 'save-button', text: 'Save' });
  const deleteButton = h('button', { type: 'button', id: 'delete-button', className: 'danger', text: 'Delete' });
  const saveResult = h('span', { id: 'save-result', attrs: { 'aria-live': 'polite' } });

  const previewVars = h('textarea', { id: 'preview-vars', className: 'code', rows: 5, spellcheck: false, value: '{}' });
  const previewOpenid = h('input', { id: 'preview-openid', type: 'text', value: 'oPREVIEW', spellcheck: false, autocomplete: 'off' });
  const fillButton = h('button', { type: 'button', id: 'preview-fill', className: 'secondary', text: 'Variables from placeholders' });
  const previewButton = h('button', { type: 'button', id: 'preview-button', text: 'Preview' });
  const previewMissing = h('div', { id: 'preview-missing' });
  const previewOutput = h('pre', { id: 'preview-output', className: 'code-output' });

  const editor = h(
    'div',
    { id: 'template-editor', className: 'card editor', hidden: true },
    h('div', { className: 'card-head' }, heading, meta),
    h('div', { className: 'form-row' }, field('Key', keyInput, keyError), field('Title', titleInput)),
    h('label', { className: 'field', htmlFor: 'template-body' }, h('span', { className: 'field-caption', text: 'Template (JSON, with ${NAME} placeholders)' })),
    body,
    bodyError,
    bodyWarning,
    h('div', { className: 'button-row' }, saveButton, formatButton, deleteButton, saveResult),
    h(
      'div',
      { id: 'preview-panel', className: 'preview' },
      h('h3', { text: 'Preview' }),
      h('div', { className: 'form-row' }, field('Sample variables (JSON object)', previewVars), field('openid', previewOpenid)),
      h('div', { className: 'button-row' }, previewButton, fillButton),
      previewMissing,
      previewOutput,
    ),
  );
  const placeholder = h('div', { id: 'template-none', className: 'card muted', text: 'Choose a template, or make a new one.' });

  root.append(h('div', { className: 'split' }, listCard, h('div', { className: 'split-main' }, placeholder, editor)));

  // --- behaviour ------------------------------------------------------------------------
  async function loadList() {
    try {
      const rows = await api('GET', '/api/v1/templates');
      if (stopped) return;
      templates = Array.isArray(rows) ? rows : [];
      templates.sort((a, b) => a.key.localeCompare(b.key));
      renderList();
    } catch (err) {
      if (stopped) return;
      list.tbody.replaceChildren(emptyRow(4, `cannot load: ${err.message}`));
      notifyError(err, 'templates');
    }
  }

  function renderList() {
    if (templates.length === 0) {
      list.tbody.replaceChildren(emptyRow(4, 'no templates yet'));
      return;
    }
    list.tbody.replaceChildren(
      ...templates.map((t) => {
        const open = h('button', { type: 'button', className: 'link mono', text: t.key, on: { click: () => select(t.key) } });
        const row = h(
          'tr',
          { dataset: { key: t.key }, className: current && current.key === t.key ? 'selected' : '' },
          h('td', null, open),
          h('td', { text: t.title }),
          h('td', { className: 'nowrap', text: fmtShortTime(t.updatedAt), title: fmtTime(t.updatedAt) }),
          h('td', { className: t.loaded ? 'ok' : 'warn', text: t.loaded ? 'yes' : 'no', title: t.loaded ? 'compiled in this daemon' : 'not loaded in this daemon (saved without TSet, or broken)' }),
        );
        row.addEventListener('click', (event) => {
          if (event.target === open) return;
          select(t.key);
        });
        return row;
      }),
    );
  }

  function confirmDiscard() {
    if (!dirty || current === undefined) return true;
    return window.confirm(`Discard the changes to ${current ? current.key : 'the new template'}?`);
  }

  function select(key) {
    const row = templates.find((t) => t.key === key);
    if (!row) {
      notify(`No template ${key}.`, 'error');
      return;
    }
    if (current && current.key === key) return;
    if (!confirmDiscard()) return;
    openEditor(row);
  }

  function openEditor(row) {
    setCurrent(row);
    dirty = false;
    placeholder.hidden = true;
    editor.hidden = false;
    keyInput.value = row ? row.key : '';
    titleInput.value = row ? row.title : '';
    body.value = row ? row.template : DEFAULT_TEMPLATE;
    saveResult.textContent = '';
    saveResult.className = '';
    previewOutput.textContent = '';
    previewOutput.classList.remove('error');
    previewMissing.textContent = '';
    validate();
    (row ? body : keyInput).focus();
  }

  /** The row the editor is for, without touching what is typed (after a save). */
  function setCurrent(row) {
    current = row;
    heading.textContent = row ? `Template ${row.key}` : 'New template';
    keyInput.readOnly = Boolean(row);
    deleteButton.hidden = !row;
    meta.textContent = row ? `created ${fmtTime(row.createdAt)} · updated ${fmtTime(row.updatedAt)} · ${row.loaded ? 'loaded' : 'not loaded'}` : '';
    for (const tr of list.tbody.querySelectorAll('tr[data-key]')) tr.classList.toggle('selected', Boolean(row) && tr.dataset.key === row.key);
    history.replaceState(null, '', row ? `#/templates?key=${encodeURIComponent(row.key)}` : '#/templates');
  }

  /** Checks key and JSON; Save is off while either is wrong. Returns the parsed template or null. */
  function validate() {
    let ok = true;
    if (!current) {
      const key = keyInput.value;
      const keyProblem = key === '' ? 'a key is needed' : KEY.test(key) ? '' : '1-32 printable ASCII characters, no spaces';
      keyError.textContent = keyProblem;
      keyError.hidden = keyProblem === '';
      keyInput.classList.toggle('invalid', keyProblem !== '');
      if (keyProblem) ok = false;
    } else {
      keyError.hidden = true;
      keyInput.classList.remove('invalid');
    }

    const parsed = parseJson(body.value);
    let problem = '';
    let warning = '';
    if (!parsed.ok) {
      problem = `Invalid JSON: ${parsed.error}`;
    } else if (typeof parsed.value !== 'object' || parsed.value === null || Array.isArray(parsed.value)) {
      problem = 'The template must be a JSON object.';
    } else if (typeof parsed.value.template_id !== 'string' || parsed.value.template_id === '') {
      // the daemon refuses it too; said here before the round trip
      warning = 'No template_id: the daemon refuses a template without one (WeChat would answer 40037).';
    }
    bodyError.textContent = problem;
    bodyError.hidden = problem === '';
    bodyWarning.textContent = warning;
    bodyWarning.hidden = warning === '';
    body.classList.toggle('invalid', problem !== '');
    if (problem) ok = false;
    saveButton.disabled = !ok;
    formatButton.disabled = !parsed.ok;
    return ok && parsed.ok ? parsed.value : null;
  }

  function markDirty() {
    dirty = true;
    validate();
  }

  async function save() {
    if (validate() === null) return;
    const key = current ? current.key : keyInput.value;
    if (!current && templates.some((t) => t.key === key) && !window.confirm(`A template ${key} exists. Replace it?`)) return;
    saveButton.disabled = true;
    saveResult.className = '';
    saveResult.textContent = 'saving…';
    try {
      const sent = { title: titleInput.value, template: body.value };
      const answer = await api('PUT', `/api/v1/templates/${seg(key)}`, sent);
      if (stopped) return;
      const code = answer && typeof answer.code === 'number' ? answer.code : null;
      if (code === 200) {
        saveResult.textContent = 'saved, TSet 200';
        saveResult.className = 'ok';
      } else {
        saveResult.textContent = `saved; TSet ${code ?? '?'}: ${answer && answer.message ? answer.message : ''}`;
        saveResult.className = 'warn';
      }
      await loadList();
      const row = templates.find((t) => t.key === key);
      if (row) setCurrent(row);
      // typing may have gone on during the round trip: only what was sent is saved
      dirty = body.value !== sent.template || titleInput.value !== sent.title;
    } catch (err) {
      if (stopped) return;
      saveResult.textContent = `not saved: ${err.message}`;
      saveResult.className = 'error';
      notifyError(err, `save ${key}`);
    } finally {
      validate();
    }
  }

  async function remove() {
    if (!current) return;
    const key = current.key;
    if (!window.confirm(`Delete template ${key}? Messages queued for it will fail.`)) return;
    deleteButton.disabled = true;
    try {
      const answer = await api('DELETE', `/api/v1/templates/${seg(key)}`);
      if (stopped) return;
      const code = answer && typeof answer.code === 'number' ? answer.code : null;
      notify(code === 200 || code === null ? `Deleted ${key}.` : `Deleted ${key}; TSet ${code}: ${answer.message ?? ''}`, code === 200 || code === null ? 'info' : 'error');
      current = undefined;
      dirty = false;
      editor.hidden = true;
      placeholder.hidden = false;
      history.replaceState(null, '', '#/templates');
      await loadList();
    } catch (err) {
      notifyError(err, `delete ${key}`);
    } finally {
      deleteButton.disabled = false;
    }
  }

  async function preview() {
    const vars = parseObject(previewVars.value, 'Sample variables');
    previewMissing.textContent = '';
    previewMissing.className = '';
    if (!vars.ok) {
      previewOutput.textContent = vars.error;
      previewOutput.classList.add('error');
      return;
    }
    previewOutput.classList.remove('error');
    previewButton.disabled = true;
    previewOutput.textContent = 'rendering…';
    try {
      const answer = await api('POST', '/api/v1/templates/preview', { template: body.value, variables: vars.value, openid: previewOpenid.value });
      if (stopped) return;
      previewOutput.textContent = JSON.stringify(answer.message, null, 2);
      const missing = Array.isArray(answer.missing) ? answer.missing : [];
      previewMissing.textContent = missing.length ? `Missing variables: ${missing.join(', ')}` : 'No missing variables.';
      previewMissing.className = missing.length ? 'warn' : 'ok';
      previewMissing.dataset.missing = missing.join(',');
    } catch (err) {
      if (stopped) return;
      previewOutput.textContent = err.message;
      previewOutput.classList.add('error');
      notifyError(err, 'preview');
    } finally {
      previewButton.disabled = false;
    }
  }

  /** Sample variables for the template's placeholders, keeping values already typed. */
  function fillVariables() {
    const names = new Set();
    for (const m of body.value.matchAll(PLACEHOLDER)) if (m[1] !== 'OPENID') names.add(m[1]);
    const have = parseObject(previewVars.value, 'Sample variables');
    const vars = have.ok ? { ...have.value } : {};
    for (const name of names) if (!(name in vars)) vars[name] = '';
    previewVars.value = JSON.stringify(vars, null, 2);
  }

  newButton.addEventListener('click', () => {
    if (!confirmDiscard()) return;
    openEditor(null);
  });
  reloadButton.addEventListener('click', () => void loadList());
  keyInput.addEventListener('input', markDirty);
  titleInput.addEventListener('input', markDirty);
  body.addEventListener('input', markDirty);
  formatButton.addEventListener('click', () => {
    const parsed = parseJson(body.value);
    if (!parsed.ok) return;
    body.value = JSON.stringify(parsed.value, null, 2);
    markDirty();
  });
  saveButton.addEventListener('click', () => void save());
  deleteButton.addEventListener('click', () => void remove());
  previewButton.addEventListener('click', () => void preview());
  fillButton.addEventListener('click', fillVariables);
  const onBeforeUnload = (event) => {
    if (dirty) event.preventDefault();
  };
  window.addEventListener('beforeunload', onBeforeUnload);

  void loadList().then(() => {
    const wanted = params.get('key');
    if (wanted && !stopped) {
      const row = templates.find((t) => t.key === wanted);
      if (row) openEditor(row);
    } else if (params.has('new') && !stopped) {
      openEditor(null);
    }
  });

  return () => {
    stopped = true;
    window.removeEventListener('beforeunload', onBeforeUnload);
  };
}
