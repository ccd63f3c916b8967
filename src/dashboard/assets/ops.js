// Operations: trunks and their live state, the tenant's limits and live usage, keys, webhooks
// with their deliveries and dead letters, and the do-not-call list. One page, one section each;
// a section the key may not read says which permission it lacks instead of failing.
//
// Every API value (trunk and key names, URLs, SIP reason phrases, delivery errors) reaches the
// page through h() as text.

import {h, mount, badge, time, fmtMs, fmtNum, errorBox, field, facts, throttle} from './dom.js';
import {api, whoami, can, cannot, follow, ApiError} from './api.js';

export const routes = [
  [/^\/ops\/webhooks\/([^/]+)$/, (main, [id], q) => opsView(main, {webhook: id, status: q.get('status')})],
  [/^\/ops\/?$/, (main, _p, q) => opsView(main, {webhook: q.get('webhook'), status: q.get('status')})],
];

const ROLES = ['owner', 'admin', 'operator', 'analyst', 'viewer'];
const DELIVERY_STATUSES = ['pending', 'delivered', 'dead'];
const SECTIONS = [['trunks', 'Trunks'], ['limits', 'Limits and usage'], ['keys', 'API keys'],
  ['webhooks', 'Webhooks'], ['suppressions', 'Do-not-call list']];

// ---------------------------------------------------------------------------------------------
// Small helpers

/** A table whose rows carry attributes (data-* hooks): columns [{title, cell(row), class}]. */
function grid(columns, rows, opts = {}) {
  const tbody = h('tbody', rows.length
    ? rows.map((r) => gridRow(columns, r, opts.rowAttrs))
    : h('tr', h('td', {colspan: columns.length, class: 'muted'}, opts.empty || 'Nothing here yet.')));
  const wrap = h('div', {class: 'table-wrap'}, h('table', {class: opts.class},
    h('thead', h('tr', columns.map((c) => h('th', {class: c.class}, c.title)))), tbody));
  return {wrap, tbody};
}

function gridRow(columns, r, rowAttrs) {
  return h('tr', rowAttrs ? rowAttrs(r) : null,
    columns.map((c) => h('td', {class: c.class, 'data-label': c.title}, c.cell(r))));
}

/** "in 43 s" / "12 s ago" for a time in µs since the epoch. */
function rel(us) {
  if (!us) return '';
  const d = us / 1000 - Date.now();
  return d >= 0 ? `in ${fmtMs(d)}` : `${fmtMs(-d)} ago`;
}

/** "an owner", "a viewer". */
function an(word) {
  return `${/^[aeiou]/i.test(word) ? 'an' : 'a'} ${word}`;
}

/** An object without a prototype, for tables keyed by API values (ids, metric names). */
function dict() {
  return Object.create(null);
}

/** table[key] for an API-provided key: own keys only, never the prototype chain. */
function lookup(table, key, fallback) {
  return table && Object.hasOwn(table, key) ? table[key] : fallback;
}

function mono(v) {
  return h('code', {class: 'ops-mono'}, v ?? '—');
}

function dash(v) {
  return v === null || v === undefined || v === '' ? h('span', {class: 'muted'}, '—') : String(v);
}

/** The note a section shows when the key lacks what it needs. */
function lacks(who, what, need) {
  return h('p', {class: 'notice ops-lacks', 'data-lacks': need},
    `Your ${who.role} key cannot ${what}: it lacks ${need}.`);
}

/** Runs a section's loader; a 403 becomes a "lacks" note, any other error an error box. */
async function guarded(body, who, what, need, load) {
  if (need && !need.includes(' ') && !can(need)) { mount(body, lacks(who, what, need)); return; }
  try {
    await load();
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      mount(body, h('p', {class: 'notice ops-lacks', 'data-lacks': need || 'forbidden'},
        `Your ${who.role} key cannot ${what}: ${e.message}.`));
    } else if (!(e instanceof ApiError && e.status === 401)) {
      mount(body, errorBox(e));
    }
  }
}

/** A write button: disabled with the reason when the key lacks `perm`. */
function writeButton(perm, attrs, ...children) {
  const ok = can(perm);
  return h('button', {type: 'button', ...attrs, disabled: !ok || attrs.disabled,
    title: ok ? attrs.title : cannot(perm)}, ...children);
}

/** An inline "Are you sure?" that replaces `cell`'s content until answered. */
function confirmInline(cell, question, yesAttrs, yesLabel, onYes, restore) {
  const status = h('span', {class: 'muted'});
  const yes = h('button', {type: 'button', class: 'danger', ...yesAttrs, onclick: async () => {
    yes.disabled = true; no.disabled = true;
    mount(status, 'Working…');
    try {
      await onYes();
    } catch (e) {
      mount(status, errorBox(e));
      no.disabled = false;
    }
  }}, yesLabel);
  const no = h('button', {type: 'button', 'data-confirm-cancel': '', onclick: restore}, 'No');
  mount(cell, h('span', {class: 'ops-confirm', role: 'group'}, h('span', {class: 'ops-question'}, question),
    yes, no, status));
  yes.focus();
}

/** Copies text to the clipboard, bounded: the browser may refuse (headless, no focus). */
async function copyText(text) {
  if (!navigator.clipboard || !navigator.clipboard.writeText) throw new Error('no clipboard in this browser');
  await Promise.race([navigator.clipboard.writeText(text),
    new Promise((_, rej) => setTimeout(() => rej(new Error('the clipboard did not answer')), 2000))]);
}

/** The once-shown secret of a new key or webhook, with a copy button. */
function secretBox(id, secret, what, onDismiss) {
  const code = h('code', {id, class: 'secret ops-secret-value'}, secret);
  const status = h('span', {class: 'muted ops-copy-status', role: 'status'});
  const copy = h('button', {type: 'button', class: 'primary', 'data-copy': id, onclick: async () => {
    try {
      await copyText(secret);
      mount(status, 'Copied to the clipboard.');
    } catch (_) {
      const sel = window.getSelection();
      if (sel) sel.selectAllChildren(code);
      mount(status, 'The browser refused the clipboard: the secret is selected, copy it with Ctrl+C (⌘C).');
    }
  }}, 'Copy');
  const box = h('div', {class: 'ops-secret', role: 'alert'},
    h('strong', `Secret of the ${what}`),
    h('p', 'Store it now: it will not be shown again. The server keeps only its hash.'),
    code,
    h('div', {class: 'row'}, copy,
      h('button', {type: 'button', onclick: () => { box.remove(); if (onDismiss) onDismiss(); }}, 'I stored it, hide it'),
      status));
  return box;
}

/** Parses Prometheus text: {name: [{labels, value}]}. */
function parseMetrics(text) {
  const out = dict();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = dict();
    for (const l of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    (out[m[1]] ||= []).push({labels, value: Number(m[3])});
  }
  return out;
}

