// The console's calls to /api/v1/: same origin (the session cookie goes along by default),
// JSON bodies, and the CSRF token on every request that changes something.

/** An API answer that is not 2xx, or a daemon that cannot be reached (status 0). */
export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    /** Seconds, from Retry-After (429), or null. */
    this.retryAfter = retryAfter;
  }
}

let csrf = null;
let onUnauthorized = () => {};

/** The token from GET /api/v1/session or the login answer; kept in memory only. */
export function setCsrf(token) {
  csrf = typeof token === 'string' ? token : null;
}

/** Called once for a 401 on any call but the session check and the login. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * One API call; resolves with the parsed JSON answer (null for an empty one).
 * `options.expect401`: the caller handles 401 itself (session check, login).
 */
export async function api(method, path, body, options = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (MUTATING.has(method)) {
    if (csrf !== null) headers['X-CSRF-Token'] = csrf;
    // always a JSON body on a change, even an empty one: a server that only accepts
    // application/json there refuses what a cross-site form could send
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body === undefined ? {} : body);
  } else if (body !== undefined) {
    throw new Error(`${method} ${path} takes no body`);
  }

  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `cannot reach the daemon (${err instanceof Error ? err.message : String(err)})`, null);
  }

  const text = await res.text().catch(() => '');
  let data = null;
  let parsed = true;
  if (text !== '') {
    try {
      data = JSON.parse(text);
    } catch {
      parsed = false;
    }
  }

  if (res.ok) {
    if (!parsed) throw new ApiError(res.status, `${method} ${path}: the answer is not JSON`, null);
    return data;
  }

  const message =
    parsed && data && typeof data === 'object' && data.error && typeof data.error.message === 'string'
      ? data.error.message
      : `${method} ${path}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  const retryAfter = retryAfterSeconds(res.headers.get('Retry-After'));
  if (res.status === 401 && !options.expect401) {
    onUnauthorized(message);
  }
  throw new ApiError(res.status, message, retryAfter);
}

/** Retry-After as seconds: delta-seconds or an HTTP date. */
function retryAfterSeconds(value) {
  if (value === null || value.trim() === '') return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** A path segment: keys and openids may hold '/', '?', '#', '%'. */
export function seg(value) {
  return encodeURIComponent(String(value));
}

/** A query string from the non-empty entries. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && String(v) !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}
