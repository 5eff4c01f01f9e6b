// synchrony viz: a time-space diagram drawn on a canvas, from the DATA object embedded in
// the page. Zoom with the wheel, pan by dragging, hover a mark for its event.
(function () {
  "use strict";
  const D = DATA;
  const ORDERS = ["unordered", "fifo", "causal", "total", "safe", "gbcast", "state transfer"];
  const COLOURS = ["#9e9e9e", "#1e88e5", "#43a047", "#8e24aa", "#e53935", "#fb8c00", "#212121"];
  const LEFT = 110, ROW = 44, TOP = 52;
  const canvas = document.getElementById("c");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const groupOn = D.groups.map(() => true);
  const rowOn = D.rows.map(() => true);
  let scale = 1, offset = 0; // px per microsecond, microseconds at the left edge
  let highlight = null;

  function visibleRows() {
    const idx = [];
    D.rows.forEach((_, r) => { if (rowOn[r]) idx.push(r); });
    return idx;
  }
  function layout() {
    const rows = visibleRows();
    const ypos = {};
    rows.forEach((r, k) => { ypos[r] = TOP + k * ROW; });
    return ypos;
  }
  function groupColour(g) { return "hsl(" + ((g * 137 + 200) % 360) + ",70%,50%)"; }
  function resize() {
    canvas.width = Math.max(600, window.innerWidth - 30);
    canvas.height = TOP + visibleRows().length * ROW + 20;
    if (scale === 1) scale = (canvas.width - LEFT - 20) / D.span;
    draw();
  }
  const X = (t) => LEFT + (t - offset) * scale;

  // A duration as a short label with its unit.
  function human(us) {
    if (us < 1000) return Math.round(us) + " \u00b5s";
    if (us < 1e6) { const ms = us / 1000; return (ms < 10 && us % 1000 ? ms.toFixed(1) : Math.round(ms)) + " ms"; }
    return (us / 1e6).toFixed(2).replace(/\.00$/, "") + " s";
  }
  // A round step (1, 2 or 5 times a power of ten) for about `want` ticks over `span`.
  function tickStep(span, want) {
    const raw = Math.max(1, span / want);
    for (let p = 1; ; p *= 10) for (const m of [1, 2, 5]) if (p * m >= raw) return p * m;
  }
  // Labels are drawn only where they touch no label drawn before them.
  let placed = [];
  function label(text, x, y, colour) {
    const w = ctx.measureText(text).width;
    const b = [x - 1, y - 11, x + w + 1, y + 3];
    if (placed.some((p) => b[0] < p[2] && p[0] < b[2] && b[1] < p[3] && p[1] < b[3])) return;
    placed.push(b);
    ctx.lineWidth = 3; ctx.strokeStyle = "#fff"; ctx.strokeText(text, x, y); ctx.lineWidth = 1;
    ctx.fillStyle = colour; ctx.fillText(text, x, y);
  }
  function axis(W) {
    const ay = 22;
    ctx.strokeStyle = "#888";
    ctx.beginPath(); ctx.moveTo(LEFT, ay); ctx.lineTo(W, ay); ctx.stroke();
    const t0 = offset, t1 = offset + (W - LEFT) / scale;
    const step = tickStep(t1 - t0, Math.max(2, Math.floor((W - LEFT) / 110)));
    for (let t = Math.ceil(Math.max(0, t0) / step) * step; t <= t1; t += step) {
      const x = X(t);
      ctx.beginPath(); ctx.moveTo(x, ay); ctx.lineTo(x, ay + 4); ctx.stroke();
      label(human(t), x - 2, ay - 4, "#333");
    }
  }

  function draw() {
    const ypos = layout();
    const W = canvas.width;
    ctx.clearRect(0, 0, W, canvas.height);
    ctx.font = "11px sans-serif";
    placed = [];
    axis(W);
    const viewLabels = [];
    for (const b of D.bands) {
      if (!groupOn[b.group] || !(b.row in ypos)) continue;
      const x0 = Math.max(LEFT, X(b.t0)), x1 = Math.min(W, X(b.t1));
      if (x1 < LEFT || x0 > W) continue;
      const off = (b.group % 3) * 4;
      ctx.fillStyle = groupColour(b.group);
      ctx.globalAlpha = 0.16;
      ctx.fillRect(x0, ypos[b.row] - 14 + off, Math.max(1, x1 - x0), 20 - off);
      ctx.globalAlpha = 1;
      viewLabels.push([D.groups[b.group] + " v" + b.view, x0 + 2, ypos[b.row] - 16, groupColour(b.group)]);
    }
    ctx.strokeStyle = "#444";
    for (const r in ypos) {
      ctx.beginPath(); ctx.moveTo(LEFT, ypos[r]); ctx.lineTo(W, ypos[r]); ctx.stroke();
      label(D.rows[r], 6, ypos[r] + 4, "#000");
    }
    // Arrows: one by one when few are in view, else bucketed by lines and 4 px of time.
    const inView = [];
    for (const a of D.arrows) {
      if (!groupOn[a.group] || !(a.r0 in ypos) || !(a.r1 in ypos)) continue;
      const x0 = X(a.t0), x1 = X(a.t1);
      if (Math.max(x0, x1) < LEFT || Math.min(x0, x1) > W) continue;
      inView.push(a);
    }
    if (inView.length <= 4000) {
      for (const a of inView) line(a, ypos, a.kind === 6 ? 3 : 0.8, 0.7);
    } else {
      const buckets = new Map();
      for (const a of inView) {
        const k = a.r0 + ":" + a.r1 + ":" + a.kind + ":" + Math.floor(X(a.t0) / 4);
        const e = buckets.get(k);
        if (e) e.n++; else buckets.set(k, { a: a, n: 1 });
      }
      for (const { a, n } of buckets.values()) line(a, ypos, a.kind === 6 ? 3 : 0.5 + Math.log2(n) * 0.5, 0.5);
    }
    for (const m of D.marks) {
      if (!(m.row in ypos)) continue;
      const x = X(m.t), y = ypos[m.row];
      if (x < LEFT || x > W) continue;
      mark(m.kind, x, y);
    }
    // Over the arrows, where they fit.
    for (const [text, x, y, colour] of viewLabels) label(text, x, y, colour);
    ctx.lineWidth = 2.5; ctx.strokeStyle = "red";
    for (const f of D.findings) {
      for (const k of f.events) circle(D.at[k], ypos, 9);
    }
    if (highlight !== null) {
      ctx.strokeStyle = "#00bcd4"; ctx.lineWidth = 3;
      circle(D.at[highlight], ypos, 11);
    }
    ctx.lineWidth = 1;
  }
  function circle(at, ypos, r) {
    if (!(at[1] in ypos)) return;
    ctx.beginPath(); ctx.arc(X(at[0]), ypos[at[1]], r, 0, 2 * Math.PI); ctx.stroke();
  }
  function line(a, ypos, w, alpha) {
    ctx.strokeStyle = COLOURS[a.kind]; ctx.lineWidth = w; ctx.globalAlpha = alpha;
    ctx.beginPath(); ctx.moveTo(X(a.t0), ypos[a.r0]); ctx.lineTo(X(a.t1), ypos[a.r1]); ctx.stroke();
    ctx.globalAlpha = 1; ctx.lineWidth = 1;
  }
  function mark(kind, x, y) {
    switch (kind) {
      case "View": ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.moveTo(x, y - 8); ctx.lineTo(x, y + 8); ctx.stroke(); break;
      case "Crash": ctx.strokeStyle = "#d50000"; ctx.lineWidth = 3; ctx.beginPath();
        ctx.moveTo(x - 6, y - 6); ctx.lineTo(x + 6, y + 6); ctx.moveTo(x + 6, y - 6); ctx.lineTo(x - 6, y + 6); ctx.stroke(); ctx.lineWidth = 1; break;
      case "SilentEnd": ctx.strokeStyle = "#d50000"; ctx.lineWidth = 2; ctx.setLineDash([3, 2]); ctx.beginPath();
        ctx.moveTo(x - 6, y - 6); ctx.lineTo(x + 6, y + 6); ctx.moveTo(x + 6, y - 6); ctx.lineTo(x - 6, y + 6); ctx.stroke();
        ctx.setLineDash([]); ctx.lineWidth = 1; break;
      case "Partitioned": ctx.fillStyle = "#ff6d00"; ctx.fillRect(x - 2.5, y - 11, 5, 22); break;
      case "Incarnation": ctx.fillStyle = "#fff"; ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath();
        ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke(); ctx.lineWidth = 1; break;
      case "State": ctx.fillStyle = "#212121"; ctx.fillRect(x - 4, y - 4, 8, 8); break;
      case "Leave": ctx.strokeStyle = "#00695c"; ctx.lineWidth = 2; ctx.beginPath();
        ctx.moveTo(x - 3, y - 6); ctx.lineTo(x + 3, y); ctx.lineTo(x - 3, y + 6); ctx.stroke(); ctx.lineWidth = 1; break;
      default: ctx.fillStyle = "#555"; ctx.beginPath(); ctx.arc(x, y, 2.5, 0, 2 * Math.PI); ctx.fill();
    }
  }

  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const t = offset + (e.offsetX - LEFT) / scale;
    scale *= e.deltaY < 0 ? 1.25 : 0.8;
    offset = t - (e.offsetX - LEFT) / scale;
    draw();
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, o: offset }; });
  window.addEventListener("mouseup", () => { drag = null; });
  canvas.addEventListener("mousemove", (e) => {
    if (drag) { offset = drag.o - (e.offsetX - drag.x) / scale; draw(); return; }
    const ypos = layout();
    let best = null, bd = 64;
    D.at.forEach((at, k) => {
      if (!(at[1] in ypos)) return;
      const dx = X(at[0]) - e.offsetX, dy = ypos[at[1]] - e.offsetY;
      const d2 = dx * dx + dy * dy;
      if (d2 < bd) { bd = d2; best = k; }
    });
    if (best === null) { tip.style.display = "none"; return; }
    tip.textContent = D.lines[best];
    tip.style.display = "block";
    tip.style.left = (e.pageX + 12) + "px"; tip.style.top = (e.pageY + 12) + "px";
  });

  const filters = document.getElementById("filters");
  function checkbox(label, colour, on, set) {
    const l = document.createElement("label");
    const c = document.createElement("input");
    c.type = "checkbox"; c.checked = on;
    c.addEventListener("change", () => { set(c.checked); resize(); });
    l.appendChild(c);
    const s = document.createElement("span"); s.textContent = label; if (colour) s.style.color = colour;
    l.appendChild(s); filters.appendChild(l);
  }
  D.groups.forEach((g, k) => checkbox("group " + g, groupColour(k), true, (v) => { groupOn[k] = v; }));
  D.rows.forEach((r, k) => checkbox(r, null, true, (v) => { rowOn[k] = v; }));
  const legend = document.getElementById("legend");
  ORDERS.forEach((o, k) => {
    const s = document.createElement("span"); s.textContent = "\u2014 " + o; s.style.color = COLOURS[k]; legend.appendChild(s);
  });
  const list = document.getElementById("findings");
  if (D.findings.length === 0) list.textContent = "The checker found no violation.";
  D.findings.forEach((f) => {
    const li = document.createElement("li");
    li.textContent = f.what; li.className = "finding";
    li.addEventListener("click", () => {
      if (f.events.length === 0) return;
      const ts = f.events.map((k) => D.at[k][0]);
      const lo = Math.min(...ts), hi = Math.max(...ts);
      scale = (canvas.width - LEFT - 40) / Math.max(1000, hi - lo) / 1.2;
      offset = lo - (hi - lo) * 0.1 - 500;
      highlight = f.events[0];
      draw();
    });
    list.appendChild(li);
  });
  document.getElementById("reset").addEventListener("click", () => { scale = 1; offset = 0; highlight = null; resize(); });
  window.addEventListener("resize", resize);
  resize();
  document.body.setAttribute("data-rendered", "yes");
})();
