/**
 * Seeded fault injection (`corral sim check --seeds 1..N`): each seed draws a random small world
 * and random faults (agent crashes and restarts, message loss, duplication and delay,
 * partitions), runs it on the real shells, and checks after EVERY engine event that
 *
 * - the allocator's own invariants hold (`allocator.checkInvariants()`), and
 * - no resource is in two outstanding offers: per agent, what is offered is contained in what
 *   is allocated (offers count as allocated), so the same resources were not offered twice.
 *
 * A failure names the seed, the virtual time and the problem; the same seed reproduces it.
 *
 * @module
 */

import { SeededRng } from "../sdk/rng.ts";
import type { SimCluster } from "./cluster.ts";
import { runScenario } from "./report.ts";
import type { Scenario, ScenarioEvent } from "./scenario.ts";

/** What one seed's check found. */
export type CheckOutcome =
  | { ok: true; seed: number; events: number; launched: number; faults: number }
  | { ok: false; seed: number; atMs: number; problem: string };

/** Options of {@link runCheck}. */
export interface CheckOptions {
  /** Agents in the world. @default 6 */
  agents?: number;
  /** Simulated seconds. @default 600 */
  seconds?: number;
}

class InvariantViolation extends Error {}

/** Parses `7`, `1..20` or `1,5,9` into seeds. @throws on anything else */
export function parseSeeds(text: string): number[] {
  const range = /^(\d+)\.\.(\d+)$/.exec(text);
  if (range) {
    const from = Number(range[1]);
    const to = Number(range[2]);
    if (to < from || to - from > 100_000) throw new Error(`--seeds: bad range ${text}`);
    return Array.from({ length: to - from + 1 }, (_, i) => from + i);
  }
  if (/^\d+(,\d+)*$/.test(text)) return text.split(",").map(Number);
  throw new Error(`--seeds: must be N, A..B or A,B,C, got ${JSON.stringify(text)}`);
}

/** The random world and faults of `seed` (a valid scenario). */
export function faultScenario(seed: number, options: CheckOptions = {}): Scenario {
  const rng = new SeededRng(`check:${seed}`);
  const agents = options.agents ?? 6;
  const seconds = options.seconds ?? 600;
  const half = Math.max(1, Math.floor(agents / 2));
  const events: ScenarioEvent[] = [];
  const faults = 2 + rng.int(5);
  for (let i = 0; i < faults; i++) {
    const atSeconds = Math.floor(rng.next() * seconds * 0.8);
    const cls = rng.next() < 0.5 ? "a" : "b";
    const count = 1 + rng.int(Math.max(1, Math.min(2, half)));
    const kind = rng.int(3);
    if (kind === 0) events.push({ atSeconds, type: "fail-agents", class: cls, count, downSeconds: 5 + rng.int(120) });
    else if (kind === 1) events.push({ atSeconds, type: "partition-agents", class: cls, count, durationSeconds: 5 + rng.int(120) });
    else events.push({ atSeconds, type: "add-agents", class: cls, count: 1 });
  }
  return {
    name: `check-${seed}`,
    seed,
    endSeconds: seconds,
    sampleIntervalSeconds: seconds,
    cluster: {
      agentClasses: {
        a: { count: half, resources: "cpus:4;mem:8192", mtbfSeconds: 200 + rng.int(1000), mttrSeconds: 10 + rng.int(100) },
        b: { count: Math.max(1, agents - half), resources: "cpus:2;mem:4096" },
      },
      roleWeights: { r1: 1 + rng.int(3), r2: 1 },
      allocationIntervalMs: 200 + rng.int(1000),
      ...(rng.next() < 0.5 ? { offerTimeoutMs: 2000 + rng.int(20_000) } : {}),
    },
    network: {
      latency: { dist: "exp", minMs: 0.1, meanMs: 1 + rng.next() * 50 },
      lossRate: rng.next() * 0.02,
      duplicateRate: rng.next() * 0.01,
    },
    frameworks: [
      {
        name: "t1",
        kind: "tasks",
        role: "r1",
        refuseSeconds: 1 + rng.int(5),
        tasks: { count: 100, cpus: 0.5, mem: 256, durationSeconds: { dist: "exp", meanSeconds: 20 }, arrival: { poisson: { ratePerSecond: 0.5 } } },
      },
      {
        name: "t2",
        kind: "greedy",
        role: "r2",
        refuseSeconds: 2,
        startSeconds: rng.int(60),
        tasks: { count: 30, cpus: 1, mem: 512, durationSeconds: 30, arrival: { at: 0 } },
      },
      { name: "d", kind: "decliner", role: "r1", refuseSeconds: 1 },
    ],
    events,
  };
}

/** The invariant problems of the cluster right now (empty when all hold). */
export function invariantProblems(cluster: SimCluster): string[] {
  const core = cluster.master.core;
  const problems = core.allocator.checkInvariants();
  const sizes = core.sizes();
  if (sizes.offers === 0) return problems;
  let state;
  try {
    state = core.state();
  } catch (err) {
    // state() subtracts offered from allocated per agent: it throws when they overlap wrongly.
    return [...problems, `offered resources are not contained in the allocation: ${err instanceof Error ? err.message : String(err)}`];
  }
  const seen = new Set<string>();
  for (const fw of state.frameworks) {
    for (const offer of fw.offers as Array<{ id: string }>) {
      if (seen.has(offer.id)) problems.push(`offer ${offer.id} is outstanding for two frameworks`);
      seen.add(offer.id);
    }
  }
  for (const agent of state.agents) {
    const resources = agent.resources as Record<string, number>;
    const offered = agent.offered as Record<string, number>;
    const used = agent.used as Record<string, number>;
    for (const [name, value] of Object.entries(offered)) {
      if (value > (resources[name] ?? 0) + 1e-6) problems.push(`agent ${String(agent.id)}: ${value} ${name} offered but it has ${resources[name] ?? 0}`);
      if ((used[name] ?? 0) < -1e-6) problems.push(`agent ${String(agent.id)}: ${name} is in two outstanding offers (offered exceeds allocated)`);
    }
  }
  return problems;
}

/** Runs one seed with invariants checked after every event. */
export async function runCheck(seed: number, options: CheckOptions = {}): Promise<CheckOutcome> {
  const scenario = faultScenario(seed, options);
  let atMs = 0;
  try {
    const result = await runScenario(scenario, {
      afterEvent: (cluster) => {
        const problems = invariantProblems(cluster);
        if (problems.length > 0) {
          atMs = cluster.elapsedMs();
          throw new InvariantViolation(problems.join("; "));
        }
      },
    });
    return { ok: true, seed, events: result.engine.events, launched: result.tasks.launched, faults: (scenario.events ?? []).length + result.agents.failures };
  } catch (err) {
    if (err instanceof InvariantViolation) return { ok: false, seed, atMs: Math.round(atMs), problem: err.message };
    return { ok: false, seed, atMs: Math.round(atMs), problem: `the run threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}` };
  }
}