async function fetchMetrics() {
  const res = await api('/metrics', {raw: true});
  return parseMetrics(await res.text());
}

function metricFor(metrics, name, trunk) {
  const s = (lookup(metrics, name) || []).find((x) => x.labels.trunk === trunk);
  return s ? s.value : null;
}

function section(id, title, ...intro) {
  const body = h('div', {class: 'ops-body'}, h('p', {class: 'muted'}, 'Loading…'));
  const tools = h('div', {class: 'row ops-tools'});
  const el = h('section', {id, class: 'card ops-section'},
    h('div', {class: 'spread ops-head'}, h('h2', title), tools),
    intro.length ? h('p', {class: 'muted ops-intro'}, ...intro) : null, body);
  return {el, body, tools};
}

// ---------------------------------------------------------------------------------------------
// The page

async function opsView(main, opts) {
  const who = await whoami();
  // `live`: what the sections want from the one live event stream: [{kinds, fn, state}].
  const ctx = {who, alive: true, stops: [], opts, live: []};
  const secs = {};
  for (const [id, title] of SECTIONS) secs[id] = section(id, title);
  mount(main,
    h('div', {class: 'spread'}, h('h1', 'Operations'),
      h('span', {class: 'muted'}, `Signed in with ${an(who.role).split(' ')[0]} `, h('strong', null, who.role), ' key ', mono(who.key_id))),
    h('nav', {class: 'ops-jump', 'aria-label': 'Sections'},
      SECTIONS.map(([id, title]) => h('button', {type: 'button', class: 'ops-jump-link', 'data-jump': id,
        onclick: () => document.getElementById(id)?.scrollIntoView({behavior: 'smooth', block: 'start'})}, title))),
    SECTIONS.map(([id]) => secs[id].el));

  trunksSection(ctx, secs.trunks);
  limitsSection(ctx, secs.limits);
  keysSection(ctx, secs.keys);
  webhooksSection(ctx, secs.webhooks);
  suppressionsSection(ctx, secs.suppressions);

  // One live stream for the page (new events only, no replay): each event goes to the
  // sections that asked for its kind (exact kinds: the stream carries only those). Each
  // section re-reads what it shows when the stream goes live again after a drop (and when it
  // first goes live after the section's first read), since events in between may be missed.
  if (ctx.live.length && can('events:read')) {
    const kinds = [...new Set(ctx.live.flatMap((l) => l.kinds))];
    ctx.stops.push(follow(`kind=${kinds.join(',')}`, (ev) => {
      for (const l of ctx.live) if (l.kinds.includes(ev.kind)) l.fn(ev);
    }, (s) => { for (const l of ctx.live) if (l.state) l.state(s); }));
  }

  return () => {
    ctx.alive = false;
    for (const stop of ctx.stops) { try { stop(); } catch (_) { /* ignore */ } }
  };
}

// ---------------------------------------------------------------------------------------------
// 1. Trunks

function trunksSection(ctx, sec) {
  const {who} = ctx;
  // Tables keyed by API ids have no prototype: an id like "constructor" or "__proto__" is just a key.
  const st = {trunks: [], routes: dict(), scripts: dict(), metrics: dict(), health: dict(), reg: dict(), open: dict(),
    dirty: new Set(), relist: false, ready: false, replaying: false};
  const updated = h('span', {class: 'live'});
  sec.tools.append(updated);

  const draw = () => {
    if (!ctx.alive) return;
    mount(sec.body, trunkTable(st), trunkDetails(st));
  };

  const loadRoutes = async (t) => {
    try {
      st.routes[t.id] = (await api(`/v1/trunks/${encodeURIComponent(t.id)}/routes`)).items;
    } catch (e) {
      st.routes[t.id] = e;
    }
  };

  const loadAll = async () => {
    const [list, metrics] = await Promise.all([api('/v1/trunks'), fetchMetrics().catch(() => ({}))]);
    st.trunks = list.items;
    st.metrics = metrics;
    await Promise.all(st.trunks.map(loadRoutes));
  };

  // Live: trunk.* events (the stored ones first, from the start of the tenant's timeline, then
  // new ones) keep each trunk's last health verdict per host and its last registration event;
  // a trunk whose event arrives is read again (GET /v1/trunks/{id}: its live state).
  const refresh = throttle(async () => {
    if (!ctx.alive) return;
    try {
      if (st.relist) {
        st.relist = false;
        st.dirty.clear();
        await loadAll();
        replayIfDown();
      } else {
        const ids = [...st.dirty];
        st.dirty.clear();
        const [fresh, metrics] = await Promise.all([
          Promise.all(ids.map((id) => api(`/v1/trunks/${encodeURIComponent(id)}`).catch(() => null))),
          fetchMetrics().catch(() => st.metrics)]);
        st.metrics = metrics;
        for (const t of fresh) {
          if (!t) { st.relist = true; continue; }
          const i = st.trunks.findIndex((x) => x.id === t.id);
          if (i >= 0) st.trunks[i] = t;
        }
      }
      updated.className = 'live on';
      mount(updated, 'live · updated ', new Date().toLocaleTimeString());
      draw();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) mount(sec.body, errorBox(e));
    }
  }, 1000);

  guarded(sec.body, who, 'read trunks', 'trunks:read', async () => {
    if (can('scripts:read')) {
      api('/v1/scripts').then((r) => {
        for (const s of r.items) st.scripts[s.id] = s.name;
        draw();
      }).catch(() => {});
    }
    await loadAll();
    draw();
    st.ready = true;
    replayIfDown();
    // Trunk events (or the stream's connection) that came during the first read.
    if (st.relist) refresh();
  });

  // Why a trunk is down (each host's last answer) is only in its trunk.health events, sent on
  // changes: when a trunk is down without its verdict here, read them back once from the start
  // of the timeline (few: changes only); the live stream brings the next ones.
  function replayIfDown() {
    if (st.replaying || !ctx.alive || !can('events:read')) return;
    if (!st.trunks.some((t) => t.state && t.state.health === 'down' && !Object.hasOwn(st.health, t.id))) return;
    st.replaying = true;
    ctx.stops.push(follow('kind=trunk.health&after=0', onEvent));
  }

  function onEvent(ev) {
    const d = ev.details || {};
    const id = d.trunk_id;
    if (!id) return;
    if (ev.kind === 'trunk.health') st.health[id] = {at: ev.at_unix_us, ...d};
    else if (ev.kind === 'trunk.registration') st.reg[id] = {at: ev.at_unix_us, ...d};
    else return;
    // Before the first read is done: read the list again once it is.
    if (!st.ready) { st.relist = true; return; }
    if (st.trunks.some((t) => t.id === id)) st.dirty.add(id);
    else st.relist = true;
    refresh();
  }

  if (can('trunks:read')) {
    ctx.live.push({kinds: ['trunk.health', 'trunk.registration'], fn: onEvent, state: (s) => {
      if (s === 'live') {
        updated.className = 'live on';
        if (!updated.textContent || updated.textContent.startsWith('reconnecting')) mount(updated, 'live');
        // (Re)connected: trunk events from before it (the first read, or a drop) may be
        // missed, so read the trunks again (their live state is on the trunk itself).
        st.relist = true;
        if (st.ready) refresh();
      }
      else if (s === 'reconnecting') { updated.className = 'live'; mount(updated, 'reconnecting…'); }
      else if (s === 'error') { updated.className = 'live'; mount(updated, 'not live'); }
    }});
  }
}

