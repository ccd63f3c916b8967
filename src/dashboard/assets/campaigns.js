// Campaigns: the list (Active / Scheduled / Completed), one campaign live (counters, charts,
// deferred and held contacts, the contacts table, actions, export, CSV upload with its report,
// the preview), and the create form (campaign_new.js). Live updates come from the SSE stream
// (api.js follow()), throttled; there is no polling loop.

import {h, mount, badge, progress, time, fmtTime, fmtMs, fmtPct, fmtNum, errorBox, facts, throttle} from './dom.js';
import {api, apiAll, upload, can, cannot, follow, ApiError} from './api.js';
import {stackedBars, outcomeColor} from './charts.js';
import {newCampaignView} from './campaign_new.js';

export const routes = [
  [/^\/campaigns\/new$/, newCampaignView],
  [/^\/campaigns\/([^/]+)$/, campaignView],
  [/^\/campaigns$/, listView],
];

const CONTACT_STATUSES = ['queued', 'dialing', 'completed', 'failed', 'suppressed', 'exhausted'];
const FINAL = ['completed', 'failed', 'suppressed', 'exhausted'];
const OUTCOMES = ['answered', 'busy', 'no_answer', 'rejected', 'invalid_number', 'network_error', 'cancelled', 'failed'];
const TABS = [
  ['active', 'Active', ['draft', 'running', 'paused']],
  ['scheduled', 'Scheduled', ['scheduled']],
  ['completed', 'Completed', ['completed', 'cancelled']],
];
// Which statuses each action accepts (docs/api.md "States").
const ACTIONS = [
  ['start', 'Start', ['draft']],
  ['pause', 'Pause', ['running', 'scheduled']],
  ['resume', 'Resume', ['paused']],
  ['cancel', 'Cancel…', ['draft', 'scheduled', 'running', 'paused']],
];
const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const DAY_NAMES = {mon: 'Mon', tue: 'Tue', wed: 'Wed', thu: 'Thu', fri: 'Fri', sat: 'Sat', sun: 'Sun'};

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Small helpers of these pages.

/** obj[key] for an API object, never through the prototype chain (a key like "constructor"). */
function own(obj, key, fallback) {
  return obj && typeof obj === 'object' && Object.hasOwn(obj, key) ? obj[key] : fallback;
}

/** Contacts in a final status / all contacts, 0..1 (null without contacts). */
function finalFraction(p) {
  if (!p || !p.total_contacts) return null;
  return finalCount(p) / p.total_contacts;
}

function finalCount(p) {
  return p ? FINAL.reduce((a, k) => a + (Number(own(p.contacts, k, 0)) || 0), 0) : 0;
}

/**
 * Whole percent of contacts in a final status, rounded down (integer arithmetic): 995 of 1000
 * is 99, and 100 only when every contact is final. null without contacts.
 */
function finalPct(p) {
  if (!p || !p.total_contacts) return null;
  return Math.min(100, Math.floor((finalCount(p) * 100) / p.total_contacts));
}

/** A campaign's progress bar (dom.js progress()), its aria-valuenow the label's percent. */
function campaignBar(p) {
  const bar = progress(finalFraction(p) ?? 0, progressLabel(p));
  const pct = finalPct(p);
  // Not read yet (or no contacts): no value, an indeterminate bar rather than a false 0 %.
  if (pct === null || pct === undefined) bar.removeAttribute('aria-valuenow');
  else bar.setAttribute('aria-valuenow', String(pct));
  return bar;
}

/** A table whose rows carry attributes (dom.js table() cannot): rowAttrs(row) → attrs. */
export function rowsTable(columns, rows, opts = {}) {
  const head = h('tr', columns.map((c) => h('th', {class: c.class === 'mono' ? undefined : c.class}, c.title)));
  const body = h('tbody');
  if (!rows.length) {
    body.append(h('tr', h('td', {colspan: columns.length, class: 'muted'}, opts.empty || 'Nothing here yet.')));
  }
  for (const r of rows) {
    const tr = h('tr', opts.rowAttrs ? opts.rowAttrs(r) : {},
      columns.map((c) => h('td', {class: c.class, 'data-label': c.title}, c.cell(r))));
    body.append(tr);
    if (opts.after) {
      const extra = opts.after(r, columns.length);
      if (extra) body.append(extra);
    }
  }
  return h('div', {class: 'table-wrap'}, h('table', {id: opts.id, class: opts.class}, h('thead', head), body));
}

/**
 * Updates a dom.js progress() bar in place. `pct` is its aria-valuenow (the whole percent its
 * label shows); without it, the fraction rounded down.
 */
function setBar(bar, fraction, label, pct) {
  const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  bar.querySelector('.bar-fill').style.width = `${(f * 100).toFixed(1)}%`;
  bar.setAttribute('aria-valuenow', String(Number.isInteger(pct) ? pct : Math.floor(f * 100 + 1e-9)));
  bar.setAttribute('title', label || '');
  let l = bar.querySelector('.bar-label');
  if (!l) { l = h('span', {class: 'bar-label'}); bar.append(l); }
  l.textContent = label || '';
}

function progressLabel(p) {
  if (!p) return '…';
  if (!p.total_contacts) return 'no contacts';
  return `${fmtNum(finalCount(p))} / ${fmtNum(p.total_contacts)} · ${finalPct(p)} %`;
}

/** A bucket width for people: "10 s", "1 min", "5 min", "1 h", "1 d". */
function bucketWidth(bs) {
  if (bs % 86400 === 0) return `${bs / 86400} d`;
  if (bs % 3600 === 0) return `${bs / 3600} h`;
  if (bs % 60 === 0) return `${bs / 60} min`;
  return `${bs} s`;
}

/** A duration for people: fmtMs below two days, then days and hours. */
function fmtSpan(ms) {
  if (ms < 48 * 3600 * 1000) return fmtMs(ms);
  const hours = Math.round(ms / 3600000);
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** "in 3 h 05 min" / "3 min ago" for a time. */
function relative(iso) {
  if (!iso) return '';
  const ms = new Date(iso).getTime() - Date.now();
  if (!Number.isFinite(ms)) return '';
  return ms >= 0 ? `in ${fmtSpan(ms)}` : `${fmtSpan(-ms)} ago`;
}

/**
 * Downloads an API resource with the bearer key: fetch → Blob → object URL → a temporary
 * <a download>. (The CSP governs fetches, not a download the page starts from a blob: URL.)
 */
export async function download(path, accept, fallbackName) {
  const res = await api(path, {raw: true, headers: {Accept: accept}});
  const blob = await res.blob();
  let name = fallbackName;
  const cd = res.headers.get('Content-Disposition') || '';
  const m = cd.match(/filename="?([^";]+)"?/i);
  if (m) name = m[1];
  name = name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 120) || 'download.csv';
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.setAttribute('href', url);
  a.setAttribute('download', name);
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return {name, bytes: blob.size};
}

