/**
 * Running a scenario and reporting on it: {@link runScenario} validates a scenario, builds the
 * {@link SimCluster}, samples the cluster on virtual time, follows the event stream for
 * per-framework outcomes and failures, and returns a JSON-friendly {@link SimResult};
 * {@link formatSummary} renders it for a terminal (and `./report-html.ts` as a page).
 *
 * Observing never changes the run: the sampler is a synchronous engine event that only reads
 * (`settle: false`, so no extra macrotask turn), and the event-stream recorder only reads the
 * lines the cluster emits anyway. The event log of one seed is the same whatever the sampling.
 *
 * @module
 */

import { SimCluster, type SimLogEvent } from "./cluster.ts";
import type { MasterFailoverRecord } from "./masters.ts";
import { Resources, fromMillis } from "../sdk/resources.ts";
import type { HierarchicalAllocator } from "../master/allocator/allocator.ts";
import { validateScenario, type Scenario } from "./scenario.ts";
import { MarathonSimFramework, type MarathonAppReport, type UnplacedMarathonApp } from "./workloads/marathon.ts";

/** One sample of the cluster, taken every sampling interval of virtual time. */
export interface SimSample {
  /** Virtual seconds since the start. */
  t: number;
  /** Fraction of each resource in use by tasks (allocated minus offered), 0..1. */
  utilization: Record<string, number>;
  /** Fraction offered but not yet answered. */
  offered: Record<string, number>;
  /** Dominant share of each role (allocated, offers included, over the cluster total). */
  shares: Record<string, number>;
  /** Cluster totals (cpus, mem, disk) at the sample: what the fractions are of. */
  capacity: Record<string, number>;
  agents: number;
  /** Tasks waiting in the frameworks' queues (pending). */
  queuedTasks: number;
  /** Cumulative master offer counters at the sample. */
  offers: { made: number; declined: number; rescinded: number };
  /** Cumulative task launches at the sample. */
  launched: number;
  /** Waits (submission → RUNNING, seconds) of the tasks that started running since the previous sample. */
  waits: { count: number; p50: number; p90: number; p99: number };
  /**
   * Stranded resources (absolute): free cpus on agents whose free mem is below the smallest task's
   * mem, and free mem on agents whose free cpus are below the smallest task's cpus (see
   * {@link SimResult.stranded}).
   */
  stranded: { cpus: number; mem: number };
}

/** Per-role fairness over the run, time-weighted (every change counts for as long as it held, not only the samples). */
export interface RoleFairness {
  weight: number;
  /** `weight / sum of the weights of the scenario's roles`: the role's weighted fair part. */
  fairPart: number;
  meanDominantShare: number;
  maxDominantShare: number;
  /**
   * Mean absolute difference between the role's dominant share and its weighted fair part of
   * what was allocated in that sample (`weight / sum of weights * sum of shares`); 0 is perfectly
   * weighted-fair (a role with less demand than its part legitimately shows a deviation).
   */
  meanAbsDeviationFromFair: number;
  /** The largest such difference during the run. */
  maxAbsDeviationFromFair: number;
}

/** What became of one framework's workload. */
export interface FrameworkOutcome {
  kind: string;
  role: string;
  /** Tasks of the workload (`tasks.count`); 0 for a decliner. */
  count: number;
  launched: number;
  finished: number;
  /** Attempts that ended other than FINISHED (lost, killed, failed). */
  failed: number;
  /** Tasks given up on (retries exhausted, or the framework stopped). */
  abandoned: number;
  queuedAtEnd: number;
  /** It was stopped (its `stopSeconds` or a stop-framework event) before the end. */
  stopped: boolean;
  /**
   * A `tasks` or `greedy` workload seen as one job: `completed` (every task finished), `failed`
   * (a task was given up on), `timed-out` (work left when the run or the framework ended); null
   * for a decliner and for a `batch` framework, whose own jobs are in `jobs`.
   */
  job: "completed" | "failed" | "timed-out" | null;
  /**
   * A `batch` framework's jobs by outcome (jobs still live at the end are in none of them; those
   * live when the scenario stops the framework are `cancelled`: the teardown ends them).
   */
  jobs?: { submitted: number; completed: number; failed: number; timedOut: number; cancelled: number; refused: number };
}

/** Work that did not get placed, with why. */
export interface UnschedulableEntry {
  framework: string;
  role: string;
  /** Tasks still queued at the end. */
  queuedAtEnd: number;
  /** Tasks given up on. */
  abandoned: number;
  reasons: string[];
}

/** One failure of agents (crash, partition, removal) and how the workload recovered. */
export interface FailureRecord {
  kind: "crash" | "partition" | "removal";
  atSeconds: number;
  agents: string[];
  /** When the agents were back (restart, partition healed); null: not back by the end. */
  backAtSeconds: number | null;
  downSeconds: number | null;
  /** Task attempts on those agents that ended other than FINISHED during the failure. */
  tasksLost: number;
  /** Lost tasks not launched again by the end (retries exhausted, or still queued). */
  tasksNotRelaunched: number;
  /** From the failure until every lost task was launched again (0 when none was lost); null when some never were. */
  recoverySeconds: number | null;
}

