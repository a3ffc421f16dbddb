// A small line chart of telemetry, drawn as SVG by the console itself: one line per numeric
// value (up to four), time on x over the last hour, each line scaled to its own range.

const NS = 'http://www.w3.org/2000/svg';
const COLORS = ['#2f7ed8', '#e4572e', '#17a673', '#a05195'];
const W = 640;
const H = 180;
const PAD = 28;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** An <svg> for `samples` ([{ts, values}], oldest first) between `from` and `to` (ms). */
export function telemetryChart(samples, from, to) {
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const series = new Map();
  for (const s of samples) {
    const t = Date.parse(s.ts);
    if (Number.isNaN(t) || !s.values || typeof s.values !== 'object') continue;
    for (const [key, v] of Object.entries(s.values)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      if (!series.has(key) && series.size >= COLORS.length) continue;
      if (!series.has(key)) series.set(key, []);
      series.get(key).push([t, v]);
    }
  }
  root.setAttribute('data-points', String([...series.values()].reduce((n, p) => n + p.length, 0)));
  root.appendChild(svg('rect', { x: PAD, y: 8, width: W - 2 * PAD, height: H - PAD - 8, class: 'plot' }));
  const x = (t) => PAD + ((t - from) / Math.max(1, to - from)) * (W - 2 * PAD);
  const label = (text, attrs) => {
    const el = svg('text', attrs);
    el.textContent = text;
    root.appendChild(el);
  };
  label(new Date(from).toLocaleTimeString(), { x: PAD, y: H - 8, class: 'axis' });
  label(new Date(to).toLocaleTimeString(), { x: W - PAD, y: H - 8, class: 'axis', 'text-anchor': 'end' });
  if (series.size === 0) {
    label('no numeric samples in the last hour', { x: W / 2, y: H / 2, class: 'axis', 'text-anchor': 'middle' });
    return root;
  }
  let i = 0;
  for (const [key, points] of series) {
    const color = COLORS[i];
    const values = points.map((p) => p[1]);
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    const y = (v) => (hi === lo ? (H - PAD + 8) / 2 : 8 + (1 - (v - lo) / (hi - lo)) * (H - PAD - 16) + 4);
    const line = svg('polyline', {
      points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
      fill: 'none', stroke: color, 'stroke-width': 2, 'data-key': key,
    });
    root.appendChild(line);
    const last = points[points.length - 1];
    root.appendChild(svg('circle', { cx: x(last[0]).toFixed(1), cy: y(last[1]).toFixed(1), r: 3, fill: color }));
    label(`${key}: ${last[1]} (${lo}…${hi})`, { x: PAD + 6, y: 22 + 14 * i, class: 'legend', fill: color });
    i += 1;
  }
  return root;
}
