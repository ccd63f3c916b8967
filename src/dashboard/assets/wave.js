// The recording player: WAV decoding, the two waveforms, markers.
//
// A recording up to DRAW_LIMIT bytes is fetched once with the bearer key (an ArrayBuffer); the
// same bytes feed the waveforms (decoded here: RIFF, fmt, data; 16-bit PCM, 1 or 2 channels,
// read in place as an Int16Array view) and the <audio> element (a blob: object URL, which the
// CSP's media-src allows; the Blob is the one copy). A larger one (an hour of stereo 8 kHz is
// 115 MB) is not fetched: a phone's tab would die holding it twice. It gets a download button
// instead (fetched only when clicked) and its markers on a plain time strip. Channel 0 (left) is
// what callplane heard from the peer, channel 1 (right) what callplane sent
// (media/src/session.rs, src/engine/record_sink.rs); docs/api.md says "left: the callee" for an
// outbound call.

import {h, s, mount, errorBox, fmtMs, fmtNum} from './dom.js';
import {api, can, whoami} from './api.js';

/** A WAV file this player cannot read (the message says why). */
export class WavError extends Error {}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decodes a WAV file: {rate, channels, frames, duration (s), samples (Int16Array, interleaved),
 * notes: [what was odd but readable]}. Throws WavError for what cannot be drawn.
 */
export function parseWav(buf) {
  const len = buf.byteLength;
  const dv = new DataView(buf);
  if (len < 12) throw new WavError(`not a WAV file: ${len} bytes, shorter than a RIFF header`);
  const tag = (o) => String.fromCharCode(dv.getUint8(o), dv.getUint8(o + 1), dv.getUint8(o + 2), dv.getUint8(o + 3));
  if (tag(0) !== 'RIFF' || tag(8) !== 'WAVE') throw new WavError('not a WAV file (no RIFF/WAVE header)');
  const notes = [];
  let off = 12;
  let fmt = null;
  let data = null;
  while (off + 8 <= len) {
    const id = tag(off);
    const size = dv.getUint32(off + 4, true);
    const body = off + 8;
    if (id === 'fmt ') {
      if (size < 16 || body + 16 > len) throw new WavError('the fmt chunk is cut short');
      let format = dv.getUint16(body, true);
      if (format === 0xFFFE && size >= 40 && body + 26 <= len) format = dv.getUint16(body + 24, true);
      fmt = {format, channels: dv.getUint16(body + 2, true), rate: dv.getUint32(body + 4, true),
        blockAlign: dv.getUint16(body + 12, true), bits: dv.getUint16(body + 14, true)};
    } else if (id === 'data') {
      const avail = len - body;
      let bytes = size;
      if (size === 0 && avail > 0) {
        notes.push(`the header was not finalized (data size 0); reading the ${fmtNum(avail)} bytes present`);
        bytes = avail;
      } else if (size > avail) {
        notes.push(`the file is truncated: its header announces ${fmtNum(size)} bytes of audio, ${fmtNum(avail)} are present`);
        bytes = avail;
      }
      data = {offset: body, bytes};
      break;
    }
    if (size > len - body) break;
    off = body + size + (size & 1);
  }
  if (!fmt) throw new WavError('no fmt chunk before the audio data (not a usable WAV file)');
  if (!data) throw new WavError('no data chunk: the file holds no audio (truncated?)');
  if (fmt.format !== 1) throw new WavError(`unsupported WAV encoding (format ${fmt.format}); only 16-bit PCM is drawn`);
  if (fmt.bits !== 16) throw new WavError(`unsupported sample size: ${fmt.bits} bits; only 16-bit PCM is drawn`);
  if (fmt.channels < 1 || fmt.channels > 2) throw new WavError(`unsupported channel count: ${fmt.channels}`);
  if (fmt.rate < 1000 || fmt.rate > 384000) throw new WavError(`implausible sample rate: ${fmt.rate} Hz`);
  const block = fmt.channels * 2;
  if (fmt.blockAlign !== block) notes.push(`block align ${fmt.blockAlign} is not ${block}; using ${block}`);
  const frames = Math.floor(data.bytes / block);
  if (frames === 0) throw new WavError(`the file holds no audio frames (${notes.length ? notes.join('; ') : 'empty data chunk'})`);
  if (data.bytes % block) notes.push('the audio ends in a partial frame (ignored)');
  const n = frames * fmt.channels;
  let samples;
  if (LITTLE_ENDIAN && data.offset % 2 === 0) {
    samples = new Int16Array(buf, data.offset, n);
  } else {
    samples = new Int16Array(n);
    for (let i = 0; i < n; i++) samples[i] = dv.getInt16(data.offset + 2 * i, true);
  }
  return {rate: fmt.rate, channels: fmt.channels, frames, duration: frames / fmt.rate, samples, notes};
}

