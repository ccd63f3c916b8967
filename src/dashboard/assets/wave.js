// The recording player: WAV decoding, the two waveforms, markers.
//
// The recording is fetched once with the bearer key (an ArrayBuffer); the same bytes feed the
// waveforms (decoded here: RIFF, fmt, data; 16-bit PCM, 1 or 2 channels) and the <audio>
// element (a blob: object URL, which the CSP's media-src allows). Channel 0 (left) is what
// callplane heard from the peer, channel 1 (right) what callplane sent (media/src/session.rs,
// src/engine/record_sink.rs); docs/api.md says "left: the callee" for an outbound call.

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
 * The player for a call's recordings, in `container` (#player).
 * opts: {callId, direction, peer (label), markersFor(recording, duration) → [{t, label, kind, title}],
 *        onTime(recordingId, seconds|null)}
 * Returns {destroy(), seek(recordingId, seconds) → bool, refreshMarkers(), current() → id}.
 */
export function recordingPlayer(container, opts) {
  const state = {destroyed: false, ctl: new AbortController(), cleanups: [], recs: [], active: null};
  const api_ = {
    destroy() {
      state.destroyed = true;
      state.ctl.abort();
      for (const c of state.cleanups.splice(0)) { try { c(); } catch (_) { /* ignore */ } }
    },
    seek(recId, t) {
      if (!state.active || state.active.id !== recId || !state.active.seek) return false;
      state.active.seek(t);
      return true;
    },
    refreshMarkers() { if (state.active && state.active.markers) state.active.markers(); },
    current() { return state.active ? state.active.id : null; },
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
    state.active = {id: rec.id};
    if (state.picker) {
      for (const b of state.picker.querySelectorAll('button')) b.setAttribute('aria-selected', String(b.dataset.rec === rec.id));
    }
    mount(state.slot, h('p', {class: 'muted'}, `Loading the recording (${fmtNum(rec.bytes)} bytes)…`));
    let buf;
    try {
      const res = await api(rec.audio_url || `/v1/recordings/${encodeURIComponent(rec.id)}/audio`, {raw: true, signal: state.ctl.signal});
      buf = await res.arrayBuffer();
    } catch (e) {
      if (state.destroyed) return;
      mount(state.slot, e.code === 'recording_unavailable'
        ? h('p', {class: 'notice'}, 'The recording file is not on this node (recording_unavailable).')
        : errorBox(e));
      return;
    }
    if (state.destroyed || state.active.id !== rec.id) return;
    build(rec, buf);
  }

  function build(rec, buf) {
    const active = state.active;
    const url = URL.createObjectURL(new Blob([buf], {type: 'audio/wav'}));
    const local = [];
    active.dispose = () => { for (const c of local.splice(0)) { try { c(); } catch (_) { /* ignore */ } } };
    state.cleanups.push(active.dispose);
    local.push(() => URL.revokeObjectURL(url));

    let wav = null;
    let wavErr = null;
    try { wav = parseWav(buf); } catch (e) { wavErr = e; }

    const audio = h('audio', {id: 'player-audio'});
    audio.preload = 'auto';
    audio.src = url;
    local.push(() => { audio.pause(); audio.removeAttribute('src'); audio.load(); });

    const download = h('a', {class: 'button', download: `${rec.id}.wav`}, 'Download WAV');
    download.href = url;

    const integrity = h('span', {class: 'muted', id: 'player-sha'}, 'checking SHA-256…');
    sha256Hex(buf).then((hex) => {
      if (state.destroyed) return;
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
        h('p', {class: 'muted'}, `${fmtNum(buf.byteLength)} bytes received; the file may still play in your browser.`),
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
        `${fmtClock(duration)} (${fmtNum(buf.byteLength)} bytes). Click the waveform or a marker to seek.`),
      h('div', {class: 'row'}, download, integrity),
      audio);

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
      // Rows: a label goes on the first row where it does not overlap the previous one.
      const width = markerStrip.clientWidth || 360;
      const rows = [];
      const buttons = list.map((m) => {
        const pct = duration > 0 ? (m.t / duration) * 100 : 0;
        const px = (pct / 100) * width;
        const w = m.label.length * 6.6 + 14;
        const flip = px + w > width;
        const left = flip ? px - w : px;
        let row = rows.findIndex((end) => left > end + 3);
        if (row < 0) { row = rows.length < 4 ? rows.length : rows.indexOf(Math.min(...rows)); }
        rows[row] = left + w;
        const b = h('button', {type: 'button', class: `wave-marker mk-${m.kind.replace(/[^a-z0-9]+/g, '-')}${flip ? ' flip' : ''}`,
          'data-t': m.t.toFixed(3), 'data-kind': m.kind, title: `${fmtClock(m.t)} · ${m.title || m.label}`,
          onclick: (e) => { e.stopPropagation(); seek(m.t); }}, m.label);
        b.style.left = `${pct.toFixed(3)}%`;
        b.style.top = `${row * 20}px`;
        return b;
      });
      markerStrip.style.height = `${Math.max(1, rows.length) * 20 + 2}px`;
      mount(markerStrip, buttons);
      for (const w of waves) {
        const g = w.querySelector('.wave-lines');
        mount(g, list.map((m) => {
          const x = duration > 0 ? ((m.t / duration) * columns).toFixed(1) : 0;
          return s('line', {class: `wave-marker-line mk-${m.kind.replace(/[^a-z0-9]+/g, '-')}`, x1: x, x2: x, y1: 0, y2: WAVE_H});
        }));
      }
    };
    active.markers = drawMarkers;
    drawMarkers();
    if (typeof ResizeObserver === 'function') {
      let lastW = markerStrip.clientWidth;
      const ro = new ResizeObserver(() => {
        const w = markerStrip.clientWidth;
        if (Math.abs(w - lastW) > 8) { lastW = w; drawMarkers(); }
      });
      ro.observe(markerStrip);
      local.push(() => ro.disconnect());
    }
  }

  load();
  return api_;
}
