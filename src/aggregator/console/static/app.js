// procflow console: draws the charts (uPlot) and the service map (Cytoscape.js) from the
// JSON the server embedded in the page. Everything else is server-rendered HTML, which
// works without this file; there is no inline script (the CSP forbids it).
"use strict";

function data(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function drawCharts() {
  if (typeof uPlot === "undefined") return;
  for (const el of document.querySelectorAll("[data-chart]")) {
    const d = data(el.dataset.chart);
    if (!d || !d.x || d.x.length === 0) continue;
    const width = Math.max(320, el.clientWidth - 8);
    const dashes = [[], [6, 4], [2, 3], [10, 3, 2, 3], [1, 2]];
    const colours = ["#1f5fbf", "#8a3b00", "#2f6f3e", "#c0392b", "#4a5568"];
    const series = [{ label: "time (UTC)" }].concat(d.series.map((s, i) => ({
      label: s, stroke: colours[i % colours.length], dash: dashes[i % dashes.length], width: 2,
    })));
    el.textContent = "";
    new uPlot({ width, height: 220, series, scales: { x: { time: true } },
      axes: [{}, { size: 60 }] }, [d.x].concat(d.y), el);
  }
}

function drawMap() {
  const el = document.getElementById("map");
  if (!el || typeof cytoscape === "undefined") return;
  const d = data("map-data");
  if (!d) return;
  const cy = cytoscape({
    container: el,
    elements: d.nodes.map((n) => ({ data: n })).concat(d.edges.map((e) => ({ data: e }))),
    layout: { name: "breadthfirst", directed: true, spacingFactor: 1.2, padding: 20 },
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 11, "text-wrap": "wrap",
        "text-max-width": 160, "text-valign": "bottom", "text-margin-y": 4, width: 26, height: 26,
        "background-color": "#1f5fbf" } },
      { selector: "node[kind = 'external']", style: { shape: "diamond", "background-color": "#8a3b00" } },
      { selector: "node[kind = 'edge']", style: { shape: "round-rectangle", "background-color": "#4a5568", width: 40 } },
      { selector: "edge", style: { width: "data(weight)", "curve-style": "bezier",
        "target-arrow-shape": "triangle", "line-color": "#1f5fbf", "target-arrow-color": "#1f5fbf",
        label: "data(label)", "font-size": 9, "text-rotation": "autorotate" } },
      { selector: "edge[scope = 'north-south']", style: { "line-style": "dashed",
        "line-color": "#8a3b00", "target-arrow-color": "#8a3b00" } },
    ],
  });
  cy.on("tap", "node", (evt) => {
    const href = evt.target.data("href");
    if (href) window.location.assign(href);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  drawMap();
});
