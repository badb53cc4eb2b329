/**
 * `corral sim ...`: the simulator's command line (wired into `cli/corral.ts` by the lead).
 *
 * ```
 * corral sim run scenario.json [--events out.jsonl] [--json out.json] [--html report.html] [--sample-interval S] [--max-samples N] [--log-level info]
 * corral sim plan scenario.json --targets targets.json [--seeds 5] [--json plan.json] [--table plan.txt] [--jobs N]
 * corral sim check [--seeds 1..20] [--agents 6] [--seconds 600] [--jobs N]
 * ```
 *
 * @module
 */

import { accessSync, closeSync, constants, existsSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { runCheck, parseSeeds, type CheckOutcome } from "./check.ts";
import { defaultSimJobs, MAX_SIM_JOBS, runInOrder } from "./parallel.ts";
import { formatPlan, planScenario, planToJson, PlanSpecError } from "./plan.ts";
import { stderrProgress } from "./progress.ts";
import { formatSummary, runScenario, type SimProgress } from "./report.ts";
import { loadUplotAssets, renderHtmlReport } from "./report-html.ts";
import { MAX_CLASS_AGENTS, MAX_END_SECONDS, ScenarioError } from "./scenario.ts";
import type { SimLogEvent } from "./cluster.ts";

/** Usage text of `corral sim`. */
export const SIM_USAGE = `usage:
  corral sim run <scenario.json> [--events out.jsonl] [--json out.json] [--html report.html]
                 [--sample-interval <seconds>] [--max-samples <n>] [--log-level <pino level>] [--no-progress]
      runs a scenario on the real master, agents and SDK frameworks over virtual time and prints a summary;
      --html writes a self-contained report (charts and tables; opens offline); progress goes to stderr
      (a bar on a terminal, else a line every 30 s)
  corral sim plan <scenario.json> --targets <targets.json> [--seeds <n>] [--json plan.json] [--table plan.txt]
                  [--log-level <pino level>] [--jobs N]
      searches the smallest number of agents per class meeting every target (wait percentile, all placed,
      cpu ceiling, surviving the loss of agents or a rack) over n seeds per point (default 5)
  corral sim check [--seeds 1..N] [--agents N] [--seconds S] [--jobs N]
      seeded fault injection (agent crashes and restarts, message loss and delay, partitions, master failover),
      checking after every event the allocator's invariants, no resource in two outstanding offers, every
      task's resources counted once, and every acknowledged status update delivered to its framework
  --jobs N (plan, check): N simulations at once on worker threads (default: one per core; 1: one at a
      time in this process); the results are the same`;

/** A JSONL sink that writes synchronously in 64 KiB batches (no macrotasks during the run). */
export class JsonlFile {
  private readonly fd: number;
  private buffer = "";
  constructor(path: string) {
    this.fd = openSync(path, "w");
  }
  write = (event: SimLogEvent): void => {
    this.buffer += `${JSON.stringify(event)}\n`;
    if (this.buffer.length >= 65_536) this.flush();
  };
  flush(): void {
    if (this.buffer.length > 0) writeSync(this.fd, this.buffer);
    this.buffer = "";
  }
  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

function takeFlag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const value = args[i + 1];
  if (value === undefined || value.startsWith("--")) throw new Error(`${name}: needs a value`);
  args.splice(i, 2);
  return value;
}

/** Removes the switch `name` (no value) from `args`; whether it was there. */
function takeSwitch(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i < 0) return false;
  args.splice(i, 1);
  return true;
}

/**
 * Refuses a flag left in `args` once the known ones were taken: without this a mistyped flag
 * (`--seed`) and its value were taken for the scenario file and reported as "extra" arguments.
 */
function rejectUnknownFlags(args: string[], known: readonly string[]): void {
  const flag = args.find((a) => a.startsWith("-") && a !== "-");
  if (flag === undefined) return;
  // A known flag still here was given twice (the first was taken): which one counts is unclear.
  if (known.includes(flag)) throw new Error(`${flag}: given more than once`);
  throw new Error(`unknown flag ${flag} (known: ${known.join(", ")})`);
}

const RUN_FLAGS = ["--events", "--json", "--html", "--sample-interval", "--max-samples", "--log-level", "--no-progress"];
const PLAN_FLAGS = ["--targets", "--seeds", "--json", "--table", "--log-level", "--jobs"];
const CHECK_FLAGS = ["--seeds", "--agents", "--seconds", "--jobs"];

