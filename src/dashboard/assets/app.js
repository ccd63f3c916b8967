// The dashboard's shell: sign-in, the hash router, the header. Pages live in campaigns.js,
// calls.js and ops.js; each exports `routes`: [[RegExp on the path, view], ...], where a view is
// `async (main, params, query) => cleanup?` (cleanup runs when the page is left: it closes the
// page's event stream).

import {h, mount, errorBox} from './dom.js';
import {api, getKey, setKey, whoami, ApiError} from './api.js';
import * as campaigns from './campaigns.js';
import * as calls from './calls.js';
import * as ops from './ops.js';

const routes = [...campaigns.routes, ...calls.routes, ...ops.routes];
const main = document.getElementById('view');
let cleanup = null;
let generation = 0;

function signinView(message) {
  const input = h('input', {id: 'key', name: 'key', type: 'password', autocomplete: 'off',
    placeholder: 'cp_…', required: true, spellcheck: 'false'});
  const status = h('p', {class: 'muted', id: 'signin-status'}, message || '');
  const form = h('form', {id: 'signin', class: 'card narrow'},
    h('h1', 'Sign in'),
    h('p', 'Paste an API key. It stays in this tab only (session storage) and is sent as a bearer token.'),
    h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'API key'), input),
    h('button', {type: 'submit', class: 'primary', id: 'signin-submit'}, 'Sign in'),
    status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const k = input.value.trim();
    if (!/^cp_[0-9a-f]{40}$/.test(k)) {
      mount(status, errorBox(new Error('a key is cp_ followed by 40 hex digits')));
      return;
    }
    setKey(k);
    try {
      await whoami();
      if (!location.hash || location.hash === '#/signin') location.hash = '#/campaigns';
      else render();
    } catch (err) {
      setKey(null);
      mount(status, errorBox(err instanceof ApiError && err.status === 401
        ? new Error('this key is unknown or revoked') : err));
    }
  });
  showChrome(null);
  mount(main, form);
  input.focus();
}

function showChrome(who) {
  const signedIn = !!who;
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('signout').hidden = !signedIn;
  const w = document.getElementById('who');
  w.hidden = !signedIn;
  if (who) mount(w, h('span', {class: 'role', title: `tenant ${who.tenant_id}, key ${who.key_id}`}, who.role));
}

function markNav(path) {
  for (const a of document.querySelectorAll('#nav a')) {
    const on = path.startsWith(`/${a.dataset.nav}`);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

/** Leaves the current page: its event stream and timers stop, and a view still loading will
 * draw into a detached element (each view gets its own slot) instead of the next page. */
function leave() {
  generation += 1;
  if (cleanup) { try { cleanup(); } catch (_) { /* ignore */ } cleanup = null; }
  return generation;
}

async function render() {
  const gen = leave();
  if (!getKey()) { signinView(); return; }
  let who;
  try {
    who = await whoami();
  } catch (e) {
    if (gen !== generation) return;
    if (e instanceof ApiError && e.status === 401) { setKey(null); signinView('Your key was refused; sign in again.'); return; }
    mount(main, errorBox(e));
    return;
  }
  showChrome(who);
  const raw = location.hash.replace(/^#/, '') || '/campaigns';
  const [path, qs] = raw.split('?');
  markNav(path);
  if (gen !== generation) return;
  window.scrollTo(0, 0);
  for (const [re, view] of routes) {
    const m = path.match(re);
    if (!m) continue;
    const slot = h('div', {class: 'page'});
    mount(main, slot);
    mount(slot, h('p', {class: 'muted'}, 'Loading…'));
    let params;
    try {
      params = m.slice(1).map(decodeURIComponent);
    } catch (_) {
      mount(slot, errorBox(new Error('this address is not well formed')));
      return;
    }
    try {
      const c = await view(slot, params, new URLSearchParams(qs || ''));
      if (gen !== generation) { if (typeof c === 'function') c(); return; }
      cleanup = typeof c === 'function' ? c : null;
    } catch (e) {
      if (gen === generation) mount(slot, errorBox(e));
    }
    return;
  }
  mount(main, h('div', {class: 'card'}, h('h1', 'Not found'), h('p', 'No page at ', h('code', path), '.'),
    h('a', {href: '#/campaigns'}, 'Campaigns')));
}

document.getElementById('signout').addEventListener('click', () => {
  leave();
  setKey(null);
  location.hash = '#/signin';
  render();
});
window.addEventListener('callplane:unauthorized', () => {
  // Several requests of a page may be refused at once: leave the page once, and keep a key
  // being typed into the sign-in form.
  if (document.getElementById('signin')) return;
  leave();
  setKey(null);
  signinView('Your key was refused; sign in again.');
});
window.addEventListener('hashchange', render);
render();

// The API is reachable from here too (the browser tests call it through the page's key).
export {api};
