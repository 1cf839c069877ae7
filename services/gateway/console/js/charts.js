// Small SVG charts drawn by hand: a time axis, a value axis and one line
// per series. No chart library: the console needs four line charts.

import { h, s } from './dom.js';

const W = 640;
const H = 220;
const PAD = { left: 64, right: 16, top: 14, bottom: 28 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const pow = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * pow).find((m) => m >= v);
}

/**
 * `series`: [{name, points: [[x, y], ...]}] with x in ms; `y` null is a gap.
 * Returns a figure with the SVG and a legend.
 */
export function lineChart({ title, series, from, to, yFormat, xFormat, id }) {
  const values = series.flatMap((sr) => sr.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined));
  const yMax = niceMax(Math.max(0, ...values));
  const x = (t) => PAD.left + ((t - from) / Math.max(to - from, 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    grid.push(
      s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis-label', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, yFormat(v)),
    );
  }
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    grid.push(s('text', { class: 'axis-label', x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, xFormat(t)));
  }
  const lines = series.map((sr, n) => {
    const cls = `series series-${n % 8}`;
    const segments = [];
    let current = [];
    for (const [t, v] of sr.points) {
      if (v === null || v === undefined) {
        if (current.length) segments.push(current);
        current = [];
      } else current.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    if (current.length) segments.push(current);
    return s(
      'g',
      { class: cls, dataset: { series: sr.name } },
      segments.map((pts) => s('polyline', { points: pts.join(' ') })),
      sr.points
        .filter(([, v]) => v !== null && v !== undefined)
        .map(([t, v]) => s('circle', { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5 }, s('title', null, `${sr.name}: ${yFormat(v)} at ${xFormat(t)}`))),
    );
  });
  const svg = s(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title },
    s('line', { class: 'axis', x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }),
    s('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }),
    grid,
    lines,
    values.length ? null : s('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data in this range'),
  );
  return h(
    'figure',
    { class: 'chart-box', id },
    h('figcaption', null, title),
    svg,
    h('ul', { class: 'legend' }, series.map((sr, n) => h('li', { class: `series-${n % 8}` }, h('span', { class: 'swatch' }), sr.name))),
  );
}