/** The result of a run. */
export interface SimResult {
  scenario: string;
  seed: number;
  endSeconds: number;
  /** How the time series were sampled. */
  sampling: { intervalSeconds: number; maxSamples: number; count: number };
  /**
   * `queuedPastGrace`: tasks queued at the end that were first submitted more than
   * `placementGraceSeconds` before it (= `queuedAtEnd` with no grace; a Marathon instance waiting
   * in the launch queue counts from its app's latest action, the deploy included).
   */
  tasks: { submitted: number; launched: number; completed: number; failed: number; retried: number; abandoned: number; queuedAtEnd: number; queuedPastGrace: number };
  /**
   * Jobs: every job of the `batch` frameworks, plus each `tasks`/`greedy` framework's workload
   * counted as one job (see {@link FrameworkOutcome.job}). `total` counts submitted ones; those
   * still live at the end are in no outcome. `refused`: jobs a `batch` framework turned away (its
   * bounds on live jobs and tasks), not in `total`.
   */
  jobs: { total: number; completed: number; failed: number; timedOut: number; cancelled: number; refused: number };
  /**
   * Wait from submission to TASK_RUNNING, seconds, of the tasks that ran; `cdf` is [seconds,
   * fraction of those tasks] at every percent. `withNeverRun` are the percentiles over every
   * submitted task, those that never ran counting as an endless wait (null when the percentile
   * falls on one): "p99 under N s" in that sense means 99% of the submitted tasks started within N s.
   */
  waitSeconds: {
    count: number;
    p50: number;
    p90: number;
    p99: number;
    max: number;
    mean: number;
    cdf: Array<[number, number]>;
    neverRan: number;
    withNeverRun: { p50: number | null; p90: number | null; p99: number | null };
  };
  offers: { made: number; declined: number; rescinded: number };
  launchesPerSecond: { mean: number; max: number };
  /**
   * `mean` and `max`: of the fraction of each resource tasks use, over the whole run, time-weighted
   * (read after every engine event, each reading counting for as long as it held), not over the
   * samples, which are instants; `samples`: the time series.
   */
  utilization: { mean: Record<string, number>; max: Record<string, number>; samples: SimSample[] };
  roles: Record<string, RoleFairness>;
  frameworks: Record<string, FrameworkOutcome>;
  unschedulable: UnschedulableEntry[];
  /**
   * Stranded resources: free (unallocated) cpus on active agents whose free mem is below
   * `thresholds.mem`, and free mem on agents whose free cpus are below `thresholds.cpus` (each
   * counted only when it is at least its own threshold: an agent short of both is just full), where
   * the thresholds are the smallest cpus and mem any `tasks` or `batch` workload asks for (Mesos' minimum
   * allocatable cpus 0.01 / mem 32 when none does). Outstanding offers count as allocated.
   */
  stranded: {
    thresholds: { cpus: number; mem: number };
    mean: { cpus: number; mem: number };
    max: { cpus: number; mem: number };
    /** `mean` and `max` are time-weighted over the run (as `utilization`); this is the time mean of stranded / cluster total. */
    meanFraction: { cpus: number; mem: number };
  };
  /** Agent failures in order (at most {@link MAX_FAILURE_RECORDS}; `recovery` covers all). */
  failures: FailureRecord[];
  recovery: { failures: number; meanRecoverySeconds: number | null; maxRecoverySeconds: number | null; unrecovered: number };
  agents: { failures: number; restarts: number; atEnd: number };
  /**
   * The masters: how many, and each `master-failover` with its election and recovery times (crash →
   * new leader serving; crash → its first offer), aggregated (null when none recovered).
   */
  masters: { count: number; failovers: MasterFailoverRecord[]; meanRecoverySeconds: number | null; maxRecoverySeconds: number | null; unrecovered: number };
  network: { published: number; delivered: number; lost: number; duplicated: number; cut: number };
  engine: { events: number; wallMs: number; eventsPerSecond: number };
  /**
   * The apps of the `marathon` frameworks: per app its instances over time, what became of each
   * action (time until its deployment succeeded), and the apps short of their instances at the
   * end with the reasons Marathon's launch queue gives (empty lists without such frameworks).
   */
  marathon: { apps: MarathonAppReport[]; unplaced: UnplacedMarathonApp[] };
}

/** Options of {@link runScenario}. */
export interface RunScenarioOptions {
  /** Receives each event-log line. @default none */
  eventLog?: (event: SimLogEvent) => void;
  /** Pino level of the shells' logs (stderr). @default "silent" */
  logLevel?: string;
  /** Called after every engine event with the cluster (invariant checks); throwing aborts the run. @default none */
  afterEvent?: (cluster: SimCluster) => void;
  /**
   * Sampling interval of the time series, virtual seconds; overrides the scenario's
   * `sampleIntervalSeconds`. @default the scenario's, else min(60, max(1, endSeconds / 100))
   */
  sampleIntervalSeconds?: number;
  /** At most this many samples: a longer interval is used when the run would need more. @default 2000 */
  maxSamples?: number;
  /** Tasks queued at the end count in `tasks.queuedPastGrace` only when submitted longer ago than this. @default 0 */
  placementGraceSeconds?: number;
  /** Folder that relative trace file names are read from (the CLI gives the scenario file's). @default the current directory */
  baseDir?: string;
  /** Keep the cluster's status-update audit (`SimCluster.audit`) for invariant checks. @default false */
  auditStatusUpdates?: boolean;
  /**
   * Called after every sample with how far the run is, and at the end (a progress bar; see
   * `./progress.ts`). Reading it changes nothing in the run. @default none
   */
  onProgress?: (progress: SimProgress) => void;
}

/** How far a run is, as {@link RunScenarioOptions.onProgress} reports it. */
export interface SimProgress {
  /** Virtual time run so far, ms since the scenario's start. */
  virtualMs: number;
  /** The scenario's end, ms since its start. */
  endMs: number;
  /** Engine events fired so far. */
  events: number;
}

/** Default of {@link RunScenarioOptions.maxSamples}. */
export const DEFAULT_MAX_SAMPLES = 2000;
/** Failure records kept in {@link SimResult.failures} (the aggregates count every failure). */
export const MAX_FAILURE_RECORDS = 1000;
/** Lost-task attribution: statuses up to this long after the agents are back still count for the failure. */
const FAILURE_GRACE_MS = 60_000;
/** Mesos' default minimum allocatable resources, the stranding thresholds without task sizes. */
const MIN_ALLOCATABLE = { cpus: 0.01, mem: 32 };

/** The sampling interval (seconds) a run uses, after the default and the cap. */
export function samplingIntervalSeconds(scenario: Scenario, options: Pick<RunScenarioOptions, "sampleIntervalSeconds" | "maxSamples"> = {}): number {
  const maxSamples = options.maxSamples ?? DEFAULT_MAX_SAMPLES;
  const wanted = options.sampleIntervalSeconds ?? scenario.sampleIntervalSeconds ?? Math.min(60, Math.max(1, scenario.endSeconds / 100));
  return Math.max(wanted, scenario.endSeconds / maxSamples);
}

