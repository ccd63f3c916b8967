// DOM helpers. Every value from the API is attacker-controlled (contact names, CSV fields, SIP
// reason phrases): it only ever reaches the page as a text node (h() turns strings into text
// nodes) or an attribute set through setAttribute on an allow-list. Nothing here, and nothing in
// the pages, parses a string as markup.

const ATTRS = new Set([
  'id', 'class', 'href', 'type', 'name', 'value', 'placeholder', 'title', 'for', 'min', 'max',
  'step', 'accept', 'role', 'colspan', 'aria-label', 'aria-current', 'aria-valuenow',
  'aria-valuemin', 'aria-valuemax', 'aria-selected', 'aria-expanded', 'autocomplete', 'download', 'rows', 'cols', 'maxlength',
  'pattern', 'required', 'disabled', 'checked', 'selected', 'multiple', 'hidden', 'tabindex',
  'spellcheck', 'inputmode', 'size', 'datetime', 'open', 'list', 'readonly',
]);

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k === 'href') {
      // Links only to our own pages or API paths: never a script URL, and never another origin
      // (`//host` and `/\host` are protocol-relative to browsers).
      const s = String(v);
      // (Browsers drop tabs and line breaks from URLs: `/\t/host` would become `//host`.)
      if (/^#|^\/(?![/\\])/.test(s) && !/[\t\n\r]/.test(s)) el.setAttribute('href', s);
    } else if (ATTRS.has(k) || k.startsWith('data-')) {
      el.setAttribute(k, v === true ? '' : String(v));
    } else {
      throw new Error(`dom: attribute ${k} is not allowed`);
    }
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h('td', {class: 'num'}, 'text', child, ...). Strings become text nodes. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  // Attributes only when given as a plain object; any other value (0 and '' included) is a child.
  if (attrs !== null && attrs !== undefined && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
  } else if (attrs) {
    setAttrs(el, attrs);
  }
  return append(el, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

// SVG presentation and geometry attributes the charts use; no href, style or string handlers.
const SVG_ATTRS = new Set([
  'class', 'id', 'role', 'aria-label', 'aria-hidden', 'tabindex', 'viewBox', 'preserveAspectRatio',
  'width', 'height', 'x', 'y', 'x1', 'y1', 'x2', 'y2', 'cx', 'cy', 'r', 'rx', 'ry', 'd', 'points',
  'fill', 'fill-opacity', 'stroke', 'stroke-width', 'stroke-dasharray', 'stroke-opacity',
  'stroke-linecap', 'stroke-linejoin', 'opacity', 'transform', 'text-anchor',
  'dominant-baseline', 'font-size', 'font-weight', 'marker-end', 'marker-start', 'markerWidth',
  'markerHeight', 'refX', 'refY', 'orient', 'markerUnits', 'vector-effect', 'shape-rendering',
  'clip-path', 'pointer-events', 'cursor', 'dx', 'dy', 'focusable', 'visibility',
]);

/** An SVG element: attributes from an allow-list (numbers and our own strings), `data-*`, and
 * listeners (`onclick: fn`). Text children become text nodes. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (SVG_ATTRS.has(k) || k.startsWith('data-')) el.setAttribute(k, String(v));
    else throw new Error(`svg: attribute ${k} is not allowed`);
  }
  return append(el, children);
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** "2026-12-05 14:03:07" in the browser's zone (the title carries the ISO time). */
export function fmtTime(v) {
  if (v === null || v === undefined || v === '') return '—';
  const d = typeof v === 'number' ? new Date(v / 1000) : new Date(v);
  if (isNaN(d)) return String(v);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A time element: local time, ISO in the title. */
export function time(v) {
  if (v === null || v === undefined) return h('span', {class: 'muted'}, '—');
  const d = typeof v === 'number' ? new Date(v / 1000) : new Date(v);
  return h('time', {datetime: isNaN(d) ? undefined : d.toISOString(), title: isNaN(d) ? undefined : d.toISOString()}, fmtTime(v));
}

/** 83 ms, 4.2 s, 3 min 05 s, 2 h 04 min. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '—';
  if (ms < 999.5) return `${Math.round(ms)} ms`;
  // Round once, to what is shown, so that 59.96 s is "1 min 00 s", never "60.0 s".
  const tenths = Math.round(ms / 100);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
  const secs = Math.round(ms / 1000);
  const m = Math.floor(secs / 60);
  if (m < 60) return `${m} min ${String(secs % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

export function fmtPct(x) {
  return x === null || x === undefined ? '—' : `${(x * 100).toFixed(1)} %`;
}

export function fmtNum(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

/** A status badge: the class is derived from the status (a fixed set), the text is the value. */
export function badge(status) {
  const known = ['draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled', 'queued',
    'dialing', 'ringing', 'answered', 'failed', 'suppressed', 'exhausted', 'delivered', 'pending',
    'dead', 'registered', 'unregistered', 'up', 'down', 'active', 'revoked'];
  const cls = known.includes(status) ? `badge badge-${status}` : 'badge';
  return h('span', {class: cls}, status ?? '—');
}

/** A progress bar, 0..1; `label` is its text (read by screen readers too). */
export function progress(fraction, label) {
  const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  const fill = h('span', {class: 'bar-fill'});
  fill.style.width = `${(f * 100).toFixed(1)}%`;
  return h('span', {class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.round(f * 100), title: label}, fill,
    label ? h('span', {class: 'bar-label'}, label) : null);
}

/** A table in a horizontally scrolling wrapper (phones). columns: [{title, cell(row) → node|string, class}] */
export function table(columns, rows, opts = {}) {
  const head = h('tr', columns.map((c) => h('th', {class: c.class}, c.title)));
  const body = rows.length
    ? rows.map((r) => h('tr', {class: opts.rowClass ? opts.rowClass(r) : undefined},
      columns.map((c) => h('td', {class: c.class, 'data-label': c.title}, c.cell(r)))))
    : [h('tr', h('td', {colspan: columns.length, class: 'muted'}, opts.empty || 'Nothing here yet.'))];
  return h('div', {class: 'table-wrap'}, h('table', {class: opts.class}, h('thead', head), h('tbody', body)));
}

/** An error box for an API error (or any Error). */
export function errorBox(e) {
  const code = e && e.code ? `${e.code}: ` : '';
  return h('div', {class: 'error', role: 'alert'}, code, e && e.message ? e.message : String(e));
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h('label', {class: 'field'}, h('span', {class: 'field-label'}, label), input,
    hint ? h('span', {class: 'hint'}, hint) : null);
}

/** A key/value list. pairs: [[label, value], ...] */
export function facts(pairs) {
  return h('dl', {class: 'facts'}, pairs.filter(Boolean).map(([k, v]) => [h('dt', k), h('dd', v)]));
}

/** Runs fn at most once per `ms`, with the latest arguments on the trailing edge (for redraws
 * driven by a burst of SSE events). `.cancel()` drops a pending trailing call (leaving a page). */
export function throttle(fn, ms) {
  let timer = null;
  let pending = null;
  const tick = () => {
    timer = null;
    if (pending) {
      const args = pending;
      pending = null;
      fn(...args);
      timer = setTimeout(tick, ms);
    }
  };
  const run = (...args) => {
    if (timer) { pending = args; return; }
    fn(...args);
    timer = setTimeout(tick, ms);
  };
  run.cancel = () => { pending = null; if (timer) { clearTimeout(timer); timer = null; } };
  return run;
}
