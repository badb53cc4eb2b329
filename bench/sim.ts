/**
 * The simulator benchmark: (1) the raw discrete-event engine (synchronous events, no shells) in
 * events per second, and with the per-event settle turn the shells need; (2) a realistic run of
 * the real master, allocator, agents and SDK frameworks on virtual time, reporting wall time,
 * events per second and peak RSS.
 *
 * Options: `--agents N` (default 1000), `--tasks N` (default 10000), `--raw-events N` (default
 * 2000000), `--full` (the target: 10,000 agents and 1,000,000 tasks over 7 simulated days,
 * in <= 60 s and <= 4 GB).
 */
import { SimEngine } from "../sim/engine.ts";
import { runScenario } from "../sim/report.ts";
import type { Scenario } from "../sim/scenario.ts";
import { peakRssMb, type BenchResult } from "./lib.ts";

function flag(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}: must be a number > 0`);
  return value;
}

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
 * A batch workload sized to keep the cluster about 70% busy: agents of 16 cpus / 64 GiB, tasks of
 * 1 cpu / 2 GiB lasting 10 minutes on average (exponential), Poisson arrivals; the run lasts
 * until the last arrival plus three mean durations (or 7 days for `--full`).
 */
export function benchScenario(agents: number, tasks: number, endSeconds?: number): Scenario {
  const meanSeconds = 600;
  const ratePerSecond = (0.7 * agents * 16) / meanSeconds;
  const arrivalsSeconds = tasks / ratePerSecond;
  return {
    name: `bench-${agents}x${tasks}`,
    seed: 42,
    endSeconds: Math.ceil(endSeconds ?? arrivalsSeconds + 3 * meanSeconds),
    sampleIntervalSeconds: 60,
    cluster: { agentClasses: { std: { count: agents, resources: "cpus:16;mem:65536" } }, allocationIntervalMs: 1000 },
    frameworks: [
      {
        name: "batch",
        kind: "tasks",
        // A long decline filter, as busy Mesos frameworks use: idle agents are not re-offered
        // every 5 s (freed resources are offered at once anyway).
        refuseSeconds: 60,
        tasks: { count: tasks, cpus: 1, mem: 2048, durationSeconds: { dist: "exp", meanSeconds }, arrival: { poisson: { ratePerSecond } } },
      },
    ],
  };
}

/** Runs the benchmark; see the module comment for the options. */
export async function runSimBench(args: string[]): Promise<BenchResult[]> {
  const full = args.includes("--full");
  const agents = full ? 10_000 : flag(args, "--agents", 1000);
  const tasks = full ? 1_000_000 : flag(args, "--tasks", 10_000);
  const rawCount = flag(args, "--raw-events", 2_000_000);
  const results: BenchResult[] = [];

  const raw = await rawEngine(rawCount, false);
  results.push({ case: "engine raw", metric: "events/s", unit: "events/s", value: raw, target: 1_000_000, better: "higher" });
  const settled = await rawEngine(Math.min(rawCount, 200_000), true);
  results.push({ case: "engine + settle turn", metric: "events/s", unit: "events/s", value: settled, target: null, better: "higher" });

  const scenario = benchScenario(agents, tasks, full ? 7 * 86_400 : undefined);
  const started = process.hrtime.bigint();
  const result = await runScenario(scenario);
  const wallS = Number(process.hrtime.bigint() - started) / 1e9;
  const label = `${agents} agents x ${tasks} tasks, ${(scenario.endSeconds / 3600).toFixed(1)} h simulated`;
  results.push(
    { case: label, metric: "wall time", unit: "s", value: wallS, target: full ? 60 : null, better: "lower" },
    { case: label, metric: "peak RSS", unit: "MiB", value: peakRssMb(), target: full ? 4096 : null, better: "lower" },
    { case: label, metric: "engine events/s", unit: "events/s", value: result.engine.eventsPerSecond, target: null, better: "higher" },
    { case: label, metric: "tasks completed", unit: "tasks", value: result.tasks.completed, target: null, better: "higher" },
    { case: label, metric: "simulated/wall speed-up", unit: "x", value: scenario.endSeconds / wallS, target: null, better: "higher" },
    { case: label, metric: "wait p99", unit: "s", value: result.waitSeconds.p99, target: null, better: "lower" },
  );
  return results;
}