/** Min and max (−1..1) of one channel per column. */
export function peaks(wav, channel, columns) {
  const {samples, channels, frames} = wav;
  const min = new Float32Array(columns);
  const max = new Float32Array(columns);
  for (let c = 0; c < columns; c++) {
    const a = Math.floor((c * frames) / columns);
    const b = Math.max(a + 1, Math.floor(((c + 1) * frames) / columns));
    let lo = 32767;
    let hi = -32768;
    for (let f = a; f < b && f < frames; f++) {
      const v = samples[f * channels + channel];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo > hi) { lo = 0; hi = 0; }
    min[c] = lo / 32768;
    max[c] = hi / 32767;
  }
  return {min, max};
}

/** The SVG path of a waveform: the upper envelope left to right, the lower one back. */
function wavePath({min, max}, height) {
  const mid = height / 2;
  const amp = mid - 1;
  const top = [];
  const bottom = [];
  for (let c = 0; c < min.length; c++) {
    let yTop = mid - max[c] * amp;
    let yBot = mid - min[c] * amp;
    if (yBot - yTop < 0.6) { yTop = mid - 0.3; yBot = mid + 0.3; }
    top.push(`${c === 0 ? 'M' : 'L'}${c + 0.5},${yTop.toFixed(1)}`);
    bottom.push(`L${c + 0.5},${yBot.toFixed(1)}`);
  }
  return `${top.join('')}${bottom.reverse().join('')}Z`;
}

/** "m:ss.s" */
export function fmtClock(t) {
  const tenths = Math.max(0, Math.round((Number.isFinite(t) ? t : 0) * 10));
  const m = Math.floor(tenths / 600);
  return `${m}:${((tenths % 600) / 10).toFixed(1).padStart(4, '0')}`;
}