function regCell(t) {
  const r = (t.state && t.state.registration) || {state: 'unregistered'};
  const lines = [];
  if (r.state === 'registered') {
    lines.push(['until ', time(r.expires_at_us), ` (${rel(r.expires_at_us)})`]);
    lines.push([`granted ${r.granted_s} s; refreshed at 50–90 %`]);
  } else if (r.state === 'failed') {
    lines.push([h('strong', null, r.last_status ? `${r.last_status}` : 'no answer'), r.reason ? ` — ${r.reason}` : '']);
    lines.push(['next try ', time(r.next_try_at_us), ` (${rel(r.next_try_at_us)})`]);
  } else if (r.state === 'registering') {
    lines.push(['a REGISTER is on its way']);
  } else if (!t.register) {
    lines.push(['registration off']);
  } else {
    lines.push(['registration on, not registered']);
  }
  return [badge(r.state), lines.map((l) => h('div', {class: 'ops-sub'}, ...l))];
}

function healthCell(t, st) {
  const health = (t.state && t.state.health) || 'unknown';
  const since = t.state && t.state.health_since_us;
  const sent = metricFor(st.metrics, 'callplane_trunk_options_sent_total', t.id);
  const failed = metricFor(st.metrics, 'callplane_trunk_options_failed_total', t.id);
  const lines = [];
  if (!t.options_interval_s) lines.push(['no OPTIONS pings (options_interval_s not set)']);
  else lines.push([`OPTIONS every ${t.options_interval_s} s`]);
  if (since) lines.push(['since ', time(since), ` (${rel(since)})`]);
  if (sent !== null) lines.push([`${fmtNum(sent)} pings, ${fmtNum(failed ?? 0)} failed`]);
  const ev = st.health[t.id];
  if (ev && ev.hosts && health === 'down') {
    for (const [host, v] of Object.entries(ev.hosts)) {
      if (v && v.up === false) lines.push([h('span', {class: 'ops-why'}, `${host}: ${v.last ?? 'no answer'}`)]);
    }
  }
  return [badge(health), lines.map((l) => h('div', {class: 'ops-sub'}, ...l))];
}

function limitsText(t) {
  const parts = [];
  parts.push(t.max_concurrent ? `${fmtNum(t.max_concurrent)} calls` : 'calls unlimited');
  parts.push(t.max_cps ? `${t.max_cps} calls/s` : 'calls/s unlimited');
  return parts.map((p) => h('div', p));
}

function routesCell(t, st) {
  const r = st.routes[t.id];
  if (r instanceof Error) return h('span', {class: 'muted'}, r.message);
  if (!r) return h('span', {class: 'muted'}, '…');
  if (!r.length) return h('span', {class: 'muted'}, 'no inbound routes');
  return r.map((x) => h('div', {class: 'ops-sub'}, mono(x.did), ' → ',
    x.script_id ? (lookup(st.scripts, x.script_id) || x.script_id) : h('span', {class: 'muted'}, 'default handling')));
}

function trunkTable(st) {
  const cols = [
    {title: 'Trunk', cell: (t) => [h('strong', null, t.name), h('div', {class: 'ops-sub'}, mono(t.id))]},
    {title: 'Registration', cell: regCell},
    {title: 'Health', cell: (t) => healthCell(t, st)},
    {title: 'Hosts', cell: (t) => (t.hosts && t.hosts.length
      ? [t.hosts.map((x) => h('div', mono(x))), t.weighted ? h('div', {class: 'ops-sub'}, 'weighted') : null,
        t.outbound_proxy ? h('div', {class: 'ops-sub'}, 'via ', mono(t.outbound_proxy)) : null]
      : h('span', {class: 'muted'}, 'none (inbound only)'))},
    {title: 'Transport', class: 'ops-nw', cell: (t) => [t.transport, t.srtp && t.srtp !== 'off' ? h('div', {class: 'ops-sub'}, `SRTP ${t.srtp}`) : null]},
    {title: 'Limits', class: 'ops-nw', cell: limitsText},
    {title: 'Inbound routes', cell: (t) => routesCell(t, st)},
  ];
  return grid(cols, st.trunks, {
    class: 'ops-trunks',
    empty: 'No trunks yet. Trunks are created through the API (POST /v1/trunks, docs/trunks.md).',
    rowAttrs: (t) => ({dataset: {trunk: t.id}, class: trunkTrouble(t) ? 'ops-trouble' : undefined}),
  }).wrap;
}

function trunkTrouble(t) {
  const s = t.state || {};
  return s.health === 'down' || (s.registration && s.registration.state === 'failed')
    || (t.register && s.registration && s.registration.state === 'unregistered');
}

function trunkDetails(st) {
  if (!st.trunks.length) return null;
  return h('div', {class: 'ops-details'}, h('h3', 'Details'),
    st.trunks.map((t) => {
      const trouble = trunkTrouble(t);
      const d = h('details', {class: 'ops-trunk-detail', 'data-trunk-detail': t.id,
        open: st.open[t.id] ?? trouble, ontoggle: () => { st.open[t.id] = d.open; }},
      h('summary', h('strong', null, t.name), ' ', badge((t.state?.registration?.state) || 'unregistered'), ' ',
        badge(t.state?.health || 'unknown'), trouble ? h('span', {class: 'ops-why'}, ' needs attention') : null),
      trunkDetailBody(t, st));
      return d;
    }));
}

