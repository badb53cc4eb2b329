/**
 * The simulator's self-contained HTML report (`corral sim run scenario.json --html report.html`).
 *
 * {@link renderHtmlReport} is a pure function from a {@link SimResult} and the charting library's
 * text to one HTML page: the library (uPlot, MIT) and its stylesheet are inlined, the result is
 * embedded as JSON, and the page draws its charts from that JSON — it opens offline and loads
 * nothing. {@link loadUplotAssets} is the only part that reads files (the installed `uplot`
 * package, at report time).
 *
 * Charts: utilization per resource; dominant share per role with its weighted fair share as a
 * dashed reference; pending tasks (and registered agents); wait p50/p90/p99 of the tasks that
 * started in each interval, and the CDF of all waits; offers made/declined/rescinded and task
 * launches per simulated second; stranded cpus and mem. Failures are drawn as markers on every
 * time chart and listed in a table beside unschedulable work, per-framework outcomes and roles.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { waitCountText, type SimResult, type SimSample } from "./report.ts";

/** The charting library's files, as text. */
export interface UplotAssets {
  /** `dist/uPlot.iife.min.js` (defines the global `uPlot`). */
  js: string;
  /** `dist/uPlot.min.css`. */
  css: string;
  /** The package's `LICENSE` (MIT), reproduced in the page. */
  license: string;
  /** The package version. */
  version: string;
}

/** Reads uPlot from the installed `uplot` package. @throws when it is not installed */
export function loadUplotAssets(): UplotAssets {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve("uplot/package.json");
  const dir = dirname(pkgPath);
  const pkg = JSON.parse(readFileSync(pkgPath, "utf8")) as { version?: string };
  return {
    js: readFileSync(join(dir, "dist", "uPlot.iife.min.js"), "utf8"),
    css: readFileSync(join(dir, "dist", "uPlot.min.css"), "utf8"),
    license: readFileSync(join(dir, "LICENSE"), "utf8"),
    version: pkg.version ?? "unknown",
  };
}

/** What the page's script draws (all arrays share the sample times `t`). */
export interface ReportSeries {
  t: number[];
  utilization: Record<string, Array<number | null>>;
  shares: Record<string, Array<number | null>>;
  fairShares: Record<string, Array<number | null>>;
  pending: number[];
  agents: number[];
  waits: { p50: Array<number | null>; p90: Array<number | null>; p99: Array<number | null> };
  offersPerSecond: { made: number[]; declined: number[]; rescinded: number[] };
  launchesPerSecond: number[];
  stranded: { cpus: number[]; mem: number[] };
  cdf: { seconds: number[]; fraction: number[] };
  markers: Array<{ t: number; label: string; kind: "failure" | "back" }>;
  /** Per Marathon app (`<framework><app id>`): instances running and wanted at each sample time (null before the app existed). */
  marathon: Record<string, { running: Array<number | null>; wanted: Array<number | null> }>;
}

