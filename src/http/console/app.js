// The web console's entry: the session (login, logout, CSRF token), the hash router and the
// frame around the pages. No framework, no build step: ES modules the daemon serves as they are.

import { api, setCsrf, setUnauthorizedHandler } from './api.js';
import { h } from './dom.js';
import { initNotice, notify, notifyError, clearNotice } from './notice.js';
import { mountOverview } from './overview.js';
import { mountTemplates } from './templates.js';
import { mountTasks } from './tasks.js';
import { mountDeadLetters } from './dead-letters.js';
import { mountMessages } from './messages.js';

const ROUTES = {
  overview: { title: 'Overview', mount: mountOverview },
  templates: { title: 'Templates', mount: mountTemplates },
  tasks: { title: 'Tasks', mount: mountTasks },
  'dead-letters': { title: 'Dead letters', mount: mountDeadLetters },
  messages: { title: 'Messages', mount: mountMessages },
};
const DEFAULT_ROUTE = 'overview';

const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el;
};

const els = {
  title: $('console-title'),
  name: $('daemon-name'),
  nav: $('nav'),
  logout: $('logout-button'),
  notice: $('notice'),
  loading: $('loading'),
  login: $('login'),
  loginForm: $('login-form'),
  loginToken: $('login-token'),
  loginButton: $('login-button'),
  loginError: $('login-error'),
  view: $('view'),
};

/** The session while logged in: { csrf, expiresAt, auth }; null on the login form. */
let session = null;
let unmountPage = null;
let sessionTimer = null;
let loginCountdown = null;
let daemonName = '';

const ctx = {
  /** The daemon's name from status, for the title. */
  setName(name) {
    if (typeof name !== 'string' || name === '' || name === daemonName) return;
    daemonName = name;
    els.name.textContent = name;
    els.name.hidden = false;
    updateDocumentTitle();
  },
  /** Goes to a page, with optional query parameters (#/messages?q=...). */
  navigate(route, params) {
    const q = params ? new URLSearchParams(params).toString() : '';
    location.hash = `#/${route}${q ? `?${q}` : ''}`;
  },
};

// --- routing ------------------------------------------------------------------------------

function currentRoute() {
  const m = /^#\/([^?]*)(?:\?(.*))?$/.exec(location.hash);
  const name = m ? m[1] : '';
  const params = new URLSearchParams(m && m[2] ? m[2] : '');
  return { name: Object.hasOwn(ROUTES, name) ? name : null, params };
}