/** Validates `input` (throws {@link ScenarioError} before anything runs), runs it and reports. */
export async function runScenario(input: unknown, options: RunScenarioOptions = {}): Promise<SimResult> {
  const scenario = validateScenario(input, options.baseDir !== undefined ? { baseDir: options.baseDir } : {});
  if (options.sampleIntervalSeconds !== undefined && !(options.sampleIntervalSeconds > 0 && Number.isFinite(options.sampleIntervalSeconds))) {
    throw new RangeError("sampleIntervalSeconds: must be a finite number > 0");
  }
  if (options.maxSamples !== undefined && !(Number.isInteger(options.maxSamples) && options.maxSamples >= 1)) {
    throw new RangeError("maxSamples: must be an integer >= 1");
  }
  if (options.placementGraceSeconds !== undefined && !(options.placementGraceSeconds >= 0 && Number.isFinite(options.placementGraceSeconds))) {
    throw new RangeError("placementGraceSeconds: must be a finite number >= 0");
  }
  let cluster: SimCluster | undefined = undefined;
  const recorder = new RunRecorder(scenario, () => cluster!);
  const userLog = options.eventLog;
  const after = options.afterEvent;
  // One stranding tracker, read by the samples and after every event.
  const stranded = new StrandedTracker(strandingThresholds(scenario));
  const use = new TimeAverages(scenario, () => cluster!, stranded);
  cluster = new SimCluster(scenario, {
    eventLog: (event) => {
      recorder.observe(event);
      userLog?.(event);
    },
    ...(options.logLevel ? { logLevel: options.logLevel } : {}),
    afterEvent: () => {
      use.observe();
      after?.(cluster!);
    },
    ...(options.baseDir !== undefined ? { baseDir: options.baseDir } : {}),
    ...(options.auditStatusUpdates ? { auditStatusUpdates: true } : {}),
  });
  const sampler = new Sampler(cluster, stranded);
  const intervalS = samplingIntervalSeconds(scenario, options);
  const intervalMs = intervalS * 1000;
  const endMs = scenario.endSeconds * 1000;
  let n = 0;
  // Each sample time is computed from its index (no drift); the sampler reads and never settles.
  const arm = (): void => {
    const atMs = (n + 1) * intervalMs;
    if (atMs > endMs + 1e-6) return;
    cluster!.engine.at(cluster!.startMs + atMs, sample, { settle: false });
  };
  const onProgress = options.onProgress;
  const sample = (): void => {
    n++;
    sampler.take();
    if (onProgress) onProgress({ virtualMs: n * intervalMs, endMs, events: cluster!.engine.eventsProcessed() });
    arm();
  };
  arm();
  const run = await cluster.run();
  // The last sample may fall short of the end: the display ends on the end.
  if (onProgress && n * intervalMs < endMs) onProgress({ virtualMs: endMs, endMs, events: cluster.engine.eventsProcessed() });
  use.finish();
  sampler.close();
  const result = buildResult(scenario, cluster, sampler, recorder, use, run, {
    intervalSeconds: intervalS,
    maxSamples: options.maxSamples ?? DEFAULT_MAX_SAMPLES,
    graceMs: (options.placementGraceSeconds ?? 0) * 1000,
  });
  await cluster.shutdown();
  return result;
}

// ---- sampling ------------------------------------------------------------------------------------

/** Reads samples off the cluster (synchronous; no effect on the run). */
class Sampler {
  readonly samples: SimSample[] = [];
  private waitsSeen = 0;
  constructor(
    private readonly cluster: SimCluster,
    private readonly stranded: StrandedTracker,
  ) {}

  /** Stops watching the cluster (after the run). */
  close(): void {
    this.stranded.close();
  }

  take(): void {
    const cluster = this.cluster;
    const base = takeSample(cluster);
    for (const fw of cluster.frameworks.values()) if (fw instanceof MarathonSimFramework) fw.sample(base.t);
    const offers = cluster.masters.offerCounters();
    const fresh = cluster.stats.waitsMs.slice(this.waitsSeen).map((ms) => ms / 1000).sort((a, b) => a - b);
    this.waitsSeen = cluster.stats.waitsMs.length;
    this.samples.push({
      ...base,
      offers,
      launched: cluster.stats.launched,
      waits: { count: fresh.length, p50: r4(pct(fresh, 50)), p90: r4(pct(fresh, 90)), p99: r4(pct(fresh, 99)) },
      stranded: this.stranded.read(cluster.master.core.allocator),
    });
  }
}

/**
 * Time-weighted figures of the run: after every engine event it reads what tasks use (allocated
 * minus offered, as a sample does), each role's dominant share and its distance from its weighted
 * fair part, and the stranded cpus and mem, and each reading counts for as long as it held. Samples are instants, and a
 * workload with a period (fixed durations, a 1 s allocation cycle) can put every sample in the
 * same phase of it; these means and maxima cannot be fooled that way.
 */
class TimeAverages {
  private lastMs = 0;
  /** The latest reading: `util:<resource>`, `share:<role>`, `dev:<role>`. */
  private values = new Map<string, number>();
  private readonly sums = new Map<string, number>();
  private readonly max = new Map<string, number>();
  private readonly roles: Array<{ role: string; part: number }>;
  /** What the latest reading was taken at: the allocator's change count and the outstanding offers. */
  private readAt: { changes: number; offers: number } | undefined;

  constructor(
    scenario: Scenario,
    private readonly cluster: () => SimCluster,
    private readonly stranded: StrandedTracker,
  ) {
    this.roles = roleParts(scenario);
  }

  /**
   * After an engine event: reads the cluster again if the event changed it, first accounting for
   * the time the previous reading held. Most events change nothing and cost two counter reads
   * (this runs after every event of the run).
   */
  observe(): void {
    const cluster = this.cluster();
    // Nothing is read again unless the allocator reported a change or an offer came or went (an
    // accepted offer turns offered into used without the allocator moving): most events do neither.
    const core = cluster.master.core;
    const changes = this.stranded.changeCount(core.allocator);
    const offers = core.sizes().offers;
    if (this.readAt && this.readAt.changes === changes && this.readAt.offers === offers) return;
    this.readAt = { changes, offers };
    this.accountUntil(cluster.elapsedMs());
    const values = new Map<string, number>();
    const totals = core.resourceTotals();
    for (const [name, total] of Object.entries(totals.total)) if (total > 0) values.set(`util:${name}`, (totals.used[name] ?? 0) / total);
    const stranded = this.stranded.read(core.allocator);
    for (const k of ["cpus", "mem"] as const) {
      values.set(`stranded:${k}`, stranded[k]);
      const total = totals.total[k] ?? 0;
      values.set(`strandedFraction:${k}`, total > 0 ? stranded[k] / total : 0);
    }
    const shares = roleShares(cluster, totals.total);
    let allocated = 0;
    for (const v of shares.values()) allocated += v;
    for (const { role, part } of this.roles) {
      const share = shares.get(role) ?? 0;
      values.set(`share:${role}`, share);
      values.set(`dev:${role}`, Math.abs(share - part * allocated));
    }
    this.values = values;
  }

  /** At the end of the run: the latest reading held until now. */
  finish(): void {
    this.accountUntil(this.cluster().elapsedMs());
  }

  /** Adds the latest reading, held since the previous account, to the sums and maxima. */
  private accountUntil(nowMs: number): void {
    const dt = nowMs - this.lastMs;
    if (dt <= 0) return;
    for (const [k, v] of this.values) {
      this.sums.set(k, (this.sums.get(k) ?? 0) + v * dt);
      this.max.set(k, Math.max(this.max.get(k) ?? 0, v));
    }
    this.lastMs = nowMs;
  }

