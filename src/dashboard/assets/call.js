// One call on one time axis: facts, the SIP ladder, spans (ringing, talk, the whole call),
// prompts, digits, recording, media quality per interval, webhook deliveries, all on x = time
// since the call was created (the timeline's offset_us); beside it the recording player
// (wave.js) and the evidence manifest; below, every event as text. Live while the call runs:
// the call's SSE stream appends events (no polling).

import {h, s, mount, errorBox, badge, facts, time, fmtMs, fmtNum, throttle} from './dom.js';
import {api, follow, can, cannot, whoami} from './api.js';
import {recordingPlayer} from './wave.js';

const FINAL = new Set(['call.completed', 'call.failed']);
const ENDED = new Set(['completed', 'failed']);

/**
 * At most this many events are listed (one table row each) and drawn, loaded and appended
 * live alike; past it, only the events that shape the page (the end, the recordings, the
 * hang-up) are still taken in, for the facts, the spans and the player.
 */
export const EVENT_CAP = 20000;
const EVENT_PAGE = 5000;
const KEPT_PAST_CAP = new Set(['call.completed', 'call.failed', 'sip.bye_sent', 'sip.bye_received',
  'recording.started', 'recording.stopped', 'recording.ready', 'recording.failed']);

/** The first EVENT_CAP events of a call: {items, capped} (capped: it has more). */
async function loadEvents(path) {
  const items = [];
  let cursor = null;
  do {
    const q = `limit=${EVENT_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = await api(`${path}/events?${q}`);
    items.push(...(page.items || []));
    cursor = page.next_cursor;
  } while (cursor && items.length < EVENT_CAP);
  let capped = items.length > EVENT_CAP;
  if (!capped && cursor) {
    // A full last page has a cursor whether or not more follow: one event tells.
    const more = await api(`${path}/events?limit=1&cursor=${encodeURIComponent(cursor)}`);
    capped = !!(more.items && more.items.length);
  }
  return {items: items.slice(0, EVENT_CAP), capped};
}

const PHRASE = {
  100: 'Trying', 180: 'Ringing', 181: 'Call Is Being Forwarded', 182: 'Queued', 183: 'Session Progress',
  199: 'Early Dialog Terminated', 200: 'OK', 202: 'Accepted', 300: 'Multiple Choices', 301: 'Moved Permanently',
  302: 'Moved Temporarily', 380: 'Alternative Service', 400: 'Bad Request', 401: 'Unauthorized',
  402: 'Payment Required', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 406: 'Not Acceptable',
  407: 'Proxy Authentication Required', 408: 'Request Timeout', 410: 'Gone', 413: 'Request Entity Too Large',
  415: 'Unsupported Media Type', 416: 'Unsupported URI Scheme', 420: 'Bad Extension', 421: 'Extension Required',
  422: 'Session Interval Too Small', 423: 'Interval Too Brief', 480: 'Temporarily Unavailable',
  481: 'Call/Transaction Does Not Exist', 482: 'Loop Detected', 483: 'Too Many Hops', 484: 'Address Incomplete',
  485: 'Ambiguous', 486: 'Busy Here', 487: 'Request Terminated', 488: 'Not Acceptable Here', 491: 'Request Pending',
  493: 'Undecipherable', 500: 'Server Internal Error', 501: 'Not Implemented', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Server Time-out', 505: 'Version Not Supported', 513: 'Message Too Large',
  600: 'Busy Everywhere', 603: 'Decline', 604: 'Does Not Exist Anywhere', 606: 'Not Acceptable',
};

function clip(text, n) {
  const t = String(text ?? '');
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/** "180 Ringing"; `reason` (the peer's phrase, when an event carries it) wins over the table. */
function statusLabel(code, reason) {
  const phrase = reason || (Object.hasOwn(PHRASE, code) ? PHRASE[code] : '');
  return clip(`${code} ${phrase}`.trim(), 34);
}

function statusClass(code) {
  if (code < 200) return 'prov';
  if (code < 300) return 'ok';
  if (code < 400) return 'redir';
  return 'err';
}

/** µs since the call's creation, as people read it. */
export function fmtOffset(us) {
  if (us === null || us === undefined) return '—';
  const a = Math.abs(us);
  if (a < 1000) return `${us} µs`;
  if (a < 1e6) return `${(us / 1000).toFixed(a < 10000 ? 2 : 1)} ms`;
  if (a < 600e6) return `${(us / 1e6).toFixed(3)} s`;
  const m = Math.floor(us / 60e6);
  return `${m} min ${((us - m * 60e6) / 1e6).toFixed(1).padStart(4, '0')} s`;
}

function compact(v) {
  try { return JSON.stringify(v) ?? ''; } catch (_) { return String(v); }
}

/**
 * An API value as text: h(tag, value) would take a plain object for attributes and drop a 0,
 * so API values go in as children (h(tag, null, txt(value))), objects as JSON, nothing as —.
 */
function txt(v) {
  if (v === null || v === undefined || v === '') return '—';
  return typeof v === 'object' ? compact(v) : String(v);
}

/** The user part (or host) of a SIP URI, for a short label. */
function shortUri(u) {
  const t = String(u || '');
  const m = t.match(/^(?:sips?:|tel:)?([^@;?]+)(?:@([^;?>]+))?/i);
  if (!m) return clip(t, 22);
  return clip(m[1] || m[2] || t, 22);
}

// ---------------------------------------------------------------------------------------------
// The SIP messages the events show. Each event that stands for a message on the wire becomes
// one arrow; nothing is drawn that no event shows (the 100 Trying we send to an inbound INVITE,
// the 200 to a BYE, the ACK of a non-2xx final response have no events).
// dir: 'out' = callplane → peer, 'in' = peer → callplane.

export function sipMessages(events, inbound) {
  const out = [];
  const add = (e, dir, label, cls, note, title) => out.push({
    t: e.offset_us, dir, label, cls, note: note || '', kind: e.kind, id: e.id,
    title: `${label}${note ? ` (${note})` : ''} · ${fmtOffset(e.offset_us)} · ${e.kind}${title ? ` · ${title}` : ''}`,
  });
  const last = () => out[out.length - 1];
  const retried = new Map(); // cseq of an INVITE retried with credentials → true
  for (const e of events) {
    if (e.kind === 'sip.auth_retry' && String(e.details?.method).toUpperCase() === 'INVITE') retried.set(e.details.cseq, e);
  }
  const invitesByCseq = new Set(events.filter((e) => e.kind === 'sip.invite_sent').map((e) => e.details?.cseq));
  for (const e of events) {
    const d = e.details || {};
    switch (e.kind) {
      case 'call.created':
        if (inbound) add(e, 'in', 'INVITE', 'req', '', `from ${d.source || '?'} over ${d.transport || '?'}`);
        break;
      case 'sip.invite_sent': {
        const notes = [];
        if (d.attempt > 1) notes.push(`attempt ${d.attempt}`);
        if (retried.has(d.cseq)) notes.push('with credentials');
        add(e, 'out', 'INVITE', 'req', notes.join(', '), `to ${d.destination || '?'} ${d.transport || ''}, CSeq ${d.cseq ?? '?'}`);
        last().short = [d.attempt > 1 ? `#${d.attempt}` : '', retried.has(d.cseq) ? '+auth' : ''].filter(Boolean).join(' ');
        break;
      }
      case 'sip.trying':
        add(e, 'in', statusLabel(d.sip_status || 100), 'prov');
        break;
      case 'sip.ringing':
        add(e, 'in', statusLabel(d.sip_status || 180), 'prov', d.reliable ? 'reliable' : '');
        break;
      case 'sip.early_media':
        if (inbound && d.sent) add(e, 'out', statusLabel(d.sip_status || 183), 'prov', 'early media');
        else add(e, inbound ? 'out' : 'in', statusLabel(d.sip_status || 183), 'prov', 'SDP, early media');
        break;
      case 'sip.answered':
        if (inbound) {
          // The UAS's dialog is confirmed by the ACK for our 200.
          add(e, 'out', '200 OK', 'ok', 'answer');
          add(e, 'in', 'ACK', 'req', '', 'the ACK that confirmed the dialog');
        } else {
          add(e, 'in', statusLabel(d.sip_status || 200), 'ok', 'answer', d.session_expires ? `session expires ${d.session_expires} s` : '');
        }
        break;
      case 'sip.answered_after_cancel':
        add(e, 'in', statusLabel(d.sip_status || 200), 'ok', 'crossed our CANCEL');
        last().short = '(late)';
        break;
      case 'sip.ack_sent':
        add(e, 'out', 'ACK', 'req');
        break;
      case 'sip.cancel_sent':
        add(e, 'out', 'CANCEL', 'req');
        break;
      case 'sip.bye_sent':
        add(e, 'out', 'BYE', 'req');
        break;
      case 'sip.bye_received':
        add(e, 'in', 'BYE', 'req');
        break;
      case 'sip.auth_challenge': {
        const prev = out[out.length - 1];
        const st = Number(d.status) || 401;
        if (prev && prev.kind === 'sip.auth_challenge' && prev.t === e.offset_us && prev.code === st) {
          prev.title += `, realm ${d.realm}`;
          break;
        }
        add(e, 'in', statusLabel(st), 'auth', `challenge for ${d.method || '?'}`,
          `realm ${d.realm || '?'}, ${d.algorithm || ''}${d.stale ? ', stale' : ''}`);
        out[out.length - 1].code = st;
        break;
      }
      case 'sip.auth_retry':
        // An INVITE retried with credentials is also a sip.invite_sent (same CSeq): drawn there.
        if (String(d.method).toUpperCase() === 'INVITE' && invitesByCseq.has(d.cseq)) break;
        add(e, 'out', String(d.method || '?').toUpperCase(), 'req', 'with credentials', `CSeq ${d.cseq ?? '?'}`);
        last().short = '+auth';
        break;
      case 'sip.reoffer_sent':
        add(e, 'out', d.purpose === 'refresh' ? 'UPDATE/re-INVITE' : 're-INVITE', 'req', d.purpose || '');
        last().short = d.purpose ? `(${clip(d.purpose, 8)})` : '';
        break;
      case 'sip.reinvite_accepted':
        add(e, 'in', '200 OK', 'ok', 're-INVITE answer', d.direction ? `direction ${d.direction}` : d.answer_error || '');
        break;
      case 'sip.reinvite_rejected':
        add(e, 'in', statusLabel(Number(d.sip_status) || 0), 'err', 're-INVITE refused');
        break;
      case 'dtmf.sent':
        if (d.method === 'info') {
          add(e, 'out', 'INFO', 'req', `DTMF ${clip(d.digits, 12)}`, 'one INFO per digit');
          last().short = clip(d.digits, 6);
        }
        break;
      case 'call.failed': {
        const st = Number(d.sip_status);
        if (!st || st < 300) break;
        if (inbound) {
          add(e, 'out', statusLabel(st, d.reason), 'err', 'final');
        } else {
          // A final challenge (401/407 not answered) was drawn as the challenge itself.
          const last = [...out].reverse().find((m) => m.dir === 'in');
          const lastInvite = [...out].reverse().find((m) => m.dir === 'out' && m.label === 'INVITE');
          if (last && last.code === st && (!lastInvite || lastInvite.t <= last.t)) break;
          add(e, 'in', statusLabel(st, d.reason), 'err', 'final', d.q850_cause ? `Q.850 cause ${d.q850_cause}` : '');
        }
        break;
      }
      default:
        break;
    }
  }
  // Events stored at the same µs keep their id order, except that an ACK goes after the
  // response it acknowledges (sip.ack_sent is stored just before sip.answered).
  const rank = (m) => (m.label === 'ACK' ? 1 : 0);
  return out.map((m, i) => [m, i]).sort((a, b) => a[0].t - b[0].t || rank(a[0]) - rank(b[0]) || a[1] - b[1]).map(([m]) => m);
}