function trunkDetailBody(t, st) {
  const reg = st.reg[t.id];
  const health = st.health[t.id];
  const regSent = metricFor(st.metrics, 'callplane_trunk_registrations_sent_total', t.id);
  const regFailed = metricFor(st.metrics, 'callplane_trunk_registrations_failed_total', t.id);
  const list = (v) => (v && v.length ? v.join(', ') : null);
  const settings = facts([
    ['Id', mono(t.id)],
    ['Hosts', dash(list(t.hosts))],
    ['Transport', dash(t.transport)],
    t.outbound_proxy ? ['Outbound proxy', mono(t.outbound_proxy)] : null,
    ['Registration', t.register ? `on, ${t.register_expires_s || 3600} s requested` : 'off'],
    ['Digest user', dash(t.auth_username || t.username)],
    ['Password', t.has_password ? 'stored (never shown)' : 'none'],
    t.realm ? ['Realm', dash(t.realm)] : null,
    ['IP authentication', dash(list(t.allowed_sources))],
    ['Codecs', dash(list(t.codecs)) ],
    ['Caller id', [t.caller_id_mode || 'from', t.from_user ? ` · ${t.from_user}` : '',
      t.caller_id_pool && t.caller_id_pool.length ? ` · pool of ${t.caller_id_pool.length}` : '']],
    ['URI style', dash(t.uri_style)],
    ['Ring timeout', t.ring_timeout_s ? `${t.ring_timeout_s} s` : 'default'],
    ['OPTIONS interval', t.options_interval_s ? `${t.options_interval_s} s` : 'off'],
    ['Limits', [t.max_concurrent ? `${t.max_concurrent} live calls` : 'no call limit', ' · ',
      t.max_cps ? `${t.max_cps} calls/s` : 'no rate limit']],
    regSent !== null ? ['REGISTER sent / failed', `${fmtNum(regSent)} / ${fmtNum(regFailed ?? 0)}`] : null,
    ['Created', time(t.created_at)],
    ['Updated', time(t.updated_at)],
  ]);
  const hostRows = health && health.hosts ? Object.entries(health.hosts).map(([host, v]) => ({host, ...v})) : [];
  const hostTable = health
    ? [h('p', {class: 'muted'}, 'Last health verdict per host (sent on changes only), at ', time(health.at), ':'),
      grid([
        {title: 'Host', cell: (r) => mono(r.host)},
        {title: 'State', cell: (r) => badge(r.up === true ? 'up' : r.up === false ? 'down' : 'unknown')},
        {title: 'Failures in a row', class: 'num', cell: (r) => fmtNum(r.failures)},
        {title: 'Last answer', cell: (r) => dash(r.last)},
      ], hostRows).wrap]
    : h('p', {class: 'muted'}, t.options_interval_s ? 'No health verdict yet.' : 'Not pinged: set options_interval_s to watch this trunk.');
  const regInfo = reg
    ? h('p', {class: 'ops-sub'}, 'Last registration event ', time(reg.at), ': ', badge(reg.state),
      reg.status ? ` ${reg.status}` : '', reg.expires ? `, ${reg.expires} s granted` : '',
      reg.reason ? ` — ${reg.reason}` : '', reg.next_try_at ? [', next try ', time(reg.next_try_at)] : '')
    : null;
  return h('div', {class: 'grid two ops-detail-grid'},
    h('div', h('h4', 'Settings'), settings),
    h('div', h('h4', 'Health'), hostTable, h('h4', 'Registration'), regCell(t), regInfo));
}

// ---------------------------------------------------------------------------------------------
// 2. Limits and live usage

function limitsSection(ctx, sec) {
  const {who} = ctx;
  const admin = who.role === 'owner' || who.role === 'admin';
  const st = {limits: null, usage: null, limitsError: null, ready: false};
  const stamp = h('span', {class: 'live'});
  const refreshBtn = h('button', {type: 'button', id: 'refresh-usage', onclick: () => loadUsage()}, 'Refresh');
  sec.tools.append(stamp, refreshBtn);
  const figures = h('div');
  const formBox = h('div');
  mount(sec.body, figures, formBox);

  const draw = () => {
    if (!ctx.alive) return;
    const l = st.limits;
    const u = st.usage || {};
    const limit = l ? l.max_concurrent : undefined;
    const active = u.campaign_live;
    // Not every campaign was read (capped, listing cut short, a read failed): the sum is a
    // lower bound of the live calls, so the free slots are an upper bound. Said so on the page.
    const lower = !!u.bound;
    let free;
    if (limit === undefined || active === undefined) free = '—';
    else if (limit === null) free = 'no limit';
    else free = `${lower ? 'at most ' : ''}${fmtNum(Math.max(0, limit - active))}`;
    const stat = (k, v, attrs, hint) => h('div', {class: 'stat'}, h('span', {class: 'v', ...attrs}, v),
      h('span', {class: 'k'}, k), hint ? h('span', {class: 'k ops-hint'}, hint) : null);
    mount(figures,
      st.limitsError,
      h('div', {class: 'ops-stats ops-main'},
        stat('Limit: live campaign calls', limit === undefined ? '—' : limit === null ? 'none' : fmtNum(limit),
          {'data-limit': 'max_concurrent'}, limit === null ? 'no tenant limit: only the system limit (serve flags)' : 'the tenant\'s max_concurrent'),
        stat('Active campaign calls', active === undefined ? '—' : `${lower ? 'at least ' : ''}${fmtNum(active)}`,
          {'data-usage': 'active_calls'}, u.campaignError || u.campaignNote),
        stat('Free slots', free, {'data-usage': 'free_slots'}, 'limit − active: campaign calls that may start now')),
      u.campaignBoundNote ? h('p', {class: 'notice ops-bound', 'data-usage-bound': ''}, u.campaignBoundNote) : null,
      limit !== undefined && limit !== null && active !== undefined
        ? h('div', {class: 'ops-meter'}, meter(active, limit, lower)) : null,
      h('div', {class: 'ops-stats ops-minor'},
        stat('New calls per second', l ? (l.max_cps === null ? 'unlimited' : String(l.max_cps)) : '—',
          {'data-limit': 'max_cps'}, 'the tenant\'s max_cps'),
        stat('Attempts per number', l ? `${l.number_cap} per ${fmtMs(l.number_cap_window_s * 1000)}` : '—',
          {'data-limit': 'number_cap'}, 'number_cap within number_cap_window_s'),
        stat('Active calls on this node', u.node === undefined || u.node === null ? '—' : fmtNum(u.node),
          {'data-usage': 'node_calls'}, 'every tenant, API calls too (/metrics)')));
  };

  let usageBusy = false;
  let usageAgain = false;
  const loadUsage = async () => {
    // One read at a time; a request meanwhile runs once more after it.
    if (usageBusy) { usageAgain = true; return; }
    usageBusy = true;
    refreshBtn.disabled = true;
    try {
      const u = {};
      const jobs = [];
      jobs.push(fetchMetrics().then((m) => { u.node = (lookup(m, 'callplane_active_calls') || [])[0]?.value ?? null; })
        .catch(() => { u.node = null; }));
      if (can('campaigns:read')) {
        jobs.push(campaignLive().then((r) => {
          u.campaign_live = r.live;
          u.bound = r.bound;
          u.campaignNote = r.note;
          u.campaignBoundNote = r.boundNote;
        }).catch((e) => { u.campaignError = e.message; }));
      } else {
        u.campaignError = cannot('campaigns:read');
      }
      await Promise.all(jobs);
      st.usage = u;
      mount(stamp, 'updated ', new Date().toLocaleTimeString());
      draw();
    } finally {
      usageBusy = false;
      refreshBtn.disabled = false;
    }
    if (usageAgain && ctx.alive) { usageAgain = false; again(); }
  };

  (async () => {
    if (admin) {
      try {
        st.limits = await api('/v1/settings/limits');
      } catch (e) {
        st.limitsError = e instanceof ApiError && e.status === 403
          ? lacks(who, "read the tenant's limits", 'an owner or admin role') : errorBox(e);
      }
    } else {
      st.limitsError = h('p', {class: 'notice ops-lacks', 'data-lacks': 'owner or admin'},
        `Your ${who.role} key cannot read or change the tenant's limits: only owner and admin keys can. Live usage is shown below.`);
    }
    draw();
    if (st.limits) mount(formBox, limitsForm(st, draw));
    await loadUsage();
    st.ready = true;
  })().catch((e) => { if (ctx.alive) mount(sec.body, errorBox(e)); });

  // Live: a call being placed or ending changes the usage: read it again (at most every 2 s).
  // The page's stream follows only the kinds its sections ask for (here call.created,
  // call.completed, call.failed), not every call event. When the stream (re)connects, events
  // from before it may be missed: read the usage again too.
  // loadUsage runs one read at a time (a request during a read runs once it ends), so this
  // also holds during the first read.
  const again = throttle(() => { if (ctx.alive) loadUsage(); }, 2000);
  ctx.live.push({kinds: ['call.created', 'call.completed', 'call.failed'], fn: again,
    state: (s) => {
      stamp.className = s === 'live' ? 'live on' : 'live';
      if (s === 'live') again();
    }});
}

