/**
 * Capacity planning (`corral sim plan scenario.json --targets targets.json`): the smallest number
 * of agents per class for which a scenario meets every target — a wait percentile, every task
 * placed, a cpu-utilization ceiling, and surviving the loss of k agents or of one rack.
 *
 * The search ({@link searchPlan}) is pure: it only calls the "run one point" function it is
 * given, so it is tested with a cheap fake evaluator; {@link scenarioEvaluator} is the real one
 * (one simulator run per call). Each point (counts per class) is run over several seeds and, for a
 * survival target, again with the failure injected; each metric is reduced to its p-th
 * percentile over the seeds (90th by default) before it is compared with its target.
 *
 * Method: with one searched class, exponential search up from the scenario's count (doubling)
 * until a passing count is found, then bisection between the last failing and the first passing
 * count. With several classes, the same doubling on all of them together finds a passing start,
 * then a coordinate search bisects each class down in turn (others fixed) and repeats the rounds
 * until nothing shrinks (at most `maxRounds`): the result is Pareto-minimal — no class can lose one
 * agent — though not necessarily the global minimum. Both assume that more agents never hurt
 * (monotone targets); the seeds and the percentile are what make that hold in practice. The search
 * leans on it to skip points: a bisection starts above the largest count that failed with at
 * least as many agents of every other class, so a round after the first, which under that
 * assumption cannot shrink anything, runs no point.
 *
 * @module
 */

import { DEFAULT_AGENT_PING_INTERVAL_MS, DEFAULT_MAX_MISSED_PINGS } from "../master/core.ts";
import { Resources } from "../sdk/resources.ts";
import { MAX_SIM_JOBS, SimPool } from "./parallel.ts";
import { nearestRank, runScenario, type SimResult } from "./report.ts";
import { MAX_SEED, validateScenario, type Scenario, type ScenarioEvent } from "./scenario.ts";

// ---- the plan specification (the targets file) ---------------------------------------------------

/** What the cluster must achieve. Every target given must hold; at least one is required. */
export interface PlanTargets {
  /**
   * p50 / p90 / p99 of the wait from submission to RUNNING over every submitted task, at most this
   * many seconds (a task that never ran counts as an endless wait). Only tasks of `tasks`, `greedy`
   * and `batch` frameworks have a wait (a Marathon instance has no submission time), so a scenario
   * without one is refused. @default none
   */
  maxWaitP50Seconds?: number;
  /** @default none */
  maxWaitP90Seconds?: number;
  /** @default none */
  maxWaitP99Seconds?: number;
  /**
   * No work left unplaced at the end: no task given up on, and no task still queued that was
   * submitted more than `placementGraceSeconds` before the end. @default false
   */
  allPlaced?: boolean;
  /**
   * Every app of the scenario's `marathon` frameworks has all its instances running at the end
   * (Marathon never gives up on an instance: what is short waits in its launch queue). @default false
   */
  allMarathonAppsPlaced?: boolean;
  /**
   * With `allPlaced`: tasks submitted this close to the end may still be queued (with arrivals
   * up to the end, a task arriving in the last second is not a capacity problem). With
   * `allMarathonAppsPlaced`: apps changed by an action this close to the end are not judged.
   * @default 0
   */
  placementGraceSeconds?: number;
  /** Mean cpu utilization over the run (tasks' use of the cluster's cpus) at most this, 0..100. @default none */
  maxCpuUtilizationPercent?: number;
  /**
   * Still meet the wait and placement targets when agents are lost for good at `atSeconds`
   * (each loss is its own run; the utilization ceiling applies to the run without failures).
   * @default none
   */
  survive?: SurviveTarget;
}

/** Failures a plan must survive. */
export interface SurviveTarget {
  /** Lose any `agents` agents: the largest ones (most cpus, then mem) are taken, the worst case. @default none */
  agents?: number;
  /**
   * Lose one rack: the rack (agent attribute `rack:<name>`, set per class) whose agents hold the
   * most cpus — or, with `racks`, the agents are taken to be spread evenly over that many racks
   * and one rack holds ceil(count / racks) agents of every class. @default false
   */
  rack?: boolean;
  /** Racks the agents are spread over (only with `rack: true`; overrides the classes' rack attributes). @default none */
  racks?: number;
  /**
   * When the agents are lost, seconds from the start; before the end by more than the master's
   * ping timeout (`agentPingIntervalMs` x `maxMissedPings`), or the loss would go unnoticed.
   * @default endSeconds / 3 (rounded down)
   */
  atSeconds?: number;
}

/** Bounds of one searched class. */
export interface PlanClassBounds {
  /** @default 1 when one class is searched, 0 when several are */
  min?: number;
  /** @default none: found by doubling from the scenario's count, up to `maxAgentsPerClass` */
  max?: number;
}

/** The whole targets file. */
export interface PlanSpec {
  targets: PlanTargets;
  search?: {
    /** The classes whose counts are searched (the others keep the scenario's). @default every class of the scenario */
    classes?: Record<string, PlanClassBounds>;
    /** Upper bound of the doubling search per class. @default 1000 */
    maxAgentsPerClass?: number;
    /** Rounds of the coordinate search (several classes). @default 3 */
    maxRounds?: number;
    /** Points (counts) evaluated at most; the search stops there with the best passing point so far. @default 100 */
    maxPoints?: number;
  };
  /** Seeds per point: the scenario's seed, seed + 1, ... @default 5 */
  seeds?: number;
  /** The percentile over seeds each metric is judged by, 1..100. @default 90 */
  percentile?: number;
}

