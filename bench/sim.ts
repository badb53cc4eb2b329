/**
 * The simulator benchmark: (1) the raw discrete-event engine (synchronous events, no shells) in
 * events per second, and with the per-event settle turn the shells need; (2) a realistic run of
 * the real master, allocator, agents and the real batch framework (`frameworks/batch`, the sim's
 * `batch` kind) on virtual time, reporting wall time, events per second and peak RSS.
 *
 * Options: `--agents N` (default 1000), `--tasks N` (default 10000), `--days D` (simulated days,
 * arrivals spread over them; default: as long as the arrivals take plus three mean task
 * durations), `--marathon-apps N` (long-running apps on the real Marathon beside the batch work;
 * default one per 20 agents), `--raw-events N` (default 2000000), `--full` (the case:
 * 10,000 agents and 1,000,000 batch tasks over 7 simulated days plus 500 Marathon apps, in
 * <= 60 s and <= 4 GB; refused together with a size flag), and the cluster settings of the
 * run: `--ping-seconds S` (how often the master pings each agent; default Mesos's 15, `--full`
 * 600), `--offer-hold-seconds S` (the batch framework keeps offers nothing fits this long;
 * default 0, `--full` 3600) and `--max-held-offers N` (default 1000); `--wire bytes` serializes
 * every message as on a real bus (default `messages`: see the scenario's `network.wire`);
 * `--no-progress` keeps stderr quiet. The settings change what is simulated, not how: a 7-day
 * run of 10,000 agents pinged every 15 s is 800 million messages of pings alone, and a batch
 * framework that declines every offer it cannot use REVIVEs for each new job, which the master
 * answers with an offer of every agent. The case label names the settings used.
 */
import { SimEngine } from "../sim/engine.ts";
import { WIRE_FORMS, type WireForm } from "../sim/network.ts";
import { stderrProgress } from "../sim/progress.ts";
import { runScenario } from "../sim/report.ts";
import type { Scenario } from "../sim/scenario.ts";
import { BenchUsageError, parseBenchArgs, peakRssMb, type BenchResult } from "./lib.ts";

/** The full case. */
export const FULL_CASE = { agents: 10_000, tasks: 1_000_000, days: 7, marathonApps: 500 } as const;

/** Cluster and framework settings of a run (see the module comment). */
export interface BenchSettings {
  /** How often the master pings each agent. */
  pingSeconds: number;
  /** How long the batch framework keeps an offer nothing fits; 0 declines it at once. */
  offerHoldSeconds: number;
  maxHeldOffers: number;
}

/** Mesos's and the batch framework's defaults. */
export const DEFAULT_SETTINGS: BenchSettings = { pingSeconds: 15, offerHoldSeconds: 0, maxHeldOffers: 1000 };
/** The full case's settings. */
export const FULL_SETTINGS: BenchSettings = { pingSeconds: 600, offerHoldSeconds: 3600, maxHeldOffers: 1000 };

/**
 * Tasks per batch job: the workload is jobs of this many alike tasks. 100, so that the jobs live
 * at once in the full case (tasks of 17 hours on average keep about 112,000 running) stay well
 * under the batch framework's `maxLiveJobs` (10,000). With 10, jobs were refused once the cluster
 * filled up: a full run completed 335,185 tasks where about 958,000 were due.
 */
const TASKS_PER_JOB = 100;

/** The command line (see {@link parseBenchArgs}: an unknown flag or a bad value is refused). */
const ARG_FLAGS = {
  full: "boolean",
  "no-progress": "boolean",
  agents: "integer > 0",
  tasks: "integer > 0",
  days: "number > 0",
  "marathon-apps": "integer >= 0",
  "raw-events": "integer > 0",
  "ping-seconds": "number > 0",
  "offer-hold-seconds": "number >= 0",
  "max-held-offers": "integer > 0",
  wire: "text",
} as const;

/** Events per second of the bare engine: `count` synchronous events over 1,000 chains. */
async function rawEngine(count: number, settle: boolean): Promise<number> {
  const engine = new SimEngine({ startMs: 0 });
  let n = 0;
  const tick = (): void => {
    if (++n < count) engine.after(1 + (n % 7), tick, { settle });
  };
  for (let i = 0; i < 1000; i++) engine.after(i, tick, { settle });
  const stats = await engine.run();
  return stats.eventsPerSecond;
}

