// The API client: the key lives in session storage (gone when the tab closes) and goes out as a
// bearer token; nothing else is stored.

const KEY = 'callplane.key';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(k) {
  if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY);
  me = null;
}

function headers(extra) {
  const hd = new Headers(extra || {});
  const k = getKey();
  if (k) hd.set('Authorization', `Bearer ${k}`);
  return hd;
}

async function failure(res) {
  let code = `http_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) { /* not JSON */ }
  if (res.status === 401) window.dispatchEvent(new CustomEvent('callplane:unauthorized'));
  return new ApiError(res.status, code, message);
}

/**
 * A JSON request. `body` (an object) is sent as JSON; `raw: true` answers the Response itself.
 * Throws ApiError with the API's code and message.
 */
export async function api(path, opts = {}) {
  const init = {method: opts.method || (opts.body !== undefined ? 'POST' : 'GET'),
    headers: headers(opts.headers), signal: opts.signal};
  if (opts.body !== undefined) {
    if (typeof opts.body === 'string' || opts.body instanceof Blob) {
      init.body = opts.body;
    } else {
      init.body = JSON.stringify(opts.body);
      init.headers.set('Content-Type', 'application/json');
    }
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await failure(res);
  if (opts.raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

/** Every page of a paginated listing (`{items, next_cursor}`), at most `max` items. */
export async function apiAll(path, max = 5000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/**
 * Uploads a body with progress (fetch cannot report upload progress; XMLHttpRequest can).
 * onProgress(sentBytes, totalBytes). Resolves with the JSON answer.
 */
export function upload(path, body, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Authorization', `Bearer ${getKey()}`);
    xhr.setRequestHeader('Content-Type', contentType);
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (e) => {
      if (onProgress) onProgress(e.loaded, e.lengthComputable ? e.total : body.size);
    });
    xhr.addEventListener('load', () => {
      const b = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300) resolve(b);
      else reject(new ApiError(xhr.status, b?.error?.code || `http_${xhr.status}`, b?.error?.message || `HTTP ${xhr.status}`));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'the upload failed (network)')));
    xhr.send(body);
  });
}

let me = null;

/** Who the key is: {tenant_id, key_id, role, permissions}. Cached until the key changes. */
export async function whoami() {
  if (!me) me = await api('/v1/me');
  return me;
}

/** Whether the signed-in key has a permission ("campaigns:write"). whoami() must have run. */
export function can(permission) {
  return !!me && me.permissions.includes(permission);
}

/** The reason shown on a button the key may not use. */
export function cannot(permission) {
  return me ? `${/^[aeiou]/.test(me.role) ? 'an' : 'a'} ${me.role} key lacks ${permission}` : 'not signed in';
}

/**
 * Follows the SSE stream `/v1/events?…` with the bearer key (EventSource cannot send headers,
 * so this reads the stream with fetch). Calls onEvent(event) for each event in id order, and
 * reconnects after a drop with Last-Event-ID, so nothing is missed or repeated.
 * Returns a function that stops it.
 */
export function follow(query, onEvent, onState) {
  const ctl = new AbortController();
  let last = null;
  let delay = 500;
  const state = (s) => { if (onState) onState(s); };
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const hd = headers({Accept: 'text/event-stream'});
        if (last !== null) hd.set('Last-Event-ID', String(last));
        const res = await fetch(`/v1/events${query ? `?${query}` : ''}`, {headers: hd, signal: ctl.signal});
        if (!res.ok) throw await failure(res);
        state('live');
        delay = 500;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let id = null;
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('id:')) id = line.slice(3).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (!data.length) continue;
            if (id !== null) last = id;
            try { onEvent(JSON.parse(data.join('\n'))); } catch (e) { console.error('event', e); }
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        // A refusal that asking again will not change (a bad filter, no permission, no such
        // call) ends the stream; a timeout, a rate limit, a 5xx or a dropped connection retries.
        if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
          state('error');
          return;
        }
      }
      if (ctl.signal.aborted) return;
      state('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => ctl.abort();
}