/** Raised by {@link validatePlanSpec}; `problems` lists every `field: rule`. */
export class PlanSpecError extends Error {
  readonly code = "CORRAL_ERR_INVALID_PLAN";
  constructor(readonly problems: string[]) {
    super(`invalid targets:\n  ${problems.join("\n  ")}`);
    this.name = "PlanSpecError";
  }
}

const TARGET_KEYS = ["maxWaitP50Seconds", "maxWaitP90Seconds", "maxWaitP99Seconds", "allPlaced", "allMarathonAppsPlaced", "maxCpuUtilizationPercent", "survive"];
const TARGET_FIELDS = [...TARGET_KEYS, "placementGraceSeconds"];
const WAIT_TARGETS = ["maxWaitP50Seconds", "maxWaitP90Seconds", "maxWaitP99Seconds"];
/** Framework kinds whose tasks have a submission time, hence a wait. */
const WAITING_KINDS: readonly string[] = ["tasks", "greedy", "batch"];

/**
 * Checks a targets file against its (already validated) scenario and returns it typed.
 * @throws {PlanSpecError} listing every problem, before anything runs
 */
export function validatePlanSpec(input: unknown, scenario: Scenario): PlanSpec {
  const problems: string[] = [];
  const fail = (field: string, rule: string): void => void problems.push(`${field}: ${rule}`);
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  const unknown = (o: Record<string, unknown>, allowed: string[], field: string): void => {
    for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(`${field}.${k}`, `is not a known field (known: ${allowed.join(", ")})`);
  };
  const num = (o: Record<string, unknown>, key: string, field: string, rule: { gt?: number; min?: number; max?: number; int?: boolean }): void => {
    const v = o[key];
    if (v === undefined) return;
    const f = `${field}.${key}`;
    if (typeof v !== "number" || !Number.isFinite(v)) return fail(f, "must be a finite number");
    if (rule.int && !Number.isInteger(v)) return fail(f, "must be an integer");
    if (rule.gt !== undefined && !(v > rule.gt)) return fail(f, `must be > ${rule.gt}`);
    if (rule.min !== undefined && v < rule.min) return fail(f, `must be >= ${rule.min}`);
    if (rule.max !== undefined && v > rule.max) return fail(f, `must be <= ${rule.max}`);
  };

  if (!isObj(input)) throw new PlanSpecError(["plan: must be an object"]);
  unknown(input, ["targets", "search", "seeds", "percentile"], "plan");
  num(input, "seeds", "plan", { int: true, min: 1, max: 100 });
  num(input, "percentile", "plan", { gt: 0, max: 100 });

  const t = input.targets;
  if (t === undefined) fail("plan.targets", "is required");
  else if (!isObj(t)) fail("plan.targets", "must be an object");
  else {
    unknown(t, TARGET_FIELDS, "plan.targets");
    if (!TARGET_KEYS.some((k) => t[k] !== undefined && t[k] !== false)) fail("plan.targets", `must set at least one of ${TARGET_KEYS.join(", ")}`);
    for (const k of WAIT_TARGETS) num(t, k, "plan.targets", { min: 0 });
    // The waits are over the tasks of these kinds only (a Marathon instance has no submission
    // time, a decliner submits nothing): without one, every wait is 0 s at any size.
    if (!scenario.frameworks.some((f) => WAITING_KINDS.includes(f.kind))) {
      for (const k of WAIT_TARGETS) {
        if (t[k] !== undefined) {
          fail(`plan.targets.${k}`, `the scenario has no framework whose tasks have a wait (kind tasks, greedy or batch); Marathon instances have no submission time: judge them with allMarathonAppsPlaced or allPlaced`);
        }
      }
    }
    num(t, "maxCpuUtilizationPercent", "plan.targets", { gt: 0, max: 100 });
    if (t.allPlaced !== undefined && typeof t.allPlaced !== "boolean") fail("plan.targets.allPlaced", "must be true or false");
    num(t, "placementGraceSeconds", "plan.targets", { min: 0 });
    if (t.allMarathonAppsPlaced !== undefined && typeof t.allMarathonAppsPlaced !== "boolean") fail("plan.targets.allMarathonAppsPlaced", "must be true or false");
    if (t.allMarathonAppsPlaced === true && !scenario.frameworks.some((f) => f.kind === "marathon")) fail("plan.targets.allMarathonAppsPlaced", 'the scenario has no framework of kind "marathon"');
    if (t.placementGraceSeconds !== undefined && t.allPlaced !== true && t.allMarathonAppsPlaced !== true) fail("plan.targets.placementGraceSeconds", "is only used with allPlaced: true or allMarathonAppsPlaced: true");
    if (t.survive !== undefined) checkSurvive(t.survive, scenario, t, fail, num, unknown, isObj);
  }

  const s = input.search;
  if (s !== undefined) {
    if (!isObj(s)) fail("plan.search", "must be an object");
    else {
      unknown(s, ["classes", "maxAgentsPerClass", "maxRounds", "maxPoints"], "plan.search");
      num(s, "maxAgentsPerClass", "plan.search", { int: true, min: 1, max: 100_000 });
      num(s, "maxRounds", "plan.search", { int: true, min: 1, max: 20 });
      num(s, "maxPoints", "plan.search", { int: true, min: 1, max: 10_000 });
      if (s.classes !== undefined) {
        if (!isObj(s.classes) || Object.keys(s.classes).length === 0) fail("plan.search.classes", "must be an object naming at least one agent class");
        else {
          const cap = typeof s.maxAgentsPerClass === "number" ? s.maxAgentsPerClass : DEFAULT_MAX_AGENTS_PER_CLASS;
          for (const [name, bounds] of Object.entries(s.classes)) {
            const f = `plan.search.classes.${name}`;
            if (!(name in scenario.cluster.agentClasses)) fail(f, `must name an agent class of scenario.cluster.agentClasses (${Object.keys(scenario.cluster.agentClasses).join(", ")})`);
            if (!isObj(bounds)) {
              fail(f, 'must be an object such as { "min": 1, "max": 64 }');
              continue;
            }
            unknown(bounds, ["min", "max"], f);
            num(bounds, "min", f, { int: true, min: 0, max: cap });
            num(bounds, "max", f, { int: true, min: 1, max: cap });
            if (typeof bounds.min === "number" && typeof bounds.max === "number" && bounds.max < bounds.min) fail(`${f}.max`, "must be >= min");
          }
        }
      }
    }
  }
  if (problems.length > 0) throw new PlanSpecError(problems);
  return input as unknown as PlanSpec;
}

