import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { faultScenario, invariantProblems, parseSeeds, runCheck } from "../../sim/check.ts";
import { SimCluster } from "../../sim/cluster.ts";
import { simCommand } from "../../sim/cli.ts";
import { validateScenario } from "../../sim/scenario.ts";

const dir = mkdtempSync(join(tmpdir(), "corral-sim-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function quiet() {
  const out: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  const err = vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  return { out, restore: () => (log.mockRestore(), err.mockRestore()) };
}

describe("corral sim", () => {
  it("run writes the JSON result and the JSONL event log and prints a summary", async () => {
    const scenario = {
      seed: 3,
      endSeconds: 60,
      cluster: { agentClasses: { std: { count: 2, resources: "cpus:2;mem:2048" } } },
      frameworks: [{ name: "f", kind: "tasks", tasks: { count: 5, cpus: 1, mem: 256, durationSeconds: 5, arrival: { at: 1 } } }],
    };
    const file = join(dir, "s.json");
    writeFileSync(file, JSON.stringify(scenario));
    const io = quiet();
    const code = await simCommand(["run", file, "--events", join(dir, "e.jsonl"), "--json", join(dir, "r.json")]);
    io.restore();
    expect(code).toBe(0);
    expect(io.out.join("\n")).toMatch(/tasks\s+submitted 5, launched 5, completed 5/);
    const result = JSON.parse(readFileSync(join(dir, "r.json"), "utf8"));
    expect(result.tasks.completed).toBe(5);
    const lines = readFileSync(join(dir, "e.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === "launch")).toHaveLength(5);
    expect(lines.every((l) => typeof l.t === "number")).toBe(true);
  });

  it("run exits 2 with the field named for a bad scenario, and for usage errors", async () => {
    const file = join(dir, "bad.json");
    writeFileSync(file, JSON.stringify({ seed: 1, endSeconds: 0, cluster: { agentClasses: {} }, frameworks: [] }));
    const io = quiet();
    expect(await simCommand(["run", file])).toBe(2);
    expect(await simCommand(["run"])).toBe(2);
    expect(await simCommand(["bogus"])).toBe(2);
    expect(await simCommand(["check", "--seeds", "x"])).toBe(2);
    io.restore();
    const text = io.out.join("\n");
    expect(text).toContain("scenario.endSeconds: must be > 0");
    expect(text).toContain("scenario.frameworks: must not be empty");
    expect(text).toContain("--seeds: must be N, A..B or A,B,C");
  });
});

describe("fault-injection check", () => {
  it("parses seed lists", () => {
    expect(parseSeeds("3")).toEqual([3]);
    expect(parseSeeds("2..5")).toEqual([2, 3, 4, 5]);
    expect(parseSeeds("1,9")).toEqual([1, 9]);
    expect(() => parseSeeds("5..2")).toThrow();
  });

  it("draws valid scenarios with faults, the same for the same seed", () => {
    const a = faultScenario(4);
    expect(() => validateScenario(a)).not.toThrow();
    expect(faultScenario(4)).toEqual(a);
    expect(faultScenario(5)).not.toEqual(a);
    expect((a.events ?? []).length).toBeGreaterThanOrEqual(2);
  });

  it("passes seeded runs with invariants checked after every event", async () => {
    for (const seed of [1, 2]) {
      const outcome = await runCheck(seed, { agents: 4, seconds: 150 });
      expect(outcome).toMatchObject({ ok: true, seed });
      if (outcome.ok) expect(outcome.events).toBeGreaterThan(500);
    }
  });

  it("the offer check flags an agent whose resources are in two offers", async () => {
    const cluster = new SimCluster(validateScenario(faultScenario(1, { agents: 2, seconds: 5 })));
    expect(invariantProblems(cluster)).toEqual([]);
    // A forged view: 3 cpus offered on an agent with 2 allocated is the double-offer symptom.
    const core = cluster.master.core;
    const fake = Object.create(core) as typeof core;
    Object.defineProperty(fake, "sizes", { value: () => ({ agents: 1, unreachableAgents: 0, frameworks: 1, offers: 2 }) });
    Object.defineProperty(fake, "state", {
      value: () => ({
        agents: [{ id: "S1", resources: { cpus: 2 }, offered: { cpus: 3 }, used: { cpus: -1 } }],
        frameworks: [{ offers: [{ id: "O1" }] }, { offers: [{ id: "O1" }] }],
      }),
    });
    const problems = invariantProblems({ master: { core: fake } } as unknown as SimCluster);
    expect(problems).toEqual([
      "offer O1 is outstanding for two frameworks",
      "agent S1: 3 cpus offered but it has 2",
      "agent S1: cpus is in two outstanding offers (offered exceeds allocated)",
    ]);
  });
});