/**
 * A batch workload sized to keep the cluster about 70% busy: agents of 16 cpus / 64 GiB; jobs of
 * {@link TASKS_PER_JOB} tasks of 1 cpu / 2 GiB each, Poisson job arrivals, exponential task
 * durations. Without `days`, tasks last 10 minutes on average and the run lasts until the last
 * arrival plus three mean durations; with `days`, arrivals are spread over the first 90% of the
 * run and the mean duration is what keeps 70% of the cpus busy at that rate.
 */
export function benchScenario(agents: number, tasks: number, days?: number, marathonApps = 0, settings: BenchSettings = DEFAULT_SETTINGS): Scenario {
  const busyCpus = 0.7 * agents * 16;
  const jobs = Math.max(1, Math.round(tasks / TASKS_PER_JOB));
  let meanSeconds = 600;
  let arrivalsSeconds = tasks / (busyCpus / meanSeconds);
  let endSeconds = Math.ceil(arrivalsSeconds + 3 * meanSeconds);
  if (days !== undefined) {
    endSeconds = Math.ceil(days * 86_400);
    arrivalsSeconds = 0.9 * endSeconds;
    meanSeconds = busyCpus / (tasks / arrivalsSeconds);
  }
  return {
    name: `bench-${agents}x${tasks}`,
    seed: 42,
    endSeconds,
    sampleIntervalSeconds: 60,
    cluster: { agentClasses: { std: { count: agents, resources: "cpus:16;mem:65536" } }, allocationIntervalMs: 1000, agentPingIntervalMs: settings.pingSeconds * 1000 },
    frameworks: [
      {
        name: "batch",
        kind: "batch",
        // A long decline filter, as busy Mesos frameworks use: idle agents are not re-offered
        // every 5 s (freed resources are offered at once anyway).
        refuseSeconds: 60,
        ...(settings.offerHoldSeconds > 0 ? { offerHoldSeconds: settings.offerHoldSeconds, maxHeldOffers: settings.maxHeldOffers } : {}),
        jobs: {
          count: jobs,
          arrival: { poisson: { ratePerSecond: jobs / arrivalsSeconds } },
          tasksPerJob: TASKS_PER_JOB,
          cpus: 1,
          mem: 2048,
          durationSeconds: { dist: "exp", meanSeconds },
          maxRetries: 3,
        },
      },
      ...marathonFrameworks(marathonApps),
    ],
  };
}

/**
 * The Marathon apps: one real Marathon (the sim's `marathon` kind) in role `services`,
 * deploying `apps` long-running apps of 2 instances (0.5 cpu, 1 GiB) at the start; none for 0.
 */
export function marathonFrameworks(apps: number): Scenario["frameworks"] {
  if (apps <= 0) return [];
  return [
    {
      name: "marathon",
      kind: "marathon",
      role: "services",
      marathon: { apps: Array.from({ length: apps }, (_, i) => ({ id: `/svc/app-${i}`, cmd: "./serve --port $PORT0", cpus: 0.5, mem: 1024, instances: 2 })) },
    },
  ];
}

/** Marathon instances running at the end of the run (0 without Marathon). */
function marathonRunning(result: Awaited<ReturnType<typeof runScenario>>): number {
  return result.marathon.apps.reduce((sum, app) => sum + app.running, 0);
}