async function sha256Hex(buf) {
  if (!globalThis.crypto || !crypto.subtle) return null;
  const d = await crypto.subtle.digest('SHA-256', buf);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const WAVE_H = 64;

/**
 * Above this many bytes (32 MiB, about 17 minutes of stereo 8 kHz) a recording is not fetched to
 * be drawn and played here: holding it (the ArrayBuffer, the Blob the <audio> plays, the SHA-256
 * pass) would kill a phone's tab. It gets a download button and its markers instead.
 */
export const DRAW_LIMIT = 32 * 1024 * 1024;

/** A download file name: the recording id with only A-Z a-z 0-9 _ . - kept. */
export function fileName(id) {
  const base = String(id ?? '').replace(/[^A-Za-z0-9_.-]+/g, '_').replace(/^[._-]+/, '').slice(0, 100);
  return `${base || 'recording'}.wav`;
}

/** "115.2 MB" (decimal megabytes, as file managers show them). */
function fmtMB(bytes) {
  const mb = Number(bytes) / 1e6;
  return `${mb >= 100 ? Math.round(mb) : mb.toFixed(1)} MB`;
}

function audioUrl(rec) {
  return rec.audio_url || `/v1/recordings/${encodeURIComponent(rec.id)}/audio`;
}

const kindClass = (kind) => String(kind).replace(/[^a-z0-9]+/g, '-');

/**
 * Draws markers [{t, label, kind, title}] (seconds into a recording of `duration` s) on `strip`
 * and as lines in each of `svgs` (viewBox `columns` wide): buttons that seek when `seek` is
 * given, plain labels otherwise.
 */
function drawMarkerStrip(strip, svgs, columns, list, duration, seek) {
  // Rows: a label goes on the first row where it does not overlap the previous one.
  const width = strip.clientWidth || 360;
  const rows = [];
  const items = list.map((m) => {
    const pct = duration > 0 ? (m.t / duration) * 100 : 0;
    const px = (pct / 100) * width;
    const w = m.label.length * 6.6 + 14;
    const flip = px + w > width;
    const left = flip ? px - w : px;
    let row = rows.findIndex((end) => left > end + 3);
    if (row < 0) { row = rows.length < 4 ? rows.length : rows.indexOf(Math.min(...rows)); }
    rows[row] = left + w;
    const attrs = {class: `wave-marker mk-${kindClass(m.kind)}${flip ? ' flip' : ''}${seek ? '' : ' static'}`,
      'data-t': m.t.toFixed(3), 'data-kind': m.kind, title: `${fmtClock(m.t)} · ${m.title || m.label}`};
    const b = seek
      ? h('button', {...attrs, type: 'button', onclick: (e) => { e.stopPropagation(); seek(m.t); }}, m.label)
      : h('span', {...attrs, tabindex: 0}, m.label);
    b.style.left = `${pct.toFixed(3)}%`;
    b.style.top = `${row * 20}px`;
    return b;
  });
  strip.style.height = `${Math.max(1, rows.length) * 20 + 2}px`;
  mount(strip, items);
  for (const w of svgs) {
    const g = w.querySelector('.wave-lines');
    mount(g, list.map((m) => {
      const x = duration > 0 ? ((m.t / duration) * columns).toFixed(1) : 0;
      return s('line', {class: `wave-marker-line mk-${kindClass(m.kind)}`, x1: x, x2: x, y1: 0, y2: WAVE_H});
    }));
  }
}

/**
 * The player for a call's recordings, in `container` (#player).
 * opts: {callId, direction, peer (label), markersFor(recording, duration) → [{t, label, kind, title}],
 *        onTime(recordingId, seconds|null)}
 * Returns {destroy(), seek(recordingId, seconds) → bool, refreshMarkers(), current() → id,
 *          recordings() → the call's recordings (oldest first), load()}.
 */
export function recordingPlayer(container, opts) {
  // ctl: the recordings list (and everything, on destroy); seg: the shown segment's fetches,
  // aborted when another segment is picked.
  const state = {destroyed: false, ctl: new AbortController(), seg: null, cleanups: [], recs: [], active: null};
  const api_ = {
    destroy() {
      state.destroyed = true;
      state.ctl.abort();
      if (state.seg) state.seg.abort();
      for (const c of state.cleanups.splice(0)) { try { c(); } catch (_) { /* ignore */ } }
    },
    seek(recId, t) {
      if (!state.active || state.active.id !== recId || !state.active.seek) return false;
      state.active.seek(t);
      return true;
    },
    refreshMarkers() { if (state.active && state.active.markers) state.active.markers(); },
    current() { return state.active ? state.active.id : null; },
    recordings() { return state.recs; },
    load,
  };

  function load() {
    if (!state.loading) state.loading = loadOnce().finally(() => { state.loading = null; });
    return state.loading;
  }

  async function loadOnce() {
    if (state.destroyed) return;
    const me = await whoami();
    if (!can('recordings:read')) {
      mount(container, h('p', {class: 'notice', id: 'player-denied'},
        `Not shown: your ${me.role} key cannot read recordings (needs recordings:read).`));
      return;
    }
    let recs;
    try {
      recs = (await api(`/v1/calls/${encodeURIComponent(opts.callId)}/recordings`, {signal: state.ctl.signal})).items || [];
    } catch (e) {
      if (state.destroyed) return;
      if (e.status === 403) {
        mount(container, h('p', {class: 'notice', id: 'player-denied'}, `Not shown: your ${me.role} key cannot read recordings (needs recordings:read).`));
      } else {
        mount(container, errorBox(e));
      }
      return;
    }
    if (state.destroyed) return;
    state.recs = recs;
    if (!recs.length) {
      mount(container, h('p', {class: 'muted', id: 'player-none'}, opts.live && opts.live()
        ? 'No recording yet (it appears when the call ends, if it records).'
        : 'This call has no recording.'));
      return;
    }
    const picker = recs.length > 1
      ? h('div', {class: 'tabs', role: 'tablist'}, recs.map((r, i) => h('button', {type: 'button', role: 'tab',
        'aria-selected': 'false', 'data-rec': r.id, onclick: () => show(r)}, `Segment ${i + 1} · ${fmtMs(r.duration_ms)}`)))
      : null;
    const slot = h('div', {class: 'player-slot'});
    mount(container, picker, slot);
    state.picker = picker;
    state.slot = slot;
    await show(recs[0]);
  }

  async function show(rec) {
    if (state.active && state.active.dispose) state.active.dispose();
    // The previous segment's download stops here (its bytes would only be thrown away).
    if (state.seg) state.seg.abort();
    const seg = new AbortController();
    state.seg = seg;
    const active = {id: rec.id, signal: seg.signal};
    state.active = active;
    const current = () => !state.destroyed && state.active === active;
    if (state.picker) {
      for (const b of state.picker.querySelectorAll('button')) b.setAttribute('aria-selected', String(b.dataset.rec === rec.id));
    }
    const size = Number(rec.bytes);
    if (Number.isFinite(size) && size > DRAW_LIMIT) {
      buildLarge(rec, size, active);
      return;
    }
    mount(state.slot, h('p', {class: 'muted'}, `Loading the recording (${fmtNum(rec.bytes)} bytes)…`));
    let buf;
    try {
      const res = await api(audioUrl(rec), {raw: true, signal: seg.signal});
      // The listing's size may be missing or stale: the answer's own length decides too.
      const announced = Number(res.headers.get('Content-Length'));
      if (announced > DRAW_LIMIT) {
        try { await res.body.cancel(); } catch (_) { /* already gone */ }
        if (current()) buildLarge(rec, announced, active);
        return;
      }
      buf = await res.arrayBuffer();
    } catch (e) {
      // Destroyed, or another segment was picked (this fetch was aborted): nothing to show.
      if (!current()) return;
      mount(state.slot, e.code === 'recording_unavailable'
        ? h('p', {class: 'notice'}, 'The recording file is not on this node (recording_unavailable).')
        : errorBox(e));
      return;
    }
    if (!current()) return;
    build(rec, buf, active);
  }

  /** Runs fn when `el` changes width by more than 8 px (markers are laid out in pixels). */
  function onWidth(el, fn, local) {
    if (typeof ResizeObserver !== 'function') return;
    let lastW = el.clientWidth;
    const ro = new ResizeObserver(() => {
      const w = el.clientWidth;
      if (Math.abs(w - lastW) > 8) { lastW = w; fn(); }
    });
    ro.observe(el);
    local.push(() => ro.disconnect());
  }

  function ownCleanups(active) {
    const local = [];
    active.dispose = () => {
      for (const c of local.splice(0)) { try { c(); } catch (_) { /* ignore */ } }
      // A disposed segment leaves the page's cleanups too (switching segments adds none).
      const at = state.cleanups.indexOf(active.dispose);
      if (at >= 0) state.cleanups.splice(at, 1);
    };
    state.cleanups.push(active.dispose);
    return local;
  }

  /** A recording too large to hold here: its size, a download on demand, its markers. */
  function buildLarge(rec, bytes, active) {
    const local = ownCleanups(active);
    const duration = Math.max(0, Number(rec.duration_ms) || 0) / 1000;
    const name = fileName(rec.id);
    const status = h('span', {class: 'muted small', id: 'player-download-status'});
    const download = h('button', {type: 'button', id: 'player-download'}, `Download WAV (${fmtMB(bytes)})`);
    download.addEventListener('click', async () => {
      download.disabled = true;
      mount(status, `Downloading ${fmtMB(bytes)}…`);
      try {
        const res = await api(audioUrl(rec), {raw: true, signal: active.signal});
        // A Blob (not an ArrayBuffer): the browser may keep a large one on disk.
        const blob = await res.blob();
        if (state.destroyed || state.active !== active) return;
        const url = URL.createObjectURL(blob);
        const a = h('a', {download: name, hidden: true});
        a.href = url;
        state.slot.append(a);
        a.click();
        a.remove();
        // The save has started from the URL; it is released a minute later (or when the segment goes).
        const t = setTimeout(() => URL.revokeObjectURL(url), 60000);
        local.push(() => { clearTimeout(t); URL.revokeObjectURL(url); });
        mount(status, `Saved as ${name}.`);
      } catch (e) {
        if (state.destroyed || state.active !== active) return;
        mount(status, e.code === 'recording_unavailable'
          ? 'The recording file is not on this node (recording_unavailable).'
          : `Download failed: ${e.code ? `${e.code}: ` : ''}${e.message || e}`);
      } finally {
        download.disabled = false;
      }
    });

    const columns = 1000;
    const markerStrip = h('div', {class: 'wave-markers'});
    const track = s('svg', {class: 'wave wave-track', viewBox: `0 0 ${columns} ${WAVE_H}`, preserveAspectRatio: 'none',
      role: 'img', 'aria-label': `Recording time line, ${fmtClock(duration)}`},
    s('line', {class: 'wave-mid', x1: 0, x2: columns, y1: WAVE_H / 2, y2: WAVE_H / 2}),
    s('g', {class: 'wave-lines'}));
    mount(state.slot,
      h('p', {class: 'notice', id: 'player-too-large'},
        `This recording is ${fmtMB(bytes)}: too large to draw here (this page draws and plays recordings up to ${fmtMB(DRAW_LIMIT)}). Download it to listen.`),
      h('div', {class: 'wave-box'}, markerStrip, track),
      h('p', {class: 'muted small'}, `${Number(rec.channels) === 1 ? 'Mono' : 'Stereo'}, ${fmtClock(duration)} (${fmtNum(bytes)} bytes). `,
        'The markers show where the call’s events fall in the recording.'),
      h('div', {class: 'row'}, download, status));

    const drawMarkers = () => {
      const list = duration > 0 && opts.markersFor
        ? opts.markersFor(rec, duration).filter((m) => m.t >= 0 && m.t <= duration).sort((a, b) => a.t - b.t) : [];
      drawMarkerStrip(markerStrip, [track], columns, list, duration, null);
    };
    active.markers = drawMarkers;
    drawMarkers();
    onWidth(markerStrip, drawMarkers, local);
  }

  function build(rec, buf, active) {
    const local = ownCleanups(active);
    // The Blob is the one copy of the bytes (the waveforms read `buf` in place); nothing else
    // keeps `buf` once the page is drawn and the SHA-256 is checked.
    const url = URL.createObjectURL(new Blob([buf], {type: 'audio/wav'}));
    local.push(() => URL.revokeObjectURL(url));
    const byteLength = buf.byteLength;

    let wav = null;
    let wavErr = null;
    try { wav = parseWav(buf); } catch (e) { wavErr = e; }

    const audio = h('audio', {id: 'player-audio'});
    audio.preload = 'auto';
    audio.src = url;
    local.push(() => { audio.pause(); audio.removeAttribute('src'); audio.load(); });

    const download = h('a', {class: 'button', download: fileName(rec.id)}, 'Download WAV');
    download.href = url;

    const integrity = h('span', {class: 'muted', id: 'player-sha'}, 'checking SHA-256…');
    sha256Hex(buf).then((hex) => {
      if (state.destroyed || state.active !== active) return;
      if (!hex) mount(integrity, 'SHA-256 not checked (this browser context has no WebCrypto)');
      else if (rec.sha256 && hex === rec.sha256) {
        integrity.className = 'ok';
        mount(integrity, 'SHA-256 matches the recording’s stored hash');
      } else {
        integrity.className = 'bad';
        mount(integrity, `SHA-256 ${hex} differs from the stored ${rec.sha256 || '(none)'}`);
      }
    }).catch(() => mount(integrity, 'SHA-256 not checked'));

    if (wavErr) {
      mount(state.slot,
        h('div', {class: 'error', role: 'alert'}, `The recording cannot be drawn: ${wavErr.message}.`),
        h('p', {class: 'muted'}, `${fmtNum(byteLength)} bytes received; the file may still play in your browser.`),
        audio, h('div', {class: 'row'}, download), integrity);
      audio.controls = true;
      return;
    }

    const duration = wav.duration;
    const columns = Math.max(200, Math.min(1600, Math.round((state.slot.clientWidth || 600) * 1.5)));
    const play = h('button', {type: 'button', id: 'play', class: 'primary'}, 'Play');
    const speed = h('select', {id: 'speed', 'aria-label': 'Playback speed'},
      [0.5, 1, 1.5, 2].map((v) => h('option', {value: String(v), selected: v === 1}, `${v}×`)));
    const timeText = h('span', {id: 'player-time', class: 'mono'}, `${fmtClock(0)} / ${fmtClock(duration)}`);

    const direction = opts.direction === 'inbound' ? 'caller' : 'callee';
    const chLabels = wav.channels === 2
      ? [`Left · the ${direction} (${opts.peer}), as callplane heard it`, 'Right · callplane (what it sent: prompts, tones)']
      : ['Mono · one side of the call (the script’s record mode)'];
    const heads = [];
    const waves = [];
    for (let ch = 0; ch < wav.channels; ch++) {
      const p = peaks(wav, ch, columns);
      const head = s('line', {class: 'playhead', x1: 0, x2: 0, y1: 0, y2: WAVE_H});
      heads.push(head);
      const svg = s('svg', {class: `wave wave-ch${ch}`, 'data-channel': ch, viewBox: `0 0 ${columns} ${WAVE_H}`,
        preserveAspectRatio: 'none', role: 'img', 'aria-label': chLabels[ch]},
      s('line', {class: 'wave-mid', x1: 0, x2: columns, y1: WAVE_H / 2, y2: WAVE_H / 2}),
      s('path', {class: 'wave-path', d: wavePath(p, WAVE_H)}),
      s('g', {class: 'wave-lines'}),
      head);
      waves.push(svg);
    }
    const markerStrip = h('div', {class: 'wave-markers'});
    const waveBox = h('div', {class: 'wave-box', tabindex: 0, role: 'slider', 'aria-label': 'Recording position',
      'aria-valuemin': 0, 'aria-valuemax': Math.round(duration)},
    markerStrip,
    waves.map((w, i) => [h('div', {class: `wave-label ch${i}`}, h('span', {class: 'swatch'}), chLabels[i]), w]));

    const notes = wav.notes.length
      ? h('div', {class: 'notice'}, 'This file is odd but readable: ', wav.notes.join('; '), '.') : null;

    mount(state.slot,
      h('div', {class: 'player-controls'}, play, h('label', {class: 'speed'}, 'Speed ', speed), timeText),
      notes, waveBox,
      h('p', {class: 'muted small'}, `${wav.channels === 2 ? 'Stereo' : 'Mono'}, ${fmtNum(wav.rate)} Hz, 16-bit PCM, `,
        `${fmtClock(duration)} (${fmtNum(byteLength)} bytes). Click the waveform or a marker to seek.`),
      h('div', {class: 'row'}, download, integrity),
      audio);
    // The samples were only needed for the peaks.
    wav = null;

    const setTime = (t) => {
      const x = duration > 0 ? (Math.min(t, duration) / duration) * columns : 0;
      for (const hd of heads) { hd.setAttribute('x1', x.toFixed(1)); hd.setAttribute('x2', x.toFixed(1)); }
      mount(timeText, `${fmtClock(t)} / ${fmtClock(duration)}`);
      waveBox.setAttribute('aria-valuenow', String(Math.round(t)));
      if (opts.onTime) opts.onTime(rec.id, t);
    };
    const seek = (t) => {
      const v = Math.max(0, Math.min(duration, t));
      audio.currentTime = v;
      setTime(v);
    };
    active.seek = seek;

    let raf = 0;
    const tick = () => {
      setTime(audio.currentTime);
      raf = audio.paused ? 0 : requestAnimationFrame(tick);
    };
    const on = (el, ev, fn) => { el.addEventListener(ev, fn); local.push(() => el.removeEventListener(ev, fn)); };
    local.push(() => { if (raf) cancelAnimationFrame(raf); if (opts.onTime) opts.onTime(rec.id, null); });
    on(audio, 'play', () => { mount(play, 'Pause'); if (!raf) raf = requestAnimationFrame(tick); });
    on(audio, 'pause', () => { mount(play, 'Play'); setTime(audio.currentTime); });
    on(audio, 'ended', () => { mount(play, 'Play'); setTime(audio.currentTime); });
    on(audio, 'seeked', () => setTime(audio.currentTime));
    on(audio, 'timeupdate', () => { if (!raf) setTime(audio.currentTime); });
    on(audio, 'error', () => {
      mount(timeText, 'the browser cannot play this file');
      play.disabled = true;
    });
    on(play, 'click', () => {
      if (audio.paused) {
        if (audio.ended || audio.currentTime >= duration) audio.currentTime = 0;
        audio.playbackRate = Number(speed.value);
        audio.play().catch((e) => { if (!state.destroyed) mount(timeText, `cannot play: ${e.message}`); });
      } else {
        audio.pause();
      }
    });
    on(speed, 'change', () => { audio.playbackRate = Number(speed.value); });
    for (const w of waves) {
      on(w, 'click', (e) => {
        const r = w.getBoundingClientRect();
        if (r.width > 0) seek(((e.clientX - r.left) / r.width) * duration);
      });
    }
    on(waveBox, 'keydown', (e) => {
      if (e.target !== waveBox) return;
      if (e.key === 'ArrowRight') { seek(audio.currentTime + 1); e.preventDefault(); }
      else if (e.key === 'ArrowLeft') { seek(audio.currentTime - 1); e.preventDefault(); }
      else if (e.key === ' ') { play.click(); e.preventDefault(); }
    });

    const drawMarkers = () => {
      const list = (opts.markersFor ? opts.markersFor(rec, duration) : [])
        .filter((m) => m.t >= 0 && m.t <= duration)
        .sort((a, b) => a.t - b.t);
      drawMarkerStrip(markerStrip, waves, columns, list, duration, seek);
    };
    active.markers = drawMarkers;
    drawMarkers();
    onWidth(markerStrip, drawMarkers, local);
  }

  load();
  return api_;
}