function checkSurvive(
  value: unknown,
  scenario: Scenario,
  targets: Record<string, unknown>,
  fail: (field: string, rule: string) => void,
  num: (o: Record<string, unknown>, key: string, field: string, rule: { gt?: number; min?: number; max?: number; int?: boolean }) => void,
  unknown: (o: Record<string, unknown>, allowed: string[], field: string) => void,
  isObj: (v: unknown) => v is Record<string, unknown>,
): void {
  const f = "plan.targets.survive";
  if (!isObj(value)) return fail(f, 'must be an object such as { "agents": 1 } or { "rack": true }');
  unknown(value, ["agents", "rack", "racks", "atSeconds"], f);
  num(value, "agents", f, { int: true, min: 1 });
  num(value, "racks", f, { int: true, min: 2 });
  num(value, "atSeconds", f, { min: 0 });
  if (typeof value.atSeconds === "number" && value.atSeconds >= scenario.endSeconds) fail(`${f}.atSeconds`, `must be < scenario.endSeconds (${scenario.endSeconds})`);
  if (value.rack !== undefined && typeof value.rack !== "boolean") fail(`${f}.rack`, "must be true or false");
  if (value.racks !== undefined && value.rack !== true) fail(`${f}.racks`, "is only used with rack: true");
  if (value.agents === undefined && value.rack !== true) fail(f, "must set agents or rack: true");
  if (value.rack === true && value.racks === undefined && rackOfClasses(scenario).size === 0) {
    fail(`${f}.rack`, "no agent class has a rack attribute (rack:<name>); set the classes' attributes or give racks: N");
  }
  // A crashed agent is silent: the master gives up on it (and its tasks are lost, to be run
  // again) only after the ping timeout. A loss it cannot notice before the end changes nothing.
  const at = typeof value.atSeconds === "number" ? value.atSeconds : Math.floor(scenario.endSeconds / 3);
  const timeoutS = ((scenario.cluster.agentPingIntervalMs ?? DEFAULT_AGENT_PING_INTERVAL_MS) * (scenario.cluster.maxMissedPings ?? DEFAULT_MAX_MISSED_PINGS)) / 1000;
  if (Number.isFinite(at) && at < scenario.endSeconds && at + timeoutS >= scenario.endSeconds) {
    const when = typeof value.atSeconds === "number" ? `${at} s` : `${at} s (the default, endSeconds / 3)`;
    fail(
      `${f}.atSeconds`,
      `the master notices a lost agent only after ${timeoutS} s without pings (cluster.agentPingIntervalMs x maxMissedPings): a loss at ${when} is noticed at ${at + timeoutS} s, not before the end (${scenario.endSeconds} s); ` +
        (scenario.endSeconds > timeoutS ? `must be < ${scenario.endSeconds - timeoutS}` : "lengthen the scenario or shorten the pings"),
    );
  }
  const service = ["maxWaitP50Seconds", "maxWaitP90Seconds", "maxWaitP99Seconds", "allPlaced", "allMarathonAppsPlaced"];
  if (!service.some((k) => targets[k] !== undefined && targets[k] !== false)) fail(f, `needs a wait or placement target to check after the loss (${service.join(", ")})`);
}

// ---- the search (pure) ---------------------------------------------------------------------------

/** Default of `search.maxAgentsPerClass`. */
export const DEFAULT_MAX_AGENTS_PER_CLASS = 1000;