/** Events shown on the ladder as notes on callplane's lifeline (no message of their own). */
const LADDER_NOTES = {
  'call.target': (d) => `target ${d.destination || ''}`,
  'call.failover': (d) => `failover (${d.reason || '?'}) to ${d.to || '?'}`,
  'sip.auth_failed': (d) => `auth failed: ${d.reason || ''}`,
  'sip.session_refreshed': (d) => `session refreshed (${d.interval ?? '?'} s)`,
  'sip.reoffer_failed': (d) => `re-offer failed: ${d.reason || ''}`,
  'media.srtp': (d) => `SRTP ${d.suite || ''}`,
  'call.completed': (d) => `completed: ${d.end_reason || ''}`,
  'call.failed': (d) => `failed: ${d.end_reason || d.reason || ''}`,
};

// ---------------------------------------------------------------------------------------------
// The time axis shared by every chart: x(us) for a domain [d0, d1] over a width W.

const L = 92;
const R = 14;

function makeAxis(W, d0, d1) {
  const span = Math.max(1, d1 - d0);
  const pw = W - L - R;
  return {
    W, d0, d1, L, R, pw,
    x: (us) => L + ((us - d0) / span) * pw,
    t: (x) => d0 + ((x - L) / pw) * span,
    inside: (us) => us >= d0 && us <= d1,
  };
}

function ticks(ax) {
  const span = ax.d1 - ax.d0;
  const want = Math.max(2, Math.floor(ax.pw / 90));
  const raw = span / want;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw) || 10 * p;
  const out = [];
  for (let v = Math.ceil(ax.d0 / step) * step; v <= ax.d1 + 1e-9; v += step) out.push(v);
  const fmt = (v) => {
    if (step >= 1e6) {
      if (ax.d1 >= 120e6) {
        const sec = Math.round(v / 1e6);
        return `${Math.floor(sec / 60)}:${String(sec % 60).padStart(2, '0')}`;
      }
      return `${(v / 1e6).toFixed(0)} s`;
    }
    if (step >= 1e5) return `${(v / 1e6).toFixed(1)} s`;
    if (step >= 1e4) return `${(v / 1e6).toFixed(2)} s`;
    if (step >= 1e3) return `${(v / 1e3).toFixed(0)} ms`;
    if (step >= 100) return `${(v / 1e3).toFixed(1)} ms`;
    if (step >= 10) return `${(v / 1e3).toFixed(2)} ms`;
    return `${v.toFixed(0)} µs`;
  };
  return out.map((v) => ({v, label: fmt(v)}));
}

function grid(ax, height, top = 0) {
  return s('g', {class: 'grid'}, ticks(ax).map(({v}) => s('line', {x1: ax.x(v), x2: ax.x(v), y1: top, y2: height})));
}

function axisLabels(ax, y) {
  return s('g', {class: 'axis'}, ticks(ax).map(({v, label}) => s('text', {x: ax.x(v), y, 'text-anchor': 'middle'}, label)));
}

function title(text) {
  return s('title', {}, text);
}

/** Label width estimate (px) for 11 px system-ui text. */
function textW(t) {
  return String(t).length * 6.3 + 6;
}

// ---------------------------------------------------------------------------------------------
// The ladder.

const LADDER = {top: 40, bottom: 104, label: 120, height: 150};

/** Where each message's label sits on the peer's lifeline (fanned out so labels stay apart). */
/** The label as drawn: the message and a short note (`INVITE +auth`). */
function shown(m) {
  return m.short ? `${m.label} ${m.short}` : m.label;
}

function layoutLadder(ax, msgs) {
  const gap = 8;
  const minSep = 12;
  const rowEnd = [-Infinity, -Infinity];
  const placed = [];
  // Forward: each label as close to its time as the labels before it allow, on the row where
  // it sits closest.
  for (const m of msgs) {
    const want = ax.x(m.t);
    const w = textW(shown(m));
    let best = null;
    for (let r = 0; r < 2; r++) {
      const lastX = placed.length ? placed[placed.length - 1].slot : -Infinity;
      const slot = Math.max(want, rowEnd[r] + w / 2 + gap, lastX + minSep);
      if (!best || slot < best.slot - 0.5) best = {slot, row: r};
    }
    rowEnd[best.row] = best.slot + w / 2;
    placed.push({m, slot: best.slot, row: best.row, w});
  }
  // Backward: nothing past the right edge; labels pushed left keep their order and spacing.
  const nextInRow = [null, null];
  for (let i = placed.length - 1; i >= 0; i--) {
    const p = placed[i];
    let limit = ax.W - 2 - p.w / 2;
    const nr = nextInRow[p.row];
    if (nr) limit = Math.min(limit, nr.slot - (p.w + nr.w) / 2 - gap);
    if (i + 1 < placed.length) limit = Math.min(limit, placed[i + 1].slot - minSep);
    p.slot = Math.min(p.slot, limit);
    nextInRow[p.row] = p;
  }
  // What is still missing (labels overlapping, or off the left edge), for the caller to widen.
  let deficit = placed.length ? Math.max(0, 2 - (placed[0].slot - placed[0].w / 2)) : 0;
  const lastInRow = [null, null];
  placed.forEach((p, i) => {
    const lr = lastInRow[p.row];
    if (lr) deficit = Math.max(deficit, lr.slot + (lr.w + p.w) / 2 + gap - p.slot);
    if (i) deficit = Math.max(deficit, placed[i - 1].slot + minSep - p.slot);
    lastInRow[p.row] = p;
  });
  placed.deficit = deficit;
  return placed;
}