  /** Mean over `[0, endMs]` and max of each series with the prefix, by name (after {@link finish}). */
  result(prefix: "util" | "share" | "dev" | "stranded" | "strandedFraction", endMs: number): { mean: Record<string, number>; max: Record<string, number> } {
    const mean: Record<string, number> = {};
    const max: Record<string, number> = {};
    for (const [k, sum] of this.sums) {
      if (!k.startsWith(`${prefix}:`)) continue;
      const name = k.slice(prefix.length + 1);
      mean[name] = endMs > 0 ? sum / endMs : 0;
      max[name] = this.max.get(k)!;
    }
    return { mean, max };
  }
}

/** The scenario's roles (sorted) with their weighted fair parts, weight / sum of the weights. */
function roleParts(scenario: Scenario): Array<{ role: string; weight: number; part: number }> {
  const weights = scenario.cluster.roleWeights ?? {};
  const roleNames = [...new Set(scenario.frameworks.map((f) => f.role ?? "default"))].sort();
  const weightSum = roleNames.reduce((sum, role) => sum + (weights[role] ?? 1), 0);
  return roleNames.map((role) => ({ role, weight: weights[role] ?? 1, part: (weights[role] ?? 1) / weightSum }));
}

/** Dominant share of each role whose frameworks hold something (allocated, offers included, over the cluster total). */
function roleShares(cluster: SimCluster, total: Record<string, number>): Map<string, number> {
  const core = cluster.master.core;
  const byRole = new Map<string, Record<string, number>>();
  for (const fw of cluster.frameworks.values()) {
    const id = fw.driver?.frameworkId();
    if (id === undefined) continue;
    const sum = byRole.get(fw.role) ?? {};
    for (const [name, millis] of core.allocator.frameworkScalars(id)) sum[name] = (sum[name] ?? 0) + fromMillis(millis);
    byRole.set(fw.role, sum);
  }
  const shares = new Map<string, number>();
  for (const [role, alloc] of byRole) {
    let share = 0;
    for (const [name, v] of Object.entries(alloc)) {
      const t = total[name];
      if (t && t > 0) share = Math.max(share, v / t);
    }
    shares.set(role, share);
  }
  return shares;
}

/** Reads the utilization, share and queue part of a sample off the cluster (synchronous; no effect on the run). */
export function takeSample(cluster: SimCluster): Pick<SimSample, "t" | "utilization" | "offered" | "shares" | "capacity" | "agents" | "queuedTasks"> {
  const core = cluster.master.core;
  const totals = core.resourceTotals();
  const utilization: Record<string, number> = {};
  const offered: Record<string, number> = {};
  const capacity: Record<string, number> = {};
  for (const [name, total] of Object.entries(totals.total)) {
    if (!(total > 0)) continue;
    if (name === "cpus" || name === "mem" || name === "disk") capacity[name] = total;
    utilization[name] = (totals.used[name] ?? 0) / total;
    offered[name] = (totals.offered[name] ?? 0) / total;
  }
  let queuedTasks = 0;
  for (const fw of cluster.frameworks.values()) queuedTasks += fw.queued();
  const shares = Object.fromEntries(roleShares(cluster, totals.total));
  return { t: cluster.elapsedMs() / 1000, utilization, offered, shares, capacity, agents: core.sizes().agents, queuedTasks };
}

/** The smallest cpus and mem a `tasks` workload of the scenario asks for (see {@link SimResult.stranded}). */
export function strandingThresholds(scenario: Scenario): { cpus: number; mem: number } {
  let cpus = Infinity;
  let mem = Infinity;
  for (const f of scenario.frameworks) {
    // A greedy framework takes whole offers and a decliner none: neither sets a useful size.
    if (f.kind === "greedy" || f.kind === "decliner") continue;
    const t = (f as { tasks?: { cpus?: unknown; mem?: unknown } }).tasks ?? (f as { jobs?: { cpus?: unknown; mem?: unknown } }).jobs;
    cpus = Math.min(cpus, smallestAmount(t?.cpus));
    mem = Math.min(mem, smallestAmount(t?.mem));
  }
  return { cpus: Number.isFinite(cpus) ? cpus : MIN_ALLOCATABLE.cpus, mem: Number.isFinite(mem) ? mem : MIN_ALLOCATABLE.mem };
}

/** The smallest value a number or an amount distribution (`uniform` min, `empirical` values) can take; Infinity if none. */
function smallestAmount(v: unknown): number {
  if (typeof v === "number") return v > 0 ? v : Infinity;
  if (typeof v !== "object" || v === null) return Infinity;
  const d = v as { min?: unknown; values?: unknown };
  if (typeof d.min === "number" && d.min > 0) return d.min;
  if (Array.isArray(d.values)) return Math.min(Infinity, ...d.values.filter((x): x is number => typeof x === "number" && x > 0));
  return Infinity;
}

/**
 * Free cpus on agents without the smallest task's mem free, and free mem on agents without its
 * cpus (see {@link SimResult.stranded}). Kept per agent and refreshed only for the agents the
 * allocator reports changed since the last sample: a sample of 10,000 agents used to walk them
 * all. A new allocator (master failover) starts over from every agent.
 */
class StrandedTracker {
  private allocator: HierarchicalAllocator | undefined;
  private stopWatching: (() => void) | undefined;
  private readonly dirty = new Set<string>();
  /** Stranded millis per agent that has some: [cpus, mem]. */
  private readonly byAgent = new Map<string, readonly [number, number]>();
  private cpusMillis = 0;
  private memMillis = 0;
  /** Bumped by every change the allocator reports, and by a new allocator (see {@link changeCount}). */
  private changes = 0;

  constructor(private readonly thresholds: { cpus: number; mem: number }) {}

  /**
   * A number that moves whenever anything on an agent changed (allocation, recovery, agents
   * added, removed, (de)activated) or the allocator is another one: a reader that saw the same
   * number last time knows the allocator's figures have not moved since.
   */
  changeCount(allocator: HierarchicalAllocator): number {
    if (allocator !== this.allocator) this.restart(allocator);
    return this.changes;
  }

  read(allocator: HierarchicalAllocator): { cpus: number; mem: number } {
    if (allocator !== this.allocator) this.restart(allocator);
    for (const id of this.dirty) this.refresh(allocator, id);
    this.dirty.clear();
    return { cpus: r4(fromMillis(this.cpusMillis)), mem: r4(fromMillis(this.memMillis)) };
  }

  /** Stops listening to the allocator. */
  close(): void {
    this.stopWatching?.();
    this.stopWatching = undefined;
  }

