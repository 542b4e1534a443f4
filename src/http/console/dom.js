// DOM building and formatting for the console. Everything the daemon sends (titles, openids,
// errmsgs, task names) reaches the page through textContent or attribute values set here, never
// through HTML parsing: a template titled `<img src=x onerror=...>` shows as those characters.

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * An element. `props`: id, className, text, type, value, checked, disabled, hidden, htmlFor,
 * title, placeholder, href, download, dataset {}, attrs {} (setAttribute), on {event: fn}.
 * Children: nodes, strings (as text), numbers, arrays of those; null/undefined/false skipped.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

/** An SVG element; `attrs` are set with setAttribute (no markup parsing either). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function applyProps(el, props) {
  if (!props) return;
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    switch (name) {
      case 'text':
        el.textContent = String(value);
        break;
      case 'dataset':
        for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
        break;
      case 'attrs':
        for (const [k, v] of Object.entries(value)) {
          if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : String(v));
        }
        break;
      case 'on':
        for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
        break;
      case 'className':
      case 'id':
      case 'type':
      case 'value':
      case 'checked':
      case 'disabled':
      case 'hidden':
      case 'htmlFor':
      case 'title':
      case 'placeholder':
      case 'href':
      case 'download':
      case 'name':
      case 'accept':
      case 'required':
      case 'readOnly':
      case 'rows':
      case 'spellcheck':
      case 'autocomplete':
        el[name] = value;
        break;
      default:
        throw new Error(`h(): unknown property ${name}`);
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children (text for strings). */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Sets text only when it changed, so a refresh every second does not disturb a selection. */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** A `<label>` around a control with its caption, for compact forms. */
export function field(caption, control, extra) {
  return h('label', { className: 'field' }, h('span', { className: 'field-caption', text: caption }), control, extra);
}

/** A table with a header row; returns { table, tbody }. */
export function table(id, headers, className) {
  const tbody = h('tbody');
  const t = h(
    'table',
    { id, className: className ?? 'grid' },
    h('thead', null, h('tr', null, headers.map((c) => h('th', { text: c })))),
    tbody,
  );
  return { table: t, tbody };
}

/** One row spanning the table: "none", "loading...". */
export function emptyRow(columns, text) {
  return h('tr', { className: 'empty' }, h('td', { text, attrs: { colspan: columns } }));
}

// --- formatting ---------------------------------------------------------------------------

/** A time (ISO text or ms since the epoch) in the browser's local time; '-' for none. */
export function fmtTime(value) {
  if (value === null || value === undefined || value === '') return '-';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, {
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

/** Short for narrow columns: the time alone for today, else the date and hh:mm. */
export function fmtShortTime(value) {
  if (value === null || value === undefined || value === '') return '-';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) {
    return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }
  return d.toLocaleString(undefined, { year: '2-digit', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
}

/** Only the clock part, for the chart's axis. */
export function fmtClock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** Seconds as "45 s", "3 min 20 s", "2 h 5 min", "3 d 4 h"; '-' for none. */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '-';
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hh = Math.floor(s / 3600);
  s -= hh * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d} d ${hh} h`;
  if (hh > 0) return `${hh} h ${m} min`;
  return `${m} min ${s} s`;
}

/** A rate with one decimal at most. */
export function fmtRate(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '0';
  return String(Math.round(n * 10) / 10);
}

/** Thousands separators for display only (the stat ids keep plain integers). */
export function fmtCount(n) {
  return typeof n === 'number' ? n.toLocaleString() : String(n ?? '-');
}

/** JSON parse with the error's text, for inline validation. */
export function parseJson(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

/** A JSON object (not an array, not null) from a textarea; empty text is `{}`. */
export function parseObject(text, what) {
  if (text.trim() === '') return { ok: true, value: {} };
  const r = parseJson(text);
  if (!r.ok) return { ok: false, error: `${what}: ${r.error}` };
  if (typeof r.value !== 'object' || r.value === null || Array.isArray(r.value)) {
    return { ok: false, error: `${what} must be a JSON object, like {"name": "value"}` };
  }
  return r;
}

/**
 * Runs `fn` now and then every `ms` while the page is visible, one call at a time (the next is
 * scheduled after the previous finished, so a slow daemon is not piled up on). Returns stop().
 */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  let running = false;
  const tick = async () => {
    timer = null;
    if (stopped || document.hidden || running) return;
    running = true;
    try {
      await fn();
    } catch {
      // fn reports its own errors; a failed round must not end the polling
    } finally {
      running = false;
    }
    if (!stopped && !document.hidden) timer = setTimeout(tick, ms);
  };
  const onVisibility = () => {
    if (document.hidden) {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else if (timer === null && !running) {
      void tick();
    }
  };
  document.addEventListener('visibilitychange', onVisibility);
  void tick();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  };
}