/** One run's figures, as the targets read them. */
export interface RunMetrics {
  /** Over every submitted task (never ran = Infinity). */
  waitP50Seconds: number;
  waitP90Seconds: number;
  waitP99Seconds: number;
  /** Tasks given up on plus tasks queued at the end (submitted before the placement grace). */
  unplacedTasks: number;
  /** Instances the Marathon apps were short of at the end (apps changed within the placement grace not counted). */
  unplacedMarathonInstances: number;
  /** Mean cpu utilization, 0..100. */
  cpuUtilizationPercent: number;
}

/** Which world a run simulates: the scenario as is, or with agents lost. */
export type PlanVariant = { id: "base" } | { id: "lose-agents"; agents: number; atSeconds: number } | { id: "lose-rack"; atSeconds: number };

/** What the evaluator is asked to run. */
export interface PlanPoint {
  counts: Record<string, number>;
  seed: number;
  variant: PlanVariant;
}

/** Runs one point (one seed, one variant) and returns its figures. */
export type Evaluate = (point: PlanPoint) => Promise<RunMetrics>;

/** A searched class as the search sees it. */
export interface SearchClass {
  name: string;
  min: number;
  /** Known passing upper bound, or undefined to find one by doubling from `start`. */
  max?: number;
  /** Where the doubling starts (the scenario's count, at least 1). */
  start: number;
  /** Per agent, for the totals in the report. @default 0 */
  cpus?: number;
  /** @default 0 */
  mem?: number;
}

/** One target checked at one point. */
export interface TargetCheck {
  variant: string;
  target: string;
  limit: number;
  /** The metric's percentile over seeds (Infinity: some task never ran). */
  observed: number;
  /** `limit - observed`: how far inside the target (negative: missed by that much). */
  margin: number;
  pass: boolean;
}

/** One evaluated point. */
export interface EvaluatedPoint {
  counts: Record<string, number>;
  pass: boolean;
  checks: TargetCheck[];
}

/** Options of {@link searchPlan}. */
export interface SearchOptions {
  classes: SearchClass[];
  /** Counts of the classes not searched (they are passed through to the evaluator). @default {} */
  fixed?: Record<string, number>;
  /** Per-agent cpus and mem of every class, for the recommendation's totals. @default the searched classes' `cpus`/`mem` */
  sizes?: Record<string, { cpus: number; mem: number }>;
  targets: PlanTargets;
  /** The seeds each point runs with. */
  seeds: number[];
  /** @default 90 */
  percentile?: number;
  /** When the survival failures happen (the evaluator turns them into events). @default 0 */
  failAtSeconds?: number;
  evaluate: Evaluate;
  /** @default 1000 */
  maxAgentsPerClass?: number;
  /** @default 3 */
  maxRounds?: number;
  /** @default 100 */
  maxPoints?: number;
  /** Called after each point (progress). @default none */
  onPoint?: (point: EvaluatedPoint, index: number) => void;
}

/** The outcome of a search. */
export interface PlanOutcome {
  method: "bisection" | "coordinate-bisection";
  seeds: number[];
  percentile: number;
  /** The smallest passing point found, or null when none passed within the bounds. */
  recommendation: (EvaluatedPoint & { agents: number; cpus: number; mem: number }) | null;
  /** Every point, in evaluation order. */
  evaluated: EvaluatedPoint[];
  /** Simulator runs (points × seeds × variants). */
  runs: number;
  /** The search stopped at `maxPoints`. */
  truncated: boolean;
  /** Why there is no recommendation. */
  reason?: string;
}

class PointBudgetExhausted extends Error {}

/** The variants a point is run in, given the targets. */
export function planVariants(targets: PlanTargets, failAtSeconds: number): PlanVariant[] {
  const out: PlanVariant[] = [{ id: "base" }];
  const at = targets.survive?.atSeconds ?? failAtSeconds;
  if (targets.survive?.agents !== undefined) out.push({ id: "lose-agents", agents: targets.survive.agents, atSeconds: at });
  if (targets.survive?.rack === true) out.push({ id: "lose-rack", atSeconds: at });
  return out;
}

function variantName(v: PlanVariant): string {
  return v.id === "base" ? "base" : v.id === "lose-agents" ? `lose ${v.agents} agent${v.agents === 1 ? "" : "s"}` : "lose a rack";
}

/** Nearest-rank percentile (`p` in 0..100]; sorts a copy; Infinity sorts last. */
export function percentileOf(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[nearestRank(p, sorted.length) - 1]!;
}

/** The targets checked in a variant: all of them in the base run, the service ones after a loss. */
function checksFor(targets: PlanTargets, variant: PlanVariant): Array<{ target: string; limit: number; metric: keyof RunMetrics }> {
  const out: Array<{ target: string; limit: number; metric: keyof RunMetrics }> = [];
  if (targets.maxWaitP50Seconds !== undefined) out.push({ target: "wait p50 (s)", limit: targets.maxWaitP50Seconds, metric: "waitP50Seconds" });
  if (targets.maxWaitP90Seconds !== undefined) out.push({ target: "wait p90 (s)", limit: targets.maxWaitP90Seconds, metric: "waitP90Seconds" });
  if (targets.maxWaitP99Seconds !== undefined) out.push({ target: "wait p99 (s)", limit: targets.maxWaitP99Seconds, metric: "waitP99Seconds" });
  if (targets.allPlaced === true) out.push({ target: "unplaced tasks", limit: 0, metric: "unplacedTasks" });
  if (targets.allMarathonAppsPlaced === true) out.push({ target: "unplaced marathon instances", limit: 0, metric: "unplacedMarathonInstances" });
  if (variant.id === "base" && targets.maxCpuUtilizationPercent !== undefined) out.push({ target: "cpu utilization (%)", limit: targets.maxCpuUtilizationPercent, metric: "cpuUtilizationPercent" });
  return out;
}