  private restart(allocator: HierarchicalAllocator): void {
    this.close();
    this.allocator = allocator;
    this.byAgent.clear();
    this.cpusMillis = 0;
    this.memMillis = 0;
    this.dirty.clear();
    this.changes++;
    for (const id of allocator.agentIds()) this.dirty.add(id);
    this.stopWatching = allocator.watchAgents((id) => {
      this.dirty.add(id);
      this.changes++;
    });
  }

  private refresh(allocator: HierarchicalAllocator, agentId: string): void {
    const before = this.byAgent.get(agentId);
    if (before) {
      this.cpusMillis -= before[0];
      this.memMillis -= before[1];
      this.byAgent.delete(agentId);
    }
    const view = allocator.agentView(agentId);
    if (!view?.active) return;
    const freeCpus = view.available.scalarMillis("cpus");
    const freeMem = view.available.scalarMillis("mem");
    const cpus = fromMillis(freeMem) < this.thresholds.mem && fromMillis(freeCpus) >= this.thresholds.cpus ? freeCpus : 0;
    const mem = fromMillis(freeCpus) < this.thresholds.cpus && fromMillis(freeMem) >= this.thresholds.mem ? freeMem : 0;
    if (cpus === 0 && mem === 0) return;
    this.byAgent.set(agentId, [cpus, mem]);
    this.cpusMillis += cpus;
    this.memMillis += mem;
  }
}

// ---- the event stream --------------------------------------------------------------------------

interface Episode {
  record: FailureRecord;
  nodes: Set<string>;
  /** Statuses until then are attributed to this failure. */
  windowEndMs: number;
  /** `fw\0baseTaskId` of lost tasks not launched again yet. */
  pending: Set<string>;
  lastRelaunchMs: number;
}

interface FrameworkCounts {
  launched: number;
  finished: number;
  failed: number;
  abandoned: number;
  stopped: boolean;
}

/** States the synthetic frameworks do not count as an ended attempt (every other one is). */
const NOT_ENDED = new Set(["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"]);
/** `tasks`/`greedy` retries are `<id>.r<attempt>`; `batch` attempts are `<job>.<index>.<attempt>`. */
const RETRY_SUFFIX = /\.r(\d+)$/;
const BATCH_ATTEMPT = /\.(\d+)$/;
/** Marathon task ids are `<app path with '_'>.<uuid>`: a replacement has a new uuid, so a lost instance counts as launched again when its app launches one. */
const MARATHON_INSTANCE = /\.[^.]+$/;

/**
 * Follows the event-log lines: per-framework outcomes (each task attempt counted once, however
 * often its status is delivered) and failure episodes (lost tasks, time until they ran again).
 */
class RunRecorder {
  readonly counts = new Map<string, FrameworkCounts>();
  /** Failures not settled yet (agents still down, lost tasks not launched again, or in the grace window). */
  private open: Episode[] = [];
  private readonly records: FailureRecord[] = [];
  private total = 0;
  private readonly recovered = { count: 0, sum: 0, max: 0 };
  private unrecovered = 0;
  /** Attempts accepted and not ended, `fw\0taskId`. */
  private readonly live = new Set<string>();
  /** Agent id (the master's) -> its latest failure. */
  private readonly byAgentId = new Map<string, Episode>();
  /** `fw\0baseTaskId` of a lost task -> the failure waiting for it to be launched again. */
  private readonly pendingOwner = new Map<string, Episode>();
  private readonly maxRetries = new Map<string, number>();
  private readonly batch = new Set<string>();
  private readonly marathon = new Set<string>();

  constructor(
    scenario: Scenario,
    private readonly cluster: () => SimCluster,
  ) {
    for (const f of scenario.frameworks) {
      this.counts.set(f.name, { launched: 0, finished: 0, failed: 0, abandoned: 0, stopped: false });
      this.maxRetries.set(f.name, (f as { tasks?: { maxRetries?: number } }).tasks?.maxRetries ?? 3);
      if (f.kind === "batch") this.batch.add(f.name);
      if (f.kind === "marathon") this.marathon.add(f.name);
    }
  }

  /** `fw\0<task id without its attempt>`: one key for every attempt of a task. */
  private taskKey(fw: string, task: string): string {
    return `${fw}\0${task.replace(this.batch.has(fw) ? BATCH_ATTEMPT : this.marathon.has(fw) ? MARATHON_INSTANCE : RETRY_SUFFIX, "")}`;
  }

  observe(e: SimLogEvent): void {
    switch (e.type) {
      case "accept":
        for (const id of (e.tasks as string[] | undefined) ?? []) this.live.add(`${String(e.fw)}\0${id}`);
        return;
      case "launch":
        return this.onLaunch(e);
      case "status":
        return this.onStatus(e);
      case "batch-task-failed":
        // A batch framework says itself whether a failed attempt is retried.
        if (e.retrying === false) this.onAbandoned(String(e.fw), String(e.task));
        return;
      case "framework-stopped": {
        const c = this.counts.get(String(e.fw));
        if (c) c.stopped = true;
        return;
      }
      case "agent-failed":
        return this.openEpisode("crash", e.t, [String(e.agent)]);
      case "agent-removed":
        return this.openEpisode("removal", e.t, [String(e.agent)]);
      case "partition":
        return this.openEpisode("partition", e.t, (e.agents as string[] | undefined) ?? []);
      case "agent-restarted":
        return this.back(e.t, [String(e.agent)]);
      case "partition-healed":
        return this.back(e.t, (e.agents as string[] | undefined) ?? []);
    }
  }

  private onLaunch(e: SimLogEvent): void {
    const fw = String(e.fw);
    const c = this.counts.get(fw);
    if (c) c.launched++;
    const key = this.taskKey(fw, String(e.task));
    const episode = this.pendingOwner.get(key);
    if (!episode) return;
    this.pendingOwner.delete(key);
    episode.pending.delete(key);
    episode.lastRelaunchMs = e.t;
  }

  private onStatus(e: SimLogEvent): void {
    const state = String(e.state);
    if (NOT_ENDED.has(state)) return;
    const fw = String(e.fw);
    const task = String(e.task);
    // A duplicate delivery of an ended attempt is not a second ending.
    if (!this.live.delete(`${fw}\0${task}`)) return;
    const c = this.counts.get(fw);
    if (state === "TASK_FINISHED") {
      if (c) c.finished++;
      return;
    }
    // The synthetic frameworks' rule: a task is retried unless its retries are exhausted or the
    // framework stopped (a batch framework reports it: `batch-task-failed`).
    const attempt = Number(RETRY_SUFFIX.exec(task)?.[1] ?? 0);
    const abandoned = !this.batch.has(fw) && !this.marathon.has(fw) && (attempt >= (this.maxRetries.get(fw) ?? 3) || (c?.stopped ?? false));
    if (c) {
      c.failed++;
      if (abandoned) c.abandoned++;
    }
    const episode = this.byAgentId.get(String(e.agent));
    if (!episode || e.t > episode.windowEndMs) return;
    episode.record.tasksLost++;
    if (abandoned) {
      episode.record.tasksNotRelaunched++;
      return;
    }
    const key = this.taskKey(fw, task);
    episode.pending.add(key);
    this.pendingOwner.set(key, episode);
  }

