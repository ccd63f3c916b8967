// The create-campaign form (#/campaigns/new): script, trunks, caller ids, limits, calling
// windows (a weekday/time picker), holidays, the time zone rule, the retry policy, the schedule.
// It sends POST /v1/campaigns (src/api/campaigns.rs `CampaignRequest`); a 422 names the field,
// which is marked and the message shown in #form-error. On 201 it opens the campaign.

import {h, mount, errorBox, field} from './dom.js';
import {api, can, cannot} from './api.js';

const DAYS = [['mon', 'Monday'], ['tue', 'Tuesday'], ['wed', 'Wednesday'], ['thu', 'Thursday'],
  ['fri', 'Friday'], ['sat', 'Saturday'], ['sun', 'Sunday']];
// The API's default windows: 08:00–21:00 callee time, Monday to Saturday.
const DEFAULT_WINDOWS = {mon: [['08:00', '21:00']], tue: [['08:00', '21:00']], wed: [['08:00', '21:00']],
  thu: [['08:00', '21:00']], fri: [['08:00', '21:00']], sat: [['08:00', '21:00']], sun: []};
const MAX_SPANS = 8;

// The API's default retry rules (src/campaign/model.rs default_rules).
const RETRY = [
  ['busy', 'busy', 3, 600, false],
  ['no_answer', 'no answer', 3, 1800, false],
  ['rejected', 'rejected', 0, 0, false],
  ['invalid_number', 'invalid number', 0, 0, false],
  ['network_error', 'network error', 3, 300, true],
];

const ZONES = ['UTC', 'America/New_York', 'America/Chicago', 'America/Denver', 'America/Phoenix',
  'America/Los_Angeles', 'America/Anchorage', 'Pacific/Honolulu', 'America/Toronto', 'America/Vancouver',
  'America/Mexico_City', 'America/Bogota', 'America/Sao_Paulo', 'America/Argentina/Buenos_Aires',
  'Europe/London', 'Europe/Dublin', 'Europe/Lisbon', 'Europe/Paris', 'Europe/Berlin', 'Europe/Madrid',
  'Europe/Rome', 'Europe/Amsterdam', 'Europe/Brussels', 'Europe/Zurich', 'Europe/Stockholm', 'Europe/Warsaw',
  'Europe/Athens', 'Europe/Istanbul', 'Europe/Kyiv', 'Europe/Moscow', 'Africa/Casablanca', 'Africa/Lagos',
  'Africa/Cairo', 'Africa/Nairobi', 'Africa/Johannesburg', 'Asia/Dubai', 'Asia/Karachi', 'Asia/Kolkata',
  'Asia/Bangkok', 'Asia/Jakarta', 'Asia/Singapore', 'Asia/Manila', 'Asia/Shanghai', 'Asia/Hong_Kong',
  'Asia/Seoul', 'Asia/Tokyo', 'Australia/Perth', 'Australia/Adelaide', 'Australia/Sydney',
  'Pacific/Auckland'];
const OTHER = '__other__';

function num(name, placeholder, attrs) {
  return h('input', Object.assign({type: 'number', name, id: `f-${name}`, placeholder, inputmode: 'decimal'}, attrs || {}));
}

/** Splits "a, b c" into ["a", "b", "c"]. */
function words(text) {
  return text.split(/[\s,;]+/).map((x) => x.trim()).filter(Boolean);
}

function toMin(v) {
  const m = /^(\d\d):(\d\d)/.exec(v || '');
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}

function hhmm(min) {
  return `${String(Math.floor(min / 60)).padStart(2, '0')}:${String(min % 60).padStart(2, '0')}`;
}

class FieldError extends Error {
  constructor(fieldName, message) {
    super(`${fieldName}: ${message}`);
    this.code = 'invalid_field';
    this.field = fieldName;
  }
}