/** A button that shows what it does while it runs and reports failure into `errorEl`. */
function busy(button, errorEl, fn) {
  return async () => {
    if (button.disabled) return;
    const was = button.textContent;
    button.disabled = true;
    button.textContent = `${was}…`.replace(/……$/, '…');
    if (errorEl) mount(errorEl);
    try {
      await fn();
    } catch (e) {
      if (errorEl) mount(errorEl, errorBox(e)); else console.warn(e);
    } finally {
      button.textContent = was;
      button.disabled = false;
      if (button.dataset.locked === 'true') button.disabled = true;
    }
  };
}

function liveStateEl() {
  const el = h('span', {id: 'live-state', class: 'live', title: 'the event stream'}, 'connecting');
  el.setAttribute('aria-live', 'polite');
  return el;
}

function setLiveState(el, state) {
  const text = state === 'live' ? 'live' : state === 'error' ? 'stream refused' : 'reconnecting';
  el.textContent = text;
  el.classList.toggle('on', state === 'live');
  el.classList.toggle('off', state !== 'live');
}

/** Runs `fn` over `items` with at most `n` at once. */
async function pool(items, n, fn) {
  let i = 0;
  const workers = Array.from({length: Math.min(n, items.length)}, async () => {
    while (i < items.length) {
      const item = items[i++];
      try { await fn(item); } catch (e) { console.warn('campaigns', e); }
    }
  });
  await Promise.all(workers);
}

// ---------------------------------------------------------------------------------------------
// The list.

const MAX_PROGRESS_FETCH = 60;
const CONTACTS_PAGE = 50;
// The most contact rows the table holds: a live refresh re-reads them all (500 a request, the
// API's largest page), so this bounds it to 4 requests. Beyond: filters or the results export.
const CONTACTS_MAX = 2000;
// The event kinds the list and a campaign's page follow (docs/api.md "The event stream").
const CAMPAIGN_PAGE_KINDS = 'campaign.*,contact.*,call.created,call.completed,call.failed';
const LIVE_ROUND = 10;

async function listView(main, params, query) {
  let tab = TABS.some(([k]) => k === query.get('tab')) ? query.get('tab') : null;
  let campaigns = await apiAll('/v1/campaigns?limit=500', 2000);
  const prog = new Map(); // id → progress
  const dirty = new Set();
  if (!tab) {
    // Open on the first tab that has something (Active when all are empty).
    tab = (TABS.find(([, , st]) => campaigns.some((c) => st.includes(c.status))) || TABS[0])[0];
  }

  const writable = can('campaigns:write');
  const newLink = writable
    ? h('a', {id: 'new-campaign', class: 'button primary', href: '#/campaigns/new'}, 'New campaign')
    : h('button', {id: 'new-campaign', type: 'button', class: 'primary', disabled: true,
      title: cannot('campaigns:write')}, 'New campaign');
  const live = liveStateEl();
  const tabs = h('div', {class: 'tabs', role: 'tablist'});
  const body = h('div', {id: 'campaign-list', role: 'tabpanel'});
  const err = h('div');

  function inTab(c, key) {
    return TABS.find(([k]) => k === key)[2].includes(c.status);
  }

  function renderTabs() {
    mount(tabs, TABS.map(([key, label]) => {
      const n = campaigns.filter((c) => inTab(c, key)).length;
      const b = h('button', {type: 'button', role: 'tab', 'data-tab': key,
        onclick: () => { tab = key; renderTabs(); render(); loadProgress(false); }}, `${label} (${n})`);
      b.setAttribute('aria-selected', key === tab ? 'true' : 'false');
      return b;
    }));
  }

  function render() {
    const rows = campaigns.filter((c) => inTab(c, tab));
    const cols = [
      {title: 'Name', cell: (c) => h('span', {class: 'cmp-name'},
        h('a', {href: `#/campaigns/${enc(c.id)}`}, c.settings.name),
        h('span', {class: 'muted mono cmp-id'}, c.id))},
      {title: 'Progress', class: 'cmp-progress', cell: (c) => {
        return campaignBar(prog.get(c.id));
      }},
      {title: 'Status', cell: (c) => badge(c.status)},
      {title: 'Answer rate', class: 'num', cell: (c) => fmtPct(prog.get(c.id)?.answer_rate)},
      {title: 'Live calls', class: 'num', cell: (c) => {
        const p = prog.get(c.id);
        return p ? fmtNum(p.live_calls) : '—';
      }},
      tab === 'scheduled'
        ? {title: 'Starts', cell: (c) => time(c.settings.start_at)}
        : {title: 'Created', cell: (c) => time(c.created_at)},
      tab === 'completed'
        ? {title: 'Ended', cell: (c) => time(c.ended_at)}
        : {title: 'Started', cell: (c) => time(c.started_at)},
    ];
    const empty = {active: 'No draft, running or paused campaign.', scheduled: 'No scheduled campaign.',
      completed: 'No completed or cancelled campaign yet.'}[tab];
    const shown = rows.length > MAX_PROGRESS_FETCH
      ? h('p', {class: 'muted'}, `Progress is shown for the ${MAX_PROGRESS_FETCH} newest of these ${rows.length}.`) : null;
    mount(body, rowsTable(cols, rows, {id: 'campaigns-table', empty,
      rowAttrs: (c) => ({'data-campaign': c.id})}), shown);
  }

  // Progress is only on GET /v1/campaigns/{id}: fetch it for the visible rows (bounded,
  // four at a time), and again for a campaign an event touched.
  // The first load reads every visible row; a live round at most LIVE_ROUND of them (the rest
  // stay dirty for the next round), so a busy tenant stays within the key's rate limit.
  let loading = false;
  let rest = false;
  const inflight = new Set(); // ids whose progress is being read now
  async function loadProgress(live) {
    if (loading) { loadAgain = true; return; }
    loading = true;
    rest = false;
    try {
      let want = campaigns.filter((c) => inTab(c, tab)).slice(0, MAX_PROGRESS_FETCH)
        .filter((c) => !prog.has(c.id) || dirty.has(c.id)).map((c) => c.id);
      if (live && want.length > LIVE_ROUND) { want = want.slice(0, LIVE_ROUND); rest = true; }
      await pool(want, 4, async (id) => {
        // Clean from the moment its read starts: an event (or a reconnect) after it marks it again.
        dirty.delete(id);
        inflight.add(id);
        try {
          const full = await api(`/v1/campaigns/${enc(id)}`);
          prog.set(id, full.progress);
          const i = campaigns.findIndex((c) => c.id === id);
          if (i >= 0) campaigns[i] = full;
        } finally {
          inflight.delete(id);
        }
      });
      render();
    } finally {
      loading = false;
    }
    if (loadAgain || rest) { loadAgain = false; refreshProgress(); }
  }
  let loadAgain = false;

  let stopped = false;
  const reloadList = throttle(async () => {
    if (stopped) return;
    try {
      campaigns = await apiAll('/v1/campaigns?limit=500', 2000);
      mount(err);
      renderTabs();
      render();
      loadProgress(true);
    } catch (e) { mount(err, errorBox(e)); }
  }, 1500);
  const refreshProgress = throttle(() => { if (!stopped) loadProgress(true); }, 2000);

  mount(main,
    h('div', {class: 'spread page-head'}, h('h1', 'Campaigns'), h('div', {class: 'row'}, live, newLink)),
    err,
    h('div', {class: 'card'}, tabs, body));
  renderTabs();
  render();
  window.scrollTo(0, 0);
  loadProgress(false);

  const stop = follow(`kind=${CAMPAIGN_PAGE_KINDS}`, (ev) => {
    if (!ev.campaign_id) return;
    if (ev.kind.startsWith('campaign.') || !campaigns.some((c) => c.id === ev.campaign_id)) {
      dirty.add(ev.campaign_id);
      reloadList();
    } else {
      dirty.add(ev.campaign_id);
      refreshProgress();
    }
  }, (st) => {
    setLiveState(live, st);
    // The stream (re)connected: events from before it (the first read, or a drop: follow()
    // resumes from the last event id it saw, or live-only when it saw none) may be missed, so
    // every progress read so far (or being read) is stale: read the list and them again
    // (LIVE_ROUND at a time).
    if (st === 'live') {
      for (const id of prog.keys()) dirty.add(id);
      for (const id of inflight) dirty.add(id);
      reloadList();
    }
  });
  return () => { stopped = true; stop(); };
}