  private onAbandoned(fw: string, task: string): void {
    const c = this.counts.get(fw);
    if (c) c.abandoned++;
    const key = this.taskKey(fw, task);
    const episode = this.pendingOwner.get(key);
    if (!episode) return;
    this.pendingOwner.delete(key);
    episode.pending.delete(key);
    episode.record.tasksNotRelaunched++;
  }

  private openEpisode(kind: FailureRecord["kind"], tMs: number, nodes: string[]): void {
    this.settle(tMs);
    const episode: Episode = {
      record: { kind, atSeconds: r4(tMs / 1000), agents: nodes, backAtSeconds: null, downSeconds: null, tasksLost: 0, tasksNotRelaunched: 0, recoverySeconds: null },
      nodes: new Set(nodes),
      windowEndMs: Infinity,
      pending: new Set(),
      lastRelaunchMs: tMs,
    };
    this.total++;
    this.open.push(episode);
    const cluster = this.cluster();
    for (const node of nodes) {
      const id = cluster.agents.find((a) => a.node === node)?.idStore.id;
      if (id !== undefined) this.byAgentId.set(id, episode);
    }
  }

  private back(tMs: number, nodes: string[]): void {
    for (let i = this.open.length - 1; i >= 0; i--) {
      const episode = this.open[i]!;
      if (episode.record.backAtSeconds !== null || !nodes.some((n) => episode.nodes.has(n))) continue;
      episode.record.backAtSeconds = r4(tMs / 1000);
      episode.record.downSeconds = r4((tMs - episode.record.atSeconds * 1000) / 1000);
      episode.windowEndMs = tMs + FAILURE_GRACE_MS;
      return;
    }
  }

  /**
   * Settles the failures that can no longer change (past their window, nothing pending) — or all
   * of them at the end (`nowMs` Infinity) — into the records (bounded) and the aggregates.
   */
  private settle(nowMs: number): void {
    const keep: Episode[] = [];
    for (const episode of this.open) {
      const done = nowMs === Infinity || (episode.windowEndMs < nowMs && episode.pending.size === 0);
      if (!done) {
        keep.push(episode);
        continue;
      }
      const r = episode.record;
      r.tasksNotRelaunched += episode.pending.size;
      r.recoverySeconds = r.tasksNotRelaunched > 0 ? null : r.tasksLost === 0 ? 0 : r4(episode.lastRelaunchMs / 1000 - r.atSeconds);
      for (const key of episode.pending) this.pendingOwner.delete(key);
      if (r.recoverySeconds === null) this.unrecovered++;
      else {
        this.recovered.count++;
        this.recovered.sum += r.recoverySeconds;
        this.recovered.max = Math.max(this.recovered.max, r.recoverySeconds);
      }
      if (this.records.length < MAX_FAILURE_RECORDS) this.records.push(r);
    }
    this.open = keep;
  }

  /** Settles every failure and returns the kept records (in time order) and the aggregates. */
  finish(): { failures: FailureRecord[]; recovery: SimResult["recovery"] } {
    this.settle(Infinity);
    const { count: n, sum, max } = this.recovered;
    return {
      failures: [...this.records].sort((a, b) => a.atSeconds - b.atSeconds),
      recovery: {
        failures: this.total,
        meanRecoverySeconds: n ? r4(sum / n) : null,
        maxRecoverySeconds: n ? r4(max) : null,
        unrecovered: this.unrecovered,
      },
    };
  }
}

// ---- the result --------------------------------------------------------------------------------

/**
 * The nearest rank of the `percent`-th percentile (0..100] of `n` values, 1..n: ceil(percent / 100 × n).
 * Computed as percent × n / 100 so that whole percents of whole counts are exact (0.14 × 50 is
 * 7.000000000000001 in floating point, which would round up to rank 8).
 */
export function nearestRank(percent: number, n: number): number {
  return Math.min(n, Math.max(1, Math.ceil((percent * n) / 100)));
}

/** Nearest-rank percentile (`percent` in 0..100) of sorted values. */
function pct(sorted: number[], percent: number): number {
  if (sorted.length === 0) return 0;
  return sorted[nearestRank(percent, sorted.length) - 1]!;
}

/** Nearest-rank percentile over `sorted` plus `missing` values above all of them (null when it falls on one). */
function pctWithMissing(sorted: number[], missing: number, percent: number): number | null {
  const n = sorted.length + missing;
  if (n === 0) return 0;
  const rank = nearestRank(percent, n);
  return rank > sorted.length ? null : r4(sorted[rank - 1]!);
}

function r4(n: number): number {
  return Math.round(n * 10_000) / 10_000;
}