function meter(active, limit, lower) {
  const f = limit > 0 ? Math.min(1, active / limit) : 0;
  const fill = h('span', {class: 'bar-fill'});
  fill.style.width = `${(f * 100).toFixed(1)}%`;
  if (f >= 0.9) fill.classList.add('ops-full');
  const text = `${lower ? 'at least ' : ''}${fmtNum(active)} of ${fmtNum(limit)} slots in use`;
  return h('span', {class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.floor(f * 100), title: text}, fill, h('span', {class: 'bar-label'}, text));
}

// The usage reads are bounded: the campaign listing is read LIST_PAGES pages deep, and the
// progress of at most MAX_LIVE_CAMPAIGNS running or paused campaigns, POOL at a time.
const LIST_PAGES = 2;
const LIST_PAGE_SIZE = 500;
const MAX_LIVE_CAMPAIGNS = 50;
const POOL = 4;

/** Runs `fn` over `items`, at most `n` at once. */
async function pool(items, n, fn) {
  let i = 0;
  const workers = Array.from({length: Math.min(n, items.length)}, async () => {
    while (i < items.length) {
      const item = items[i++];
      await fn(item);
    }
  });
  await Promise.all(workers);
}

/**
 * The tenant's live campaign calls: the sum of progress.live_calls (its contacts being dialed
 * or on a call) of its running and paused campaigns. {live, bound, note, boundNote}: `bound`
 * when not every such campaign was read (then `live` is a lower bound, and boundNote says why).
 */
async function campaignLive() {
  const items = [];
  let cursor = null;
  let pages = 0;
  do {
    const page = await api(`/v1/campaigns?limit=${LIST_PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...page.items);
    cursor = page.next_cursor;
    pages += 1;
  } while (cursor && pages < LIST_PAGES);
  const listCut = !!cursor;
  const live = items.filter((c) => c.status === 'running' || c.status === 'paused');
  const read = live.slice(0, MAX_LIVE_CAMPAIGNS);
  let sum = 0;
  let failed = 0;
  await pool(read, POOL, async (c) => {
    try {
      const full = await api(`/v1/campaigns/${encodeURIComponent(c.id)}`);
      sum += Number(full && full.progress && full.progress.live_calls) || 0;
    } catch (_) {
      failed += 1;
    }
  });
  const n = live.length;
  const reasons = [];
  if (listCut) reasons.push(`only the newest ${fmtNum(items.length)} campaigns were listed`);
  if (n > read.length) reasons.push(`only ${fmtNum(read.length)} of the ${fmtNum(n)} running or paused campaigns were read (the newest)`);
  if (failed) reasons.push(`${fmtNum(failed)} of them could not be read`);
  const plural = (k) => `${fmtNum(k)} running or paused campaign${k === 1 ? '' : 's'}`;
  return {
    live: sum,
    bound: reasons.length > 0,
    note: reasons.length
      ? `a lower bound: the live calls of ${fmtNum(read.length - failed)} campaigns read`
      : `live calls of the ${plural(n)}`,
    boundNote: reasons.length
      ? `Active campaign calls is a lower bound and free slots an upper bound: ${reasons.join('; ')}. Each campaign's page shows its own live calls.`
      : null,
  };
}

function limitsForm(st, draw) {
  const l = st.limits;
  const num = (name, value, attrs) => h('input', {name, type: 'number', value: value ?? '', ...attrs});
  const mc = num('max_concurrent', l.max_concurrent, {min: 1, max: 100000, step: 1, placeholder: 'none', inputmode: 'numeric'});
  const cps = num('max_cps', l.max_cps, {min: 0.001, max: 10000, step: 'any', placeholder: 'unlimited', inputmode: 'decimal'});
  const cap = num('number_cap', l.number_cap, {min: 1, max: 100, step: 1, required: true, inputmode: 'numeric'});
  const win = num('number_cap_window_s', l.number_cap_window_s, {min: 60, max: 2592000, step: 1, required: true, inputmode: 'numeric'});
  const status = h('div', {role: 'status'});
  const save = h('button', {type: 'submit', class: 'primary', id: 'save-limits'}, 'Save limits');
  const form = h('form', {id: 'limits-form', class: 'ops-form'},
    field('Live campaign calls, at most', mc, 'empty: the system limit only'),
    field('Calls per second, at most', cps, 'empty: unlimited'),
    field('Attempts per number', cap, '1–100'),
    field('Within (seconds)', win, '60–2592000; 86400 is a day'),
    h('div', {class: 'ops-form-actions'}, save), status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const opt = (v) => (v.trim() === '' ? null : Number(v));
    save.disabled = true;
    mount(status);
    try {
      st.limits = await api('/v1/settings/limits', {method: 'PUT', body: {
        max_concurrent: opt(mc.value), max_cps: opt(cps.value),
        number_cap: Number(cap.value), number_cap_window_s: Number(win.value)}});
      mount(status, h('p', {class: 'notice'}, 'Saved: the campaign worker applies them at once.'));
      draw();
    } catch (err) {
      mount(status, errorBox(err));
    } finally {
      save.disabled = false;
    }
  });
  return h('details', {class: 'ops-edit', open: true}, h('summary', 'Change the limits'), form);
}

// ---------------------------------------------------------------------------------------------
// 3. Keys