function key(counts: Record<string, number>): string {
  return Object.keys(counts)
    .sort()
    .map((k) => `${k}=${counts[k]}`)
    .join(",");
}

/** Searches the smallest cluster meeting every target. See the module comment for the method. */
export async function searchPlan(options: SearchOptions): Promise<PlanOutcome> {
  const percentile = options.percentile ?? 90;
  const maxAgents = options.maxAgentsPerClass ?? DEFAULT_MAX_AGENTS_PER_CLASS;
  const maxRounds = options.maxRounds ?? 3;
  const maxPoints = options.maxPoints ?? 100;
  const variants = planVariants(options.targets, options.failAtSeconds ?? 0);
  const classes = options.classes;
  if (classes.length === 0) throw new RangeError("searchPlan: no class to search");
  if (options.seeds.length === 0) throw new RangeError("searchPlan: no seeds");
  const cache = new Map<string, EvaluatedPoint>();
  const evaluated: EvaluatedPoint[] = [];
  let runs = 0;

  const evaluate = async (searched: Record<string, number>): Promise<EvaluatedPoint> => {
    const counts = { ...(options.fixed ?? {}), ...searched };
    const k = key(counts);
    const hit = cache.get(k);
    if (hit) return hit;
    if (evaluated.length >= maxPoints) throw new PointBudgetExhausted();
    const checks: TargetCheck[] = [];
    // Every run of the point is asked for at once: an evaluator on worker threads runs them side
    // by side (the in-process one takes them one at a time); the results keep the asking order.
    const perVariant = await Promise.all(
      variants.map((variant) => Promise.all(options.seeds.map((seed) => options.evaluate({ counts: { ...counts }, seed, variant })))),
    );
    runs += variants.length * options.seeds.length;
    for (const [v, variant] of variants.entries()) {
      const metrics = perVariant[v]!;
      for (const c of checksFor(options.targets, variant)) {
        const observed = percentileOf(
          metrics.map((m) => m[c.metric]),
          percentile,
        );
        checks.push({ variant: variantName(variant), target: c.target, limit: c.limit, observed, margin: c.limit - observed, pass: observed <= c.limit });
      }
    }
    const point: EvaluatedPoint = { counts, pass: checks.every((c) => c.pass), checks };
    cache.set(k, point);
    evaluated.push(point);
    options.onPoint?.(point, evaluated.length - 1);
    return point;
  };

  const current: Record<string, number> = {};
  let truncated = false;
  let reason: string | undefined;
  let best: EvaluatedPoint | undefined;
  try {
    // 1. A passing start: the given maxima, else doubling (all searched classes together).
    for (const c of classes) current[c.name] = c.max ?? Math.min(maxAgents, Math.max(c.start, c.min, 1));
    let start = await evaluate(current);
    const open = classes.filter((c) => c.max === undefined);
    while (!start.pass && open.length > 0 && open.some((c) => current[c.name]! < maxAgents)) {
      for (const c of open) current[c.name] = Math.min(maxAgents, current[c.name]! * 2);
      start = await evaluate(current);
    }
    if (!start.pass) {
      reason = `no point up to ${key(current)} meets every target`;
    } else {
      best = start;
      // 2. Bisect each class down in turn, others fixed, until a round shrinks nothing.
      for (let round = 0; round < (classes.length === 1 ? 1 : maxRounds); round++) {
        let shrunk = false;
        for (const c of classes) {
          // A failing point already run with at least as many agents of every other class makes
          // the floor: with more agents never hurting, every count of this class up to its own
          // fails here too. (Only points with the others exactly as now made it before, so a
          // second round bisected all over again points that the first had already decided.)
          let lo = c.min;
          let hi = current[c.name]!;
          const here = { ...(options.fixed ?? {}), ...current };
          for (const p of cache.values()) {
            if (p.pass || !atLeastExcept(p.counts, here, c.name)) continue;
            const n = p.counts[c.name]!;
            if (n < hi && n + 1 > lo) lo = n + 1;
          }
          while (lo < hi) {
            const mid = Math.floor((lo + hi) / 2);
            const p = await evaluate({ ...current, [c.name]: mid });
            if (p.pass) {
              hi = mid;
              best = p;
            } else lo = mid + 1;
          }
          if (hi < current[c.name]!) shrunk = true;
          current[c.name] = hi;
          best = cache.get(key({ ...(options.fixed ?? {}), ...current })) ?? best;
        }
        if (!shrunk) break;
      }
    }
  } catch (err) {
    if (!(err instanceof PointBudgetExhausted)) throw err;
    truncated = true;
    if (!best) reason = `no passing point within the first ${maxPoints} evaluated (search.maxPoints)`;
  }
  const sizes = options.sizes ?? Object.fromEntries(classes.map((c) => [c.name, { cpus: c.cpus ?? 0, mem: c.mem ?? 0 }]));
  const recommendation = best ? { ...best, ...totals(best.counts, sizes) } : null;
  return {
    method: classes.length === 1 ? "bisection" : "coordinate-bisection",
    seeds: [...options.seeds],
    percentile,
    recommendation,
    evaluated,
    runs,
    truncated,
    ...(reason !== undefined ? { reason } : {}),
  };
}