export async function newCampaignView(main) {
  const writable = can('campaigns:write');

  // --- script ------------------------------------------------------------------------------
  let scriptInput;
  let scriptNote = null;
  if (can('scripts:read')) {
    try {
      const scripts = (await api('/v1/scripts')).items || [];
      scriptInput = h('select', {name: 'script_id', id: 'f-script_id'},
        h('option', {value: ''}, 'none: answer, then hang up'),
        scripts.map((sc) => h('option', {value: sc.id}, `${sc.name} (v${sc.version}, ${sc.id})`)));
      if (!scripts.length) scriptNote = 'No script yet: without one each answered call is hung up.';
    } catch (e) {
      scriptNote = `The scripts could not be read (${e.message}): type the script id.`;
    }
  } else {
    scriptNote = `Your key cannot list scripts (${cannot('scripts:read')}): type the script id (scr_…), or leave it empty.`;
  }
  if (!scriptInput) {
    scriptInput = h('input', {type: 'text', name: 'script_id', id: 'f-script_id', placeholder: 'scr_… (optional)',
      autocomplete: 'off', spellcheck: 'false', maxlength: 64});
  }

  // --- trunks ------------------------------------------------------------------------------
  let trunkBox;
  let trunkText = null;
  if (can('trunks:read')) {
    try {
      const trunks = (await api('/v1/trunks')).items || [];
      trunkBox = trunks.length
        ? h('div', {class: 'checks', id: 'f-trunk_ids'}, trunks.map((t) => h('label', {class: 'check'},
          h('input', {type: 'checkbox', name: 'trunk_ids', value: t.id}),
          h('span', null, t.name, ' ', h('span', {class: 'muted small'}, (t.hosts || []).join(', ') || t.id)))))
        : h('p', {class: 'muted', id: 'f-trunk_ids'}, 'No trunk yet: add one under Operations. A campaign without a trunk cannot start.');
    } catch (e) {
      trunkText = `The trunks could not be read (${e.message}): type their ids.`;
    }
  } else {
    trunkText = `Your key cannot list trunks (${cannot('trunks:read')}): type their ids (trk_…), in order.`;
  }
  if (!trunkBox) {
    trunkBox = h('div', {id: 'f-trunk_ids'}, h('input', {type: 'text', name: 'trunk_ids', placeholder: 'trk_…, trk_…',
      autocomplete: 'off', spellcheck: 'false'}), h('span', {class: 'hint'}, trunkText));
  }

  // --- windows -----------------------------------------------------------------------------
  const dayRows = {};
  function spanEl(day, from, to) {
    const f = h('input', {type: 'time', name: `win-${day}-from`, value: from, 'aria-label': `${day} from`, required: true});
    const t = h('input', {type: 'time', name: `win-${day}-to`, value: to, 'aria-label': `${day} to`, required: true});
    const el = h('span', {class: 'span-pick'}, f, h('span', {class: 'muted'}, '–'), t);
    const rm = h('button', {type: 'button', class: 'icon', title: 'remove this span', 'aria-label': `remove a ${day} span`,
      onclick: () => { el.remove(); syncDay(day); }}, '×');
    el.append(rm);
    return el;
  }
  function syncDay(day) {
    const row = dayRows[day];
    const on = row.check.checked;
    const n = row.spans.children.length;
    row.el.classList.toggle('off', !on);
    for (const inp of row.spans.querySelectorAll('input, button')) inp.disabled = !on;
    row.add.disabled = !on || n >= MAX_SPANS;
    row.none.hidden = !on || n > 0;
  }
  function setDay(day, spans) {
    const row = dayRows[day];
    row.check.checked = spans.length > 0;
    mount(row.spans, spans.map(([a, b]) => spanEl(day, a, b)));
    syncDay(day);
  }
  const daysBox = h('div', {class: 'days', id: 'f-windows'});
  for (const [day, label] of DAYS) {
    const check = h('input', {type: 'checkbox', name: `day-${day}`, value: 'on'});
    const spans = h('div', {class: 'spans'});
    const none = h('span', {class: 'muted small'}, 'no span: add one');
    const add = h('button', {type: 'button', class: 'small', title: 'add a span to this day'}, '+ span');
    const el = h('div', {class: 'day', 'data-day': day},
      h('label', {class: 'day-name'}, check, h('span', label)), spans, none, add);
    dayRows[day] = {el, check, spans, add, none};
    add.addEventListener('click', () => {
      // The new span starts an hour after the last one ends (two hours long, at most to
      // midnight); the first one is 09:00–17:00.
      const last = spans.lastElementChild;
      const lastTo = last ? toMin(last.querySelectorAll('input')[1].value) : null;
      let from = 9 * 60;
      let to = 17 * 60;
      if (lastTo !== null && lastTo > 0 && lastTo + 60 < 1440) {
        from = lastTo + 60;
        to = Math.min(from + 120, 1440);
      }
      spans.append(spanEl(day, hhmm(from), hhmm(to % 1440)));
      syncDay(day);
    });
    check.addEventListener('change', () => {
      if (check.checked && !spans.children.length) spans.append(spanEl(day, '08:00', '21:00'));
      syncDay(day);
    });
    daysBox.append(el);
  }
  for (const [day] of DAYS) setDay(day, DEFAULT_WINDOWS[day]);
  const presets = h('div', {class: 'row presets'},
    h('span', {class: 'muted small'}, 'Presets:'),
    h('button', {type: 'button', class: 'small', id: 'windows-default',
      onclick: () => { for (const [d] of DAYS) setDay(d, DEFAULT_WINDOWS[d]); }}, 'Mon–Sat 08:00–21:00'),
    h('button', {type: 'button', class: 'small', id: 'windows-weekdays',
      onclick: () => { for (const [d] of DAYS) setDay(d, ['sat', 'sun'].includes(d) ? [] : [['09:00', '12:00'], ['13:00', '18:00']]); }}, 'Weekdays 09–12, 13–18'),
    h('button', {type: 'button', class: 'small', id: 'windows-always',
      onclick: () => { for (const [d] of DAYS) setDay(d, [['00:00', '00:00']]); }}, 'Every day, all day'));

  function readWindows() {
    const out = {};
    let any = false;
    for (const [day, label] of DAYS) {
      const row = dayRows[day];
      if (!row.check.checked) continue;
      const spans = [];
      for (const sp of row.spans.children) {
        const [f, t] = sp.querySelectorAll('input');
        if (!f.value || !t.value) throw new FieldError('windows', `${label}: give both times of each span`);
        if (f.value === t.value && f.value !== '00:00') throw new FieldError('windows', `${label}: ${f.value}–${t.value} opens and closes at the same time`);
        // A span ending at 00:00 ends at midnight: 24:00 (00:00–00:00 is the whole day).
        spans.push(`${f.value}-${t.value === '00:00' ? '24:00' : t.value}`);
      }
      if (spans.length) { out[day] = spans; any = true; }
    }
    if (!any) throw new FieldError('windows', 'no calling window on any day: enable a day and give it a span');
    return out;
  }

  // --- holidays ----------------------------------------------------------------------------
  const holidays = h('input', {type: 'text', name: 'holidays', id: 'f-holidays', placeholder: '2026-12-25, 2027-01-01',
    autocomplete: 'off', spellcheck: 'false'});
  const holidayPick = h('input', {type: 'date', 'aria-label': 'a holiday to add', id: 'f-holiday-pick'});
  const holidayAdd = h('button', {type: 'button', class: 'small', onclick: () => {
    if (!holidayPick.value) return;
    const list = words(holidays.value);
    if (!list.includes(holidayPick.value)) list.push(holidayPick.value);
    holidays.value = list.sort().join(', ');
  }}, 'Add date');

  // --- time zone ---------------------------------------------------------------------------
  const browserZone = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (_) { return null; } })();
  const zones = browserZone && !ZONES.includes(browserZone) ? [...ZONES, browserZone] : ZONES;
  const tzSel = h('select', {name: 'default_timezone', id: 'f-default_timezone'},
    zones.map((z) => h('option', {value: z, selected: z === 'UTC'}, z === browserZone ? `${z} (this browser)` : z)),
    h('option', {value: OTHER}, 'another zone…'));
  const tzOther = h('input', {type: 'text', name: 'default_timezone_other', id: 'f-default_timezone_other',
    placeholder: 'an IANA zone, e.g. America/Halifax', hidden: true, autocomplete: 'off', spellcheck: 'false', maxlength: 64});
  let tzList = null;
  if (typeof Intl.supportedValuesOf === 'function') {
    tzList = h('datalist', {id: 'iana-zones'}, Intl.supportedValuesOf('timeZone').map((z) => h('option', {value: z})));
    tzOther.setAttribute('list', 'iana-zones');
  }
  tzSel.addEventListener('change', () => { tzOther.hidden = tzSel.value !== OTHER; if (!tzOther.hidden) tzOther.focus(); });
  const region = h('input', {type: 'text', name: 'default_region', id: 'f-default_region', placeholder: 'US', maxlength: 2,
    size: 4, autocomplete: 'off', spellcheck: 'false'});

  // --- retry -------------------------------------------------------------------------------
  const retryRows = RETRY.map(([key, label, n, after, next]) => h('tr', {'data-outcome': key},
    h('th', label),
    h('td', h('input', {type: 'number', name: `retry-${key}-max_retries`, value: n, min: 0, max: 20, step: 1,
      'aria-label': `${label}: retries`, class: 'short'})),
    h('td', h('input', {type: 'number', name: `retry-${key}-after_s`, value: after, min: 0, max: 2592000, step: 1,
      'aria-label': `${label}: seconds before the first retry`, class: 'short'})),
    h('td', h('input', {type: 'checkbox', name: `retry-${key}-next_trunk`, checked: next,
      'aria-label': `${label}: try the next trunk at once first`}))));
  const retryTable = h('div', {class: 'table-wrap'}, h('table', {class: 'retry', id: 'f-retry'},
    h('thead', h('tr', h('th', 'outcome'), h('th', 'retries'), h('th', 'first retry after (s)'), h('th', 'next trunk first'))),
    h('tbody', retryRows)));

  // --- the form ----------------------------------------------------------------------------
  const zoneName = browserZone || 'this browser’s zone';
  const formError = h('div', {id: 'form-error'});
  formError.setAttribute('aria-live', 'polite');
  const submit = h('button', {type: 'submit', id: 'create-campaign', class: 'primary',
    disabled: !writable, title: writable ? undefined : cannot('campaigns:write')}, 'Create campaign');
  const form = h('form', {id: 'campaign-form', class: 'campaign-form', autocomplete: 'off'},
    !writable ? h('div', {class: 'notice', id: 'form-readonly'}, `Your key cannot create campaigns (${cannot('campaigns:write')}): it can read them only.`) : null,
    h('fieldset', h('legend', 'Campaign'),
      field('Name', h('input', {type: 'text', name: 'name', id: 'f-name', required: true, maxlength: 128,
        placeholder: 'spring survey', autocomplete: 'off'})),
      field('Script', scriptInput, scriptNote || 'Its current version is pinned when the campaign is created.'),
      h('div', {class: 'field', id: 'trunks-field'}, h('span', {class: 'field-label'}, 'Trunks'), trunkBox,
        h('span', {class: 'hint'}, 'In order: a network error moves a contact to the next one. At least one is needed to start.')),
      field('Caller ids', h('input', {type: 'text', name: 'caller_ids', id: 'f-caller_ids', placeholder: '+14155550100, +14155550101',
        autocomplete: 'off', spellcheck: 'false'}), 'Used in turn as the From user; empty: the trunk’s.'),
      h('div', {class: 'form-grid'},
        field('Priority', num('priority', '1', {min: 1, max: 1000, step: 1}), 'weight among running campaigns, 1–1000'),
        h('label', {class: 'field check-field'}, h('span', {class: 'row'},
          h('input', {type: 'checkbox', name: 'record', id: 'f-record', value: 'on'}), h('span', {class: 'field-label'}, 'Record each call'))))),
    h('fieldset', h('legend', 'Limits'),
      h('div', {class: 'form-grid'},
        field('Live calls at most', num('max_concurrent', '10', {min: 1, max: 10000, step: 1}), '1–10000, default 10'),
        field('Calls per second at most', num('max_cps', '1', {min: 0.001, max: 1000, step: 'any'}), 'above 0, at most 1000; default 1'),
        field('Ring timeout (s)', num('ring_timeout_s', '30', {min: 1, max: 300, step: 1}), '1–300, default 30'),
        field('Longest call (s)', num('max_duration_s', 'none', {min: 1, max: 86400, step: 1}), 'optional, 1–86400'))),
    h('fieldset', {id: 'windows-fieldset'}, h('legend', 'Calling windows'),
      h('p', {class: 'hint'}, 'When each contact may be called, in the ', h('strong', 'callee’s local time'),
        ' (the time zone rule below). A span may cross midnight (22:00–02:00); an end of 00:00 means midnight. Days left off are never called.'),
      presets,
      daysBox,
      h('div', {class: 'field', id: 'holidays-field'}, h('span', {class: 'field-label'}, 'Holidays'),
        h('div', {class: 'row'}, holidays, holidayPick, holidayAdd),
        h('span', {class: 'hint'}, 'Dates (YYYY-MM-DD, the callee’s local date) without calls.'))),
    h('fieldset', {id: 'tz-fieldset'}, h('legend', 'Time zone rule'),
      h('p', {class: 'tz-rule'}, 'Windows are in the callee’s local time: the contact’s own ', h('code', 'timezone'),
        ' (a CSV column), else the zone of its number (country code; US/Canada area code), else the default time zone below.'),
      h('div', {class: 'form-grid'},
        h('label', {class: 'field'}, h('span', {class: 'field-label'}, 'Default time zone'), tzSel, tzOther, tzList,
          h('span', {class: 'hint'}, 'For numbers whose zone cannot be told.')),
        field('Default region', region, 'ISO 3166 code that numbers without + are read in (default US).'))),
    h('fieldset', {id: 'retry-fieldset'}, h('legend', 'Retries by outcome'),
      h('p', {class: 'hint'}, 'Answered contacts are done. Other outcomes are retried this many times; each further retry waits “backoff” times longer. 0 retries: never.'),
      retryTable,
      h('div', {class: 'form-grid'},
        field('Backoff', num('retry-backoff', '2', {value: 2, min: 1, max: 10, step: 'any'}), '1–10 (1: fixed waits)'),
        field('Jitter', num('retry-jitter', '0.2', {value: 0.2, min: 0, max: 1, step: 'any'}), '0–1 (0.2: ±20 %)'),
        field('Longest wait (s)', num('retry-max_delay_s', '86400', {value: 86400, min: 1, max: 2592000, step: 1}), 'at most 30 days'))),
    h('fieldset', h('legend', 'Schedule'),
      h('div', {class: 'form-grid'},
        field('Start at', h('input', {type: 'datetime-local', name: 'start_at', id: 'f-start_at'}), `optional: no call before (${zoneName})`),
        field('End at', h('input', {type: 'datetime-local', name: 'end_at', id: 'f-end_at'}), `optional: the campaign completes then (${zoneName})`))),
    formError,
    h('div', {class: 'row'}, submit, h('a', {href: '#/campaigns', class: 'button'}, 'Cancel')),
    h('p', {class: 'hint'}, 'The campaign is created as a draft: upload its contacts, preview, then start it on its page.'));
  form.setAttribute('novalidate', '');

  const el = (name) => form.elements.namedItem(name);
  function val(name) {
    const e = el(name);
    return e && typeof e.value === 'string' ? e.value.trim() : '';
  }
  function optNumber(name, integer) {
    const v = val(name);
    if (v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new FieldError(name, integer ? 'a whole number' : 'a number');
    return n;
  }
  function time(name) {
    const v = val(name);
    if (!v) return undefined;
    const d = new Date(v);
    if (isNaN(d)) throw new FieldError(name, 'not a date and time');
    return d.toISOString();
  }

  function readBody() {
    const body = {name: val('name')};
    const script = val('script_id');
    if (script) body.script_id = script;
    const trunkEls = form.querySelectorAll('input[name="trunk_ids"]');
    const trunks = [];
    for (const t of trunkEls) {
      if (t.type === 'checkbox') { if (t.checked) trunks.push(t.value); } else trunks.push(...words(t.value));
    }
    if (trunks.length) body.trunk_ids = trunks;
    const callers = words(val('caller_ids'));
    if (callers.length) body.caller_ids = callers;
    for (const [k, int] of [['max_concurrent', true], ['max_cps', false], ['ring_timeout_s', true], ['priority', true], ['max_duration_s', true]]) {
      const n = optNumber(k, int);
      if (n !== undefined) body[k] = n;
    }
    body.windows = readWindows();
    const hol = words(val('holidays'));
    for (const d of hol) if (!/^\d{4}-\d{2}-\d{2}$/.test(d)) throw new FieldError('holidays', `${d.slice(0, 20)} is not a date YYYY-MM-DD`);
    if (hol.length) body.holidays = hol;
    const zone = tzSel.value === OTHER ? tzOther.value.trim() : tzSel.value;
    if (tzSel.value === OTHER && !zone) throw new FieldError('default_timezone', 'type a zone, or pick one');
    if (zone) body.default_timezone = zone;
    const reg = val('default_region');
    if (reg) body.default_region = reg.toUpperCase();
    const rules = {};
    for (const [key] of RETRY) {
      const mr = optNumber(`retry-${key}-max_retries`, true);
      const after = optNumber(`retry-${key}-after_s`, true);
      rules[key] = {max_retries: mr ?? 0, after_s: after ?? 0, next_trunk: !!el(`retry-${key}-next_trunk`).checked};
    }
    body.retry = {rules};
    const backoff = optNumber('retry-backoff', false);
    const jitter = optNumber('retry-jitter', false);
    const maxDelay = optNumber('retry-max_delay_s', true);
    if (backoff !== undefined) body.retry.backoff = backoff;
    if (jitter !== undefined) body.retry.jitter = jitter;
    if (maxDelay !== undefined) body.retry.max_delay_s = maxDelay;
    const start = time('start_at');
    const end = time('end_at');
    if (start) body.start_at = start;
    if (end) body.end_at = end;
    body.record = !!el('record').checked;
    return body;
  }

  // The element a field path names ("retry.rules.busy.after_s: …", "trunk_ids: …", "windows: …").
  function fieldFor(path) {
    if (!path) return null;
    let m;
    if ((m = path.match(/^retry\.rules\.([a-z_]+)\.([a-z_]+)/))) return el(`retry-${m[1]}-${m[2]}`) || form.querySelector('#f-retry');
    if ((m = path.match(/^retry\.(backoff|jitter|max_delay_s)/))) return el(`retry-${m[1]}`);
    if (path.startsWith('retry')) return form.querySelector('#f-retry');
    if (path.startsWith('windows')) return form.querySelector('#f-windows');
    if (path.startsWith('trunk_ids')) return form.querySelector('#f-trunk_ids');
    if (path.startsWith('holidays')) return holidays;
    if (path.startsWith('default_timezone')) return tzSel.value === OTHER ? tzOther : tzSel;
    const name = path.replace(/[.[].*$/, '');
    const e = el(name);
    return e instanceof Element ? e : null;
  }

  function clearMarks() {
    for (const m of form.querySelectorAll('.invalid')) m.classList.remove('invalid');
    for (const m of form.querySelectorAll('[aria-invalid]')) m.removeAttribute('aria-invalid');
    for (const m of form.querySelectorAll('.field-error')) m.remove();
  }

  function showError(e) {
    const path = e.field || (e.message.match(/^([a-z_]+(?:[.[][a-z_0-9\]]+)*)\s*:/) || [])[1];
    mount(formError, errorBox(e));
    const target = fieldFor(path);
    if (target) {
      target.classList.add('invalid');
      target.setAttribute('aria-invalid', 'true');
      const wrap = target.closest('.field, fieldset');
      if (wrap) wrap.append(h('span', {class: 'field-error'}, e.message));
      if (typeof target.focus === 'function') target.focus({preventScroll: true});
      (wrap || target).scrollIntoView({block: 'center'});
    } else {
      formError.scrollIntoView({block: 'center'});
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!writable || submit.dataset.busy === 'true') return;
    clearMarks();
    mount(formError);
    let body;
    try {
      body = readBody();
    } catch (e) {
      showError(e);
      return;
    }
    submit.dataset.busy = 'true';
    submit.disabled = true;
    submit.textContent = 'Creating…';
    try {
      const created = await api('/v1/campaigns', {method: 'POST', body});
      location.hash = `#/campaigns/${encodeURIComponent(created.id)}`;
    } catch (e) {
      showError(e);
    } finally {
      submit.dataset.busy = 'false';
      submit.disabled = false;
      submit.textContent = 'Create campaign';
    }
  });

  mount(main,
    h('p', {class: 'crumbs'}, h('a', {href: '#/campaigns'}, '← Campaigns')),
    h('div', {class: 'card form-card'}, h('h1', 'New campaign'), form));
  window.scrollTo(0, 0);
  if (writable) el('name').focus({preventScroll: true});
  return null;
}