const rank = (role) => ROLES.indexOf(role);

/** Whether this key may create or revoke a key of `role` (as the server's may_grant). */
function mayGrant(who, role) {
  return can('keys:write') && rank(who.role) <= rank(role) && (role !== 'owner' || who.role === 'owner');
}

function keysSection(ctx, sec) {
  const {who} = ctx;
  const secretSlot = h('div');
  const listBox = h('div', h('p', {class: 'muted'}, 'Loading…'));
  let fresh = null;

  const load = async () => {
    const keys = (await api('/v1/keys')).items;
    if (!ctx.alive) return;
    mount(listBox, keyTable(keys));
  };

  const keyTable = (keys) => grid([
    {title: 'Name', cell: (k) => [h('strong', null, k.name), k.id === who.key_id ? h('span', {class: 'ops-tag'}, 'this key (signed in)') : null]},
    {title: 'Status', class: 'ops-nw', cell: (k) => (k.revoked_at ? [badge('revoked'), h('div', {class: 'ops-sub'}, time(k.revoked_at))] : badge('active'))},
    {title: 'Prefix', class: 'ops-nw', cell: (k) => mono(`${k.prefix}…`)},
    {title: 'Role', class: 'ops-nw', cell: (k) => k.role},
    {title: 'Created', class: 'ops-nw', cell: (k) => time(k.created_at)},
    // Shown only when the API reports it (it does not today).
    keys.some((k) => 'last_used_at' in k) ? {title: 'Last used', class: 'ops-nw', cell: (k) => time(k.last_used_at)} : null,
    {title: '', cell: (k) => revokeCell(k)},
  ].filter(Boolean), keys, {
    class: 'ops-keys',
    rowAttrs: (k) => ({dataset: {key: k.id},
      class: [k.revoked_at ? 'ops-revoked' : '', k.id === fresh ? 'ops-fresh' : '', k.id === who.key_id ? 'ops-self' : ''].join(' ').trim() || undefined}),
  }).wrap;

  const revokeCell = (k) => {
    if (k.revoked_at) return h('span', {class: 'muted'}, '—');
    const cell = h('span', {class: 'ops-actions'});
    const self = k.id === who.key_id;
    const restore = () => mount(cell, button());
    const button = () => {
      let disabled = false;
      let title;
      if (!can('keys:write')) { disabled = true; title = cannot('keys:write'); }
      else if (!mayGrant(who, k.role)) { disabled = true; title = `${an(who.role)} key may not revoke ${an(k.role)} key`; }
      return h('button', {type: 'button', class: 'danger', 'data-revoke': k.id, disabled, title,
        onclick: () => confirmInline(cell,
          self ? h('span', {class: 'ops-warn'}, 'This is the key this page is signed in with: revoking it signs you out at once, and any client using it stops working. Revoke it anyway?')
            : `Revoke “${k.name}”? It stops working at once.`,
          {'data-revoke-confirm': k.id}, self ? 'Yes, revoke my own key' : 'Yes, revoke',
          async () => {
            await api(`/v1/keys/${encodeURIComponent(k.id)}`, {method: 'DELETE'});
            await load();
          }, restore)}, 'Revoke');
    };
    return mount(cell, button());
  };

  guarded(sec.body, who, 'read API keys', 'keys:read', async () => {
    mount(sec.body, h('div', {class: 'ops-create'}, keyForm()), secretSlot, listBox);
    await load();
  });

  function keyForm() {
    const writable = can('keys:write');
    const grantable = ROLES.filter((r) => mayGrant(who, r));
    const name = h('input', {name: 'name', type: 'text', required: true, maxlength: 128, placeholder: 'dialer', autocomplete: 'off', disabled: !writable});
    const role = h('select', {name: 'role', disabled: !writable},
      (grantable.length ? grantable : ROLES).map((r) => h('option', {value: r, selected: r === (grantable.includes('operator') ? 'operator' : grantable[grantable.length - 1])}, r)));
    const status = h('div', {role: 'status'});
    const create = h('button', {type: 'submit', class: 'primary', id: 'create-key', disabled: !writable,
      title: writable ? undefined : cannot('keys:write')}, 'Create key');
    const form = h('form', {id: 'key-form', class: 'ops-form'},
      field('Name', name, 'to tell keys apart'),
      field('Role', role, who.role === 'owner' ? 'any role' : 'at most your own; owner keys only by an owner'),
      h('div', {class: 'ops-form-actions'}, create), status);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      create.disabled = true;
      mount(status);
      try {
        const k = await api('/v1/keys', {body: {name: name.value.trim(), role: role.value}});
        fresh = k.id;
        mount(secretSlot, secretBox('new-key-secret', k.secret, `new ${k.role} key “${k.name}”`, () => { fresh = null; }));
        name.value = '';
        await load();
      } catch (err) {
        mount(status, errorBox(err));
      } finally {
        create.disabled = false;
      }
    });
    return [writable ? null : lacks(who, 'create or revoke keys', 'keys:write'), h('details', {class: 'ops-edit', open: writable}, h('summary', 'Create a key'), form)];
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Webhooks and deliveries