// ---------------------------------------------------------------------------------------------
// One campaign.

function fmtWindows(w) {
  if (!w) return 'default: 08:00–21:00 Monday to Saturday (callee time)';
  const parts = DAYS.filter((d) => w[d] && w[d].length).map((d) => `${DAY_NAMES[d]} ${w[d].join(', ')}`);
  return parts.length ? parts.join('; ') : 'none';
}

function fmtRetry(r) {
  if (!r) return '—';
  const rules = Object.entries(r.rules || {}).map(([k, v]) => (v.max_retries
    ? `${k}: ${v.max_retries} × after ${v.after_s} s${v.next_trunk ? ' (next trunk first)' : ''}`
    : `${k}: never`));
  return h('span', rules.join('; '), h('br'),
    h('span', {class: 'muted'}, `backoff ×${r.backoff}, jitter ±${Math.round((r.jitter || 0) * 100)} %, longest wait ${r.max_delay_s} s`));
}

function settingsFacts(c) {
  const st = c.settings;
  return facts([
    ['Id', h('span', {class: 'mono'}, c.id)],
    ['Script', st.script_id ? h('span', h('span', {class: 'mono'}, st.script_id),
      c.script_version ? ` (version ${c.script_version})` : '') : 'none: answer and hang up'],
    ['Trunks', st.trunk_ids && st.trunk_ids.length ? st.trunk_ids.join(', ') : h('span', {class: 'muted'}, 'none (it cannot start without one)')],
    ['Caller ids', st.caller_ids && st.caller_ids.length ? st.caller_ids.join(', ') : 'the trunk’s'],
    ['Limits', `${st.max_concurrent} live calls, ${st.max_cps} calls/s, ring ${st.ring_timeout_s} s${st.max_duration_s ? `, longest call ${st.max_duration_s} s` : ''}`],
    ['Windows', fmtWindows(st.windows)],
    ['Holidays', st.holidays && st.holidays.length ? st.holidays.join(', ') : 'none'],
    ['Time zone rule', `the contact’s zone, else the number’s, else ${st.default_timezone}; numbers without + read in ${st.default_region}`],
    ['Retries', fmtRetry(st.retry)],
    ['Priority', String(st.priority)],
    ['Start at', st.start_at ? time(st.start_at) : 'when started'],
    ['End at', st.end_at ? time(st.end_at) : 'when every contact is final'],
    ['Record', st.record ? 'yes' : 'no'],
    ['Created', time(c.created_at)],
    ['Started', time(c.started_at)],
    ['Ended', time(c.ended_at)],
  ]);
}

/** A contact's reason: its code, then its sentence (API values: passed as children, never attrs). */
function reasonCell(x) {
  return h('span', null, x.reason_code ? h('code', null, x.reason_code) : null,
    x.reason_code && x.reason ? ' ' : '', x.reason ?? '');
}

function stat(label, value, attrs, title) {
  return h('div', {class: 'stat', title},
    h('span', Object.assign({class: 'v'}, attrs || {}), value),
    h('span', {class: 'k'}, label));
}

