// Calls: the searchable list, and one call on one time axis with its recording player.
//
// The list's filters live in the hash (`#/calls?campaign_id=cmp_…&status=completed`), so a link
// from a campaign page lands filtered and a reload keeps them. New and changed calls come from
// the SSE stream (a throttled re-read of the first page), never from a polling loop.

import {h, mount, errorBox, badge, time, fmtMs, throttle} from './dom.js';
import {api, follow} from './api.js';
import {callView} from './call.js';

const STATUSES = ['queued', 'dialing', 'ringing', 'answered', 'completed', 'failed'];
const OUTCOMES = ['answered', 'busy', 'no_answer', 'rejected', 'invalid_number', 'network_error', 'cancelled', 'failed'];
const FILTERS = ['status', 'outcome', 'campaign_id', 'created_from', 'created_to'];
const PAGE = 50;

/** A filter time (RFC 3339 or µs since the epoch) as a Date, or null. */
function parseWhen(v) {
  if (!v) return null;
  const d = /^\d+$/.test(v) ? new Date(Number(v) / 1000) : new Date(v);
  return isNaN(d) ? null : d;
}

/** A Date as a datetime-local value, in the browser's zone. */
function toLocalInput(d) {
  if (!d) return '';
  const p = (n) => String(n).padStart(2, '0');
  const base = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  return d.getSeconds() ? `${base}:${p(d.getSeconds())}` : base;
}

/** A datetime-local value (the browser's zone) as RFC 3339 UTC. */
function fromLocalInput(v) {
  if (!v) return '';
  const d = new Date(v);
  return isNaN(d) ? '' : d.toISOString().replace('.000Z', 'Z');
}

function select(name, values, current, allLabel) {
  return h('select', {name, id: `f-${name}`},
    h('option', {value: ''}, allLabel),
    values.map((v) => h('option', {value: v, selected: v === current}, v.replace(/_/g, ' '))),
    current && !values.includes(current) ? h('option', {value: current, selected: true}, current) : null);
}

function peerCell(c) {
  const inbound = c.direction === 'inbound';
  const main = inbound ? c.from : c.to;
  const other = inbound ? c.to : c.from;
  return h('span', {class: 'peer'}, h('span', {class: 'mono'}, main || '—'),
    other ? h('span', {class: 'muted small other'}, `${inbound ? 'to' : 'from'} ${other}`) : null);
}

function sipCell(c) {
  if (!c.sip_status && !c.sip_reason) return h('span', {class: 'muted'}, '—');
  return [c.sip_status ? h('span', {class: 'mono'}, String(c.sip_status)) : null, c.sip_reason ? ` ${c.sip_reason}` : ''];
}

const COLUMNS = [
  {title: 'Created', cell: (c) => h('a', {href: `#/calls/${encodeURIComponent(c.id)}`, class: 'call-link', title: c.id}, time(c.created_at))},
  {title: 'Dir.', cell: (c) => h('span', {class: `dir dir-${c.direction === 'inbound' ? 'in' : 'out'}`, title: c.direction}, c.direction === 'inbound' ? '← in' : 'out →')},
  {title: 'To / from', cell: peerCell},
  {title: 'Status', cell: (c) => badge(c.status)},
  {title: 'Outcome', cell: (c) => (c.outcome ? h('span', {class: `outcome outcome-${c.outcome}`}, c.outcome.replace(/_/g, ' ')) : h('span', {class: 'muted'}, '—'))},
  {title: 'SIP', cell: sipCell},
  {title: 'Talk', class: 'num', cell: (c) => (c.durations && c.durations.talk_ms !== null && c.durations.talk_ms !== undefined ? fmtMs(c.durations.talk_ms) : h('span', {class: 'muted'}, '—'))},
  {title: 'Campaign', cell: (c) => (c.campaign_id ? h('a', {href: `#/campaigns/${encodeURIComponent(c.campaign_id)}`, class: 'mono', title: c.campaign_id}, `${c.campaign_id.slice(0, 12)}…`) : h('span', {class: 'muted'}, '—'))},
];

function row(c, fresh) {
  const tr = h('tr', {'data-call': c.id, class: fresh ? 'fresh' : undefined},
    COLUMNS.map((col) => h('td', {class: col.class, 'data-label': col.title}, h('span', {class: 'cell'}, col.cell(c)))));
  tr.addEventListener('click', (e) => {
    if (e.target.closest('a, button') || (window.getSelection && String(window.getSelection()))) return;
    location.hash = `#/calls/${encodeURIComponent(c.id)}`;
  });
  return tr;
}