/** Whether `a` has at least as many agents as `b` of every class but `except`. */
function atLeastExcept(a: Record<string, number>, b: Record<string, number>, except: string): boolean {
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) if (k !== except && (a[k] ?? 0) < (b[k] ?? 0)) return false;
  return true;
}

function totals(counts: Record<string, number>, sizes: Record<string, { cpus: number; mem: number }>): { agents: number; cpus: number; mem: number } {
  let agents = 0;
  let cpus = 0;
  let mem = 0;
  for (const [name, n] of Object.entries(counts)) {
    agents += n;
    cpus += n * (sizes[name]?.cpus ?? 0);
    mem += n * (sizes[name]?.mem ?? 0);
  }
  return { agents, cpus: round3(cpus), mem: round3(mem) };
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

// ---- the real evaluator ----------------------------------------------------------------------------

/** Rack of each class from its `rack:<name>` attribute. */
function rackOfClasses(scenario: Scenario): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, spec] of Object.entries(scenario.cluster.agentClasses)) {
    const m = /(?:^|;)\s*rack\s*:\s*([^;]+)/.exec(spec.attributes ?? "");
    if (m) out.set(name, m[1]!.trim());
  }
  return out;
}

function classSize(scenario: Scenario, name: string): { cpus: number; mem: number } {
  const r = Resources.parse(scenario.cluster.agentClasses[name]!.resources);
  return { cpus: r.scalar("cpus"), mem: r.scalar("mem") };
}

/**
 * The `fail-agents` events (no restart) of a survival variant at `counts`: for `lose-agents`, the
 * largest agents (most cpus, then mem, then class name); for `lose-rack`, the rack holding the
 * most cpus, or ceil(count / racks) agents of every class when `racks` is given.
 */
export function failureEvents(scenario: Scenario, counts: Record<string, number>, variant: PlanVariant, survive: SurviveTarget | undefined): ScenarioEvent[] {
  if (variant.id === "base") return [];
  const at = variant.atSeconds;
  const names = Object.keys(scenario.cluster.agentClasses).filter((n) => (counts[n] ?? 0) > 0);
  const events: ScenarioEvent[] = [];
  const lose = (cls: string, count: number): void => {
    if (count > 0) events.push({ atSeconds: at, type: "fail-agents", class: cls, count });
  };
  if (variant.id === "lose-agents") {
    const bySize = names
      .map((n) => ({ n, ...classSize(scenario, n) }))
      .sort((a, b) => b.cpus - a.cpus || b.mem - a.mem || a.n.localeCompare(b.n));
    let left = variant.agents;
    for (const c of bySize) {
      const take = Math.min(left, counts[c.n]!);
      lose(c.n, take);
      left -= take;
      if (left === 0) break;
    }
    return events;
  }
  if (survive?.racks !== undefined) {
    for (const n of names) lose(n, Math.ceil(counts[n]! / survive.racks));
    return events;
  }
  const racks = rackOfClasses(scenario);
  const cpusByRack = new Map<string, number>();
  for (const n of names) {
    const rack = racks.get(n);
    if (rack !== undefined) cpusByRack.set(rack, (cpusByRack.get(rack) ?? 0) + counts[n]! * classSize(scenario, n).cpus);
  }
  const worst = [...cpusByRack.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]?.[0];
  for (const n of names) if (worst !== undefined && racks.get(n) === worst) lose(n, counts[n]!);
  return events;
}

/**
 * A run's figures for the targets (waits over every submitted task; never ran = Infinity).
 * @param placementGraceSeconds Marathon apps with an action this close to the end are not counted as unplaced. @default 0
 */
export function metricsOf(r: SimResult, placementGraceSeconds = 0): RunMetrics {
  const judgedFrom = r.endSeconds - placementGraceSeconds;
  let unplacedMarathonInstances = 0;
  for (const app of r.marathon.unplaced) {
    const report = r.marathon.apps.find((a) => a.framework === app.framework && a.appId === app.appId);
    const lastActionAt = Math.max(-Infinity, ...(report?.actions ?? []).map((a) => a.atSeconds));
    if (placementGraceSeconds > 0 && lastActionAt > judgedFrom) continue;
    unplacedMarathonInstances += app.instances - app.running;
  }
  const inf = (v: number | null): number => (v === null ? Infinity : v);
  return {
    waitP50Seconds: inf(r.waitSeconds.withNeverRun.p50),
    waitP90Seconds: inf(r.waitSeconds.withNeverRun.p90),
    waitP99Seconds: inf(r.waitSeconds.withNeverRun.p99),
    unplacedTasks: r.tasks.queuedPastGrace + r.tasks.abandoned,
    unplacedMarathonInstances,
    cpuUtilizationPercent: Math.round((r.utilization.mean.cpus ?? 0) * 100 * 100) / 100,
  };
}

