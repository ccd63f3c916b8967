// Inline SVG charts (built with s() from dom.js: no markup strings, no third-party code).
// A chart scales with its container: a fixed viewBox, width 100 % (style.css `.chart`).

import {h, s} from './dom.js';

/** Outcome → colour (a fixed set; anything else gets a grey). */
export const OUTCOME_COLORS = {
  answered: '#1a7f37',
  busy: '#d4a72c',
  no_answer: '#8c959f',
  rejected: '#cf222e',
  invalid_number: '#8250df',
  network_error: '#e16f24',
  cancelled: '#57606a',
  failed: '#82071e',
};

export function outcomeColor(key) {
  // Own keys only: an outcome named "constructor" or "__proto__" gets the grey too.
  return Object.hasOwn(OUTCOME_COLORS, key) ? OUTCOME_COLORS[key] : '#afb8c1';
}

/** A point's value for a series key (the values may be an API object: own keys only). */
function valueOf(p, key) {
  const v = p.values;
  return v && typeof v === 'object' && Object.hasOwn(v, key) ? (Number(v[key]) || 0) : 0;
}

/** A "nice" step for about `count` ticks up to `max` (1, 2, 5 × 10^n). */
function niceStep(max, count) {
  if (max <= 0) return 1;
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return Math.max(m * mag, Number.EPSILON);
  return 10 * mag;
}

function fmtTick(v) {
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(v < 1 ? 2 : 1).replace(/\.?0+$/, '');
}

function clock(us, withSeconds) {
  const d = new Date(us / 1000);
  const p = (n) => String(n).padStart(2, '0');
  return withSeconds ? `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}` : `${p(d.getHours())}:${p(d.getMinutes())}`;
}

/**
 * Stacked bars over time.
 * opts: {id, title, points: [{t (µs), values: {key: n}}], series: [{key, label, color}],
 *        bucketS, yLabel, xLabel, empty, width (the container's width in px, if known),
 *        integer (the values are counts: whole ticks)}
 * Returns a <figure> holding the SVG (with the given id) and an HTML legend.
 */
export function stackedBars(opts) {
  // The viewBox follows the width the chart gets (when known), so its text keeps its size on a
  // phone; the SVG still scales with its container afterwards.
  const W = Math.round(Math.max(280, Math.min(900, opts.width || 640)));
  const H = W < 480 ? 220 : 240;
  const M = {l: 46, r: 10, t: 12, b: 44};
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const points = opts.points || [];
  const series = opts.series || [];
  const totals = points.map((p) => series.reduce((a, sr) => a + valueOf(p, sr.key), 0));
  const maxTotal = Math.max(0, ...totals);
  // Counts (opts.integer) get whole ticks: no "0.5 calls" line.
  const step = opts.integer ? Math.max(1, niceStep(maxTotal || 1, 4)) : niceStep(maxTotal || 1, 4);
  const top = Math.max(step, Math.ceil((maxTotal || 1) / step) * step);
  const y = (v) => M.t + ph - (v / top) * ph;

  const svg = s('svg', {id: opts.id, class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': opts.title || '', preserveAspectRatio: 'xMidYMid meet'});
  svg.append(s('title', {}, opts.title || ''));

  // Grid and y axis.
  for (let v = 0; v <= top + step / 2; v += step) {
    const yy = y(v);
    svg.append(s('line', {x1: M.l, x2: W - M.r, y1: yy, y2: yy, class: 'grid-line'}));
    svg.append(s('text', {x: M.l - 5, y: yy + 3, 'text-anchor': 'end'}, fmtTick(Math.round(v * 100) / 100)));
  }
  svg.append(s('line', {x1: M.l, x2: M.l, y1: M.t, y2: M.t + ph, class: 'axis-line'}));
  svg.append(s('line', {x1: M.l, x2: W - M.r, y1: M.t + ph, y2: M.t + ph, class: 'axis-line'}));
  svg.append(s('text', {x: 12, y: M.t + ph / 2, 'text-anchor': 'middle',
    transform: `rotate(-90 12 ${M.t + ph / 2})`, class: 'axis-title'}, opts.yLabel || ''));
  svg.append(s('text', {x: M.l + pw / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis-title'}, opts.xLabel || ''));

  if (!points.length || maxTotal === 0) {
    svg.append(s('text', {x: M.l + pw / 2, y: M.t + ph / 2, 'text-anchor': 'middle', class: 'chart-empty'},
      opts.empty || 'nothing yet'));
  }

  // Bars.
  const n = Math.max(points.length, 1);
  const slot = pw / n;
  const bw = Math.max(1, Math.min(40, slot * 0.8));
  const withSeconds = (opts.bucketS || 60) < 60;
  points.forEach((p, i) => {
    const x = M.l + i * slot + (slot - bw) / 2;
    let acc = 0;
    const parts = [];
    for (const sr of series) {
      const v = valueOf(p, sr.key);
      if (v <= 0) continue;
      const y0 = y(acc);
      const y1 = y(acc + v);
      acc += v;
      parts.push(`${sr.label} ${fmtTick(Math.round(v * 100) / 100)}`);
      svg.append(s('rect', {x: x.toFixed(2), y: y1.toFixed(2), width: bw.toFixed(2),
        height: Math.max(0.5, y0 - y1).toFixed(2), fill: sr.color, 'data-key': sr.key},
      s('title', {}, `${clock(p.t, withSeconds)} · ${sr.label}: ${fmtTick(Math.round(v * 100) / 100)}`)));
    }
  });

  // X labels: one per 80 units of width at most.
  const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 80))));
  points.forEach((p, i) => {
    if (i % every !== 0 && i !== points.length - 1) return;
    if (i === points.length - 1 && i % every !== 0 && (i % every) < every / 2) return;
    const cx = M.l + i * slot + slot / 2;
    svg.append(s('line', {x1: cx, x2: cx, y1: M.t + ph, y2: M.t + ph + 4, class: 'axis-line'}));
    svg.append(s('text', {x: cx, y: M.t + ph + 16, 'text-anchor': 'middle'}, clock(p.t, withSeconds)));
  });

  const legend = h('div', {class: 'legend'}, series.map((sr) => {
    const sw = h('span', {class: 'swatch'});
    sw.style.background = sr.color;
    return h('span', {class: 'legend-item', 'data-legend': sr.key}, sw, sr.label);
  }));
  return h('figure', {class: 'chart-figure'}, opts.title ? h('figcaption', {class: 'chart-title'}, opts.title) : null,
    svg, legend);
}