/** Runs `corral sim <args>`; resolves with the exit code (0 ok, 1 failure, 2 usage). */
export async function simCommand(argv: string[]): Promise<number> {
  const args = [...argv];
  const sub = args.shift();
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    console.log(SIM_USAGE);
    return sub === undefined ? 2 : 0;
  }
  try {
    if (sub === "run") return await runSub(args);
    if (sub === "check") return await checkSub(args);
    if (sub === "plan") return await planSub(args);
  } catch (err) {
    console.error(`corral sim ${sub}: ${err instanceof Error ? err.message : String(err)}`);
    return 2;
  }
  console.error(`corral sim: unknown subcommand '${sub}'\n\n${SIM_USAGE}`);
  return 2;
}

async function runSub(args: string[]): Promise<number> {
  const eventsPath = takeFlag(args, "--events");
  const jsonPath = takeFlag(args, "--json");
  const htmlPath = takeFlag(args, "--html");
  const interval = numberFlag(takeFlag(args, "--sample-interval"), "--sample-interval", { gt: 0 });
  const maxSamples = numberFlag(takeFlag(args, "--max-samples"), "--max-samples", { int: true, min: 1 });
  const logLevel = takeFlag(args, "--log-level");
  const quiet = takeSwitch(args, "--no-progress");
  rejectUnknownFlags(args, RUN_FLAGS);
  const file = args.shift();
  if (file === undefined || args.length > 0) throw new Error(`expected one scenario file${args.length ? `, got extra ${args.join(" ")}` : ""}\n\n${SIM_USAGE}`);
  assertWritable(eventsPath, "--events");
  assertWritable(jsonPath, "--json");
  assertWritable(htmlPath, "--html");
  const input = readJson(file);
  // Read the charting library before the run, so a missing install fails fast.
  const assets = htmlPath === undefined ? undefined : loadUplotAssets();
  const sink = eventsPath === undefined ? undefined : new JsonlFile(eventsPath);
  const progress = quiet ? undefined : stderrProgress();
  try {
    const result = await runScenario(input, {
      ...(progress ? { onProgress: (p: SimProgress) => progress.update(p) } : {}),
      ...(sink ? { eventLog: sink.write } : {}),
      ...(logLevel ? { logLevel } : {}),
      ...(interval !== undefined ? { sampleIntervalSeconds: interval } : {}),
      ...(maxSamples !== undefined ? { maxSamples } : {}),
      // Trace files named in the scenario are found next to it, wherever corral runs.
      baseDir: dirname(file),
    });
    progress?.finish();
    console.log(formatSummary(result));
    if (jsonPath !== undefined) {
      writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
      console.log(`wrote ${jsonPath}`);
    }
    if (htmlPath !== undefined) {
      writeFileSync(htmlPath, renderHtmlReport(result, assets!));
      console.log(`wrote ${htmlPath}`);
    }
    if (eventsPath !== undefined) console.log(`wrote ${eventsPath}`);
    return 0;
  } catch (err) {
    if (err instanceof ScenarioError) {
      console.error(`corral sim run: ${file}: ${err.message}`);
      return 2;
    }
    throw err;
  } finally {
    progress?.finish();
    sink?.close();
  }
}

/**
 * Checks, before a run, that the result can be written to `path` (its folder exists and is
 * writable; the file, if there, is a writable file), without creating it: a plan search can take
 * hours, and a mistyped folder found only when writing lost its result.
 */
function assertWritable(path: string | undefined, flag: string): void {
  if (path === undefined) return;
  const folder = dirname(path);
  const fail = (why: string): never => {
    throw new Error(`${flag}: cannot write ${path}: ${why}`);
  };
  if (!existsSync(folder)) fail(`the folder ${folder} does not exist`);
  if (!statSync(folder).isDirectory()) fail(`${folder} is not a folder`);
  if (existsSync(path) && statSync(path).isDirectory()) fail("it is a folder");
  try {
    accessSync(existsSync(path) ? path : folder, constants.W_OK);
  } catch {
    fail(existsSync(path) ? "the file is not writable" : `the folder ${folder} is not writable`);
  }
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function numberFlag(value: string | undefined, name: string, rule: { gt?: number; min?: number; int?: boolean; max?: number }): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const want = rule.int ? "an integer" : "a number";
  const bounds = [rule.gt !== undefined ? `> ${rule.gt}` : "", rule.min !== undefined ? `>= ${rule.min}` : "", rule.max !== undefined ? `<= ${rule.max}` : ""].filter(Boolean).join(" and ");
  const bad = !Number.isFinite(n) || (rule.int && !Number.isInteger(n)) || (rule.gt !== undefined && !(n > rule.gt)) || (rule.min !== undefined && n < rule.min) || (rule.max !== undefined && n > rule.max);
  if (bad) throw new Error(`${name}: must be ${want}${bounds ? ` ${bounds}` : ""}, got ${JSON.stringify(value)}`);
  return n;
}