async function campaignView(main, [id]) {
  let c;
  try {
    c = await api(`/v1/campaigns/${enc(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      mount(main, h('div', {class: 'card'}, h('h1', 'No such campaign'),
        h('p', 'There is no campaign ', h('code', null, id), ' for this key’s tenant.'),
        h('a', {href: '#/campaigns'}, 'All campaigns')));
      return null;
    }
    throw e;
  }
  const base = `/v1/campaigns/${enc(id)}`;
  const writable = can('campaigns:write');
  let stopped = false;

  // --- header: name, status, progress, actions ---------------------------------------------
  const nameEl = h('h1', {id: 'campaign-name'}, c.settings.name);
  let statusEl = badge(c.status);
  statusEl.id = 'campaign-status';
  const bar = campaignBar(c.progress);
  bar.id = 'campaign-progress';
  bar.setAttribute('aria-label', 'contacts in a final status');
  const live = liveStateEl();
  const actionErr = h('div', {id: 'action-error'});
  const buttons = {};
  for (const [key, label] of ACTIONS) {
    buttons[key] = h('button', {type: 'button', id: key, class: key === 'start' ? 'primary' : key === 'cancel' ? 'danger' : undefined}, label);
  }
  const confirmBox = h('div', {id: 'cancel-box', class: 'notice', hidden: true});
  const exportBtn = h('button', {type: 'button', id: 'export', title: 'every contact with its outcome, answers, calls and recordings'}, 'Export results (CSV)');
  const callsLink = h('a', {class: 'button', href: `#/calls?campaign_id=${enc(id)}`, id: 'campaign-calls'}, 'Its calls');

  // --- numbers -----------------------------------------------------------------------------
  const counters = h('div', {class: 'stats', id: 'contact-counters'});
  const metrics = h('div', {class: 'stats', id: 'campaign-metrics'});
  const outcomes = h('div', {class: 'stats outcomes', id: 'outcome-counters'});

  // --- charts ------------------------------------------------------------------------------
  const cpmBox = h('div', {class: 'chart-box'});
  const outBox = h('div', {class: 'chart-box'});
  const chartNote = h('p', {class: 'muted small'});

  // --- windows and held contacts -----------------------------------------------------------
  const outside = h('div', {id: 'outside-window'});
  const held = h('div', {id: 'held-contacts'});

  // --- contacts table ----------------------------------------------------------------------
  const statusSel = h('select', {id: 'contact-status', name: 'contact-status'},
    h('option', {value: ''}, 'all statuses'),
    CONTACT_STATUSES.map((st) => h('option', {value: st}, st)));
  const contactsBox = h('div', {id: 'contacts'});
  const moreBtn = h('button', {type: 'button', id: 'contacts-more', hidden: true}, 'Load more');
  const contactsCapNote = h('p', {class: 'muted', id: 'contacts-cap'});
  const contactsErr = h('div');
  // head: how many of items are the first page; tail: "Load more" added rows after it.
  const contacts = {status: '', items: [], next: null, open: new Set(), details: new Map()};

  // --- upload and preview ------------------------------------------------------------------
  const uploadCard = h('div', {class: 'card', id: 'upload-card'});
  const previewCard = h('div', {class: 'card', id: 'preview-card'});

  function actionTitle(key, allowed, status) {
    if (!writable) return cannot('campaigns:write');
    if (!allowed.includes(status)) return `a ${status} campaign cannot be ${key === 'start' ? 'started' : key === 'pause' ? 'paused' : key === 'resume' ? 'resumed' : 'cancelled'} (needs ${allowed.join(' or ')})`;
    return undefined;
  }

  function renderActions() {
    for (const [key, , allowed] of ACTIONS) {
      const b = buttons[key];
      const why = actionTitle(key, allowed, c.status);
      b.disabled = !!why;
      b.dataset.locked = why ? 'true' : 'false';
      if (why) b.setAttribute('title', why); else b.removeAttribute('title');
    }
    if (!ACTIONS[3][2].includes(c.status)) confirmBox.hidden = true;
  }

  function renderHeader() {
    nameEl.textContent = c.settings.name;
    const nb = badge(c.status);
    nb.id = 'campaign-status';
    statusEl.replaceWith(nb);
    statusEl = nb;
    setBar(bar, finalFraction(c.progress) ?? 0, progressLabel(c.progress), finalPct(c.progress) ?? 0);
    renderActions();
  }

  function renderNumbers() {
    const p = c.progress || {contacts: {}, outcomes: {}};
    mount(counters,
      stat('contacts', fmtNum(p.total_contacts), {'data-counter': 'total'}),
      CONTACT_STATUSES.map((st) => stat(st, String(own(p.contacts, st, 0) || 0), {'data-counter': st})));
    const eta = p.eta_s === null || p.eta_s === undefined ? '—' : fmtSpan(p.eta_s * 1000);
    mount(metrics,
      stat('answer rate', fmtPct(p.answer_rate), {'data-metric': 'answer_rate'}, 'answered attempts / ended attempts'),
      stat('average talk time', fmtMs(p.average_talk_ms), {'data-metric': 'average_talk'}, 'mean talk time of answered attempts'),
      stat('ETA', eta, {'data-metric': 'eta'}, 'queued contacts at the last minute’s rate (— when nothing was dialed in the last minute)'),
      stat('live calls', fmtNum(p.live_calls), {'data-metric': 'live_calls'}),
      stat('calls/s', (p.calls_per_s || 0).toFixed(2), {'data-metric': 'calls_per_s'}, 'attempts started per second over the last minute'),
      stat('outside window', fmtNum(p.outside_window), {'data-metric': 'outside_window'}, 'queued contacts whose calling window is closed now'));
    const seen = Object.keys(p.outcomes || {}).filter((k) => !OUTCOMES.includes(k));
    mount(outcomes, [...OUTCOMES, ...seen].map((o) => {
      const el = stat(o.replace(/_/g, ' '), String(own(p.outcomes, o, 0) || 0), {'data-outcome': o}, `attempts that ended ${o}`);
      const sw = h('span', {class: 'swatch'});
      sw.style.background = outcomeColor(o);
      el.querySelector('.k').prepend(sw);
      return el;
    }));
    // The status filter shows how many each status has.
    for (const opt of statusSel.options) {
      opt.textContent = opt.value ? `${opt.value} (${fmtNum(own(p.contacts, opt.value, 0) || 0)})` : `all statuses (${fmtNum(p.total_contacts || 0)})`;
    }
    const tz = c.settings.default_timezone;
    if (p.outside_window > 0) {
      mount(outside,
        h('p', h('strong', {'data-count': 'outside_window'}, fmtNum(p.outside_window)),
          ` queued contact${p.outside_window === 1 ? ' is' : 's are'} outside ${p.outside_window === 1 ? 'its' : 'their'} calling window now. `,
          p.next_window_opens_at
            ? ['The first of those windows opens at ', time(p.next_window_opens_at), ` (${relative(p.next_window_opens_at)}).`]
            : 'No window opens within a year (check the windows and holidays).'),
        h('p', {class: 'muted small'}, `Windows are read in each callee’s local time: the contact’s own zone, else the number’s, else ${tz}.`));
    } else {
      mount(outside,
        h('p', h('strong', {'data-count': 'outside_window'}, '0'), ' queued contacts wait for their calling window.'),
        h('p', {class: 'muted small'}, `Windows are read in each callee’s local time: the contact’s own zone, else the number’s, else ${tz}.`));
    }
  }

  // --- charts ------------------------------------------------------------------------------
  async function loadActivity() {
    if (!c.started_at_us) {
      mount(cpmBox, stackedBars({id: 'chart-cpm', width: cpmBox.clientWidth, integer: true, title: 'Calls placed over time', points: [], series: [{key: 'started', label: 'calls placed', color: '#1f6feb'}], yLabel: 'calls placed', xLabel: 'time', empty: 'not started yet'}));
      mount(outBox, stackedBars({id: 'chart-outcomes', width: outBox.clientWidth, integer: true, title: 'Outcomes over time', points: [], series: [], yLabel: 'calls ended', xLabel: 'time', empty: 'not started yet'}));
      chartNote.textContent = '';
      return;
    }
    const end = c.ended_at_us || Date.now() * 1000;
    const spanS = (end - c.started_at_us) / 1e6;
    const q = spanS <= 20 * 60 ? '?bucket_s=10' : '';
    const a = await api(`${base}/activity${q}`);
    const bs = a.bucket_s || 60;
    // The count of calls placed in each bucket, exactly as the API gives it (no rate: a bucket
    // of 10 s with one call is one call, and the first and last buckets may be partial).
    const placed = a.buckets.map((b) => ({t: b.start_us, values: {started: Number(b.started) || 0}}));
    const keys = new Set();
    for (const b of a.buckets) for (const k of Object.keys(b.ended || {})) keys.add(k);
    const ordered = [...OUTCOMES.filter((k) => keys.has(k)), ...[...keys].filter((k) => !OUTCOMES.includes(k)).sort()];
    const series = ordered.map((k) => ({key: k, label: k.replace(/_/g, ' '), color: outcomeColor(k)}));
    const width = bucketWidth(bs);
    const per = bs === 60 ? 'minute' : bs === 3600 ? 'hour' : bs === 86400 ? 'day' : width;
    mount(cpmBox, stackedBars({id: 'chart-cpm', width: cpmBox.clientWidth, integer: true, title: 'Calls placed over time', bucketS: bs,
      points: placed, series: [{key: 'started', label: `calls placed per ${per}`, color: '#1f6feb'}],
      yLabel: `calls placed per ${per}`, xLabel: `time (local), bars of ${width}`, empty: 'no call placed yet'}));
    mount(outBox, stackedBars({id: 'chart-outcomes', width: outBox.clientWidth, integer: true, title: 'Outcomes over time', bucketS: bs,
      points: a.buckets.map((b) => ({t: b.start_us, values: b.ended || {}})), series,
      yLabel: `calls ended per ${per}`, xLabel: `time (local), bars of ${width}`, empty: 'no call has ended yet'}));
    chartNote.textContent = `From ${fmtTime(a.from)} to ${fmtTime(a.to)} (this browser's time).`;
  }

  // --- suppressed and exhausted contacts ----------------------------------------------------
  let heldKey = '';
  async function loadHeld(force) {
    const p = c.progress || {contacts: {}};
    const key = `${own(p.contacts, 'suppressed', 0) || 0}/${own(p.contacts, 'exhausted', 0) || 0}`;
    if (!force && key === heldKey) return;
    heldKey = key;
    const parts = [];
    for (const st of ['suppressed', 'exhausted']) {
      const n = own(p.contacts, st, 0) || 0;
      if (!n) {
        parts.push(h('div', {class: 'held-group', 'data-held': st}, h('h3', `${st[0].toUpperCase()}${st.slice(1)} (0)`),
          h('p', {class: 'muted'}, st === 'suppressed' ? 'No contact is on the do-not-call list.' : 'No contact ran out of retries.')));
        continue;
      }
      const page = await api(`${base}/contacts?status=${st}&limit=50`);
      parts.push(h('div', {class: 'held-group', 'data-held': st},
        h('h3', `${st[0].toUpperCase()}${st.slice(1)} (${fmtNum(n)})`),
        rowsTable([
          {title: 'Name', cell: (x) => x.name ?? h('span', {class: 'muted'}, '—')},
          {title: 'Phone', class: 'mono', cell: (x) => x.phone},
          {title: 'Attempts', class: 'num', cell: (x) => String(x.attempts)},
          {title: 'Last outcome', cell: (x) => x.last_outcome ?? '—'},
          {title: 'Reason', cell: reasonCell},
        ], page.items, {rowAttrs: (x) => ({'data-held-contact': x.id})}),
        n > page.items.length ? h('p', {class: 'muted small'}, `The first ${page.items.length} of ${fmtNum(n)}; filter the contacts table below by “${st}” for the rest.`) : null));
    }
    mount(held, parts);
  }

  // --- contacts table ----------------------------------------------------------------------
  function contactDetail(x, colspan) {
    if (!contacts.open.has(x.id)) return null;
    const d = contacts.details.get(x.id);
    let inner;
    if (!d) inner = h('p', {class: 'muted'}, 'Loading attempts…');
    else if (d instanceof Error) inner = errorBox(d);
    else {
      const vars = Object.entries(d.variables || {});
      inner = h('div', {class: 'contact-detail'},
        facts([
          ['Contact', h('span', {class: 'mono'}, d.id)],
          ['Zone', `${d.resolved_tz}${d.timezone ? ' (its own)' : ' (from the number or the default)'}`],
          ['Priority', String(d.priority)],
          ['Upload row', d.line === null || d.line === undefined ? '—' : String(d.line)],
          vars.length ? ['Variables', vars.map(([k, v]) => `${k}=${v}`).join(', ')] : null,
        ]),
        h('h4', 'Attempts'),
        rowsTable([
          {title: '#', class: 'num', cell: (a) => String(a.attempt)},
          {title: 'Call', cell: (a) => (a.call_id ? h('a', {href: `#/calls/${enc(a.call_id)}`, class: 'mono'}, a.call_id) : '—')},
          {title: 'Outcome', cell: (a) => a.outcome ?? h('span', {class: 'muted'}, 'in progress')},
          {title: 'Trunk', class: 'mono', cell: (a) => a.trunk_id ?? '—'},
          {title: 'Claimed', cell: (a) => time(a.claimed_at)},
          {title: 'Ended', cell: (a) => time(a.ended_at)},
          {title: 'Retry rule', cell: (a) => a.rule ?? '—'},
        ], d.attempt_history || [], {empty: 'Not dialed yet.', class: 'attempts'}));
    }
    return h('tr', {class: 'detail-row', 'data-detail': x.id}, h('td', {colspan}, inner));
  }

  async function loadDetail(cid) {
    try {
      contacts.details.set(cid, await api(`${base}/contacts/${enc(cid)}`));
    } catch (e) {
      contacts.details.set(cid, e);
    }
    renderContacts();
  }

  function renderContacts() {
    const cols = [
      {title: 'Name', cell: (x) => {
        const b = h('button', {type: 'button', class: 'linkish', title: 'show its attempts',
          onclick: (e) => { e.stopPropagation(); toggle(x.id); }}, contacts.open.has(x.id) ? '▾ ' : '▸ ',
        x.name ?? '(no name)');
        b.setAttribute('aria-expanded', contacts.open.has(x.id) ? 'true' : 'false');
        return b;
      }},
      {title: 'Phone', class: 'mono', cell: (x) => x.phone},
      {title: 'Zone', cell: (x) => x.resolved_tz},
      {title: 'Status', cell: (x) => badge(x.status)},
      {title: 'Attempts', class: 'num', cell: (x) => String(x.attempts)},
      {title: 'Next attempt', cell: (x) => (x.next_attempt_at ? time(x.next_attempt_at) : h('span', {class: 'muted'}, '—'))},
      {title: 'Last outcome', cell: (x) => x.last_outcome ?? '—'},
      {title: 'Reason', cell: reasonCell},
    ];
    mount(contactsBox, rowsTable(cols, contacts.items, {
      id: 'contacts-table',
      empty: contacts.status ? `No ${contacts.status} contact.` : 'No contacts yet: upload a CSV.',
      rowAttrs: (x) => ({'data-contact': x.id, class: 'clickable', onclick: () => toggle(x.id)}),
      after: contactDetail,
    }));
    moreBtn.hidden = !contacts.next || contacts.items.length >= CONTACTS_MAX;
    mount(contactsCapNote, contacts.next && contacts.items.length >= CONTACTS_MAX
      ? `The first ${fmtNum(CONTACTS_MAX)} contacts are shown: filter by status, or export the results for all of them.`
      : '');
  }

  function toggle(cid) {
    if (contacts.open.has(cid)) {
      contacts.open.delete(cid);
      renderContacts();
    } else {
      contacts.open.add(cid);
      renderContacts();
      loadDetail(cid);
    }
  }

  // The table shows the first page (CONTACTS_PAGE contacts) and what "Load more" added after
  // it, at most CONTACTS_MAX rows. A refresh re-reads every row shown, from the start, so each
  // figure is current and the loaded rows stay.
  let contactsGen = 0; // bumped by a reset (another status filter): older answers are dropped
  let refreshSeq = 0; // a reset or refresh answer older than the newest one is dropped
  async function loadContacts(mode) {
    if (mode === 'reset') {
      contactsGen += 1;
      Object.assign(contacts, {items: [], next: null});
    }
    const gen = contactsGen;
    const seq = mode === 'more' ? null : ++refreshSeq;
    const st = contacts.status ? `status=${enc(contacts.status)}&` : '';
    try {
      if (mode === 'more') {
        const page = await api(`${base}/contacts?${st}limit=${CONTACTS_PAGE}&cursor=${enc(contacts.next)}`);
        if (gen !== contactsGen || stopped) return;
        const shown = new Set(contacts.items.map((x) => x.id));
        contacts.items = contacts.items.concat(page.items.filter((x) => !shown.has(x.id)));
        contacts.next = page.next_cursor;
      } else {
        // Re-read every row shown (at least the first page, at most CONTACTS_MAX), from the
        // start: a refresh keeps what "Load more" loaded, with every figure current.
        const want = Math.min(CONTACTS_MAX, Math.max(CONTACTS_PAGE, contacts.items.length));
        let rows = [];
        let cursor = null;
        do {
          const limit = Math.min(500, want - rows.length);
          const page = await api(`${base}/contacts?${st}limit=${limit}${cursor ? `&cursor=${enc(cursor)}` : ''}`);
          if (gen !== contactsGen || stopped) return;
          if (seq !== refreshSeq) return;
          rows = rows.concat(page.items);
          cursor = page.next_cursor;
        } while (cursor && rows.length < want);
        const before = new Map(contacts.items.map((x) => [x.id, JSON.stringify(x)]));
        contacts.items = rows;
        contacts.next = cursor;
        // An open contact whose row changed has new attempts: read its detail again.
        for (const x of rows) {
          if (contacts.open.has(x.id) && before.has(x.id) && before.get(x.id) !== JSON.stringify(x)) loadDetail(x.id);
        }
      }
      mount(contactsErr);
      renderContacts();
    } catch (e) {
      if (gen === contactsGen) mount(contactsErr, errorBox(e));
    }
  }

  statusSel.addEventListener('change', () => {
    contacts.status = statusSel.value;
    contacts.open.clear();
    loadContacts('reset');
  });
  moreBtn.addEventListener('click', busy(moreBtn, contactsErr, () => loadContacts('more')));

  // --- refreshing ------------------------------------------------------------------------
  let campSeq = 0;
  async function refreshCampaign() {
    const seq = ++campSeq;
    const fresh = await api(base);
    if (seq !== campSeq || stopped) return;
    apply(fresh);
  }

  function apply(fresh) {
    const was = c.status;
    c = fresh;
    renderHeader();
    renderNumbers();
    mount(settingsBox, settingsFacts(c));
    loadHeld(false).catch((e) => mount(held, errorBox(e)));
    if (was !== c.status) {
      renderUpload();
      if (previewOut.firstChild) {
        const note = previewOut.querySelector('.stale') || previewOut.insertBefore(h('p', {class: 'notice stale'}), previewOut.firstChild);
        note.textContent = `The campaign is ${c.status} now: this preview is from before; run it again.`;
      }
      activityNow();
    }
  }

  const campaignSoon = throttle(() => { if (!stopped) refreshCampaign().catch((e) => console.warn('campaign', e)); }, 500);
  const activitySoon = throttle(() => { if (!stopped) loadActivity().catch((e) => console.warn('activity', e)); }, 2000);
  const contactsSoon = throttle(() => { if (!stopped) loadContacts('refresh'); }, 1000);
  const activityNow = () => loadActivity().catch((e) => mount(cpmBox, errorBox(e)));

  // --- actions ---------------------------------------------------------------------------
  async function act(key, body) {
    const r = await api(`${base}/${key}`, {method: 'POST', body: body || {}});
    if (r && r.campaign) apply(r.campaign);
    else await refreshCampaign();
    loadContacts('refresh');
  }
  for (const [key] of ACTIONS) {
    if (key === 'cancel') continue;
    buttons[key].addEventListener('click', busy(buttons[key], actionErr, () => act(key)));
  }
  const hangupBox = h('input', {type: 'checkbox', id: 'cancel-hangup', name: 'hangup'});
  const confirmBtn = h('button', {type: 'button', class: 'danger', id: 'cancel-confirm'}, 'Cancel the campaign');
  const keepBtn = h('button', {type: 'button', id: 'cancel-keep', onclick: () => { confirmBox.hidden = true; }}, 'Keep it');
  mount(confirmBox,
    h('p', 'Cancel this campaign? It makes no new calls and cannot be started again.'),
    h('label', {class: 'row'}, hangupBox, 'also hang up its live calls'),
    h('div', {class: 'row'}, confirmBtn, keepBtn));
  buttons.cancel.addEventListener('click', () => {
    confirmBox.hidden = !confirmBox.hidden;
    if (!confirmBox.hidden) confirmBtn.focus();
  });
  confirmBtn.addEventListener('click', busy(confirmBtn, actionErr, async () => {
    await act('cancel', hangupBox.checked ? {hangup: true} : {});
    confirmBox.hidden = true;
  }));
  exportBtn.addEventListener('click', busy(exportBtn, actionErr,
    () => download(`${base}/results`, 'text/csv', `${id}-results.csv`)));

  // --- upload ----------------------------------------------------------------------------
  const fileInput = h('input', {type: 'file', id: 'csv-file', name: 'csv-file', accept: '.csv,text/csv'});
  const uploadBtn = h('button', {type: 'button', id: 'upload-csv', class: 'primary'}, 'Upload');
  const templateBtn = h('button', {type: 'button', id: 'csv-template'}, 'Download template');
  const upBar = progress(0, 'no upload yet');
  upBar.id = 'upload-progress';
  upBar.setAttribute('aria-label', 'upload progress');
  const upErr = h('div', {id: 'upload-error'});
  const report = h('div', {id: 'upload-report'});
  const uploadNote = h('p', {class: 'muted small'});

  templateBtn.addEventListener('click', busy(templateBtn, upErr,
    () => download('/v1/campaigns/csv-template', 'text/csv', 'contacts.csv')));

  function renderUpload() {
    const ended = c.status === 'completed' || c.status === 'cancelled';
    const why = !writable ? cannot('campaigns:write') : ended ? `a ${c.status} campaign takes no more contacts` : null;
    for (const el of [fileInput, uploadBtn]) {
      el.disabled = !!why;
      el.dataset.locked = why ? 'true' : 'false';
      if (why) el.setAttribute('title', why); else el.removeAttribute('title');
    }
    uploadNote.textContent = why
      ? `Uploading is off: ${why}.`
      : 'Columns: phone (required), name, timezone, priority, and any script variable. Numbers without + are read in the campaign’s region. A bad row never fails the upload: it is reported below.';
  }

  function renderReport(r) {
    const counts = ['rows', 'accepted', 'rejected', 'duplicates', 'existing', 'suppressed'];
    const hints = {rows: 'rows read', accepted: 'queued', rejected: 'refused (see below)', duplicates: 'repeats within this file',
      existing: 'the campaign already had them', suppressed: 'on the do-not-call list: kept, never dialed'};
    mount(report,
      h('h3', 'Validation report'),
      h('div', {class: 'stats'}, counts.map((k) => h('div', {class: 'stat', title: hints[k]},
        h('span', {class: 'v', 'data-count': k}, String(r[k] ?? 0)), h('span', {class: 'k'}, k)))),
      rowsTable([
        {title: 'Line', class: 'num', cell: (e) => String(e.line ?? e.index ?? '—')},
        {title: 'Result', cell: (e) => h('span', {class: `result result-${['rejected', 'duplicate', 'existing', 'suppressed'].includes(e.result) ? e.result : 'other'}`}, e.result)},
        {title: 'Code', cell: (e) => (e.code ? h('code', null, e.code) : '—')},
        {title: 'Reason', cell: (e) => e.reason ?? ''},
        {title: 'Phone', class: 'mono', cell: (e) => e.phone ?? '—'},
      ], [...(r.entries || [])].sort((a, b) => (a.line ?? a.index ?? 0) - (b.line ?? b.index ?? 0)), {id: 'upload-entries', empty: 'Every row was accepted.',
        rowAttrs: (e) => ({'data-line': e.line ?? e.index ?? ''})}),
      r.entries_truncated ? h('p', {class: 'muted small'}, `Only the first ${r.entries.length} entries are listed; the counts are complete.`) : null);
  }

  uploadBtn.addEventListener('click', busy(uploadBtn, upErr, async () => {
    const f = fileInput.files && fileInput.files[0];
    if (!f) throw new Error('choose a CSV file first');
    setBar(upBar, 0, `0 % of ${fmtNum(f.size)} bytes`);
    mount(report);
    try {
      const r = await upload(`${base}/contacts`, f, 'text/csv', (sent, total) => {
        const pc = total ? Math.min(100, Math.floor((sent * 100) / total)) : 0;
        setBar(upBar, total ? sent / total : 0, `${pc} % of ${fmtNum(total)} bytes`, pc);
      });
      setBar(upBar, 1, `uploaded ${f.name.slice(0, 60)}: ${fmtNum(r.rows)} rows read`);
      renderReport(r);
    } catch (e) {
      setBar(upBar, 0, 'the upload failed');
      throw e;
    }
    await refreshCampaign();
    // New contacts go to the end of the list: the refresh re-reads the rows shown, and a
    // cursor (Load more) reaches the new ones.
    loadContacts('refresh');
  }));

  mount(uploadCard,
    h('h2', 'Contacts upload (CSV)'),
    uploadNote,
    h('div', {class: 'row upload-row'}, templateBtn, fileInput, uploadBtn),
    h('div', {class: 'upload-bar'}, upBar),
    upErr,
    report);
  renderUpload();

  // --- preview ---------------------------------------------------------------------------
  const spanSel = h('select', {id: 'preview-span', name: 'span_s', 'aria-label': 'preview span'},
    h('option', {value: '3600'}, 'next hour'),
    h('option', {value: '86400', selected: true}, 'next 24 hours'),
    h('option', {value: '604800'}, 'next 7 days'));
  const previewBtn = h('button', {type: 'button', id: 'preview'}, 'Preview');
  const previewErr = h('div');
  const previewOut = h('div', {id: 'preview-result'});
  const previewHint = h('p', {class: 'muted small'}, 'The dry run before starting: which queued contacts would be dialed in the span, which wait for their window (by zone, until when, why), and which are suppressed. It changes nothing.');
  previewBtn.addEventListener('click', busy(previewBtn, previewErr, async () => {
    const p = await api(`${base}/preview`, {method: 'POST', body: {span_s: Number(spanSel.value)}});
    const status = p.campaign_status;
    mount(previewOut,
      h('p', 'A dry run from ', time(p.from), ' until ', time(p.until), '.',
        status === 'draft' || status === 'paused' ? ` The campaign is ${status}: it dials nobody until ${status === 'draft' ? 'started' : 'resumed'}.` : '',
        status === 'completed' || status === 'cancelled' ? ` The campaign is ${status}: it dials nobody.` : ''),
      h('div', {class: 'stats'},
        stat('would dial', fmtNum(p.would_dial), {'data-preview': 'would_dial'}, 'due contacts whose window opens within the span'),
        stat('open now', fmtNum(p.open_now), {'data-preview': 'open_now'}, 'of those, in their window right now'),
        stat('deferred', fmtNum(p.deferred), {'data-preview': 'deferred'}, 'no window opens within the span'),
        stat('suppressed', fmtNum(p.suppressed), {'data-preview': 'suppressed'}, 'on the do-not-call list'),
        stat('not due', fmtNum(p.not_due), {'data-preview': 'not_due'}, 'later retries, or being dialed'),
        stat('max calls in span', fmtNum(p.max_calls_in_span), {'data-preview': 'max_calls_in_span'}, 'the rate limit times the span')),
      p.truncated ? h('p', {class: 'muted small'}, `Only the first ${fmtNum(p.examined)} due contacts were examined.`) : h('p', {class: 'muted small'}, `${fmtNum(p.examined)} due contacts examined.`),
      p.deferred_by_timezone && p.deferred_by_timezone.length
        ? [h('h3', 'Deferred, by time zone'), rowsTable([
          {title: 'Zone', cell: (z) => z.timezone},
          {title: 'Contacts', class: 'num', cell: (z) => fmtNum(z.contacts)},
          {title: 'Next opening', cell: (z) => (z.next_opening ? h('span', time(z.next_opening), ' ', h('span', {class: 'muted'}, relative(z.next_opening))) : 'none within a year')},
          {title: 'Why', cell: (z) => z.why},
        ], p.deferred_by_timezone, {id: 'preview-deferred', rowAttrs: (z) => ({'data-zone': z.timezone})})]
        : null);
  }));
  mount(previewCard,
    h('h2', 'Preview (dry run)'),
    previewHint,
    h('div', {class: 'row'}, spanSel, previewBtn),
    previewErr,
    previewOut);

  // --- the page --------------------------------------------------------------------------
  const settingsBox = h('div', {id: 'campaign-settings'});
  mount(main,
    h('p', {class: 'crumbs'}, h('a', {href: '#/campaigns'}, '← Campaigns')),
    h('div', {class: 'card'},
      h('div', {class: 'spread'}, h('div', {class: 'row title-row'}, nameEl, statusEl), live),
      h('div', {class: 'campaign-bar'}, bar),
      h('div', {class: 'row actions'}, Object.values(buttons), exportBtn, callsLink),
      confirmBox,
      actionErr),
    h('section', {class: 'numbers'},
      h('h2', 'Contacts'), counters,
      h('h2', 'Calls'), metrics,
      h('h2', 'Outcomes'), outcomes),
    h('div', {class: 'grid two'},
      h('div', {class: 'card'}, cpmBox),
      h('div', {class: 'card'}, outBox)),
    chartNote,
    uploadCard,
    previewCard,
    h('div', {class: 'grid side'},
      h('div', {class: 'card', id: 'held-contacts-card'}, h('h2', 'Suppressed and exhausted contacts'), held),
      h('div', {class: 'card', id: 'windows-card'}, h('h2', 'Calling windows'), outside)),
    h('div', {class: 'card'},
      h('div', {class: 'spread'}, h('h2', 'All contacts'), h('label', {class: 'row'}, h('span', {class: 'muted'}, 'Status'), statusSel)),
      contactsErr, contactsBox, moreBtn, contactsCapNote),
    h('details', {class: 'card', open: true}, h('summary', h('strong', 'Settings')), settingsBox));
  mount(settingsBox, settingsFacts(c));
  window.scrollTo(0, 0);
  renderHeader();
  renderNumbers();
  loadHeld(true).catch((e) => mount(held, errorBox(e)));
  await Promise.all([activityNow(), loadContacts('reset')]);

  // Live: the campaign's events that change what this page shows re-read it, throttled; no
  // polling loop. Only those kinds are followed: its own (campaign.*), its contacts' (contact.*),
  // and its calls being placed and ending (progress, activity, the contacts' status and
  // attempts); the many media.*, sip.*, prompt.* events of its live calls change none of it.
  // The first "live" (and each reconnect) re-reads too, so nothing that happened between the
  // first read and the stream's start (or during a drop) is missed.
  const stop = follow(`campaign_id=${enc(id)}&kind=${CAMPAIGN_PAGE_KINDS}`, (ev) => {
    campaignSoon();
    if (!String(ev.kind).startsWith('contact.')) activitySoon();
    contactsSoon();
  }, (st) => {
    setLiveState(live, st);
    if (st === 'live') { campaignSoon(); activitySoon(); contactsSoon(); }
  });
  return () => { stopped = true; stop(); };
}