function buildResult(
  scenario: Scenario,
  cluster: SimCluster,
  sampler: Sampler,
  recorder: RunRecorder,
  use: TimeAverages,
  run: { events: number; wallMs: number; eventsPerSecond: number },
  sampling: { intervalSeconds: number; maxSamples: number; graceMs: number },
): SimResult {
  const samples = sampler.samples;
  const stats = cluster.stats;
  const waits = stats.waitsMs.map((ms) => ms / 1000).sort((a, b) => a - b);
  const { mean: meanUtil, max: maxUtil } = use.result("util", scenario.endSeconds * 1000);
  const neverRan = Math.max(0, stats.submitted - waits.length);
  const seconds = Math.max(1, Math.ceil(scenario.endSeconds));
  let maxLaunches = 0;
  for (const v of stats.launchesPerSecond) if (v !== undefined && v > maxLaunches) maxLaunches = v;
  let queuedAtEnd = 0;
  let queuedPastGrace = 0;
  const graceStartMs = cluster.engine.now() - sampling.graceMs;
  for (const fw of cluster.frameworks.values()) {
    queuedAtEnd += fw.queued();
    const aged = (fw as { queuedSubmittedBefore?: (ms: number) => number }).queuedSubmittedBefore;
    queuedPastGrace += aged ? aged.call(fw, graceStartMs) : fw.queued();
  }
  const frameworks = frameworkOutcomes(scenario, cluster, recorder);
  const jobs = { total: 0, completed: 0, failed: 0, timedOut: 0, cancelled: 0, refused: 0 };
  for (const f of Object.values(frameworks)) {
    if (f.jobs) {
      jobs.refused += f.jobs.refused;
      jobs.total += f.jobs.submitted;
      jobs.completed += f.jobs.completed;
      jobs.failed += f.jobs.failed;
      jobs.timedOut += f.jobs.timedOut;
      jobs.cancelled += f.jobs.cancelled;
    }
    if (f.job === null) continue;
    jobs.total++;
    if (f.job === "completed") jobs.completed++;
    else if (f.job === "failed") jobs.failed++;
    else jobs.timedOut++;
  }
  const { failures, recovery } = recorder.finish();
  const marathonApps: MarathonAppReport[] = [];
  const unplacedApps: UnplacedMarathonApp[] = [];
  for (const fw of cluster.frameworks.values()) {
    if (!(fw instanceof MarathonSimFramework)) continue;
    const apps = fw.report();
    marathonApps.push(...apps);
    unplacedApps.push(...fw.unplaced(apps));
  }
  return {
    scenario: scenario.name ?? "scenario",
    seed: scenario.seed,
    endSeconds: scenario.endSeconds,
    sampling: { intervalSeconds: r4(sampling.intervalSeconds), maxSamples: sampling.maxSamples, count: samples.length },
    tasks: {
      submitted: stats.submitted,
      launched: stats.launched,
      completed: stats.completed,
      failed: stats.failed,
      retried: stats.retried,
      abandoned: stats.abandoned,
      queuedAtEnd,
      queuedPastGrace,
    },
    jobs,
    waitSeconds: {
      count: waits.length,
      p50: r4(pct(waits, 50)),
      p90: r4(pct(waits, 90)),
      p99: r4(pct(waits, 99)),
      max: r4(waits.length ? waits[waits.length - 1]! : 0),
      mean: r4(waits.length ? waits.reduce((a, b) => a + b, 0) / waits.length : 0),
      cdf: waits.length === 0 ? [] : Array.from({ length: 101 }, (_, i): [number, number] => [r4(i === 0 ? waits[0]! : pct(waits, i)), i / 100]),
      neverRan,
      withNeverRun: { p50: pctWithMissing(waits, neverRan, 50), p90: pctWithMissing(waits, neverRan, 90), p99: pctWithMissing(waits, neverRan, 99) },
    },
    offers: cluster.masters.offerCounters(),
    masters: mastersSummary(cluster),
    launchesPerSecond: { mean: r4(stats.launched / seconds), max: maxLaunches },
    utilization: {
      mean: roundAll(meanUtil),
      max: roundAll(maxUtil),
      samples: samples.map((s) => ({ ...s, utilization: roundAll(s.utilization), offered: roundAll(s.offered), shares: roundAll(s.shares) })),
    },
    roles: roleFairness(scenario, use),
    frameworks,
    unschedulable: unschedulable(scenario, frameworks, unplacedApps),
    stranded: strandedSummary(scenario, use),
    failures,
    recovery,
    agents: { failures: stats.agentFailures, restarts: stats.agentRestarts, atEnd: cluster.master.core.sizes().agents },
    network: { ...cluster.network.stats },
    engine: { events: run.events, wallMs: Math.round(run.wallMs), eventsPerSecond: Math.round(run.eventsPerSecond) },
    marathon: { apps: marathonApps, unplaced: unplacedApps },
  };
}

function mastersSummary(cluster: SimCluster): SimResult["masters"] {
  const failovers = cluster.masters.failovers.map((f) => ({ ...f }));
  const recovered = failovers.flatMap((f) => (f.recoverySeconds === null ? [] : [f.recoverySeconds]));
  return {
    count: cluster.masters.nodes().length,
    failovers,
    meanRecoverySeconds: recovered.length ? r4(recovered.reduce((a, b) => a + b, 0) / recovered.length) : null,
    maxRecoverySeconds: recovered.length ? r4(Math.max(...recovered)) : null,
    unrecovered: failovers.length - recovered.length,
  };
}

function roleFairness(scenario: Scenario, use: TimeAverages): Record<string, RoleFairness> {
  const endMs = scenario.endSeconds * 1000;
  const share = use.result("share", endMs);
  const dev = use.result("dev", endMs);
  const roles: Record<string, RoleFairness> = {};
  for (const { role, weight, part } of roleParts(scenario)) {
    roles[role] = {
      weight,
      fairPart: r4(part),
      meanDominantShare: r4(share.mean[role] ?? 0),
      maxDominantShare: r4(share.max[role] ?? 0),
      meanAbsDeviationFromFair: r4(dev.mean[role] ?? 0),
      maxAbsDeviationFromFair: r4(dev.max[role] ?? 0),
    };
  }
  return roles;
}

function frameworkOutcomes(scenario: Scenario, cluster: SimCluster, recorder: RunRecorder): Record<string, FrameworkOutcome> {
  const out: Record<string, FrameworkOutcome> = {};
  for (const f of scenario.frameworks) {
    const c = recorder.counts.get(f.name)!;
    const count = (f as { tasks?: { count?: number } }).tasks?.count ?? 0;
    const queuedAtEnd = cluster.frameworks.get(f.name)?.queued() ?? 0;
    const oneJob = f.kind === "tasks" || f.kind === "greedy";
    const job = !oneJob ? null : c.finished >= count ? "completed" : c.abandoned > 0 ? "failed" : "timed-out";
    // A batch framework keeps its own job outcomes.
    const jobStats = (cluster.frameworks.get(f.name) as { jobStats?: FrameworkOutcome["jobs"] } | undefined)?.jobStats;
    out[f.name] = {
      kind: f.kind,
      role: f.role ?? "default",
      count,
      launched: c.launched,
      finished: c.finished,
      failed: c.failed,
      abandoned: c.abandoned,
      queuedAtEnd,
      stopped: c.stopped,
      job,
      ...(jobStats ? { jobs: { ...jobStats } } : {}),
    };
  }
  return out;
}