async function listView(main, _params, query) {
  const current = Object.fromEntries(FILTERS.map((k) => [k, query.get(k) || '']));
  const apiQuery = new URLSearchParams();
  for (const k of FILTERS) if (current[k]) apiQuery.set(k, current[k]);

  const form = h('form', {id: 'call-filters', class: 'filters', role: 'search'},
    h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'Status'), select('status', STATUSES, current.status, 'any status')),
    h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'Outcome'), select('outcome', OUTCOMES, current.outcome, 'any outcome')),
    h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'Campaign'),
      h('input', {name: 'campaign_id', id: 'f-campaign_id', value: current.campaign_id, placeholder: 'cmp_…', spellcheck: 'false', autocomplete: 'off'})),
    h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'Created from'),
      h('input', {name: 'created_from', id: 'f-created_from', type: 'datetime-local', step: 1, value: toLocalInput(parseWhen(current.created_from))})),
    h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'Created before'),
      h('input', {name: 'created_to', id: 'f-created_to', type: 'datetime-local', step: 1, value: toLocalInput(parseWhen(current.created_to))})),
    h('div', {class: 'filter-buttons'},
      h('button', {type: 'submit', class: 'primary'}, 'Search'),
      h('button', {type: 'button', id: 'filters-clear', onclick: () => { location.hash = '#/calls'; }}, 'Clear')));

  const body = h('tbody');
  const status = h('div', {id: 'calls-status'});
  const more = h('button', {type: 'button', id: 'calls-more', hidden: true}, 'Load more');
  const live = h('span', {class: 'live', id: 'calls-live'});
  const count = h('span', {class: 'muted small', id: 'calls-count'});
  const active = FILTERS.filter((k) => current[k]);

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const q = new URLSearchParams();
    for (const k of FILTERS) {
      let v = String(fd.get(k) || '').trim();
      if (k === 'created_from' || k === 'created_to') v = fromLocalInput(v);
      if (v) q.set(k, v);
    }
    const next = `#/calls${q.toString() ? `?${q}` : ''}`;
    if (location.hash === next) reload(); else location.hash = next;
  });

  mount(main,
    h('section', {class: 'card'},
      h('div', {class: 'spread'}, h('h1', 'Calls'), h('div', {class: 'row'}, count, live)),
      form,
      active.length ? h('p', {class: 'muted small'}, 'Filtered by ', active.map((k, i) => [i ? ', ' : '', h('code', null, k)]),
        '. Newest first.') : h('p', {class: 'muted small'}, 'Every call of the tenant, newest first.')),
    h('section', {class: 'card'},
      status,
      h('div', {class: 'table-wrap'}, h('table', {class: 'calls-table'},
        h('thead', h('tr', COLUMNS.map((c) => h('th', {class: c.class}, c.title)))), body)),
      h('div', {class: 'row more'}, more)));

  // The rows shown, newest first; the first page is re-read when the stream says something changed.
  let calls = [];
  let cursor = null;
  const ids = new Set();

  function draw(freshIds = new Set()) {
    if (!calls.length) {
      mount(body, h('tr', h('td', {colspan: COLUMNS.length, class: 'muted'}, active.length ? 'No calls match these filters.' : 'No calls yet.')));
    } else {
      mount(body, calls.map((c) => row(c, freshIds.has(c.id))));
    }
    more.hidden = !cursor;
    mount(count, `${calls.length}${cursor ? '+' : ''} call${calls.length === 1 ? '' : 's'}`);
  }

  async function page(cur) {
    const q = new URLSearchParams(apiQuery);
    q.set('limit', String(PAGE));
    if (cur) q.set('cursor', cur);
    return api(`/v1/calls?${q}`);
  }

  async function reload() {
    try {
      const p = await page(null);
      calls = p.items;
      cursor = p.next_cursor;
      ids.clear();
      for (const c of calls) ids.add(c.id);
      mount(status);
      draw();
    } catch (e) {
      mount(status, errorBox(e));
      calls = [];
      cursor = null;
      draw();
    }
  }

  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const p = await page(cursor);
      for (const c of p.items) if (!ids.has(c.id)) { ids.add(c.id); calls.push(c); }
      cursor = p.next_cursor;
      draw();
    } catch (e) {
      mount(status, errorBox(e));
    } finally {
      more.disabled = false;
    }
  });

  // Set when the page is left: a throttled re-read still due (or under way) then does nothing.
  let stopped = false;

  // Re-read the first page: new calls go on top, changed ones are replaced in place, and calls
  // that left the filter (a `ringing` call that ended) drop out of the span the page covers.
  const refresh = throttle(async () => {
    if (stopped) return;
    let p;
    try { p = await page(null); } catch (_) { return; }
    if (stopped) return;
    const fresh = new Set();
    const firstIds = new Set(p.items.map((c) => c.id));
    const oldest = p.items.length ? p.items[p.items.length - 1].created_at_us : Infinity;
    const rest = calls.filter((c) => !firstIds.has(c.id) && (p.next_cursor ? c.created_at_us < oldest : false));
    for (const c of p.items) if (!ids.has(c.id)) fresh.add(c.id);
    calls = [...p.items, ...rest];
    if (!calls.length || rest.length === 0) cursor = p.next_cursor;
    ids.clear();
    for (const c of calls) ids.add(c.id);
    draw(fresh);
  }, 1000);

  await reload();

  const sse = new URLSearchParams({kind: 'call.*,sip.ringing,sip.early_media,sip.answered'});
  if (current.campaign_id) sse.set('campaign_id', current.campaign_id);
  let prev = null;
  const stop = follow(sse.toString(), () => refresh(), (st) => {
    if (stopped) return;
    mount(live, st === 'live' ? 'live' : st === 'reconnecting' ? 'reconnecting…' : st === 'error' ? 'no live updates' : '');
    live.classList.toggle('on', st === 'live');
    // Back after a drop: the stream resumes after the last event it delivered, but the list is
    // a re-read of the first page, so read it again rather than trust the gap was quiet.
    if (st === 'live' && prev === 'reconnecting') refresh();
    prev = st;
  });
  return () => {
    stopped = true;
    if (refresh.cancel) refresh.cancel();
    stop();
  };
}

export const routes = [
  [/^\/calls\/([^/]+)$/, callView],
  [/^\/calls\/?$/, listView],
];