/** Turns a result into the chart series (pure). */
export function reportSeries(r: SimResult): ReportSeries {
  const samples = r.utilization.samples;
  const t = samples.map((s) => s.t);
  const utilization: Record<string, Array<number | null>> = {};
  for (const name of ["cpus", "mem", "disk"]) {
    if (samples.some((s) => s.utilization[name] !== undefined)) utilization[name] = samples.map((s) => pct1(s.utilization[name]));
  }
  const roles = Object.keys(r.roles);
  const weightSum = roles.reduce((sum, role) => sum + r.roles[role]!.weight, 0);
  const shares: Record<string, Array<number | null>> = {};
  const fairShares: Record<string, Array<number | null>> = {};
  for (const role of roles) {
    shares[role] = samples.map((s) => round4(s.shares[role] ?? 0));
    // The same reference as the result's deviation: the role's weighted part of what was allocated.
    fairShares[role] = samples.map((s) => round4((r.roles[role]!.weight / weightSum) * sumOf(s.shares)));
  }
  const rate = (pick: (s: SimSample) => number): number[] =>
    samples.map((s, i) => {
      const prev = i === 0 ? undefined : samples[i - 1]!;
      const dt = s.t - (prev?.t ?? 0);
      return dt > 0 ? round4((pick(s) - (prev ? pick(prev) : 0)) / dt) : 0;
    });
  const markers: ReportSeries["markers"] = [];
  for (const f of r.failures) {
    markers.push({ t: f.atSeconds, kind: "failure", label: `${f.kind} ${f.agents.join(", ")}` });
    if (f.backAtSeconds !== null) markers.push({ t: f.backAtSeconds, kind: "back", label: `back ${f.agents.join(", ")}` });
  }
  return {
    t,
    utilization,
    shares,
    fairShares,
    pending: samples.map((s) => s.queuedTasks),
    agents: samples.map((s) => s.agents),
    waits: {
      p50: samples.map((s) => (s.waits.count > 0 ? s.waits.p50 : null)),
      p90: samples.map((s) => (s.waits.count > 0 ? s.waits.p90 : null)),
      p99: samples.map((s) => (s.waits.count > 0 ? s.waits.p99 : null)),
    },
    offersPerSecond: { made: rate((s) => s.offers.made), declined: rate((s) => s.offers.declined), rescinded: rate((s) => s.offers.rescinded) },
    launchesPerSecond: rate((s) => s.launched),
    stranded: { cpus: samples.map((s) => s.stranded.cpus), mem: samples.map((s) => s.stranded.mem) },
    cdf: { seconds: r.waitSeconds.cdf.map(([s]) => s), fraction: r.waitSeconds.cdf.map(([, f]) => f) },
    markers,
    marathon: marathonSeries(r, t),
  };
}

/** Each Marathon app's samples on the report's sample times. */
function marathonSeries(r: SimResult, t: number[]): ReportSeries["marathon"] {
  const out: ReportSeries["marathon"] = {};
  for (const app of r.marathon.apps) {
    const at = new Map(app.samples.map(([time, running, wanted]) => [time, [running, wanted] as const]));
    out[`${app.framework}${app.appId}`] = { running: t.map((time) => at.get(time)?.[0] ?? null), wanted: t.map((time) => at.get(time)?.[1] ?? null) };
  }
  return out;
}

/**
 * The whole page as a string (pure: no I/O, no clock). The result is embedded as JSON in a
 * `<script type="application/json">` (every `<` escaped, so no data can close the element); the
 * library is inlined; nothing is loaded from anywhere.
 */
