/**
 * Running a scenario and reporting on it: {@link runScenario} validates a scenario, builds the
 * {@link SimCluster}, samples utilization and role shares on virtual time, and returns a
 * JSON-friendly {@link SimResult}; {@link formatSummary} renders it for a terminal.
 *
 * @module
 */

import { SimCluster, type SimLogEvent } from "./cluster.ts";
import { validateScenario, type Scenario } from "./scenario.ts";

/** One sample of the cluster, taken every `sampleIntervalSeconds` of virtual time. */
export interface SimSample {
  /** Virtual seconds since the start. */
  t: number;
  /** Fraction of each resource in use by tasks (allocated minus offered), 0..1. */
  utilization: Record<string, number>;
  /** Fraction offered but not yet answered. */
  offered: Record<string, number>;
  /** Dominant share of each role (allocated, offers included, over the cluster total). */
  shares: Record<string, number>;
  agents: number;
  queuedTasks: number;
}

/** Per-role fairness over the samples. */
export interface RoleFairness {
  weight: number;
  meanDominantShare: number;
  /**
   * Mean absolute difference between the role's dominant share and its weighted fair part of
   * what was allocated in that sample (`weight / sum of weights * sum of shares`); 0 is perfectly
   * weighted-fair (a role with less demand than its part legitimately shows a deviation).
   */
  meanAbsDeviationFromFair: number;
}

/** The result of a run. */
export interface SimResult {
  scenario: string;
  seed: number;
  endSeconds: number;
  tasks: { submitted: number; launched: number; completed: number; failed: number; retried: number; abandoned: number; queuedAtEnd: number };
  /** Wait from submission to TASK_RUNNING, seconds. */
  waitSeconds: { count: number; p50: number; p90: number; p99: number; max: number; mean: number };
  offers: { made: number; declined: number; rescinded: number };
  launchesPerSecond: { mean: number; max: number };
  utilization: { mean: Record<string, number>; samples: SimSample[] };
  roles: Record<string, RoleFairness>;
  agents: { failures: number; restarts: number; atEnd: number };
  network: { published: number; delivered: number; lost: number; duplicated: number; cut: number };
  engine: { events: number; wallMs: number; eventsPerSecond: number };
}

/** Options of {@link runScenario}. */
export interface RunScenarioOptions {
  /** Receives each event-log line. @default none */
  eventLog?: (event: SimLogEvent) => void;
  /** Pino level of the shells' logs (stderr). @default "silent" */
  logLevel?: string;
  /** Called after every engine event with the cluster (invariant checks); throwing aborts the run. @default none */
  afterEvent?: (cluster: SimCluster) => void;
}

/** Validates `input` (throws {@link ScenarioError} before anything runs), runs it and reports. */
export async function runScenario(input: unknown, options: RunScenarioOptions = {}): Promise<SimResult> {
  const scenario = validateScenario(input);
  let cluster: SimCluster | undefined = undefined;
  const after = options.afterEvent;
  cluster = new SimCluster(scenario, {
    ...(options.eventLog ? { eventLog: options.eventLog } : {}),
    ...(options.logLevel ? { logLevel: options.logLevel } : {}),
    ...(after ? { afterEvent: () => after(cluster!) } : {}),
  });
  const samples: SimSample[] = [];
  const intervalMs = (scenario.sampleIntervalSeconds ?? Math.max(1, scenario.endSeconds / 100)) * 1000;
  const sample = (): void => {
    samples.push(takeSample(cluster!));
    cluster!.engine.after(intervalMs, sample, { settle: false });
  };
  cluster.engine.after(intervalMs, sample, { settle: false });
  const run = await cluster.run();
  const result = buildResult(scenario, cluster, samples, run);
  await cluster.shutdown();
  return result;
}

/** Reads one sample off the cluster (synchronous; no effect on the run). */
export function takeSample(cluster: SimCluster): SimSample {
  const core = cluster.master.core;
  const totals = core.resourceTotals();
  const utilization: Record<string, number> = {};
  const offered: Record<string, number> = {};
  for (const [name, total] of Object.entries(totals.total)) {
    if (!(total > 0)) continue;
    utilization[name] = (totals.used[name] ?? 0) / total;
    offered[name] = (totals.offered[name] ?? 0) / total;
  }
  const byRole = new Map<string, Record<string, number>>();
  let queuedTasks = 0;
  for (const fw of cluster.frameworks.values()) {
    queuedTasks += fw.queued();
    const id = fw.driver?.frameworkId();
    if (id === undefined) continue;
    const alloc = core.allocator.frameworkAllocation(id).scalarSummary();
    const sum = byRole.get(fw.role) ?? {};
    for (const [name, v] of Object.entries(alloc)) sum[name] = (sum[name] ?? 0) + v;
    byRole.set(fw.role, sum);
  }
  const shares: Record<string, number> = {};
  for (const [role, alloc] of byRole) {
    let share = 0;
    for (const [name, v] of Object.entries(alloc)) {
      const total = totals.total[name];
      if (total && total > 0) share = Math.max(share, v / total);
    }
    shares[role] = share;
  }
  return { t: cluster.elapsedMs() / 1000, utilization, offered, shares, agents: core.sizes().agents, queuedTasks };
}

