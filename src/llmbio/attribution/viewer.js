// Attribution graph viewer (llmbio/attribution/viewer.py): draws the inlined graph as SVG.
// Data: {nodes: [{id, kind, layer, pos, feature, token, label, activation, influence,
// cumulative, probability, x, y}], edges: [[sourceIndex, targetIndex, weight]]}.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("graph-data").textContent);
  const nodes = data.nodes;
  const edges = data.edges;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const POS = "#0072B2";
  const NEG = "#D55E00";
  const COL = 120; // px per token position
  const ROW = 64; // px per layer row
  const LEFT = 70;
  const TOP = 70;
  const BOTTOM = 70;
  const TOP_K = 10; // edges listed per direction in the details panel

  nodes.forEach((n, i) => { n.i = i; n.inc = []; n.out = []; });
  edges.forEach((e, k) => { nodes[e[0]].out.push(k); nodes[e[1]].inc.push(k); });
  const reduce = (f, init, xs) => xs.reduce((a, v) => f(a, v), init);
  const minX = reduce(Math.min, Infinity, nodes.map((n) => n.x));
  const maxX = reduce(Math.max, -Infinity, nodes.map((n) => n.x));
  const maxY = reduce(Math.max, 0, nodes.map((n) => n.y));
  const maxW = reduce(Math.max, 1e-12, edges.map((e) => Math.abs(e[2])));
  const px = (x) => LEFT + (x - minX) * COL + COL / 2;
  const py = (y) => TOP + (maxY - y) * ROW;

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 0.001 || a >= 1000) ? v.toExponential(2) : v.toFixed(3);
  }

  function name(n) {
    const tok = JSON.stringify(n.token);
    if (n.kind === "token") return "Emb " + tok;
    if (n.kind === "logit") return "Output " + tok;
    if (n.kind === "error") return "Err L" + n.layer + " @ " + tok;
    return n.label ? n.label : "L" + n.layer + " #" + n.feature + " @ " + tok;
  }

  const width = LEFT + (maxX - minX + 1) * COL + 40;
  const height = TOP + maxY * ROW + BOTTOM;
  const svg = el("svg", { width: width, height: height, viewBox: `0 0 ${width} ${height}` });
  document.getElementById("graph").appendChild(svg);
  const background = el("rect", { width: width, height: height, fill: "#fff" }, svg);

  for (let y = 0; y <= maxY; y++) {
    const text = y === 0 ? "Emb" : y === maxY ? "Logit" : "L" + (y - 1);
    el("line", { x1: LEFT - 10, x2: width - 20, y1: py(y), y2: py(y), stroke: "#f0f0f0" }, svg);
    el("text", { x: 10, y: py(y) + 4, class: "axis" }, svg).textContent = text;
  }

  const edgeLayer = el("g", { id: "edges" }, svg);
  const edgeEls = edges.map((e) => {
    const s = nodes[e[0]];
    const t = nodes[e[1]];
    return el("line", {
      class: "edge", x1: px(s.x), y1: py(s.y), x2: px(t.x), y2: py(t.y),
      stroke: e[2] > 0 ? POS : NEG, "stroke-width": 0.4 + 4 * Math.abs(e[2]) / maxW,
    }, edgeLayer);
  });

  function shape(n, g) {
    if (n.kind === "feature") return el("circle", { r: 6 }, g);
    if (n.kind === "error") return el("rect", { x: -5.5, y: -5.5, width: 11, height: 11 }, g);
    if (n.kind === "token") return el("polygon", { points: "0,-8 8,0 0,8 -8,0" }, g);
    const hex = [0, 1, 2, 3, 4, 5].map((k) => {
      const a = Math.PI / 3 * k + Math.PI / 6;
      return (9 * Math.cos(a)).toFixed(2) + "," + (9 * Math.sin(a)).toFixed(2);
    });
    return el("polygon", { points: hex.join(" ") }, g);
  }

  const nodeLayer = el("g", { id: "nodes" }, svg);
  const nodeEls = nodes.map((n) => {
    const g = el("g", {
      class: "node kind-" + n.kind, "data-node-id": n.id,
      transform: `translate(${px(n.x)},${py(n.y)})`,
    }, nodeLayer);
    shape(n, g);
    el("title", {}, g).textContent = n.id + "\n" + name(n);
    if (n.kind === "token") {
      el("text", { y: 24, "text-anchor": "middle" }, g).textContent = n.token;
    } else if (n.kind === "logit") {
      el("text", { y: -26, "text-anchor": "middle" }, g).textContent = JSON.stringify(n.token);
      el("text", { y: -14, "text-anchor": "middle" }, g).textContent = "p=" + fmt(n.probability);
    } else if (n.kind === "feature" && n.label) {
      el("text", { x: 8, y: -8, class: "flabel" }, g).textContent = n.label;
    }
    g.addEventListener("mouseenter", () => { if (selected === null) show(n); });
    g.addEventListener("mouseleave", () => { if (selected === null) clear(); });
    g.addEventListener("click", (ev) => { ev.stopPropagation(); select(n); });
    return g;
  });

  const details = document.getElementById("details");
  let selected = null;

  function add(parent, tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    parent.appendChild(node);
    return node;
  }

  function edgeList(title, ks, other) {
    add(details, "h3", `${title} (${ks.length})`);
    const ul = add(details, "ul");
    ks.slice().sort((a, b) => Math.abs(edges[b][2]) - Math.abs(edges[a][2])).slice(0, TOP_K)
      .forEach((k) => {
        const w = edges[k][2];
        const peer = nodes[edges[k][other]];
        const li = add(ul, "li");
        add(li, "span", fmt(w), "w " + (w > 0 ? "pos" : "neg"));
        add(li, "span", name(peer));
        li.title = peer.id;
        li.addEventListener("click", () => {
          select(peer);
          nodeEls[peer.i].scrollIntoView({ block: "center", inline: "center" });
        });
      });
  }

  function showDetails(n) {
    details.textContent = "";
    add(details, "h2", name(n));
    const table = add(details, "table");
    const rows = [["id", n.id], ["kind", n.kind], ["layer", n.layer], ["position", n.pos],
      ["token", JSON.stringify(n.token)], ["feature", n.kind === "feature" ? n.feature : null],
      ["activation", n.activation], ["probability", n.probability], ["influence", n.influence],
      ["cumulative influence", n.cumulative]];
    rows.filter((r) => r[1] !== null && r[1] !== undefined).forEach((r) => {
      const tr = add(table, "tr");
      add(tr, "td", r[0]);
      add(tr, "td", fmt(r[1]));
    });
    edgeList("Strongest inputs", n.inc, 0);
    edgeList("Strongest outputs", n.out, 1);
  }

  function show(n) {
    svg.classList.add("focus");
    const near = new Set([n.i]);
    n.inc.concat(n.out).forEach((k) => {
      edgeEls[k].classList.add("hot");
      near.add(edges[k][0]);
      near.add(edges[k][1]);
    });
    near.forEach((i) => nodeEls[i].classList.add("near"));
    showDetails(n);
  }

  function clear() {
    svg.classList.remove("focus");
    svg.querySelectorAll(".hot").forEach((e) => e.classList.remove("hot"));
    svg.querySelectorAll(".near").forEach((e) => e.classList.remove("near"));
    svg.querySelectorAll(".selected").forEach((e) => e.classList.remove("selected"));
    details.textContent = "";
    add(details, "p", `${nodes.length} nodes, ${edges.length} edges. Hover a node for its ` +
      "details; click to pin it; click the background to unpin.", "hint");
  }

  function select(n) {
    clear();
    selected = n;
    if (n === null) return;
    nodeEls[n.i].classList.add("selected");
    show(n);
  }

  background.addEventListener("click", () => select(null));

  const search = document.getElementById("search");
  const status = document.getElementById("status");
  let matches = [];
  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    nodeEls.forEach((g) => g.classList.remove("match"));
    matches = q ? nodes.filter((n) => [n.id, n.label, n.token, name(n)].some(
      (s) => s && String(s).toLowerCase().includes(q))) : [];
    matches.forEach((n) => nodeEls[n.i].classList.add("match"));
    status.textContent = q ? `${matches.length} match${matches.length === 1 ? "" : "es"}` : "";
  });
  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || matches.length === 0) return;
    select(matches[0]);
    nodeEls[matches[0].i].scrollIntoView({ block: "center", inline: "center" });
  });

  // A link ending in #node=<node_id> opens with that node pinned.
  const linked = decodeURIComponent(location.hash.replace(/^#node=/, ""));
  const start = location.hash.startsWith("#node=") ? nodes.find((n) => n.id === linked) : null;
  if (start) {
    select(start);
    nodeEls[start.i].scrollIntoView({ block: "center", inline: "center" });
  } else {
    clear();
  }
  document.body.setAttribute("data-rendered-nodes", String(nodes.length));
})();