function render() {
  if (session === null) return;
  const { name, params } = currentRoute();
  if (name === null) {
    history.replaceState(null, '', `#/${DEFAULT_ROUTE}`);
    render();
    return;
  }
  stopPage();
  for (const link of els.nav.querySelectorAll('a[data-route]')) {
    const active = link.dataset.route === name;
    link.classList.toggle('active', active);
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const root = h('section', { className: 'page', id: `page-${name}` });
  els.view.replaceChildren(root);
  els.view.dataset.route = name;
  updateDocumentTitle();
  try {
    unmountPage = ROUTES[name].mount(root, ctx, params) ?? null;
  } catch (err) {
    notifyError(err, `cannot show ${ROUTES[name].title}`);
  }
}

function stopPage() {
  if (unmountPage) {
    try {
      unmountPage();
    } catch {
      // a page that fails to clean up must not keep the next one from showing
    }
  }
  unmountPage = null;
}

function updateDocumentTitle() {
  const { name } = currentRoute();
  const page = session !== null && name ? `${ROUTES[name].title} · ` : '';
  document.title = `${page}${daemonName ? `${daemonName} · ` : ''}Mega-WeChat console`;
}

// --- session ------------------------------------------------------------------------------

function startConsole(answer) {
  session = { csrf: answer.csrf, expiresAt: answer.expiresAt ?? null, auth: answer.auth !== false };
  setCsrf(answer.csrf);
  els.login.hidden = true;
  els.loading.hidden = true;
  els.loginError.hidden = true;
  els.loginToken.value = '';
  els.nav.hidden = false;
  els.view.hidden = false;
  // without [http] auth_token there is no login to end
  els.logout.hidden = !session.auth;
  scheduleSessionCheck();
  // the title wants the name on every page, not only on the overview
  api('GET', '/api/v1/status').then(
    (s) => ctx.setName(s && s.name),
    () => {},
  );
  render();
}

function showLogin(message) {
  stopPage();
  session = null;
  setCsrf(null);
  if (sessionTimer !== null) clearTimeout(sessionTimer);
  sessionTimer = null;
  els.view.replaceChildren();
  els.view.hidden = true;
  els.nav.hidden = true;
  els.logout.hidden = true;
  els.loading.hidden = true;
  els.login.hidden = false;
  clearNotice();
  setLoginError(message ?? '');
  updateDocumentTitle();
  els.loginToken.focus();
}

function setLoginError(text) {
  els.loginError.textContent = text;
  els.loginError.hidden = text === '';
}

/** Asks again when the session should end, so an idle console goes back to the login form. */
function scheduleSessionCheck() {
  if (sessionTimer !== null) clearTimeout(sessionTimer);
  sessionTimer = null;
  const at = session && session.expiresAt ? Date.parse(session.expiresAt) : NaN;
  if (Number.isNaN(at)) return;
  // setTimeout's delay is a signed 32-bit int: a week-long session would fire at once
  const delay = Math.min(Math.max(1000, at - Date.now() + 1000), 2 ** 31 - 1);
  sessionTimer = setTimeout(checkSession, delay);
}

async function checkSession() {
  sessionTimer = null;
  try {
    const answer = await api('GET', '/api/v1/session', undefined, { expect401: true });
    if (session === null) return;
    session.csrf = answer.csrf;
    session.expiresAt = answer.expiresAt ?? null;
    setCsrf(answer.csrf);
    scheduleSessionCheck();
  } catch (err) {
    if (err.status === 401) showLogin('Your session ended: log in again.');
    else sessionTimer = setTimeout(checkSession, 30_000);
  }
}

async function onLogin(event) {
  event.preventDefault();
  if (loginCountdown !== null) return;
  const token = els.loginToken.value;
  if (token === '') {
    setLoginError('Enter the HTTP token.');
    return;
  }
  els.loginButton.disabled = true;
  setLoginError('');
  try {
    const answer = await api('POST', '/api/v1/login', { token }, { expect401: true });
    clearNotice();
    startConsole(answer);
  } catch (err) {
    if (err.status === 401) {
      setLoginError('Wrong token.');
      els.loginToken.select();
    } else if (err.status === 429) {
      startLoginCountdown(err.retryAfter);
    } else {
      setLoginError(err.message);
    }
  } finally {
    if (loginCountdown === null) els.loginButton.disabled = false;
  }
}

/** 429: too many attempts; the button stays off until Retry-After has passed. */
function startLoginCountdown(seconds) {
  if (seconds === null || seconds === undefined) {
    setLoginError('Too many attempts, wait a moment before trying again.');
    return;
  }
  let left = seconds;
  const show = () => setLoginError(`Too many attempts, wait ${left} s.`);
  show();
  els.loginButton.disabled = true;
  loginCountdown = setInterval(() => {
    left -= 1;
    if (left > 0) {
      show();
      return;
    }
    clearInterval(loginCountdown);
    loginCountdown = null;
    els.loginButton.disabled = false;
    setLoginError('');
  }, 1000);
}

async function onLogout() {
  els.logout.disabled = true;
  try {
    await api('POST', '/api/v1/logout', {}, { expect401: true });
  } catch (err) {
    if (err.status !== 401) notifyError(err, 'log out');
  } finally {
    els.logout.disabled = false;
  }
  showLogin('');
}

async function boot() {
  initNotice(els.notice);
  els.loginForm.addEventListener('submit', onLogin);
  els.logout.addEventListener('click', onLogout);
  window.addEventListener('hashchange', render);
  setUnauthorizedHandler(() => {
    if (session !== null) showLogin('Your session ended: log in again.');
  });
  try {
    const answer = await api('GET', '/api/v1/session', undefined, { expect401: true });
    startConsole(answer);
  } catch (err) {
    if (err.status === 401) {
      showLogin('');
      return;
    }
    els.loading.replaceChildren(
      h('p', { className: 'error', text: `Cannot open the console: ${err.message}` }),
      h('button', { type: 'button', text: 'Try again', on: { click: () => location.reload() } }),
    );
    notify(err.message, 'error');
  }
}

void boot();