async function planSub(args: string[]): Promise<number> {
  const targetsPath = takeFlag(args, "--targets");
  const seeds = numberFlag(takeFlag(args, "--seeds"), "--seeds", { int: true, min: 1, max: 100 });
  const jsonPath = takeFlag(args, "--json");
  const tablePath = takeFlag(args, "--table");
  const logLevel = takeFlag(args, "--log-level");
  // A point's runs (seeds × survival variants) are what run side by side; workers start as needed.
  const jobs = jobsFlag(args, MAX_SIM_JOBS);
  rejectUnknownFlags(args, PLAN_FLAGS);
  const file = args.shift();
  if (file === undefined || args.length > 0) throw new Error(`expected one scenario file${args.length ? `, got extra ${args.join(" ")}` : ""}\n\n${SIM_USAGE}`);
  if (targetsPath === undefined) throw new Error(`--targets: is required (a targets file, see sim/README.md)\n\n${SIM_USAGE}`);
  assertWritable(jsonPath, "--json");
  assertWritable(tablePath, "--table");
  const scenario = readJson(file);
  const targets = readJson(targetsPath);
  try {
    const plan = await planScenario(scenario, targets, {
      ...(seeds !== undefined ? { seeds } : {}),
      ...(logLevel ? { logLevel } : {}),
      jobs,
      baseDir: dirname(file),
      onPoint: (p) => {
        const missed = p.checks.filter((c) => !c.pass).map((c) => `${c.target} ${c.variant}: ${c.observed === Infinity ? "never" : c.observed} > ${c.limit}`);
        const counts = Object.entries(p.counts).map(([k, v]) => `${k}=${v}`).join(" ");
        console.log(`  ${counts}: ${p.pass ? "pass" : `fail (${missed.join("; ")})`}`);
      },
    });
    const table = formatPlan(plan);
    console.log(table);
    if (jsonPath !== undefined) {
      writeFileSync(jsonPath, planToJson(plan));
      console.log(`wrote ${jsonPath}`);
    }
    if (tablePath !== undefined) {
      writeFileSync(tablePath, `${table}\n`);
      console.log(`wrote ${tablePath}`);
    }
    return plan.recommendation ? 0 : 1;
  } catch (err) {
    if (err instanceof ScenarioError) {
      console.error(`corral sim plan: ${file}: ${err.message}`);
      return 2;
    }
    if (err instanceof PlanSpecError) {
      console.error(`corral sim plan: ${targetsPath}: ${err.message}`);
      return 2;
    }
    throw err;
  }
}

/**
 * `--jobs N`: simulations run at once, one per worker thread (default: one per core, no more than
 * there are runs); 1 runs them one after another in this thread.
 */
function jobsFlag(args: string[], runs: number): number {
  const jobs = numberFlag(takeFlag(args, "--jobs"), "--jobs", { int: true, min: 1, max: MAX_SIM_JOBS });
  return jobs ?? Math.min(defaultSimJobs(), Math.max(1, runs));
}

async function checkSub(args: string[]): Promise<number> {
  const seeds = parseSeeds(takeFlag(args, "--seeds") ?? "1..10");
  // The bounds of the scenario each seed draws (two agent classes of at least one agent each,
  // endSeconds), so a bad flag is a usage error here rather than an invalid scenario thrown from
  // inside every seed's run.
  const agents = numberFlag(takeFlag(args, "--agents"), "--agents", { int: true, min: 2, max: 2 * MAX_CLASS_AGENTS }) ?? 6;
  const seconds = numberFlag(takeFlag(args, "--seconds"), "--seconds", { gt: 0, max: MAX_END_SECONDS }) ?? 600;
  const jobs = jobsFlag(args, seeds.length);
  rejectUnknownFlags(args, CHECK_FLAGS);
  if (args.length > 0) throw new Error(`unexpected ${args.join(" ")}\n\n${SIM_USAGE}`);
  let failures = 0;
  const report = (outcome: CheckOutcome): void => {
    if (outcome.ok) {
      console.log(`seed ${outcome.seed}: ok (${outcome.events} events, ${outcome.launched} launched, ${outcome.faults} faults, Marathon apps judged for ${outcome.appsJudgedSeconds} s)`);
      return;
    }
    failures++;
    console.log(`seed ${outcome.seed}: FAILED at t=${outcome.atMs} ms: ${outcome.problem}`);
    console.log(`  reproduce: ${outcome.reproduce}`);
  };
  if (jobs === 1) {
    for (const seed of seeds) report(await runCheck(seed, { agents, seconds }));
  } else {
    // Seeds are independent worlds: one per worker thread, reported in seed order all the same.
    await runInOrder(
      seeds.map((seed) => ({ kind: "check" as const, seed, options: { agents, seconds } })),
      jobs,
      report,
    );
  }
  console.log(failures === 0 ? `all ${seeds.length} seeds passed` : `${failures} of ${seeds.length} seeds failed`);
  return failures === 0 ? 0 : 1;
}
