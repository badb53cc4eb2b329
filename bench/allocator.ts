/**
 * The allocator benchmark, in the shape of Mesos's own: agents of
 * `cpus:2;mem:1024;disk:4096;ports:[31000-32000]`, all free, one full allocation run, for
 * {1k, 10k, 50k} agents x {100, 1k, 6k} frameworks, with all frameworks in one role and again over
 * 20 weighted roles with quota; plus the incremental case (one agent's offer recovered, then an
 * allocation run for that agent only). Every case runs in its own process so its peak RSS is its own.
 *
 * Options: `--quick` (only 1k and 10k agents), `--reps N` (full runs per case).
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Resources } from "../sdk/resources.ts";
import { SeededRng } from "../sdk/rng.ts";
import { createAllocator, type HierarchicalAllocator, type OfferPlan } from "../master/allocator/index.ts";
import { elapsedMs, parseBenchArgs, peakRssMb, percentile, TS_LOADER, type BenchResult } from "./lib.ts";

const AGENT_RESOURCES = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]";
const ROLE_COUNT = 20;
/** Cases over this estimated time are skipped, as the issue allows. */
const CASE_BUDGET_MS = 180_000;

interface CaseSpec {
  agents: number;
  frameworks: number;
  layout: "one-role" | "20-roles-quota";
  reps: number;
}

interface CaseOutcome {
  fullRunMs: number[];
  incrementalMs: number[];
  offersPerRun: number;
  setupMs: number;
  peakRssMb: number;
}

function targetFor(spec: CaseSpec): number | null {
  if (spec.agents === 10_000 && spec.frameworks === 1_000) return 50;
  if (spec.agents === 50_000 && spec.frameworks === 6_000) return 500;
  return null;
}

function build(spec: CaseSpec): HierarchicalAllocator {
  const allocator = createAllocator({ rng: new SeededRng(42), allocationIntervalMs: 1000 });
  const total = Resources.parse(AGENT_RESOURCES);
  if (spec.layout === "20-roles-quota") {
    const clusterCpus = spec.agents * 2;
    for (let i = 0; i < ROLE_COUNT; i++) {
      const role = `role${i}`;
      allocator.setWeight(role, 1 + (i % 4));
      // Guarantees worth half the cluster in all, so stage 1 and headroom are exercised.
      const guarantee = Math.floor(clusterCpus / (2 * ROLE_COUNT));
      allocator.setQuota(role, { guarantees: { cpus: guarantee }, limits: { cpus: guarantee * 4 } });
    }
  }
  for (let f = 0; f < spec.frameworks; f++) {
    const role = spec.layout === "one-role" ? "default" : `role${f % ROLE_COUNT}`;
    allocator.addFramework(`framework-${f}`, { roles: [role] });
  }
  for (let a = 0; a < spec.agents; a++) allocator.addAgent(`agent-${a}`, { total });
  return allocator;
}

function recoverAll(allocator: HierarchicalAllocator, offers: OfferPlan[]): void {
  for (const o of offers) allocator.recoverResources(o.frameworkId, o.agentId, o.role, o.resources);
}

function runCase(spec: CaseSpec): CaseOutcome {
  const setupStart = process.hrtime.bigint();
  const allocator = build(spec);
  const setupMs = elapsedMs(setupStart);
  const fullRunMs: number[] = [];
  let nowMs = 0;
  let offers: OfferPlan[] = [];
  for (let rep = 0; rep < spec.reps; rep++) {
    if (rep > 0) recoverAll(allocator, offers);
    nowMs += 1000;
    const start = process.hrtime.bigint();
    offers = allocator.allocate(nowMs);
    fullRunMs.push(elapsedMs(start));
  }
  // Incremental: one agent's offer comes back (declined, no filter) and only it is allocated.
  const incrementalMs: number[] = [];
  const byAgent = new Map(offers.map((o) => [o.agentId, o]));
  const agentIds = [...byAgent.keys()];
  const rounds = Math.min(2_000, agentIds.length);
  for (let i = 0; i < rounds; i++) {
    const agentId = agentIds[i]!;
    const offer = byAgent.get(agentId)!;
    allocator.recoverResources(offer.frameworkId, offer.agentId, offer.role, offer.resources);
    nowMs += 1;
    const start = process.hrtime.bigint();
    const next = allocator.allocate(nowMs, [agentId]);
    incrementalMs.push(elapsedMs(start));
    if (next[0]) byAgent.set(agentId, next[0]);
  }
  return { fullRunMs, incrementalMs, offersPerRun: offers.length, setupMs, peakRssMb: peakRssMb() };
}

function caseName(spec: CaseSpec): string {
  return `${spec.agents} agents x ${spec.frameworks} frameworks, ${spec.layout}`;
}

/** Runs every case in a child process and collects the figures. */
export async function runAllocatorBench(args: string[]): Promise<BenchResult[]> {
  const flags = parseBenchArgs(args, { quick: "boolean", reps: "integer > 0" });
  const quick = flags.on("quick");
  const reps = flags.number("reps");
  const agentCounts = quick ? [1_000, 10_000] : [1_000, 10_000, 50_000];
  const results: BenchResult[] = [];
  for (const layout of ["one-role", "20-roles-quota"] as const) {
    for (const agents of agentCounts) {
      for (const frameworks of [100, 1_000, 6_000]) {
        const spec: CaseSpec = { agents, frameworks, layout, reps: reps ?? (agents >= 50_000 ? 7 : 15) };
        const outcome = runInChild(spec);
        if (outcome === null) {
          console.log(`skipped ${caseName(spec)}: over the ${CASE_BUDGET_MS / 1000} s budget`);
          continue;
        }
        const name = caseName(spec);
        console.log(`${name}: median ${percentile(outcome.fullRunMs, 0.5).toFixed(2)} ms, ${outcome.offersPerRun} offers, setup ${outcome.setupMs.toFixed(0)} ms`);
        results.push(
          { case: name, metric: "full run median", unit: "ms", value: percentile(outcome.fullRunMs, 0.5), target: targetFor(spec), better: "lower" },
          { case: name, metric: "full run p99", unit: "ms", value: percentile(outcome.fullRunMs, 0.99), target: null, better: "lower" },
          { case: name, metric: "incremental median", unit: "ms", value: percentile(outcome.incrementalMs, 0.5), target: 1, better: "lower" },
          { case: name, metric: "incremental p99", unit: "ms", value: percentile(outcome.incrementalMs, 0.99), target: null, better: "lower" },
          { case: name, metric: "peak RSS", unit: "MiB", value: outcome.peakRssMb, target: null, better: "lower" },
        );
      }
    }
  }
  return results;
}

function runInChild(spec: CaseSpec): CaseOutcome | null {
  const self = fileURLToPath(import.meta.url);
  const child = spawnSync(process.execPath, ["--import", TS_LOADER, self, "--child", JSON.stringify(spec)], {
    encoding: "utf8",
    timeout: CASE_BUDGET_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (child.error || child.status !== 0) {
    if (child.signal === "SIGTERM" || (child.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT") return null;
    throw new Error(`allocator bench case ${caseName(spec)} failed: ${child.stderr || child.error}`);
  }
  const lastLine = child.stdout.trim().split("\n").pop()!;
  return JSON.parse(lastLine) as CaseOutcome;
}

if (process.argv[2] === "--child") {
  const spec = JSON.parse(process.argv[3]!) as CaseSpec;
  console.log(JSON.stringify(runCase(spec)));
}
