// Small canvas charts for the dashboard: lines over time, and bars. No library: a few dozen lines
// of canvas 2D, sized for the device's pixels.

export const COLORS = ["#2f5bd3", "#157f3b", "#b45309", "#b42318", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f"];

const INK = "#667085";
const GRID = "#e3e6eb";

// The canvas's 2D context, its backing store matched to its CSS size and the device's pixels;
// returns the context and the size in CSS pixels.
function surface(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

// A round upper bound for the y axis: 1, 2, 5 times a power of ten.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function label(n) {
  return n >= 1000 ? `${Math.round(n / 100) / 10}k` : String(Math.round(n * 10) / 10);
}

// Lines over the last `spanMs` (or since the first point, if that is later: a dashboard opened a
// minute ago shows that minute across the width): `series` is
// [{name, color, points: [[t, value], ...]}] with t in ms (the same clock as `now`). Draws a y axis
// from 0 to a round maximum, and a legend.
export function lines(canvas, series, now, spanMs) {
  const first = Math.min(now, ...series.flatMap((s) => s.points.map((p) => p[0])));
  spanMs = Math.max(10000, Math.min(spanMs, now - first));
  const { ctx, width, height } = surface(canvas);
  const left = 40, right = 8, top = 8, bottom = 18;
  const plotW = width - left - right, plotH = height - top - bottom;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  ctx.strokeStyle = GRID;
  ctx.fillStyle = INK;
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = top + plotH * (1 - f);
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotW, y);
    ctx.stroke();
    ctx.fillText(label(max * f), 2, y + 4);
  }
  const ago = spanMs >= 60000 ? `${Math.round(spanMs / 60000)} min ago` : `${Math.round(spanMs / 1000)} s ago`;
  ctx.fillText(ago, left, height - 4);
  ctx.fillText("now", left + plotW - 20, height - 4);
  const x = (t) => left + plotW * (1 - (now - t) / spanMs);
  const y = (v) => top + plotH * (1 - v / max);
  ctx.lineWidth = 2;
  for (const s of series) {
    const pts = s.points.filter((p) => now - p[0] <= spanMs);
    if (pts.length === 0) continue;
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    pts.forEach(([t, v], i) => (i === 0 ? ctx.moveTo(x(t), y(v)) : ctx.lineTo(x(t), y(v))));
    if (pts.length === 1) ctx.lineTo(x(pts[0][0]) + 2, y(pts[0][1]));
    ctx.stroke();
  }
  let lx = left + 6;
  for (const s of series) {
    ctx.fillStyle = s.color;
    ctx.fillRect(lx, top + 2, 10, 3);
    ctx.fillStyle = INK;
    ctx.fillText(s.name, lx + 14, top + 8);
    lx += 24 + ctx.measureText(s.name).width;
  }
}

// Horizontal bars: `bars` is [{name, value, color}], longest first is up to the caller.
export function bars(canvas, bars) {
  const { ctx, width, height } = surface(canvas);
  const left = 120, right = 48;
  const rowH = Math.max(14, Math.min(24, height / Math.max(1, bars.length)));
  const max = niceMax(Math.max(0, ...bars.map((b) => b.value)));
  bars.forEach((b, i) => {
    const y = i * rowH;
    if (y + rowH > height) return;
    ctx.fillStyle = INK;
    ctx.fillText(b.name.length > 18 ? `${b.name.slice(0, 17)}…` : b.name, 2, y + rowH * 0.7);
    ctx.fillStyle = b.color;
    ctx.fillRect(left, y + 3, Math.max(1, (width - left - right) * (b.value / max)), rowH - 6);
    ctx.fillStyle = INK;
    ctx.fillText(label(b.value), width - right + 4, y + rowH * 0.7);
  });
}