/** Nearest-rank percentile of sorted values. */
function pct(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function r4(n: number): number {
  return Math.round(n * 10_000) / 10_000;
}

function buildResult(scenario: Scenario, cluster: SimCluster, samples: SimSample[], run: { events: number; wallMs: number; eventsPerSecond: number }): SimResult {
  const stats = cluster.stats;
  const waits = stats.waitsMs.map((ms) => ms / 1000).sort((a, b) => a - b);
  const meanUtil: Record<string, number> = {};
  for (const s of samples) for (const [k, v] of Object.entries(s.utilization)) meanUtil[k] = (meanUtil[k] ?? 0) + v / samples.length;
  for (const k of Object.keys(meanUtil)) meanUtil[k] = r4(meanUtil[k]!);

  const weights = scenario.cluster.roleWeights ?? {};
  const roles: Record<string, RoleFairness> = {};
  const roleNames = [...new Set(scenario.frameworks.map((f) => f.role ?? "default"))].sort();
  const weightSum = roleNames.reduce((sum, role) => sum + (weights[role] ?? 1), 0);
  for (const role of roleNames) {
    const weight = weights[role] ?? 1;
    let shareSum = 0;
    let devSum = 0;
    for (const s of samples) {
      const share = s.shares[role] ?? 0;
      const total = Object.values(s.shares).reduce((a, b) => a + b, 0);
      shareSum += share;
      devSum += Math.abs(share - (weight / weightSum) * total);
    }
    const n = Math.max(1, samples.length);
    roles[role] = { weight, meanDominantShare: r4(shareSum / n), meanAbsDeviationFromFair: r4(devSum / n) };
  }
  const seconds = Math.max(1, Math.ceil(scenario.endSeconds));
  let maxLaunches = 0;
  for (const v of stats.launchesPerSecond) if (v !== undefined && v > maxLaunches) maxLaunches = v;
  let queuedAtEnd = 0;
  for (const fw of cluster.frameworks.values()) queuedAtEnd += fw.queued();
  const counters = cluster.master.core.counters;
  return {
    scenario: scenario.name ?? "scenario",
    seed: scenario.seed,
    endSeconds: scenario.endSeconds,
    tasks: {
      submitted: stats.submitted,
      launched: stats.launched,
      completed: stats.completed,
      failed: stats.failed,
      retried: stats.retried,
      abandoned: stats.abandoned,
      queuedAtEnd,
    },
    waitSeconds: {
      count: waits.length,
      p50: r4(pct(waits, 0.5)),
      p90: r4(pct(waits, 0.9)),
      p99: r4(pct(waits, 0.99)),
      max: r4(waits.length ? waits[waits.length - 1]! : 0),
      mean: r4(waits.length ? waits.reduce((a, b) => a + b, 0) / waits.length : 0),
    },
    offers: { made: counters.offersMade, declined: counters.offersDeclined, rescinded: counters.offersRescinded },
    launchesPerSecond: { mean: r4(stats.launched / seconds), max: maxLaunches },
    utilization: { mean: meanUtil, samples: samples.map((s) => ({ ...s, utilization: roundAll(s.utilization), offered: roundAll(s.offered), shares: roundAll(s.shares) })) },
    roles,
    agents: { failures: stats.agentFailures, restarts: stats.agentRestarts, atEnd: cluster.master.core.sizes().agents },
    network: { ...cluster.network.stats },
    engine: { events: run.events, wallMs: Math.round(run.wallMs), eventsPerSecond: Math.round(run.eventsPerSecond) },
  };
}

function roundAll(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) out[k] = r4(v);
  return out;
}

/** A terminal summary of a result. */
export function formatSummary(r: SimResult): string {
  const util = Object.entries(r.utilization.mean)
    .filter(([k]) => k === "cpus" || k === "mem" || k === "disk")
    .map(([k, v]) => `${k} ${(v * 100).toFixed(1)}%`)
    .join(", ");
  const lines = [
    `scenario ${r.scenario} (seed ${r.seed}, ${r.endSeconds} s simulated)`,
    `  tasks      submitted ${r.tasks.submitted}, launched ${r.tasks.launched}, completed ${r.tasks.completed}, failed ${r.tasks.failed} (retried ${r.tasks.retried}, abandoned ${r.tasks.abandoned}), queued at end ${r.tasks.queuedAtEnd}`,
    `  wait       p50 ${r.waitSeconds.p50} s, p90 ${r.waitSeconds.p90} s, p99 ${r.waitSeconds.p99} s, max ${r.waitSeconds.max} s (${r.waitSeconds.count} tasks)`,
    `  offers     made ${r.offers.made}, declined ${r.offers.declined}, rescinded ${r.offers.rescinded}`,
    `  launches   ${r.launchesPerSecond.mean}/s mean, ${r.launchesPerSecond.max}/s peak`,
    `  use        ${util || "-"} (mean of ${r.utilization.samples.length} samples)`,
    ...Object.entries(r.roles).map(
      ([role, f]) => `  role ${role.padEnd(12)} weight ${f.weight}, mean dominant share ${f.meanDominantShare}, mean |deviation from fair| ${f.meanAbsDeviationFromFair}`,
    ),
    `  agents     ${r.agents.atEnd} at end, ${r.agents.failures} failures, ${r.agents.restarts} restarts`,
    `  network    ${r.network.published} published, ${r.network.delivered} delivered, ${r.network.lost} lost, ${r.network.cut} cut`,
    `  engine     ${r.engine.events} events in ${r.engine.wallMs} ms (${r.engine.eventsPerSecond} events/s)`,
  ];
  return lines.join("\n");
}
