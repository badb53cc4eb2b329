/**
 * `corral sim ...`: the simulator's command line (wired into `cli/corral.ts` by the lead).
 *
 * ```
 * corral sim run scenario.json [--events out.jsonl] [--json out.json] [--log-level info]
 * corral sim check [--seeds 1..20] [--agents 6] [--seconds 600]
 * ```
 *
 * @module
 */

import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { runCheck, parseSeeds } from "./check.ts";
import { formatSummary, runScenario } from "./report.ts";
import { ScenarioError } from "./scenario.ts";
import type { SimLogEvent } from "./cluster.ts";

/** Usage text of `corral sim`. */
export const SIM_USAGE = `usage:
  corral sim run <scenario.json> [--events out.jsonl] [--json out.json] [--log-level <pino level>]
      runs a scenario on the real master, agents and SDK frameworks over virtual time and prints a summary
  corral sim check [--seeds 1..N] [--agents N] [--seconds S]
      seeded fault injection (agent crashes and restarts, message loss and delay, partitions), checking the
      allocator's invariants and "no resource in two outstanding offers" after every event`;

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
  const logLevel = takeFlag(args, "--log-level");
  const file = args.shift();
  if (file === undefined || args.length > 0) throw new Error(`expected one scenario file${args.length ? `, got extra ${args.join(" ")}` : ""}\n\n${SIM_USAGE}`);
  let input: unknown;
  try {
    input = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const sink = eventsPath === undefined ? undefined : new JsonlFile(eventsPath);
  try {
    const result = await runScenario(input, { ...(sink ? { eventLog: sink.write } : {}), ...(logLevel ? { logLevel } : {}) });
    console.log(formatSummary(result));
    if (jsonPath !== undefined) {
      writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
      console.log(`wrote ${jsonPath}`);
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
    sink?.close();
  }
}

async function checkSub(args: string[]): Promise<number> {
  const seeds = parseSeeds(takeFlag(args, "--seeds") ?? "1..10");
  const agents = Number(takeFlag(args, "--agents") ?? 6);
  const seconds = Number(takeFlag(args, "--seconds") ?? 600);
  if (args.length > 0) throw new Error(`unexpected ${args.join(" ")}\n\n${SIM_USAGE}`);
  if (!Number.isInteger(agents) || agents < 1) throw new Error("--agents: must be an integer >= 1");
  if (!(seconds > 0)) throw new Error("--seconds: must be > 0");
  let failures = 0;
  for (const seed of seeds) {
    const outcome = await runCheck(seed, { agents, seconds });
    if (outcome.ok) {
      console.log(`seed ${seed}: ok (${outcome.events} events, ${outcome.launched} launched, ${outcome.faults} faults)`);
      continue;
    }
    failures++;
    console.log(`seed ${seed}: FAILED at t=${outcome.atMs} ms: ${outcome.problem}`);
    console.log(`  reproduce: corral sim check --seeds ${seed} --agents ${agents} --seconds ${seconds}`);
  }
  console.log(failures === 0 ? `all ${seeds.length} seeds passed` : `${failures} of ${seeds.length} seeds failed`);
  return failures === 0 ? 0 : 1;
}