export function renderHtmlReport(result: SimResult, assets: UplotAssets): string {
  const data = { result, series: reportSeries(result) };
  const title = `Corral simulation: ${result.scenario} (seed ${result.seed})`;
  return [
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(title)}</title>`,
    `<!--\n  Charts drawn with uPlot ${commentSafe(assets.version)} by Leon Sorokin, inlined below under the MIT licence:\n\n${commentSafe(assets.license.trim())}\n-->`,
    `<style>\n${styleSafe(assets.css)}\n</style>`,
    `<style>\n${PAGE_CSS}\n</style>`,
    "</head>",
    "<body>",
    `<h1>${esc(title)}</h1>`,
    `<p class="sub">${esc(`${result.endSeconds} simulated seconds, sampled every ${result.sampling.intervalSeconds} s (${result.sampling.count} samples); ${result.engine.events} engine events in ${result.engine.wallMs} ms of wall time.`)}</p>`,
    summaryTable(result),
    '<h2>Utilization</h2><p class="note">Share of each resource in use by tasks (allocated minus outstanding offers).</p><div class="chart" id="c-util"></div>',
    '<h2>Dominant share per role</h2><p class="note">Solid: the role\'s dominant share (offers included). Dashed: its weighted fair part of what was allocated (weight / sum of weights &times; sum of the roles\' shares).</p><div class="chart" id="c-shares"></div>',
    rolesTable(result),
    '<h2>Pending tasks</h2><p class="note">Tasks queued in the frameworks, waiting for an offer; registered agents on the right axis.</p><div class="chart" id="c-pending"></div>',
    '<h2>Queue wait</h2><p class="note">Submission to TASK_RUNNING, percentiles of the tasks that started running in each sampling interval; below, the distribution of all waits.</p><div class="chart" id="c-waits"></div><div class="chart" id="c-cdf"></div>',
    '<h2>Offers and launches</h2><p class="note">Per simulated second, averaged over each sampling interval.</p><div class="chart" id="c-offers"></div><div class="chart" id="c-launches"></div>',
    `<h2>Stranded resources</h2><p class="note">${esc(
      `Free (unallocated) cpus on agents whose free mem is below ${result.stranded.thresholds.mem} MB, and free mem on agents whose free cpus are below ${result.stranded.thresholds.cpus}: the smallest task the scenario declares (Mesos' minimum allocatable cpus 0.01 / mem 32 MB when none does). Outstanding offers count as allocated.`,
    )}</p><div class="chart" id="c-stranded"></div>`,
    "<h2>Frameworks and jobs</h2>",
    frameworksTable(result),
    "<h2>Unschedulable work</h2>",
    unschedulableTable(result),
    ...marathonSection(result),
    "<h2>Failures and recovery</h2>",
    `<p class="note">${esc(
      `Red lines on the charts mark failures, green ones the agents coming back. Recovery: from the failure until every task lost in it was launched again. ${result.recovery.failures} failures; mean recovery ${fmt(result.recovery.meanRecoverySeconds)} s, max ${fmt(result.recovery.maxRecoverySeconds)} s; ${result.recovery.unrecovered} not recovered by the end.`,
    )}</p>`,
    failuresTable(result),
    ...mastersSection(result),
    `<script type="application/json" id="corral-data">${jsonForScript(data)}</script>`,
    `<script>\n${scriptSafe(assets.js)}\n</script>`,
    `<script>\n${PAGE_SCRIPT}\n</script>`,
    "</body>",
    "</html>",
    "",
  ].join("\n");
}

// ---- tables --------------------------------------------------------------------------------------

function table(headers: string[], rows: Array<Array<string | number | null>>, empty: string): string {
  if (rows.length === 0) return `<p class="empty">${esc(empty)}</p>`;
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  const body = rows.map((row) => `<tr>${row.map((c) => `<td>${esc(c === null ? "-" : String(c))}</td>`).join("")}</tr>`).join("\n");
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

function summaryTable(r: SimResult): string {
  const util = (k: string) => (r.utilization.mean[k] === undefined ? "-" : `${(r.utilization.mean[k]! * 100).toFixed(1)}% mean, ${((r.utilization.max[k] ?? 0) * 100).toFixed(1)}% max`);
  return table(
    ["metric", "value"],
    [
      ["tasks", `submitted ${r.tasks.submitted}, launched ${r.tasks.launched}, completed ${r.tasks.completed}, failed ${r.tasks.failed} (retried ${r.tasks.retried}, abandoned ${r.tasks.abandoned}), queued at end ${r.tasks.queuedAtEnd}`],
      ["jobs", `${r.jobs.total}: ${r.jobs.completed} completed, ${r.jobs.failed} failed, ${r.jobs.timedOut} timed out`],
      ["wait (s)", `p50 ${r.waitSeconds.p50}, p90 ${r.waitSeconds.p90}, p99 ${r.waitSeconds.p99}, max ${r.waitSeconds.max}, mean ${r.waitSeconds.mean} ${waitCountText(r)}`],
      ["cpus", util("cpus")],
      ["mem", util("mem")],
      ["disk", util("disk")],
      ["offers", `made ${r.offers.made}, declined ${r.offers.declined}, rescinded ${r.offers.rescinded}`],
      ["launches per simulated second", `${r.launchesPerSecond.mean} mean, ${r.launchesPerSecond.max} peak`],
      ["stranded", `cpus ${r.stranded.mean.cpus} mean / ${r.stranded.max.cpus} max; mem ${r.stranded.mean.mem} MB mean / ${r.stranded.max.mem} MB max`],
      ["agents", `${r.agents.atEnd} at end, ${r.agents.failures} failures, ${r.agents.restarts} restarts`],
      ["network", `${r.network.published} published, ${r.network.delivered} delivered, ${r.network.lost} lost, ${r.network.duplicated} duplicated, ${r.network.cut} cut`],
    ],
    "",
  );
}

function rolesTable(r: SimResult): string {
  return table(
    ["role", "weight", "fair part", "mean dominant share", "max dominant share", "mean |deviation from fair|", "max |deviation from fair|"],
    Object.entries(r.roles).map(([role, f]) => [role, f.weight, f.fairPart, f.meanDominantShare, f.maxDominantShare, f.meanAbsDeviationFromFair, f.maxAbsDeviationFromFair]),
    "No roles.",
  );
}

function frameworksTable(r: SimResult): string {
  return table(
    ["framework", "kind", "role", "tasks", "launched", "finished", "failed attempts", "abandoned", "queued at end", "job"],
    Object.entries(r.frameworks).map(([name, f]) => [name, f.kind, f.role, f.count, f.launched, f.finished, f.failed, f.abandoned, f.queuedAtEnd, f.job]),
    "No frameworks.",
  );
}

function unschedulableTable(r: SimResult): string {
  return table(
    ["framework", "role", "queued at end", "abandoned", "reasons"],
    r.unschedulable.map((u) => [u.framework, u.role, u.queuedAtEnd, u.abandoned, u.reasons.join("; ")]),
    "Every submitted task was placed.",
  );
}

/** Marathon apps: instances over time, each action's time to its instance count, and the apps left short with Marathon's reasons. */
function marathonSection(r: SimResult): string[] {
  if (r.marathon.apps.length === 0) return [];
  const action = (a: SimResult["marathon"]["apps"][number]["actions"][number]) =>
    `${a.type} at ${a.atSeconds} s: ${a.outcome === "reached" ? `reached in ${a.reachedAfterSeconds} s` : a.outcome}${a.error ? ` (${a.error})` : ""}`;
  return [
    "<h2>Marathon apps</h2>",
    '<p class="note">Instances running per app (solid) and the instances its definition asks for (dashed). Time to reach: from the action until Marathon reported its deployment successful (every instance of the new definition running, the old ones gone).</p><div class="chart" id="c-marathon"></div>',
    table(
      ["framework", "app", "instances", "running at end", "actions"],
      r.marathon.apps.map((a) => [a.framework, a.appId, a.deleted ? "deleted" : a.instances, a.running, a.actions.map(action).join("; ")]),
      "No apps.",
    ),
    "<h3>Unschedulable apps</h3>",
    '<p class="note">Apps short of their instances at the end, with the reasons Marathon\'s launch queue (<code>GET /v2/queue</code>) gives: offers declined per reason, launch backoff, the latest offers\' details.</p>',
    table(
      ["framework", "app", "running / instances", "reasons"],
      r.marathon.unplaced.map((u) => [u.framework, u.appId, `${u.running} / ${u.instances}`, u.reasons.join("; ")]),
      "Every Marathon app reached its instance count.",
    ),
  ];
}

function failuresTable(r: SimResult): string {
  return table(
    ["at (s)", "kind", "agents", "back at (s)", "down (s)", "tasks lost", "not relaunched", "recovery (s)"],
    r.failures.map((f) => [f.atSeconds, f.kind, f.agents.join(", "), f.backAtSeconds, f.downSeconds, f.tasksLost, f.tasksNotRelaunched, f.recoverySeconds]),
    "No failures.",
  );
}

/** Master failovers (only when the scenario crashed a master). */
function mastersSection(r: SimResult): string[] {
  if (r.masters.failovers.length === 0) return [];
  return [
    "<h2>Master failovers</h2>",
    `<p class="note">${esc(
      `${r.masters.count} masters. Election: from the leader's crash until a standby serves the bus. Recovery: until the new leader's first offer. Mean recovery ${fmt(r.masters.meanRecoverySeconds)} s, max ${fmt(r.masters.maxRecoverySeconds)} s; ${r.masters.unrecovered} not recovered by the end.`,
    )}</p>`,
    table(
      ["at (s)", "crashed", "new leader", "epoch", "election (s)", "recovery (s)"],
      r.masters.failovers.map((f) => [f.atSeconds, f.crashed, f.leader, f.epoch, f.electionSeconds, f.recoverySeconds]),
      "No failovers.",
    ),
  ];
}

// ---- escaping ------------------------------------------------------------------------------------

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/** JSON that cannot end its `<script>` element (or open a comment) whatever the strings hold. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

function scriptSafe(js: string): string {
  return js.replace(/<\/(script)/gi, "<\\/$1").replace(/<!--/g, "<\\!--");
}

function styleSafe(css: string): string {
  return css.replace(/<\/(style)/gi, "<\\/$1");
}

function commentSafe(text: string): string {
  return text.replace(/--/g, "- -");
}

function pct1(v: number | undefined): number | null {
  return v === undefined ? null : Math.round(v * 1000) / 10;
}

function round4(n: number): number {
  return Math.round(n * 10_000) / 10_000;
}

function sumOf(m: Record<string, number>): number {
  let s = 0;
  for (const v of Object.values(m)) s += v;
  return s;
}

function fmt(v: number | null): string {
  return v === null ? "-" : String(v);
}

// ---- the page ------------------------------------------------------------------------------------

const PAGE_CSS = `body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1100px; padding: 0 16px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub, .note { color: #555; }
.note { font-size: 13px; margin: 4px 0 8px; }
.empty { color: #2a7a2a; }
.chart { margin: 8px 0 16px; min-height: 40px; }
.nodata { color: #888; font-style: italic; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
tbody tr:nth-child(even) { background: #fafafa; }`;

/** The page's own script: reads the embedded JSON and draws the charts with the global uPlot. */
const PAGE_SCRIPT = String.raw`(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("corral-data").textContent);
  var S = D.series;
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var charts = [];

  function markers() {
    return {
      hooks: {
        draw: [function (u) {
          var ctx = u.ctx, top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
          ctx.save();
          ctx.lineWidth = 1.5;
          S.markers.forEach(function (m) {
            var x = u.valToPos(m.t, "x", true);
            if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) return;
            ctx.strokeStyle = m.kind === "failure" ? "rgba(214,39,40,0.75)" : "rgba(44,160,44,0.75)";
            ctx.setLineDash(m.kind === "failure" ? [] : [4, 4]);
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, bottom);
            ctx.stroke();
          });
          ctx.restore();
        }]
      }
    };
  }

  function width(el) {
    return Math.max(320, (el.clientWidth || 900) - 4);
  }

  function fixed(d) {
    return function (u, v) { return v == null ? "-" : v.toFixed(d); };
  }

  // lines: [{ label, values, color?, dash?, scale?, digits? }]
  function plot(id, title, xLabel, x, lines, axes, timeMarkers) {
    var el = document.getElementById(id);
    if (!el) return;
    if (x.length === 0 || lines.length === 0) {
      el.innerHTML = "<p class=\"nodata\">" + title + ": no samples.</p>";
      return;
    }
    var series = [{ label: xLabel, value: fixed(1) }];
    var data = [x];
    lines.forEach(function (l, i) {
      series.push({ label: l.label, stroke: l.color || COLORS[i % COLORS.length], width: 1.5, dash: l.dash, scale: l.scale || "y", value: fixed(l.digits == null ? 2 : l.digits), spanGaps: false });
      data.push(l.values);
    });
    var axisList = [{ label: xLabel }];
    axes.forEach(function (a) {
      axisList.push({ scale: a.scale, label: a.label, side: a.side == null ? 3 : a.side, grid: { show: a.side !== 1 } });
    });
    var scales = { x: { time: false } };
    axes.forEach(function (a) { scales[a.scale] = a.range ? { range: a.range } : {}; });
    var opts = { title: title, width: width(el), height: 260, scales: scales, series: series, axes: axisList, plugins: timeMarkers ? [markers()] : [] };
    charts.push({ el: el, u: new uPlot(opts, data, el) });
  }

  var T = S.t;
  var Y = function (label, range) { return { scale: "y", label: label, range: range }; };

  plot("c-util", "Utilization per resource (%)", "simulated seconds", T,
    Object.keys(S.utilization).map(function (k) { return { label: k + " %", values: S.utilization[k], digits: 1 }; }),
    [Y("% of the cluster", [0, 100])], true);

  var shareLines = [];
  Object.keys(S.shares).forEach(function (role, i) {
    var c = COLORS[i % COLORS.length];
    shareLines.push({ label: role, values: S.shares[role], color: c, digits: 3 });
    shareLines.push({ label: role + " fair", values: S.fairShares[role], color: c, dash: [6, 4], digits: 3 });
  });
  plot("c-shares", "Dominant share per role", "simulated seconds", T, shareLines, [Y("dominant share", [0, 1])], true);

  plot("c-pending", "Pending tasks", "simulated seconds", T,
    [{ label: "pending tasks", values: S.pending, digits: 0 }, { label: "agents", values: S.agents, scale: "agents", digits: 0, color: "#7f7f7f" }],
    [Y("tasks"), { scale: "agents", label: "agents", side: 1 }], true);

  plot("c-waits", "Queue wait per interval (s)", "simulated seconds", T,
    [{ label: "p50", values: S.waits.p50 }, { label: "p90", values: S.waits.p90 }, { label: "p99", values: S.waits.p99 }],
    [Y("seconds")], true);

  plot("c-cdf", "Wait CDF (all tasks)", "wait (s)", S.cdf.seconds,
    [{ label: "fraction of tasks", values: S.cdf.fraction, digits: 2 }], [Y("fraction", [0, 1])], false);

  plot("c-offers", "Offers per simulated second", "simulated seconds", T,
    [{ label: "made", values: S.offersPerSecond.made }, { label: "declined", values: S.offersPerSecond.declined }, { label: "rescinded", values: S.offersPerSecond.rescinded }],
    [Y("offers / s")], true);

  plot("c-launches", "Task launches per simulated second", "simulated seconds", T,
    [{ label: "launches / s", values: S.launchesPerSecond }], [Y("launches / s")], true);

  plot("c-stranded", "Stranded resources", "simulated seconds", T,
    [{ label: "stranded cpus", values: S.stranded.cpus }, { label: "stranded mem (MB)", values: S.stranded.mem, scale: "mem", digits: 0 }],
    [Y("cpus"), { scale: "mem", label: "mem (MB)", side: 1 }], true);

  if (document.getElementById("c-marathon")) {
    var appLines = [];
    Object.keys(S.marathon).forEach(function (app, i) {
      var c = COLORS[i % COLORS.length];
      appLines.push({ label: app, values: S.marathon[app].running, color: c, digits: 0 });
      appLines.push({ label: app + " wanted", values: S.marathon[app].wanted, color: c, dash: [6, 4], digits: 0 });
    });
    plot("c-marathon", "Marathon instances running per app", "simulated seconds", T, appLines, [Y("instances")], true);
  }

  var resizing = 0;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      charts.forEach(function (c) { c.u.setSize({ width: width(c.el), height: 260 }); });
    }, 100);
  });
})();`;