/**
 * The real "run one point": the scenario with the counts, the seed and the variant's failures, on
 * the simulator, in this thread. Runs asked for while one is going wait their turn: two
 * simulations must never share a thread (see `./parallel.ts`).
 */
export function scenarioEvaluator(scenario: Scenario, spec: PlanSpec, options: { logLevel?: string; baseDir?: string } = {}): Evaluate {
  const runOne = runPoint(scenario, spec, options);
  let queue: Promise<unknown> = Promise.resolve();
  return (point) => {
    const result = queue.then(() => runOne(point));
    queue = result.catch(() => undefined);
    return result;
  };
}

/**
 * The same runs on a {@link SimPool}'s worker threads, as many at once as it has workers.
 */
export function pooledEvaluator(pool: SimPool, scenario: Scenario, spec: PlanSpec, options: { logLevel?: string; baseDir?: string } = {}): Evaluate {
  return (run) =>
    pool.run({
      kind: "plan",
      scenario,
      spec,
      run,
      ...(options.logLevel !== undefined ? { logLevel: options.logLevel } : {}),
      ...(options.baseDir !== undefined ? { baseDir: options.baseDir } : {}),
    });
}

/** One run of a point (see {@link scenarioEvaluator}); the worker threads call it directly. */
export function runPoint(scenario: Scenario, spec: PlanSpec, options: { logLevel?: string; baseDir?: string } = {}): Evaluate {
  return async ({ counts, seed, variant }) => {
    const s = structuredClone(scenario);
    s.seed = seed;
    for (const [name, n] of Object.entries(counts)) s.cluster.agentClasses[name]!.count = n;
    const extra = failureEvents(s, counts, variant, spec.targets.survive);
    if (extra.length > 0) s.events = [...(s.events ?? []), ...extra];
    const result = await runScenario(s, {
      ...(options.logLevel ? { logLevel: options.logLevel } : {}),
      ...(options.baseDir !== undefined ? { baseDir: options.baseDir } : {}),
      ...(spec.targets.placementGraceSeconds !== undefined ? { placementGraceSeconds: spec.targets.placementGraceSeconds } : {}),
    });
    return metricsOf(result, spec.targets.placementGraceSeconds ?? 0);
  };
}

/** The result of {@link planScenario} (what `--json` writes). */
export interface PlanReport extends PlanOutcome {
  scenario: string;
  targets: PlanTargets;
  searched: Array<{ class: string; min: number; max: number | null; cpus: number; mem: number }>;
  fixed: Record<string, number>;
}

/** Options of {@link planScenario}. */
export interface PlanScenarioOptions {
  /** Seeds per point; overrides the spec's. @default spec.seeds, else 5 */
  seeds?: number;
  /** Replaces the real simulator (tests). @default {@link scenarioEvaluator}, or {@link pooledEvaluator} with `jobs` > 1 */
  evaluate?: Evaluate;
  /**
   * Simulations run at once, each on its own worker thread, for the runs of a point (seeds ×
   * variants); 1 runs them one after another in this thread. The plan is the same either way.
   * @default 1
   */
  jobs?: number;
  /** Progress. @default none */
  onPoint?: (point: EvaluatedPoint, index: number) => void;
  /** Pino level of the simulated shells. @default "silent" */
  logLevel?: string;
  /** Folder that relative trace file names are read from (the CLI gives the scenario file's). @default the current directory */
  baseDir?: string;
}

/**
 * Validates the scenario and the targets (throwing before anything runs), then searches.
 * @throws {ScenarioError} / {@link PlanSpecError}
 */