function unschedulable(scenario: Scenario, frameworks: Record<string, FrameworkOutcome>, unplacedApps: UnplacedMarathonApp[]): UnschedulableEntry[] {
  const classes = Object.values(scenario.cluster.agentClasses).map((a) => Resources.parse(a.resources));
  const maxCpus = Math.max(0, ...classes.map((r) => r.scalar("cpus")));
  const maxMem = Math.max(0, ...classes.map((r) => r.scalar("mem")));
  const out: UnschedulableEntry[] = [];
  for (const f of scenario.frameworks) {
    const o = frameworks[f.name]!;
    if (f.kind === "marathon") {
      // Marathon never gives up on an instance: what is short is in its launch queue, with its reasons.
      const apps = unplacedApps.filter((a) => a.framework === f.name);
      if (apps.length === 0) continue;
      const reasons = apps.map((a) => `${a.appId}: ${a.running} of ${a.instances} instances running; ${a.reasons.join("; ")}`);
      out.push({ framework: f.name, role: o.role, queuedAtEnd: o.queuedAtEnd, abandoned: 0, reasons });
      continue;
    }
    if (o.queuedAtEnd === 0 && o.abandoned === 0) continue;
    const reasons: string[] = [];
    const t = (f as { tasks?: { cpus?: number; mem?: number; maxRetries?: number } }).tasks;
    if (f.kind === "tasks" && t?.cpus !== undefined && t.mem !== undefined) {
      if (classes.length > 0 && (t.cpus > maxCpus || t.mem > maxMem)) reasons.push(`no agent class is large enough: a task needs cpus ${t.cpus}, mem ${t.mem}; the largest agents have cpus ${maxCpus}, mem ${maxMem}`);
      const limits = scenario.cluster.quota?.[o.role]?.limits;
      for (const [name, need] of [["cpus", t.cpus], ["mem", t.mem]] as const) {
        const limit = limits?.[name];
        if (limit !== undefined && need > limit) reasons.push(`role ${o.role}'s quota limit ${name} ${limit} is below one task (${need})`);
      }
    }
    if (o.queuedAtEnd > 0) {
      const when = o.stopped ? "when the framework stopped" : "at the end of the run";
      reasons.push(`${o.queuedAtEnd} tasks still queued ${when} (not enough free capacity in time)`);
    }
    if (o.abandoned > 0) reasons.push(`${o.abandoned} tasks given up on after their retries${f.kind === "batch" ? "" : ` (${(t?.maxRetries ?? 3) + 1} attempts)`} or killed when the framework stopped`);
    out.push({ framework: f.name, role: o.role, queuedAtEnd: o.queuedAtEnd, abandoned: o.abandoned, reasons });
  }
  return out;
}

function strandedSummary(scenario: Scenario, use: TimeAverages): SimResult["stranded"] {
  const endMs = scenario.endSeconds * 1000;
  const abs = use.result("stranded", endMs);
  const fraction = use.result("strandedFraction", endMs);
  const pick = (m: Record<string, number>) => ({ cpus: r4(m.cpus ?? 0), mem: r4(m.mem ?? 0) });
  return { thresholds: strandingThresholds(scenario), mean: pick(abs.mean), max: pick(abs.max), meanFraction: pick(fraction.mean) };
}

function roundAll(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) out[k] = r4(v);
  return out;
}

/** One Marathon action for the summary: `scale@120s 6.3 s`, `update@60s superseded`. */
function actionText(a: MarathonAppReport["actions"][number]): string {
  const what = `${a.type}@${a.atSeconds}s`;
  return a.outcome === "reached" ? `${what} ${a.reachedAfterSeconds} s` : `${what} ${a.outcome}`;
}

/**
 * What the wait percentiles are over: `(N tasks)`, or, when some submitted tasks never ran, how
 * many, with the percentiles over every submitted task (a task that never ran waits forever).
 */
export function waitCountText(r: SimResult): string {
  const w = r.waitSeconds;
  if (w.neverRan === 0) return `(${w.count} tasks)`;
  const p = (v: number | null): string => (v === null ? "never" : `${v} s`);
  return `(${w.count} tasks ran; ${w.neverRan} never did: over all ${w.count + w.neverRan} submitted p50 ${p(w.withNeverRun.p50)}, p90 ${p(w.withNeverRun.p90)}, p99 ${p(w.withNeverRun.p99)})`;
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
    `  jobs       ${r.jobs.total}: ${r.jobs.completed} completed, ${r.jobs.failed} failed, ${r.jobs.timedOut} timed out${r.jobs.refused > 0 ? `; ${r.jobs.refused} refused by the framework` : ""}`,
    `  wait       p50 ${r.waitSeconds.p50} s, p90 ${r.waitSeconds.p90} s, p99 ${r.waitSeconds.p99} s, max ${r.waitSeconds.max} s ${waitCountText(r)}`,
    `  offers     made ${r.offers.made}, declined ${r.offers.declined}, rescinded ${r.offers.rescinded}`,
    `  launches   ${r.launchesPerSecond.mean}/s mean, ${r.launchesPerSecond.max}/s peak`,
    `  use        ${util || "-"} (mean over the run; ${r.utilization.samples.length} samples, every ${r.sampling.intervalSeconds} s)`,
    `  stranded   cpus ${r.stranded.mean.cpus} mean / ${r.stranded.max.cpus} max, mem ${r.stranded.mean.mem} mean / ${r.stranded.max.mem} max (thresholds cpus ${r.stranded.thresholds.cpus}, mem ${r.stranded.thresholds.mem})`,
    ...Object.entries(r.roles).map(
      ([role, f]) => `  role ${role.padEnd(12)} weight ${f.weight}, mean dominant share ${f.meanDominantShare}, mean |deviation from fair| ${f.meanAbsDeviationFromFair}`,
    ),
    ...r.marathon.apps.map((a) => `  app        ${a.framework}${a.appId}: ${a.deleted ? "deleted" : `${a.running}/${a.instances} running`}; ${a.actions.map(actionText).join(", ")}`),
    ...r.unschedulable.map((u) => `  unplaced   ${u.framework}: ${u.reasons.join("; ")}`),
    `  agents     ${r.agents.atEnd} at end, ${r.agents.failures} failures, ${r.agents.restarts} restarts` +
      (r.recovery.failures > 0 ? `; recovery mean ${r.recovery.meanRecoverySeconds ?? "-"} s, max ${r.recovery.maxRecoverySeconds ?? "-"} s, ${r.recovery.unrecovered} unrecovered` : ""),
    ...(r.masters.failovers.length > 0
      ? [
          `  masters    ${r.masters.count}, ${r.masters.failovers.length} failovers: ` +
            r.masters.failovers.map((f) => `at ${f.atSeconds} s new leader after ${f.electionSeconds ?? "-"} s, first offer after ${f.recoverySeconds ?? "-"} s`).join("; ") +
            `; recovery mean ${r.masters.meanRecoverySeconds ?? "-"} s, max ${r.masters.maxRecoverySeconds ?? "-"} s, ${r.masters.unrecovered} unrecovered`,
        ]
      : []),
    `  network    ${r.network.published} published, ${r.network.delivered} delivered, ${r.network.lost} lost, ${r.network.cut} cut`,
    `  engine     ${r.engine.events} events in ${r.engine.wallMs} ms (${r.engine.eventsPerSecond} events/s)`,
  ];
  return lines.join("\n");
}
