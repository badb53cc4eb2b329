/** Shared helpers of the benchmarks: result rows, percentiles, the table and the JSON file. */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** One measured figure, in the shape CI and the team read from `bench/results/<name>.json`. */
export interface BenchResult {
  case: string;
  metric: string;
  unit: string;
  value: number;
  /** The target for this figure, or null when the issue names none. */
  target: number | null;
  better: "lower" | "higher";
}

/** The value at quantile `q` (0..1) of `samples`, nearest-rank. */
export function percentile(samples: number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** What a benchmark flag takes: a number by the rule named, a bare switch, or a text. */
export type BenchFlagKind = "integer > 0" | "integer >= 0" | "number > 0" | "number >= 0" | "boolean" | "text";

type FlagsOfKind<F, K> = { [P in keyof F]: F[P] extends K ? P : never }[keyof F] & string;

/** A benchmark's command line, read by {@link parseBenchArgs}. */
export interface BenchArgs<F extends Record<string, BenchFlagKind>> {
  /** The value of a numeric flag, or undefined when it was not given. */
  number(name: FlagsOfKind<F, `${string} ${string}`>): number | undefined;
  /** Whether a switch was given. */
  on(name: FlagsOfKind<F, "boolean">): boolean;
  /** The value of a text flag, or undefined when it was not given. */
  text(name: FlagsOfKind<F, "text">): string | undefined;
}

const NUMBER_RULES: Record<string, (n: number) => boolean> = {
  "integer > 0": (n) => Number.isSafeInteger(n) && n > 0,
  "integer >= 0": (n) => Number.isSafeInteger(n) && n >= 0,
  "number > 0": (n) => Number.isFinite(n) && n > 0,
  "number >= 0": (n) => Number.isFinite(n) && n >= 0,
};

/** A bad benchmark command line; `npm run bench` prints its message and exits with 2. */
export class BenchUsageError extends Error {
  override name = "BenchUsageError";
}

/**
 * Reads `args` (`--name value`, `--name=value`, `--switch`) by `flags` and checks every value at
 * once. Unknown flags and stray words are refused: a typo would otherwise run another case than
 * the one asked for, and a long benchmark would find out only at its end.
 * @throws BenchUsageError naming the flag and the rule it breaks.
 */
export function parseBenchArgs<const F extends Record<string, BenchFlagKind>>(args: readonly string[], flags: F): BenchArgs<F> {
  const options = Object.fromEntries(Object.entries(flags).map(([name, kind]) => [name, { type: kind === "boolean" ? ("boolean" as const) : ("string" as const) }]));
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: [...args], options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new BenchUsageError(err instanceof Error ? err.message : String(err));
  }
  const numbers = new Map<string, number>();
  for (const [name, kind] of Object.entries(flags)) {
    const raw = values[name];
    const rule = NUMBER_RULES[kind];
    if (rule === undefined || typeof raw !== "string") continue;
    const value = raw.trim() === "" ? Number.NaN : Number(raw);
    if (!rule(value)) throw new BenchUsageError(`--${name}: must be ${kind.startsWith("i") ? "an" : "a"} ${kind}, got '${raw}'`);
    numbers.set(name, value);
  }
  return {
    number: (name) => numbers.get(name),
    on: (name) => values[name] === true,
    text: (name) => {
      const raw = values[name];
      return typeof raw === "string" ? raw : undefined;
    },
  };
}

/** Milliseconds elapsed since `start` (a `process.hrtime.bigint()` reading). */
export function elapsedMs(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** The project's root directory. */
export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** `--import` value that makes a child `node` run TypeScript with the project's loader (scripts/ts). */
export const TS_LOADER = `file://${PROJECT_ROOT}/scripts/ts/register.mjs`;

/** Resident memory of another process, in MiB: now and at its peak (from /proc). */
export function processMemoryMb(pid: number): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  return { rssMb: kb("VmRSS") / 1024, peakMb: kb("VmHWM") / 1024 };
}

/** Peak resident set size of this process so far, in MiB. */
export function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

function round(value: number): number {
  return Math.abs(value) >= 100 ? Math.round(value * 10) / 10 : Math.round(value * 1000) / 1000;
}

/** Prints the results as a table and writes `bench/results/<name>.json`. */
export function report(name: string, results: BenchResult[]): string {
  const rows = results.map((r) => {
    const met = r.target === null ? "" : (r.better === "lower" ? r.value <= r.target : r.value >= r.target) ? "yes" : "NO";
    return [r.case, r.metric, `${round(r.value)} ${r.unit}`, r.target === null ? "-" : `${r.better === "lower" ? "<=" : ">="} ${r.target} ${r.unit}`, met];
  });
  const header = ["case", "metric", "value", "target", "met"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) console.log(line(row));
  const here = dirname(fileURLToPath(import.meta.url));
  const file = join(here, "results", `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ name, results: results.map((r) => ({ ...r, value: round(r.value) })) }, null, 2)}\n`);
  console.log(`\nwrote ${file}`);
  return file;
}

/** Node flags that write a CPU profile of a child into `BENCH_PROFILE_DIR`, when it is set. */
export const PROFILE_FLAGS = process.env.BENCH_PROFILE_DIR ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_PROFILE_DIR] : [];

/**
 * Spawns a TypeScript child under node (the project's TypeScript loader, `nodeFlags` first) and resolves with it and its
 * first stdout line containing `readyLine`; rejects when it exits or stays silent for `timeoutMs`.
 */
export function startChild(args: string[], readyLine: string, timeoutMs: number, nodeFlags: string[] = []): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(process.execPath, [...nodeFlags, "--import", TS_LOADER, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(" ")} not ready within ${timeoutMs} ms`)), timeoutMs);
    let buffer = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      buffer += chunk.toString();
      const line = buffer.split("\n").find((l) => l.includes(readyLine));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve({ child, line });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(" ")} exited with ${code}`));
    });
  });
}

/** SIGTERM, then SIGKILL if the child has not exited after `killAfterMs`; resolves once it has. */
export async function stopChild(child: ChildProcess, killAfterMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  await exited;
  clearTimeout(timer);
}