export async function planScenario(scenarioInput: unknown, specInput: unknown, options: PlanScenarioOptions = {}): Promise<PlanReport> {
  const scenario = validateScenario(scenarioInput, options.baseDir !== undefined ? { baseDir: options.baseDir } : {});
  const spec = validatePlanSpec(specInput, scenario);
  const seedCount = options.seeds ?? spec.seeds ?? 5;
  if (!Number.isInteger(seedCount) || seedCount < 1 || seedCount > 100) throw new PlanSpecError([`seeds: must be an integer 1..100, got ${seedCount}`]);
  // Each run is validated as a scenario: a seed past MAX_SEED would fail the search part-way,
  // reported as an invalid scenario although the file's own seed is valid.
  if (scenario.seed + seedCount - 1 > MAX_SEED) {
    throw new PlanSpecError([
      `plan.seeds: a point runs scenario.seed (${scenario.seed}) to scenario.seed + ${seedCount - 1}, which must be <= ${MAX_SEED} (the largest scenario seed); lower the scenario's seed or the seeds`,
    ]);
  }
  const seeds = Array.from({ length: seedCount }, (_, i) => scenario.seed + i);
  const chosen: Record<string, PlanClassBounds> = spec.search?.classes ?? Object.fromEntries(Object.keys(scenario.cluster.agentClasses).map((n) => [n, {}]));
  if (Object.keys(chosen).length === 0) throw new PlanSpecError(["plan.search.classes: the scenario has no agent class to search (scenario.cluster.agentClasses is empty)"]);
  const several = Object.keys(chosen).length > 1;
  const classes: SearchClass[] = Object.entries(chosen).map(([name, b]) => ({
    name,
    min: b.min ?? (several ? 0 : 1),
    ...(b.max !== undefined ? { max: b.max } : {}),
    start: Math.max(1, scenario.cluster.agentClasses[name]!.count),
    ...classSize(scenario, name),
  }));
  const fixed: Record<string, number> = {};
  for (const [name, cls] of Object.entries(scenario.cluster.agentClasses)) if (!(name in chosen)) fixed[name] = cls.count;
  const sizes = Object.fromEntries(Object.keys(scenario.cluster.agentClasses).map((n) => [n, classSize(scenario, n)]));
  const jobs = options.jobs ?? 1;
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_SIM_JOBS) throw new RangeError(`jobs: must be an integer 1..${MAX_SIM_JOBS}, got ${jobs}`);
  const runOptions = { ...(options.logLevel ? { logLevel: options.logLevel } : {}), ...(options.baseDir !== undefined ? { baseDir: options.baseDir } : {}) };
  // Workers start on first need, so a pool larger than a point's runs starts no more than those.
  const pool = options.evaluate === undefined && jobs > 1 ? new SimPool(jobs) : undefined;
  const outcome = await searchPlan({
    classes,
    fixed,
    sizes,
    targets: spec.targets,
    seeds,
    percentile: spec.percentile ?? 90,
    failAtSeconds: Math.floor(scenario.endSeconds / 3),
    evaluate: options.evaluate ?? (pool ? pooledEvaluator(pool, scenario, spec, runOptions) : scenarioEvaluator(scenario, spec, runOptions)),
    ...(spec.search?.maxAgentsPerClass !== undefined ? { maxAgentsPerClass: spec.search.maxAgentsPerClass } : {}),
    ...(spec.search?.maxRounds !== undefined ? { maxRounds: spec.search.maxRounds } : {}),
    ...(spec.search?.maxPoints !== undefined ? { maxPoints: spec.search.maxPoints } : {}),
    ...(options.onPoint ? { onPoint: options.onPoint } : {}),
  }).finally(() => pool?.close());
  return {
    scenario: scenario.name ?? "scenario",
    targets: spec.targets,
    searched: classes.map((c) => ({ class: c.name, min: c.min, max: c.max ?? null, cpus: c.cpus ?? 0, mem: c.mem ?? 0 })),
    fixed,
    ...outcome,
  };
}

// ---- output --------------------------------------------------------------------------------------

/**
 * A figure of the table: two decimals, or as many more (up to six) as it takes for a value that
 * is not zero to stay so, and for an observed value that is not its limit to read differently
 * (a target missed by 0.004 must not read as "60  60  0  NO").
 */
function num(v: number, differsFrom?: number): string {
  if (v === Infinity) return "never";
  if (v === -Infinity) return "-inf";
  for (let decimals = 2; decimals <= 6; decimals++) {
    const scale = 10 ** decimals;
    const r = Math.round(v * scale) / scale;
    const keepsSign = v === 0 || r !== 0;
    const keepsDifference = differsFrom === undefined || v === differsFrom || r !== Math.round(differsFrom * scale) / scale;
    if (keepsSign && keepsDifference) return String(r);
  }
  return String(v);
}

function countsText(counts: Record<string, number>): string {
  return Object.keys(counts)
    .sort()
    .map((k) => `${k}=${counts[k]}`)
    .join(" ");
}

/** The plan as a small text table. */
export function formatPlan(p: PlanReport): string {
  const lines: string[] = [];
  const searched = p.searched.map((c) => `${c.class} (${c.min}..${c.max ?? "auto"})`).join(", ");
  lines.push(`capacity plan for ${p.scenario}: ${p.method} over ${searched}; ${p.seeds.length} seeds (${p.seeds.join(", ")}), ${p.percentile}th percentile of each metric`);
  if (p.recommendation) {
    const r = p.recommendation;
    lines.push(`recommendation: ${countsText(r.counts)}  (${r.agents} agents, ${r.cpus} cpus, ${r.mem} MB mem)`);
    const rows = [["target", "variant", "limit", "observed", "margin", "ok"], ...r.checks.map((c) => [c.target, c.variant, num(c.limit), num(c.observed, c.limit), num(c.margin), c.pass ? "yes" : "NO"])];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    for (const row of rows) lines.push(`  ${row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ")}`.trimEnd());
  } else {
    lines.push(`no recommendation: ${p.reason ?? "no point met every target"}`);
  }
  if (p.truncated) lines.push(`(stopped after ${p.evaluated.length} points: search.maxPoints)`);
  lines.push(`evaluated ${p.evaluated.length} points in ${p.runs} runs: ${p.evaluated.map((e) => `${countsText(e.counts)} ${e.pass ? "pass" : "fail"}`).join(", ")}`);
  return lines.join("\n");
}

/** The plan as JSON (Infinity, which JSON cannot hold, written as null). */
export function planToJson(p: PlanReport): string {
  return `${JSON.stringify(p, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`;
}