function webhooksSection(ctx, sec) {
  const {who, opts} = ctx;
  const st = {hooks: [], dead: dict(), selected: opts.webhook || null,
    status: DELIVERY_STATUSES.includes(opts.status) ? opts.status : ''};
  const secretSlot = h('div');
  const listBox = h('div');
  const deliveries = h('div', {id: 'deliveries', class: 'ops-deliveries'});

  const load = async () => {
    st.hooks = (await api('/v1/webhooks')).items;
    await Promise.all(st.hooks.map(async (w) => {
      try {
        const r = await api(`/v1/webhooks/${encodeURIComponent(w.id)}/deliveries?status=dead&limit=500`);
        st.dead[w.id] = r.items.length;
      } catch (_) {
        st.dead[w.id] = null;
      }
    }));
    if (!ctx.alive) return;
    if (!st.hooks.some((w) => w.id === st.selected)) st.selected = st.hooks.length ? st.hooks[0].id : null;
    drawList();
    await loadDeliveries();
  };

  const select = (id, status) => {
    st.selected = id;
    if (status !== undefined) st.status = status;
    const q = st.status ? `?status=${st.status}` : '';
    history.replaceState(null, '', `#/ops/webhooks/${encodeURIComponent(id)}${q}`);
    drawList();
    loadDeliveries();
  };

  const drawList = () => {
    mount(listBox, grid([
      {title: 'URL', cell: (w) => [h('span', {class: 'ops-url'}, w.url), w.description ? h('div', {class: 'ops-sub'}, w.description) : null]},
      {title: 'Events', cell: (w) => (w.events.length ? w.events.map((k) => h('code', {class: 'ops-chip'}, k)) : h('span', {class: 'muted'}, 'all events'))},
      {title: 'State', cell: (w) => (w.active ? badge('active') : h('span', {class: 'badge'}, 'inactive'))},
      {title: 'Dead letters', class: 'num', cell: (w) => (st.dead[w.id]
        ? h('button', {type: 'button', class: 'ops-deadlink', 'data-dead': w.id,
          onclick: (e) => { e.stopPropagation(); select(w.id, 'dead'); }}, badge('dead'), ` ${st.dead[w.id] >= 500 ? '500+' : st.dead[w.id]}`)
        : st.dead[w.id] === 0 ? '0' : '—')},
      {title: 'Created', class: 'ops-nw', cell: (w) => time(w.created_at)},
      {title: '', cell: (w) => h('button', {type: 'button', 'data-show-deliveries': w.id,
        'aria-current': w.id === st.selected ? 'true' : undefined,
        onclick: (e) => { e.stopPropagation(); select(w.id); }}, w.id === st.selected ? 'Showing deliveries' : 'Deliveries')},
    ], st.hooks, {
      class: 'ops-webhooks',
      empty: 'No webhooks yet.',
      rowAttrs: (w) => ({dataset: {webhook: w.id}, class: w.id === st.selected ? 'ops-selected' : undefined,
        onclick: () => { if (st.selected !== w.id) select(w.id); }}),
    }).wrap);
  };

  const loadDeliveries = async () => {
    const w = st.hooks.find((x) => x.id === st.selected);
    if (!w) { mount(deliveries); return; }
    const filter = h('select', {id: 'delivery-status', name: 'status', 'aria-label': 'Delivery status',
      onchange: () => select(w.id, filter.value)},
    h('option', {value: '', selected: !st.status}, 'all'),
    DELIVERY_STATUSES.map((s) => h('option', {value: s, selected: st.status === s}, s === 'dead' ? 'dead (dead letters)' : s)));
    const refresh = h('button', {type: 'button', id: 'refresh-deliveries', onclick: () => loadDeliveries()}, 'Refresh');
    const body = h('div', h('p', {class: 'muted'}, 'Loading…'));
    mount(deliveries,
      h('div', {class: 'spread'}, h('h3', 'Deliveries to ', h('span', {class: 'ops-url'}, w.url)),
        h('div', {class: 'row'}, h('label', {class: 'row', for: 'delivery-status'}, 'Status '), filter, refresh)),
      h('p', {class: 'muted ops-intro'}, 'The 50 newest, newest first. A failed attempt is retried with backoff; after the last one the delivery is dead (a dead letter) until redelivered.'),
      body);
    try {
      const q = new URLSearchParams({limit: '50'});
      if (st.status) q.set('status', st.status);
      const items = (await api(`/v1/webhooks/${encodeURIComponent(w.id)}/deliveries?${q}`)).items;
      if (!ctx.alive || st.selected !== w.id) return;
      mount(body, deliveryTable(w, items));
    } catch (e) {
      mount(body, errorBox(e));
    }
  };

  const deliveryCols = (w) => [
    {title: 'Event', class: 'ops-nw', cell: (d) => {
      const p = d.payload && typeof d.payload === 'object' ? d.payload : {};
      return [h('div', mono(String(d.event_id)), ' ', p.type || p.kind || ''),
        p.call_id ? h('div', {class: 'ops-sub'}, h('a', {href: `#/calls/${encodeURIComponent(p.call_id)}`}, p.call_id)) : null];
    }},
    {title: 'Status', class: 'ops-nw', cell: (d) => badge(d.status)},
    {title: 'Attempts', class: 'num', cell: (d) => fmtNum(d.attempts)},
    {title: 'Last status', class: 'num ops-nw', cell: (d) => dash(d.last_status)},
    {title: 'Last error', cell: (d) => (d.last_error ? h('span', {class: 'ops-err'}, d.last_error) : h('span', {class: 'muted'}, '—'))},
    {title: 'Created', class: 'ops-nw', cell: (d) => time(d.created_at)},
    {title: 'Delivered / next try', cell: (d) => (d.delivered_at ? time(d.delivered_at)
      : d.next_attempt_at ? ['next ', time(d.next_attempt_at)] : h('span', {class: 'muted'}, '—'))},
    {title: '', cell: (d) => actionCell(w, d)},
  ];

  const deliveryTable = (w, items) => {
    const cols = deliveryCols(w);
    return grid(cols, items, {
      class: 'ops-delivery-table',
      empty: st.status ? `No ${st.status} deliveries.` : 'No deliveries yet.',
      rowAttrs: (d) => ({dataset: {delivery: d.id}}),
    }).wrap;
  };

  const replaceRow = (w, d, note) => {
    const old = deliveries.querySelector(`tr[data-delivery="${CSS.escape(d.id)}"]`);
    if (!old) return;
    const tr = gridRow(deliveryCols(w), d, (x) => ({dataset: {delivery: x.id}, class: 'ops-fresh'}));
    if (note) tr.lastChild.append(h('div', {class: 'ops-sub'}, note));
    old.replaceWith(tr);
  };

  // The body sent, in a row of its own under the delivery (toggled).
  const bodyButton = (d) => h('button', {type: 'button', class: 'ops-small', 'data-body': d.id, onclick: (e) => {
    const tr = e.currentTarget.closest('tr');
    const next = tr.nextElementSibling;
    if (next && next.classList.contains('ops-body-row')) { next.remove(); return; }
    tr.after(h('tr', {class: 'ops-body-row'}, h('td', {colspan: tr.children.length},
      h('pre', {class: 'ops-json'}, JSON.stringify(d.payload, null, 2)))));
  }}, 'Body');

  const actionCell = (w, d) => {
    if (d.status !== 'delivered' && d.status !== 'dead') {
      return h('span', {class: 'ops-actions'}, bodyButton(d), h('span', {class: 'muted'}, d.status === 'pending' ? 'queued' : ''));
    }
    return h('span', {class: 'ops-actions'}, bodyButton(d), writeButton('webhooks:write', {'data-redeliver': d.id,
      title: 'send it again now (same body and event id)',
      onclick: async (e) => {
        const b = e.currentTarget;
        b.disabled = true;
        try {
          const fresh = await api(`/v1/webhooks/${encodeURIComponent(w.id)}/deliveries/${encodeURIComponent(d.id)}/redeliver`, {method: 'POST'});
          replaceRow(w, fresh, 'queued again');
          // One look at the outcome a moment later (not a loop): the dispatcher sends it within moments.
          setTimeout(async () => {
            if (!ctx.alive || st.selected !== w.id) return;
            try {
              const all = (await api(`/v1/webhooks/${encodeURIComponent(w.id)}/deliveries?limit=500`)).items;
              const now = all.find((x) => x.id === d.id);
              if (now) replaceRow(w, now, now.status === 'pending' ? 'still pending (a webhook rests after failed attempts): Refresh to see the outcome' : 'sent again just now');
            } catch (_) { /* the row keeps its state; Refresh reads it again */ }
          }, 2500);
        } catch (err) {
          b.disabled = false;
          b.after(errorBox(err));
        }
      }}, 'Redeliver'));
  };

  const webhookForm = () => {
    const writable = can('webhooks:write');
    const url = h('input', {name: 'url', type: 'url', required: true, maxlength: 2000, placeholder: 'https://example.com/callplane', autocomplete: 'off', disabled: !writable});
    const events = h('input', {name: 'events', type: 'text', placeholder: 'call.*, recording.ready', autocomplete: 'off', disabled: !writable});
    const desc = h('input', {name: 'description', type: 'text', maxlength: 500, placeholder: 'optional', autocomplete: 'off', disabled: !writable});
    const status = h('div', {role: 'status'});
    const create = h('button', {type: 'submit', class: 'primary', id: 'create-webhook', disabled: !writable,
      title: writable ? undefined : cannot('webhooks:write')}, 'Create webhook');
    const form = h('form', {id: 'webhook-form', class: 'ops-form'},
      field('URL', url, 'http:// or https://; internal addresses are refused unless the server allows them'),
      field('Events', events, 'comma-separated kinds; empty: all; call.* matches a prefix'),
      field('Description', desc),
      h('div', {class: 'ops-form-actions'}, create), status);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      create.disabled = true;
      mount(status);
      try {
        const body = {url: url.value.trim(),
          events: events.value.split(',').map((x) => x.trim()).filter(Boolean)};
        if (desc.value.trim()) body.description = desc.value.trim();
        const w = await api('/v1/webhooks', {body});
        mount(secretSlot, secretBox('new-webhook-secret', w.secret, `new webhook to ${w.url}`, null));
        url.value = ''; events.value = ''; desc.value = '';
        st.selected = w.id;
        await load();
      } catch (err) {
        mount(status, errorBox(err));
      } finally {
        create.disabled = false;
      }
    });
    return [writable ? null : lacks(who, 'create webhooks or redeliver', 'webhooks:write'), h('details', {class: 'ops-edit', open: writable}, h('summary', 'Create a webhook'), form)];
  };

  guarded(sec.body, who, 'read webhooks or their deliveries', 'webhooks:read', async () => {
    mount(sec.body, h('div', {class: 'ops-create'}, webhookForm()), secretSlot, listBox, deliveries);
    await load();
    if (opts.webhook && ctx.alive) deliveries.scrollIntoView({block: 'start'});
  });
}