function ladderNeed(msgs, W0, d0, d1) {
  // Widen the chart (it scrolls) when the labels of a burst need more room than it has.
  let W = W0;
  for (let i = 0; i < 6; i++) {
    const ax = makeAxis(W, d0, d1);
    const placed = layoutLadder(ax, msgs.filter((m) => ax.inside(m.t)));
    if (placed.deficit <= 0.5) break;
    W = Math.ceil(W + placed.deficit * 2 + 12);
  }
  return Math.min(W, 6000);
}

function drawLadder(ax, msgs, notes, peerLabel, peerTitle, onMsg) {
  const {top, bottom, label: labelY, height} = LADDER;
  const shown = msgs.filter((m) => ax.inside(m.t));
  const placed = layoutLadder(ax, shown);
  const defs = s('defs', {},
    ['out', 'in'].map((k) => s('marker', {id: `ladder-head-${k}`, viewBox: '0 0 10 10', refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'}, s('path', {d: 'M0,0L10,5L0,10z', class: `head-${k}`}))));
  const arrows = placed.map(({m, slot, row}) => {
    const xa = ax.x(m.t);
    const [x1, y1, x2, y2] = m.dir === 'out' ? [xa, top, slot, bottom] : [slot, bottom, xa, top];
    const ly = labelY + row * 14;
    const g = s('g', {class: `ladder-msg msg-${m.cls} dir-${m.dir}`, 'data-label': m.label, 'data-dir': m.dir,
      'data-kind': m.kind, 'data-event': m.id, 'data-t': m.t, tabindex: 0},
    title(m.title),
    s('line', {class: 'arrow', x1, y1, x2, y2, 'marker-end': `url(#ladder-head-${m.dir})`}),
    s('circle', {class: 'anchor', cx: xa, cy: top, r: 2.5}),
    row ? s('line', {class: 'leader', x1: slot, x2: slot, y1: bottom + 2, y2: ly - 9}) : null,
    s('text', {class: 'msg-label', x: slot, y: ly, 'text-anchor': 'middle'}, m.label,
      m.short ? s('tspan', {class: 'msg-short'}, ` ${m.short}`) : null));
    g.addEventListener('click', (e) => { e.stopPropagation(); onMsg(m); });
    g.addEventListener('keydown', (e) => { if (e.key === 'Enter') onMsg(m); });
    return g;
  });
  const noteMarks = notes.filter((n) => ax.inside(n.t)).map((n) => s('g', {class: `ladder-note note-${n.kind.replace(/\W+/g, '-')}`},
    title(`${n.text} · ${fmtOffset(n.t)}`),
    s('path', {d: `M${ax.x(n.t)},${top - 9}l4,4l-4,4l-4,-4z`})));
  return s('svg', {id: 'ladder', class: 'axis-svg', viewBox: `0 0 ${ax.W} ${height}`, role: 'img',
    'aria-label': `SIP ladder: ${msgs.length} messages between callplane and ${peerLabel}`},
  defs, grid(ax, height - 8, 18), axisLabels(ax, 12),
  s('line', {class: 'lifeline', x1: L - 4, x2: ax.W - R, y1: top, y2: top}),
  s('line', {class: 'lifeline', x1: L - 4, x2: ax.W - R, y1: bottom, y2: bottom}),
  s('text', {class: 'lane-label', x: 4, y: top - 5}, 'callplane'),
  s('text', {class: 'lane-label', x: 4, y: bottom - 5}, title(peerTitle), clip(peerLabel, 13)),
  noteMarks, arrows,
  shown.length ? null : s('text', {class: 'empty', x: L + 8, y: (top + bottom) / 2 + 4}, 'No SIP messages in this range.'));
}

// ---------------------------------------------------------------------------------------------
// Spans and lanes: the call, ringing, talk, prompts, digits, recording, media.

function first(events, kinds) {
  return events.find((e) => kinds.includes(e.kind));
}

/** `done`: the call has ended (its final event may be past the events loaded). */
function spans(events, endUs, done) {
  const final = first(events, ['call.completed', 'call.failed']);
  const end = final ? final.offset_us : endUs;
  const live = !final && !done;
  const ring = first(events, ['sip.ringing', 'sip.early_media']);
  const ans = first(events, ['sip.answered']);
  const byeEv = first(events, ['sip.bye_sent', 'sip.bye_received']);
  const out = {call: {a: 0, b: end, open: live}};
  if (ring) out.ringing = {a: ring.offset_us, b: ans ? ans.offset_us : end, open: live && !ans};
  if (ans) out.answered = {a: ans.offset_us, b: byeEv ? byeEv.offset_us : end, open: live && !byeEv};
  const prompts = [];
  let open = null;
  for (const e of events) {
    if (e.kind === 'prompt.started') {
      if (open) { open.b = e.offset_us; prompts.push(open); }
      open = {a: e.offset_us, b: null, file: e.details?.file || 'prompt', planned: e.details?.duration_ms};
    } else if ((e.kind === 'prompt.finished' || e.kind === 'prompt.interrupted') && open) {
      open.b = e.offset_us;
      open.interrupted = e.kind === 'prompt.interrupted';
      prompts.push(open);
      open = null;
    } else if (FINAL.has(e.kind) && open) {
      open.b = e.offset_us; prompts.push(open); open = null;
    }
  }
  if (open) { open.b = end; open.open = live; prompts.push(open); }
  out.prompts = prompts;
  const recs = [];
  let rec = null;
  for (const e of events) {
    if (e.kind === 'recording.started') {
      // The API names the recording on recording.started once its file is stored; one that
      // came live on the stream is named by its recording.ready.
      rec = {a: e.offset_us, b: null, id: recIdOf(e.details)};
    } else if ((e.kind === 'recording.stopped' || e.kind === 'recording.ready' || e.kind === 'recording.failed') && rec) {
      if (rec.b === null) rec.b = e.offset_us;
      if (e.kind === 'recording.ready') { rec.ready = e.offset_us; rec.id = rec.id || recIdOf(e.details); }
      if (e.kind === 'recording.failed') rec.failed = true;
      if (e.kind !== 'recording.stopped') { recs.push(rec); rec = null; }
    }
  }
  if (rec) { if (rec.b === null) { rec.b = end; rec.open = live; } recs.push(rec); }
  out.recordings = recs;
  return out;
}

function drawTimeline(ax, events, endUs, done) {
  const sp = spans(events, endUs, done);
  const lanes = ['call', 'ringing', 'talk', 'prompts', 'digits', 'recording', 'media'];
  const laneH = 22;
  const top = 6;
  const height = top + lanes.length * laneH + 4;
  const y = (name) => top + lanes.indexOf(name) * laneH;
  const bar = (cls, a, b, lane, text, tip) => {
    if (b < ax.d0 || a > ax.d1) return null;
    const x1 = ax.x(Math.max(a, ax.d0));
    const x2 = ax.x(Math.min(b, ax.d1));
    const w = Math.max(2, x2 - x1);
    const yy = y(lane) + 4;
    return s('g', {class: `span ${cls}`, 'data-a': a, 'data-b': b},
      title(tip), s('rect', {x: x1, y: yy, width: w, height: laneH - 8, rx: 3}),
      text && w > textW(text) ? s('text', {x: x1 + 4, y: yy + 10.5}, text) : null);
  };
  const parts = [];
  const c = sp.call;
  parts.push(bar('span-call', c.a, c.b, 'call', `${fmtOffset(c.b - c.a)}${c.open ? ' (live)' : ''}`,
    `whole call: ${fmtOffset(c.a)} → ${fmtOffset(c.b)} (${fmtOffset(c.b - c.a)})`));
  if (sp.ringing) {
    const r = sp.ringing;
    parts.push(bar('span-ringing', r.a, r.b, 'ringing', `ringing ${fmtOffset(r.b - r.a)}`,
      `ringing: ${fmtOffset(r.a)} → ${fmtOffset(r.b)} (${fmtOffset(r.b - r.a)})`));
  }
  if (sp.answered) {
    const a = sp.answered;
    parts.push(bar('span-answered', a.a, a.b, 'talk', `talk ${fmtOffset(a.b - a.a)}`,
      `answered → ${a.open ? 'now' : 'BYE'}: ${fmtOffset(a.a)} → ${fmtOffset(a.b)} (${fmtOffset(a.b - a.a)})`));
  }
  for (const p of sp.prompts) {
    parts.push(bar(`span-prompt${p.interrupted ? ' interrupted' : ''}`, p.a, p.b, 'prompts', p.file,
      `prompt ${p.file}: ${fmtOffset(p.a)} → ${fmtOffset(p.b)}${p.interrupted ? ' (interrupted)' : ''}${p.planned ? `, ${p.planned} ms long` : ''}`));
  }
  for (const r of sp.recordings) {
    parts.push(bar(`span-recording${r.failed ? ' failed' : ''}`, r.a, r.b, 'recording', r.failed ? 'failed' : 'recording',
      `recording ${r.id || ''}: ${fmtOffset(r.a)} → ${fmtOffset(r.b)}${r.ready ? `, ready at ${fmtOffset(r.ready)}` : ''}`));
  }
  // Point events: digits, media firsts. Every gather.completed shows, also one that stored the
  // same value as a preset variable (the engine no longer reports presets as gathered).
  const points = [];
  for (const e of events) {
    const d = e.details || {};
    if (e.kind === 'dtmf.received') points.push({lane: 'digits', e, text: String(d.digit ?? '?'), cls: 'pt-dtmf-in', tip: `DTMF ${d.digit} received (${d.method || '?'}${d.duration_ms ? `, ${d.duration_ms} ms` : ''})`});
    else if (e.kind === 'dtmf.sent') points.push({lane: 'digits', e, text: `→${clip(d.digits, 10)}`, cls: 'pt-dtmf-out', tip: `DTMF ${d.digits} sent (${d.method || '?'})`});
    else if (e.kind === 'gather.completed') {
      const v = d.variable ?? 'digits';
      points.push({lane: 'digits', e, text: `${clip(v, 12)}=${clip(d.digits === '' ? '∅' : d.digits, 8)}`, cls: 'pt-gather', tip: `gathered ${v} = "${d.digits}"`});
    } else if (e.kind === 'script.opt_out') points.push({lane: 'digits', e, text: 'opt-out', cls: 'pt-optout', tip: `script opt-out${d.reason ? `: ${d.reason}` : ''}`});
    else if (e.kind === 'media.first_packet_in') points.push({lane: 'media', e, text: 'first in', cls: 'pt-media', tip: `first RTP in from ${d.source || '?'}`});
    else if (e.kind === 'media.first_packet_out') points.push({lane: 'media', e, text: 'first out', cls: 'pt-media', tip: 'first RTP out'});
    else if (e.kind === 'media.srtp') points.push({lane: 'media', e, text: 'SRTP', cls: 'pt-media', tip: `SRTP ${d.suite || ''}`});
    else if (e.kind === 'recording.ready') points.push({lane: 'recording', e, text: 'ready', cls: 'pt-rec', tip: `recording ready: ${d.duration_ms} ms, ${fmtNum(d.bytes)} bytes`});
    else if (e.kind === 'recording.lagging' || e.kind === 'recording.caught_up') points.push({lane: 'recording', e, text: e.kind === 'recording.lagging' ? 'lag' : 'ok', cls: 'pt-rec-warn', tip: `${e.kind} ${compact(d)}`});
  }
  const lastEnd = {};
  const labels = [];
  for (const p of points) {
    if (!ax.inside(p.e.offset_us)) continue;
    const x = ax.x(p.e.offset_us);
    const yy = y(p.lane);
    const w = textW(p.text);
    // Labels that would overlap the previous one in the lane are left to the tooltip.
    const flip = x + 5 + w > ax.W - 2;
    const left = flip ? x - 5 - w : x;
    const showText = (lastEnd[p.lane] ?? -Infinity) < left - 2;
    if (showText) lastEnd[p.lane] = flip ? x : x + 5 + w;
    parts.push(s('g', {class: `point ${p.cls}`, 'data-kind': p.e.kind}, title(`${p.tip} · ${fmtOffset(p.e.offset_us)}`),
      s('line', {x1: x, x2: x, y1: yy + 3, y2: yy + laneH - 3}),
      s('circle', {cx: x, cy: yy + laneH / 2, r: 3})));
    // Texts go on top of every mark, so a later mark does not strike through a label.
    if (showText) {
      labels.push(s('g', {class: `point ${p.cls}`}, title(`${p.tip} · ${fmtOffset(p.e.offset_us)}`),
        s('text', {x: flip ? x - 5 : x + 5, y: yy + laneH / 2 + 4, 'text-anchor': flip ? 'end' : 'start'}, p.text)));
    }
  }
  parts.push(...labels);
  return s('svg', {id: 'timeline', class: 'axis-svg', viewBox: `0 0 ${ax.W} ${height}`, role: 'img',
    'aria-label': 'Call spans: the call, ringing, talk, prompts, digits, recording, media'},
  grid(ax, height),
  lanes.map((n) => s('text', {class: 'lane-label', x: 4, y: y(n) + 15}, n)),
  parts);
}

// ---------------------------------------------------------------------------------------------
// Media quality per interval. A media.quality report carries no start of its interval: each one
// is a point where it was reported (the end of its interval, exact), never a span with a
// guessed start.

function qualityData(events) {
  const intervals = [];
  let whole = null;
  const mediaStart = first(events, ['media.first_packet_in', 'sip.answered', 'sip.early_media']);
  for (const e of events) {
    if (e.kind !== 'media.quality') continue;
    const d = e.details || {};
    if (d.scope === 'call') { whole = {e, d, a: mediaStart ? mediaStart.offset_us : 0, b: e.offset_us}; continue; }
    intervals.push({t: e.offset_us, d, e});
  }
  return {intervals, whole};
}

function qualityText(d) {
  return `MOS ${d.mos}, loss ${d.loss_percent}% (${d.lost}/${d.expected}), jitter ${((d.jitter_us ?? 0) / 1000).toFixed(1)} ms${d.rtt_us ? `, RTT ${(d.rtt_us / 1000).toFixed(1)} ms` : ''}`;
}

function drawQuality(ax, q) {
  const rows = [
    {key: 'mos', label: 'MOS', h: 44, max: 4.5, min: 1, get: (d) => d.mos, fmt: (v) => v.toFixed(2)},
    {key: 'loss', label: 'loss %', h: 30, max: null, min: 0, get: (d) => d.loss_percent, fmt: (v) => `${v.toFixed(1)}%`},
    {key: 'jitter', label: 'jitter ms', h: 30, max: null, min: 0, get: (d) => (d.jitter_us ?? 0) / 1000, fmt: (v) => v.toFixed(1)},
  ];
  const all = [...q.intervals, ...(q.whole ? [q.whole] : [])];
  let yTop = 6;
  const parts = [];
  for (const r of rows) {
    const vals = all.map((i) => Number(r.get(i.d))).filter(Number.isFinite);
    const max = r.max ?? Math.max(r.key === 'loss' ? 5 : 10, ...vals);
    const yOf = (v) => yTop + r.h - 2 - ((Math.max(r.min, Math.min(max, v)) - r.min) / (max - r.min)) * (r.h - 6);
    parts.push(s('text', {class: 'lane-label', x: 4, y: yTop + r.h / 2 + 4}, r.label));
    parts.push(s('line', {class: 'baseline', x1: L, x2: ax.W - R, y1: yTop + r.h - 2, y2: yTop + r.h - 2}));
    parts.push(s('text', {class: 'scale', x: L - 4, y: yTop + 9, 'text-anchor': 'end'}, r.key === 'mos' ? '4.5' : r.fmt(max)));
    // The whole call's value: a dashed line from the media's start to its report, labelled at
    // its right end (interval labels keep clear of that label).
    let wholeText = null;
    if (q.whole) {
      const v = Number(r.get(q.whole.d));
      if (Number.isFinite(v) && !(q.whole.b < ax.d0 || q.whole.a > ax.d1)) {
        const x1 = ax.x(Math.max(q.whole.a, ax.d0));
        const x2 = ax.x(Math.min(q.whole.b, ax.d1));
        const yy = yOf(v);
        const text = `call ${r.fmt(v)}`;
        const right = Math.min(x2, ax.W - R) - 2;
        wholeText = {a: right - textW(text), b: right};
        parts.push(s('g', {class: `q-call q-${r.key}`}, title(`whole call: ${r.label} ${r.fmt(v)}`),
          s('line', {x1, x2, y1: yy, y2: yy}),
          s('text', {x: right, y: Math.max(yTop + 9, yy - 3), 'text-anchor': 'end'}, text)));
      }
    }
    // A stem from the baseline to a dot, at the time of the report; its value beside the dot
    // when there is room (the tooltip has it always).
    const base = yTop + r.h - 2;
    let textEnd = -Infinity;
    for (const i of q.intervals) {
      const v = Number(r.get(i.d));
      if (!Number.isFinite(v) || !ax.inside(i.t)) continue;
      const x = ax.x(i.t);
      const yy = yOf(v);
      const cls = r.key === 'mos' ? (v >= 4 ? 'good' : v >= 3.6 ? 'fair' : 'poor') : (v > 0 ? 'some' : 'none');
      const label = r.fmt(v);
      const w = textW(label);
      const flip = x + 4 + w > ax.W - R;
      const left = flip ? x - 4 - w : x + 4;
      const showText = left > textEnd + 2 && left > L
        && !(wholeText && left < wholeText.b + 2 && left + w > wholeText.a - 2);
      if (showText) textEnd = left + w;
      parts.push(s('g', {class: `q-int q-${r.key} ${cls}`, 'data-t': i.t},
        title(`${r.label} ${label} · interval ending at ${fmtOffset(i.t)} (reported at ${fmtOffset(i.t)}; the interval’s start is not reported) · ${qualityText(i.d)}`),
        s('line', {class: 'stem', x1: x, x2: x, y1: base, y2: yy}),
        s('circle', {cx: x, cy: yy, r: 2.6}),
        showText ? s('text', {x: flip ? x - 4 : x + 4, y: Math.max(yTop + 8, yy - 3), 'text-anchor': flip ? 'end' : 'start'}, label) : null));
    }
    yTop += r.h + 6;
  }
  return s('svg', {class: 'axis-svg quality-svg', viewBox: `0 0 ${ax.W} ${yTop}`, role: 'img',
    'aria-label': 'Media quality per interval, each drawn where it was reported (its interval’s end): MOS, loss, jitter'}, grid(ax, yTop), parts);
}

function qualitySummary(q) {
  if (!q.whole && !q.intervals.length) return h('p', {class: 'muted'}, 'No media quality reported (no RTP was received, or the call is still in its first interval).');
  const d = (q.whole || q.intervals[q.intervals.length - 1]).d;
  const bits = [
    `${q.whole ? 'Whole call' : 'Last interval'}: MOS ${d.mos}`, `R ${d.r}`,
    `loss ${d.loss_percent}% (${fmtNum(d.lost)} of ${fmtNum(d.expected)})`,
    `jitter ${((d.jitter_us ?? 0) / 1000).toFixed(1)} ms`,
    d.rtt_us ? `RTT ${(d.rtt_us / 1000).toFixed(1)} ms` : 'no RTT',
    `${d.codec || '?'}${d.ptime_ms ? `/${d.ptime_ms} ms` : ''}`,
    d.remote ? `peer reports loss ${d.remote.loss_percent}%, jitter ${((d.remote.jitter_us ?? 0) / 1000).toFixed(1)} ms` : null,
    `${q.intervals.length} interval report${q.intervals.length === 1 ? '' : 's'} (every 5 s with packets), each a point at its “reported at” time: the end of its interval`,
  ].filter(Boolean);
  return h('p', {class: 'small'}, bits.join(' · '));
}

// ---------------------------------------------------------------------------------------------
// Webhook deliveries, placed at their event's time.

function deliveryTime(dl, byId) {
  const ev = byId.get(dl.event_id);
  if (ev) return ev.offset_us;
  const p = dl.payload;
  return p && typeof p === 'object' && Number.isFinite(p.offset_us) ? p.offset_us : null;
}

function deliveryKind(dl, byId) {
  const ev = byId.get(dl.event_id);
  return ev ? ev.kind : (dl.payload && dl.payload.type) || '?';
}

function drawDeliveries(ax, items, byId) {
  const hooks = [...new Set(items.map((d) => d.webhook_id))];
  const laneH = 22;
  const height = 6 + Math.max(1, hooks.length) * laneH + 4;
  const parts = [];
  hooks.forEach((hid, i) => {
    const yy = 6 + i * laneH;
    parts.push(s('text', {class: 'lane-label', x: 4, y: yy + 15}, title(hid), clip(hid, 12)));
    let lastEnd = -Infinity;
    for (const dl of items.filter((d) => d.webhook_id === hid)) {
      const t = deliveryTime(dl, byId);
      if (t === null || !ax.inside(t)) continue;
      const x = ax.x(t);
      const text = `${dl.status}${dl.attempts > 1 ? ` ×${dl.attempts}` : ''}`;
      const w = textW(text);
      const flip = x + 6 + w > ax.W - 2;
      const show = lastEnd < (flip ? x - 6 - w : x) - 2;
      if (show) lastEnd = flip ? x + 4 : x + 6 + w;
      parts.push(s('g', {class: `dlv dlv-${['delivered', 'pending', 'dead'].includes(dl.status) ? dl.status : 'other'}`, 'data-event': dl.event_id},
        title(`${deliveryKind(dl, byId)} (event ${dl.event_id}) → ${dl.status}, ${dl.attempts} attempt(s), last status ${dl.last_status ?? '—'}${dl.last_error ? `, ${dl.last_error}` : ''}`),
        s('rect', {x: x - 4, y: yy + 7, width: 8, height: 8, rx: 2}),
        show ? s('text', {x: flip ? x - 6 : x + 6, y: yy + 15, 'text-anchor': flip ? 'end' : 'start'}, text) : null));
    }
  });
  if (!hooks.length) parts.push(s('text', {class: 'empty', x: L + 8, y: 20}, 'No deliveries.'));
  return s('svg', {class: 'axis-svg deliveries-svg', viewBox: `0 0 ${ax.W} ${height}`, role: 'img',
    'aria-label': 'Webhook deliveries by event time'}, grid(ax, height), parts);
}

function deliveriesTable(items, byId) {
  const rows = items.map((dl) => h('tr', {'data-delivery': dl.id, 'data-event': dl.event_id},
    h('td', {'data-label': 'Event'}, h('code', null, txt(deliveryKind(dl, byId))), h('span', {class: 'muted'}, ` #${dl.event_id}`)),
    h('td', {'data-label': 'At', class: 'num'}, fmtOffset(deliveryTime(dl, byId))),
    h('td', {'data-label': 'Webhook'}, h('code', null, txt(dl.webhook_id))),
    h('td', {'data-label': 'Status'}, badge(dl.status)),
    h('td', {'data-label': 'Attempts', class: 'num'}, String(dl.attempts)),
    h('td', {'data-label': 'Last status', class: 'num'}, dl.last_status === null || dl.last_status === undefined ? '—' : String(dl.last_status)),
    h('td', {'data-label': 'Last error'}, dl.last_error || '—'),
    h('td', {'data-label': 'Delivered / next'}, dl.delivered_at ? time(dl.delivered_at) : dl.next_attempt_at ? ['next ', time(dl.next_attempt_at)] : '—')));
  return h('div', {class: 'table-wrap'}, h('table', {class: 'deliveries-table'},
    h('thead', h('tr', ['Event', 'At', 'Webhook', 'Status', 'Attempts', 'Last status', 'Last error', 'Delivered / next'].map((t) => h('th', t)))),
    h('tbody', rows)));
}

// ---------------------------------------------------------------------------------------------
// The event list.

function eventRow(e) {
  return h('tr', {'data-kind': e.kind, 'data-event': e.id, id: `ev-${e.id}`},
    h('td', {class: 'num', 'data-label': 'Offset', title: `${e.offset_us} µs · ${e.at || ''}`}, fmtOffset(e.offset_us)),
    h('td', {'data-label': 'Kind'}, h('code', null, txt(e.kind))),
    h('td', {'data-label': 'Details', class: 'details'}, h('code', null, compact(e.details))),
    h('td', {class: 'num muted', 'data-label': 'Id'}, String(e.id)));
}

// ---------------------------------------------------------------------------------------------
// Facts.

function callFacts(call, events) {
  const final = [...events].reverse().find((e) => FINAL.has(e.kind));
  const fd = (final && final.details) || {};
  const st = badge(call.status);
  st.id = 'call-status';
  const d = call.durations || {};
  const sip = call.sip_status
    ? `${call.sip_status} ${call.sip_reason || ''}${call.q850_cause ? ` (Q.850 ${call.q850_cause})` : ''}`
    : (call.sip_reason || '—');
  const script = call.result && call.result.script && call.result.script.outcome;
  return facts([
    ['Status', st],
    ['Outcome', call.outcome ? h('span', {class: `outcome outcome-${call.outcome}`}, call.outcome) : '—'],
    ['Direction', txt(call.direction)],
    ['To', h('span', {class: 'mono'}, call.to || '—')],
    ['From', h('span', {class: 'mono'}, call.from || '—')],
    ['Trunk', call.trunk_id ? h('code', null, txt(call.trunk_id)) : 'none (direct)'],
    ['Campaign', call.campaign_id ? h('a', {href: `#/campaigns/${encodeURIComponent(call.campaign_id)}`, id: 'call-campaign'}, call.campaign_id) : '—'],
    ['SIP', txt(sip)],
    ['End reason', call.end_reason ? [call.end_reason, fd.end_detail ? h('span', {class: 'muted'}, ` (${fd.end_detail})`) : null,
      call.estimated_end ? h('span', {class: 'badge badge-paused'}, 'estimated end') : null] : '—'],
    fd.hangup_reason || script ? ['Script', `${script ? `${script.kind}${script.reason ? ` (${script.reason})` : ''}` : ''}${fd.hangup_reason && !(script && script.reason === fd.hangup_reason) ? ` hangup: ${fd.hangup_reason}` : ''}`] : null,
    ['Durations', `ring ${fmtMs(d.ring_ms)} · talk ${fmtMs(d.talk_ms)} · total ${fmtMs(d.total_ms)}`],
    ['Created', time(call.created_at)],
    ['Answered', time(call.answered_at)],
    ['Ended', time(call.ended_at)],
    ['SIP Call-ID', h('code', null, txt(call.sip_call_id))],
  ]);
}

function manifestView(m) {
  const recs = m.recordings || [];
  const tl = m.timeline || {};
  return [
    facts([
      ['Final', m.final ? 'yes (it never changes again)' : 'no (the call has not ended)'],
      ['Timeline', `${fmtNum(tl.events)} events up to #${tl.last_event_id ?? '—'}`],
      ['Timeline SHA-256', h('code', {class: 'hash'}, tl.sha256 || '—')],
      ...recs.map((r, i) => [`Recording ${recs.length > 1 ? i + 1 : ''}`.trim(),
        h('span', null, h('code', null, txt(r.id)), ` · ${fmtNum(r.bytes)} bytes · ${fmtMs(r.duration_ms)}`, h('br'), 'SHA-256 ', h('code', {class: 'hash'}, r.sha256))]),
      recs.length ? null : ['Recordings', 'none'],
      ['Estimated end', m.estimated_end ? 'yes' : 'no'],
    ]),
    h('details', h('summary', 'The manifest as JSON'), h('pre', {class: 'json'}, JSON.stringify(m, null, 2))),
    h('p', {class: 'muted small'}, 'The timeline digest is the SHA-256 of the events up to the final one, canonical JSON (docs/api.md “Evidence manifest”).'),
  ];
}

// ---------------------------------------------------------------------------------------------
// Markers on the waveform: events at recording time (its recording.started is its zero).

/** The recording an event's details name (the API adds recording_id and audio_url), or null. */
function recIdOf(d) {
  if (!d || typeof d !== 'object') return null;
  if (typeof d.recording_id === 'string' && d.recording_id) return d.recording_id;
  const m = typeof d.audio_url === 'string' ? d.audio_url.match(/^\/v1\/recordings\/([A-Za-z0-9_-]+)\/audio$/) : null;
  return m ? m[1] : null;
}

/**
 * The recording.started event of recording `rec` (one of `recs`, the call's recordings oldest
 * first), or null. The engine emits recording.started when the file opens, before the recording
 * has an id ({path, rate, channels}); the API names the recording on it by that path once the
 * file is stored, but a recording.started that came live on the stream was sent before that.
 * So, most trusted first:
 *  1. the recording.started that names `rec`;
 *  2. the last recording.started before the recording.ready that names `rec` (or carries its
 *     SHA-256), unless that one names another recording: a segment's ready follows its own
 *     started (a segment that failed has a started and no ready, so counting would slip);
 *  3. the n-th recording.started for the n-th recording.
 */
export function recordingStart(events, recs, rec) {
  if (!rec) return null;
  const starts = events.filter((e) => e.kind === 'recording.started');
  if (!starts.length) return null;
  const named = starts.find((e) => recIdOf(e.details) === rec.id);
  if (named) return named;
  const ready = events.find((e) => e.kind === 'recording.ready'
    && (recIdOf(e.details) === rec.id || (!!rec.sha256 && e.details?.sha256 === rec.sha256)));
  if (ready) {
    const own = starts.filter((e) => e.id < ready.id).pop();
    if (own && !recIdOf(own.details)) return own;
  }
  const n = (recs || []).findIndex((r) => r.id === rec.id);
  const nth = n >= 0 ? starts[n] : null;
  return nth && (!recIdOf(nth.details) || recIdOf(nth.details) === rec.id) ? nth : null;
}

const MARKERS = {
  'sip.answered': () => 'answered',
  'prompt.started': (d) => `▶ ${clip(d.file || 'prompt', 16)}`,
  'prompt.interrupted': () => 'prompt cut',
  'dtmf.received': (d) => `DTMF ${d.digit ?? '?'}`,
  'dtmf.sent': (d) => `sent ${clip(d.digits, 8)}`,
  'sip.bye_sent': () => 'BYE →',
  'sip.bye_received': () => '← BYE',
  'sip.reoffer_sent': (d) => d.purpose || 're-INVITE',
  'script.opt_out': () => 'opt-out',
  'media.first_packet_in': () => 'first audio',
};

function markersFor(events, start, duration) {
  if (!start) return [];
  const out = [];
  for (const e of events) {
    if (!Object.hasOwn(MARKERS, e.kind)) continue;
    const f = MARKERS[e.kind];
    let t = (e.offset_us - start.offset_us) / 1e6;
    if (t < -0.25 || t > duration + 0.25) continue;
    t = Math.max(0, Math.min(duration, t));
    const label = f(e.details || {});
    out.push({t, label, kind: e.kind, title: `${label} (${e.kind} at ${fmtOffset(e.offset_us)} into the call)`});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The page.

export async function callView(main, [id]) {
  const path = `/v1/calls/${encodeURIComponent(id)}`;
  const me = await whoami();
  let call = await api(path);
  let events = [];
  let eventsError = null;
  let capped = false; // more events than EVENT_CAP: the first EVENT_CAP are listed
  let notListed = 0; // events that came live past the cap
  try {
    ({items: events, capped} = await loadEvents(path));
  } catch (e) {
    eventsError = e;
  }
  const byId = new Map(events.map((e) => [e.id, e]));
  const inbound = () => call.direction === 'inbound';
  const peerUri = () => (inbound() ? call.from : call.to) || 'peer';
  const ended = () => ENDED.has(call.status) || events.some((e) => FINAL.has(e.kind));

  const timers = [];
  const cleanups = [];
  let gone = false;
  let stop = null;
  let player = null;
  let deliveries = null; // {items} | {denied} | {error}
  let zoom = null; // [d0, d1] or null (the whole call)
  let playAt = null; // call offset (µs) of the player's position, or null

  // Skeleton.
  const factsBox = h('div', {id: 'call-facts'});
  const liveBadge = h('span', {class: 'live', id: 'call-live'});
  const hangup = h('button', {type: 'button', class: 'danger', id: 'hangup', hidden: true}, 'Hang up');
  const head = h('div', {class: 'spread'},
    h('h1', 'Call ', h('code', {class: 'call-id'}, id)),
    h('div', {class: 'row'}, liveBadge, hangup, h('a', {href: '#/calls', class: 'button'}, 'All calls')));
  const zoomInfo = h('span', {class: 'muted small', id: 'zoom-info'});
  const zoomAll = h('button', {type: 'button', id: 'zoom-all'}, 'Whole call');
  const zoomSetup = h('button', {type: 'button', id: 'zoom-setup'}, 'Call setup');
  const zoomIn = h('button', {type: 'button', id: 'zoom-in', 'aria-label': 'Zoom in'}, '+');
  const zoomOut = h('button', {type: 'button', id: 'zoom-out', 'aria-label': 'Zoom out'}, '−');
  const ladderWrap = h('div', {class: 'axis-wrap'});
  const timelineWrap = h('div', {class: 'axis-wrap'});
  const qualityWrap = h('div', {class: 'axis-wrap'});
  const qualityText = h('div');
  const deliveriesWrap = h('div', {class: 'axis-wrap'});
  const deliveriesText = h('div');
  const wraps = [ladderWrap, timelineWrap, qualityWrap, deliveriesWrap];
  const eventsBody = h('tbody');
  const eventsBox = h('div', {id: 'events'});
  const capNote = h('p', {class: 'notice', id: 'events-capped', hidden: true});
  const playerBox = h('div', {id: 'player'});
  const manifestBox = h('div', {id: 'manifest'}, h('p', {class: 'muted'}, 'Loading…'));
  const axisError = h('div');

  mount(main, h('div', {class: 'call-page'},
    h('section', {class: 'card'}, head, factsBox),
    h('div', {class: 'call-grid'},
      h('section', {class: 'card call-axis', 'aria-label': 'The call on one time axis'},
        h('div', {class: 'spread'}, h('h2', 'Timeline'),
          h('div', {class: 'row zoom'}, zoomSetup, zoomAll, zoomOut, zoomIn, zoomInfo)),
        h('p', {class: 'muted small axis-hint'}, 'x = time since the call was created. Drag across a chart to zoom; click to seek the recording. Arrows start or end on callplane’s line at the exact time; labels fan out on the peer’s line.'),
        axisError,
        h('h3', 'SIP ladder'), ladderWrap,
        h('h3', 'Call'), timelineWrap,
        h('section', {id: 'quality'}, h('h3', 'Media quality'), qualityWrap, qualityText),
        h('section', {id: 'deliveries'}, h('h3', 'Webhook deliveries'), deliveriesWrap, deliveriesText)),
      h('aside', {class: 'call-side'},
        h('section', {class: 'card'}, h('h2', 'Recording'), playerBox),
        h('section', {class: 'card'}, h('h2', 'Evidence manifest'), manifestBox))),
    h('section', {class: 'card'}, h('h2', 'Events'), eventsBox)));

  // Scrolling one chart scrolls them all (they share the axis).
  let syncing = false;
  for (const w of wraps) {
    w.addEventListener('scroll', () => {
      if (syncing) return;
      syncing = true;
      for (const o of wraps) if (o !== w && o.scrollLeft !== w.scrollLeft) o.scrollLeft = w.scrollLeft;
      syncing = false;
    });
  }

  function renderFacts() {
    mount(factsBox, callFacts(call, events));
    mount(liveBadge, ended() ? '' : 'live');
    liveBadge.classList.toggle('on', !ended());
    hangup.hidden = ended();
    hangup.disabled = !can('calls:write');
    hangup.title = can('calls:write') ? 'BYE once answered, CANCEL while ringing' : cannot('calls:write');
  }
  hangup.addEventListener('click', async () => {
    hangup.disabled = true;
    try {
      await api(`${path}/hangup`, {method: 'POST'});
    } catch (e) {
      mount(axisError, errorBox(e));
      hangup.disabled = false;
    }
  });

  function renderCapNote() {
    capNote.hidden = !capped;
    if (!capped) return;
    mount(capNote, `First ${fmtNum(EVENT_CAP)} events shown`,
      notListed ? `; ${fmtNum(notListed)} more past it are not listed. ` : ': this call has more. ',
      'The charts stop there too, except for the call’s end and its recordings. The API pages through them all: GET ',
      h('code', null, `${path}/events`), '.');
  }
  const capNoteLater = throttle(() => { if (!gone) renderCapNote(); }, 500);

  function renderEvents() {
    if (eventsError) { mount(eventsBox, errorBox(eventsError)); return; }
    mount(eventsBody, events.map(eventRow));
    renderCapNote();
    mount(eventsBox, capNote, h('div', {class: 'table-wrap'}, h('table', {class: 'events-table'},
      h('thead', h('tr', h('th', {class: 'num'}, 'Offset'), h('th', 'Kind'), h('th', 'Details'), h('th', {class: 'num'}, 'Id'))),
      eventsBody)),
    events.length ? null : h('p', {class: 'muted'}, 'No events yet.'));
  }

  function endUs() {
    let end = events.reduce((m, e) => Math.max(m, e.offset_us), 0);
    if (!ended()) end = Math.max(end, Date.now() * 1000 - call.created_at_us);
    // Past the cap the last events are not loaded: the call's end is.
    else if (capped && call.ended_at_us) end = Math.max(end, call.ended_at_us - call.created_at_us);
    return Math.max(end, 1000);
  }

  function fullDomain() {
    const end = endUs();
    return [0, end + Math.max(end * 0.02, 200)];
  }

  // The call's first burst of SIP messages (INVITE … 200 OK/ACK, or INVITE … 180): up to the
  // first silence that is both > 100 ms and ten times longer than the burst so far.
  function setupDomain() {
    const times = sipMessages(events, inbound()).map((m) => m.t).sort((a, b) => a - b);
    if (!times.length) return null;
    let end = times[0];
    for (let i = 1; i < times.length; i++) {
      const gap = times[i] - times[i - 1];
      if (gap > 100000 && gap > 10 * times[i - 1]) break;
      end = times[i];
    }
    return [0, Math.max(end * 1.25, end + 500)];
  }

  function domain() {
    return zoom || fullDomain();
  }

  let lastWidth = 0;
  const state = {ax: null};
  function renderAxis() {
    const [d0, d1] = domain();
    const msgs = sipMessages(events, inbound());
    const notes = events.filter((e) => Object.hasOwn(LADDER_NOTES, e.kind))
      .map((e) => ({t: e.offset_us, kind: e.kind, text: LADDER_NOTES[e.kind](e.details || {})}));
    const W0 = Math.max(560, Math.floor(ladderWrap.clientWidth || 800));
    lastWidth = ladderWrap.clientWidth;
    const W = ladderNeed(msgs, W0, d0, d1);
    const ax = makeAxis(W, d0, d1);
    const q = qualityData(events);
    const svgs = [
      drawLadder(ax, msgs, notes, shortUri(peerUri()), peerUri(), highlightEvent),
      drawTimeline(ax, events, endUs(), ended()),
      drawQuality(ax, q),
    ];
    mount(ladderWrap, svgs[0]);
    mount(timelineWrap, svgs[1]);
    mount(qualityWrap, q.intervals.length || q.whole ? svgs[2] : null);
    mount(qualityText, qualitySummary(q));
    if (deliveries && deliveries.items && deliveries.items.length) {
      const svg = drawDeliveries(ax, deliveries.items, byId);
      svgs.push(svg);
      mount(deliveriesWrap, svg);
      mount(deliveriesText, deliveriesTable(deliveries.items, byId));
      deliveriesWrap.hidden = false;
    } else {
      mount(deliveriesWrap);
      deliveriesWrap.hidden = true;
      mount(deliveriesText, deliveries === null ? h('p', {class: 'muted'}, 'Loading…')
        : deliveries.items ? h('p', {class: 'muted'}, 'No webhook deliveries for this call’s events (no webhook subscribed to them).')
        : deliveries.denied ? h('p', {class: 'notice', id: 'deliveries-denied'}, deliveries.denied)
          : errorBox(deliveries.error));
    }
    for (const svg of svgs) {
      svg.style.width = `${W}px`;
      svg.appendChild(s('rect', {class: 'zoom-sel', x: 0, y: 0, width: 0, height: '100%'}));
      svg.appendChild(s('line', {class: 'axis-playhead', x1: 0, x2: 0, y1: 0, y2: '100%', visibility: 'hidden'}));
      wireAxis(svg, ax);
    }
    state.ax = ax;
    drawPlayhead();
    const span = d1 - d0;
    mount(zoomInfo, zoom ? `showing ${fmtOffset(Math.round(d0))} – ${fmtOffset(Math.round(d1))}` : `${fmtOffset(Math.round(span))} shown`);
    zoomAll.disabled = !zoom;
    const sd = setupDomain();
    zoomSetup.disabled = !sd || sd[1] >= fullDomain()[1] * 0.6;
  }

  function drawPlayhead() {
    const ax = state.ax;
    for (const w of wraps) {
      const line = w.querySelector('.axis-playhead');
      if (!line) continue;
      if (playAt === null || !ax || !ax.inside(playAt)) { line.setAttribute('visibility', 'hidden'); continue; }
      const x = ax.x(playAt).toFixed(1);
      line.setAttribute('x1', x);
      line.setAttribute('x2', x);
      line.setAttribute('visibility', 'visible');
    }
  }

  function wireAxis(svg, ax) {
    const sel = svg.querySelector('.zoom-sel');
    let start = null;
    let dragged = false;
    const toX = (e) => {
      const r = svg.getBoundingClientRect();
      return r.width ? ((e.clientX - r.left) / r.width) * ax.W : 0;
    };
    svg.addEventListener('pointerdown', (e) => {
      if (e.pointerType !== 'mouse' || e.button !== 0) return;
      start = toX(e);
      dragged = false;
      svg.setPointerCapture(e.pointerId);
    });
    svg.addEventListener('pointermove', (e) => {
      if (start === null) return;
      const x = toX(e);
      sel.setAttribute('x', Math.min(start, x));
      sel.setAttribute('width', Math.abs(x - start));
    });
    svg.addEventListener('pointerup', (e) => {
      if (start === null) return;
      const x = toX(e);
      const a = Math.min(start, x);
      const b = Math.max(start, x);
      start = null;
      sel.setAttribute('width', 0);
      if (b - a > 6) {
        dragged = true;
        const t0 = Math.max(0, ax.t(a));
        const t1 = ax.t(b);
        if (t1 - t0 >= 20) { zoom = [t0, t1]; renderAxis(); }
      }
    });
    svg.addEventListener('click', (e) => {
      if (dragged) { dragged = false; return; }
      const x = toX(e);
      if (x < L) return;
      seekTo(ax.t(x));
    });
  }

  // The recording.started of a recording, remembered until the events change (the playhead asks
  // for it on every animation frame).
  let startMemo = {n: -1, id: null, ev: null};
  function startOf(recId) {
    if (!player || recId === null || recId === undefined) return null;
    if (startMemo.n === events.length && startMemo.id === recId) return startMemo.ev;
    const recs = player.recordings();
    const ev = recordingStart(events, recs, recs.find((r) => r.id === recId));
    startMemo = {n: events.length, id: recId, ev};
    return ev;
  }

  function seekTo(offsetUs) {
    if (!player) return;
    const recId = player.current();
    const start = startOf(recId);
    if (!start) return;
    player.seek(recId, (offsetUs - start.offset_us) / 1e6);
  }

  function highlightEvent(m) {
    const row = document.getElementById(`ev-${m.id}`);
    if (!row) return;
    for (const r of eventsBody.querySelectorAll('tr.hl')) r.classList.remove('hl');
    row.classList.add('hl');
    row.scrollIntoView({block: 'nearest', behavior: 'smooth'});
    seekTo(m.t);
  }

  zoomAll.addEventListener('click', () => { zoom = null; renderAxis(); });
  zoomSetup.addEventListener('click', () => { zoom = setupDomain(); renderAxis(); });
  zoomIn.addEventListener('click', () => {
    const [a, b] = domain();
    const c = playAt !== null && playAt >= a && playAt <= b ? playAt : (a + b) / 2;
    const half = Math.max(10, (b - a) / 4);
    zoom = [Math.max(0, c - half), c + half];
    renderAxis();
  });
  zoomOut.addEventListener('click', () => {
    const [a, b] = domain();
    const full = fullDomain();
    const c = (a + b) / 2;
    const half = (b - a);
    const next = [Math.max(0, c - half), Math.min(full[1], c + half)];
    zoom = next[0] <= 0 && next[1] >= full[1] ? null : next;
    renderAxis();
  });

  async function loadDeliveries() {
    if (!can('webhooks:read')) {
      deliveries = {denied: `Not shown: your ${me.role} key cannot read webhook deliveries (needs webhooks:read).`};
      return;
    }
    try {
      deliveries = {items: (await api(`${path}/deliveries`)).items || []};
    } catch (e) {
      deliveries = e.status === 403
        ? {denied: `Not shown: your ${me.role} key cannot read webhook deliveries (needs webhooks:read).`}
        : {error: e};
    }
  }

  async function loadManifest() {
    try {
      mount(manifestBox, manifestView(await api(`${path}/manifest`)));
    } catch (e) {
      mount(manifestBox, errorBox(e));
    }
  }

  const refreshCall = throttle(async () => {
    if (gone) return;
    try {
      call = await api(path);
      if (gone) return;
      renderFacts();
    } catch (_) { /* the stream goes on; the facts stay */ }
  }, 600);
  const rerender = throttle(() => { if (!gone) renderAxis(); }, 250);

  let rows = events.length; // rows in the events table
  let lastSkipped = -Infinity; // the newest event id left out past the cap
  function onEvent(e) {
    if (gone || !e || e.call_id !== id || byId.has(e.id) || e.id <= lastSkipped) return;
    if (rows >= EVENT_CAP) {
      // Past the cap: not listed; kept (for the facts, spans, player) only if it shapes the page.
      capped = true;
      notListed += 1;
      capNoteLater();
      if (!KEPT_PAST_CAP.has(e.kind)) { lastSkipped = Math.max(lastSkipped, e.id); return; }
    }
    byId.set(e.id, e);
    events.push(e);
    if (events.length > 1 && events[events.length - 2].id > e.id) events.sort((a, b) => a.id - b.id);
    if (rows < EVENT_CAP) { eventsBody.appendChild(eventRow(e)); rows += 1; }
    if (e.kind.startsWith('sip.') || FINAL.has(e.kind) || e.kind === 'call.target') refreshCall();
    rerender();
    if (e.kind === 'recording.ready' && player && !player.current()) player.load();
    if (player) player.refreshMarkers();
    if (FINAL.has(e.kind)) {
      if (stop) { stop(); stop = null; }
      mount(liveBadge, '');
      liveBadge.classList.remove('on');
      loadManifest();
      if (player && !player.current()) player.load();
      // Deliveries are not on the stream: read them again a few times while they go out.
      for (const ms of [1500, 6000, 20000]) {
        timers.push(setTimeout(async () => { await loadDeliveries(); rerender(); }, ms));
      }
    }
  }

  // First render.
  renderFacts();
  renderEvents();
  await loadDeliveries();
  renderAxis();
  loadManifest();
  player = recordingPlayer(playerBox, {
    callId: id,
    direction: call.direction,
    peer: shortUri(peerUri()),
    live: () => !ended(),
    markersFor: (rec, duration) => markersFor(events, startOf(rec.id), duration),
    onTime: (recId, t) => {
      if (t === null) { playAt = null; drawPlayhead(); return; }
      const start = startOf(recId);
      playAt = start ? start.offset_us + t * 1e6 : null;
      drawPlayhead();
    },
  });
  cleanups.push(() => player.destroy());

  if (typeof ResizeObserver === 'function') {
    const resized = throttle(() => {
      if (!gone && Math.abs(ladderWrap.clientWidth - lastWidth) > 16) renderAxis();
    }, 200);
    const ro = new ResizeObserver(resized);
    ro.observe(ladderWrap);
    cleanups.push(() => { ro.disconnect(); resized.cancel(); });
  }

  // A live call follows its stream; an ended call whose list was capped reads, through the same
  // stream, the kinds the charts keep past the cap (its end and recordings), which the first
  // 20,000 events did not reach. onEvent stops the stream at the final event.
  if (!eventsError && (!ended() || capped)) {
    const after = events.length ? events[events.length - 1].id : 0;
    const only = ended() ? `&kind=${encodeURIComponent([...KEPT_PAST_CAP].join(','))}` : '';
    stop = follow(`call_id=${encodeURIComponent(id)}${only}&after=${after}`, onEvent, (st) => {
      if (ended()) return; // an ended call's catch-up read shows no live badge
      if (st === 'live') { mount(liveBadge, 'live'); liveBadge.classList.add('on'); }
      else if (st === 'reconnecting') { mount(liveBadge, 'reconnecting…'); liveBadge.classList.remove('on'); }
      else if (st === 'error') { mount(liveBadge, 'stream refused'); liveBadge.classList.remove('on'); }
    });
  }

  return () => {
    gone = true;
    for (const t of [rerender, refreshCall, capNoteLater]) if (t.cancel) t.cancel();
    if (stop) stop();
    for (const t of timers) clearTimeout(t);
    for (const c of cleanups) { try { c(); } catch (_) { /* ignore */ } }
  };
}