/** Runs the benchmark; see the module comment for the options. */
export async function runSimBench(args: string[]): Promise<BenchResult[]> {
  const flags = parseBenchArgs(args, ARG_FLAGS);
  const full = flags.on("full");
  // The full case is the size; a size flag beside it would be silently ignored.
  const sizeFlags = (["agents", "tasks", "days", "marathon-apps"] as const).filter((name) => flags.number(name) !== undefined);
  if (full && sizeFlags.length > 0) throw new BenchUsageError(`--full sets the size itself; drop --${sizeFlags.join(", --")}`);
  const agents = full ? FULL_CASE.agents : (flags.number("agents") ?? 1000);
  const tasks = full ? FULL_CASE.tasks : (flags.number("tasks") ?? 10_000);
  const days = full ? FULL_CASE.days : flags.number("days");
  const marathonApps = full ? FULL_CASE.marathonApps : (flags.number("marathon-apps") ?? Math.round(agents / 20));
  const rawCount = flags.number("raw-events") ?? 2_000_000;
  const wire = flags.text("wire") ?? "messages";
  if (!WIRE_FORMS.includes(wire as WireForm)) throw new BenchUsageError(`--wire: must be one of ${WIRE_FORMS.join(", ")}, got '${wire}'`);
  const base = full ? FULL_SETTINGS : DEFAULT_SETTINGS;
  const settings: BenchSettings = {
    pingSeconds: flags.number("ping-seconds") ?? base.pingSeconds,
    offerHoldSeconds: flags.number("offer-hold-seconds") ?? base.offerHoldSeconds,
    maxHeldOffers: flags.number("max-held-offers") ?? base.maxHeldOffers,
  };
  const results: BenchResult[] = [];

  const raw = await rawEngine(rawCount, false);
  results.push({ case: "engine raw", metric: "events/s", unit: "events/s", value: raw, target: 1_000_000, better: "higher" });
  const settled = await rawEngine(Math.min(rawCount, 200_000), true);
  results.push({ case: "engine + settle turn", metric: "events/s", unit: "events/s", value: settled, target: null, better: "higher" });

  const scenario: Scenario = { ...benchScenario(agents, tasks, days, marathonApps, settings), network: { wire: wire as WireForm } };
  const started = process.hrtime.bigint();
  // Progress on stderr: the full case runs for many minutes.
  const progress = flags.on("no-progress") ? undefined : stderrProgress();
  const result = await runScenario(scenario, progress ? { onProgress: (p) => progress.update(p) } : {});
  progress?.finish();
  const wallS = Number(process.hrtime.bigint() - started) / 1e9;
  const hold = settings.offerHoldSeconds > 0 ? `offers kept ${settings.offerHoldSeconds} s (at most ${settings.maxHeldOffers})` : "offers declined";
  const label = `${agents} agents x ${tasks} batch tasks + ${marathonApps} Marathon apps, ${(scenario.endSeconds / 3600).toFixed(1)} h simulated; pings every ${settings.pingSeconds} s, ${hold}${wire === "bytes" ? "; messages serialized" : ""}`;
  results.push(
    { case: label, metric: "wall time", unit: "s", value: wallS, target: full ? 60 : null, better: "lower" },
    { case: label, metric: "peak RSS", unit: "MiB", value: peakRssMb(), target: full ? 4096 : null, better: "lower" },
    { case: label, metric: "engine events/s", unit: "events/s", value: result.engine.eventsPerSecond, target: null, better: "higher" },
    // What the run is made of: nearly every event is a bus message through the production shells.
    { case: label, metric: "bus messages delivered", unit: "messages", value: result.network.delivered, target: null, better: "lower" },
    { case: label, metric: "wall time per message delivered", unit: "us", value: result.network.delivered > 0 ? (wallS * 1e6) / result.network.delivered : 0, target: null, better: "lower" },
    // The whole workload ran: every task submitted, no job turned away by the framework's bounds.
    { case: label, metric: "batch tasks submitted", unit: "tasks", value: result.tasks.submitted, target: tasks, better: "higher" },
    { case: label, metric: "jobs refused by the framework", unit: "jobs", value: result.jobs.refused, target: 0, better: "lower" },
    { case: label, metric: "tasks completed", unit: "tasks", value: result.tasks.completed, target: null, better: "higher" },
    { case: label, metric: "simulated/wall speed-up", unit: "x", value: scenario.endSeconds / wallS, target: null, better: "higher" },
    { case: label, metric: "wait p99", unit: "s", value: result.waitSeconds.p99, target: null, better: "lower" },
    { case: label, metric: "Marathon instances running at the end", unit: "instances", value: marathonRunning(result), target: marathonApps * 2, better: "higher" },
  );
  return results;
}