// ---------------------------------------------------------------------------------------------
// 5. Suppressions

function suppressionsSection(ctx, sec) {
  const {who} = ctx;
  const st = {items: [], cursor: null};
  const listBox = h('div');
  const more = h('div', {class: 'row'});

  const cols = [
    {title: 'Number', class: 'ops-nw', cell: (s) => mono(s.number)},
    {title: 'Reason', cell: (s) => dash(s.reason)},
    {title: 'Source', cell: (s) => h('span', {class: 'badge'}, s.source)},
    {title: 'Added', class: 'ops-nw', cell: (s) => time(s.created_at)},
    {title: '', cell: (s) => removeCell(s)},
  ];

  const draw = () => {
    mount(listBox, grid(cols, st.items, {class: 'ops-suppressions', empty: 'No numbers on the list.',
      rowAttrs: (s) => ({dataset: {suppression: s.number}})}).wrap);
    mount(more, st.cursor ? h('button', {type: 'button', id: 'more-suppressions', onclick: (e) => {
      e.currentTarget.disabled = true;
      page(false).catch((err) => mount(more, errorBox(err)));
    }}, 'Load more') : null,
    h('span', {class: 'muted'}, `${fmtNum(st.items.length)} shown${st.cursor ? ', more on the list' : ''}`));
  };

  const page = async (first) => {
    const q = new URLSearchParams({limit: '100'});
    if (!first && st.cursor) q.set('cursor', st.cursor);
    const r = await api(`/v1/suppressions?${q}`);
    if (first) st.items = [];
    st.items.push(...r.items);
    st.cursor = r.next_cursor;
    if (ctx.alive) draw();
  };

  const removeCell = (s) => {
    const cell = h('span', {class: 'ops-actions'});
    const button = () => writeButton('campaigns:write', {class: 'danger', 'data-unsuppress': s.number,
      onclick: () => confirmInline(cell, `Remove ${s.number}? Campaigns may call it again.`,
        {'data-unsuppress-confirm': s.number}, 'Yes, remove', async () => {
          await api(`/v1/suppressions/${encodeURIComponent(s.number)}`, {method: 'DELETE'});
          st.items = st.items.filter((x) => x.number !== s.number);
          draw();
        }, () => mount(cell, button()))}, 'Remove');
    return mount(cell, button());
  };

  const form = () => {
    const writable = can('campaigns:write');
    const number = h('input', {name: 'number', type: 'tel', required: true, maxlength: 64, placeholder: '+14155550100', autocomplete: 'off', disabled: !writable});
    const reason = h('input', {name: 'reason', type: 'text', maxlength: 256, placeholder: 'asked on the phone', autocomplete: 'off', disabled: !writable});
    const status = h('div', {role: 'status'});
    const add = h('button', {type: 'submit', class: 'primary', id: 'add-suppression', disabled: !writable,
      title: writable ? undefined : cannot('campaigns:write')}, 'Add to the list');
    const f = h('form', {id: 'suppression-form', class: 'ops-form'},
      field('Number', number, 'E.164, or a US national number'),
      field('Reason', reason),
      h('div', {class: 'ops-form-actions'}, add), status);
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      add.disabled = true;
      mount(status);
      try {
        const body = {number: number.value.trim()};
        if (reason.value.trim()) body.reason = reason.value.trim();
        const r = await api('/v1/suppressions', {body});
        mount(status, h('p', {class: 'notice'}, r.added.length ? `Added ${r.added.join(', ')}` : 'Already on the list',
          r.contacts_suppressed ? `; ${fmtNum(r.contacts_suppressed)} queued contact${r.contacts_suppressed === 1 ? '' : 's'} suppressed.` : '.'));
        number.value = ''; reason.value = '';
        await page(true);
      } catch (err) {
        mount(status, errorBox(err));
      } finally {
        add.disabled = false;
      }
    });
    return [writable ? null : lacks(who, 'add or remove numbers', 'campaigns:write'), h('details', {class: 'ops-edit', open: writable}, h('summary', 'Add a number'), f)];
  };

  guarded(sec.body, who, 'read the do-not-call list', 'campaigns:read', async () => {
    mount(sec.body, h('p', {class: 'muted ops-intro'}, 'No campaign of the tenant dials a number on this list.'),
      h('div', {class: 'ops-create'}, form()), listBox, more);
    await page(true);
  });
}
