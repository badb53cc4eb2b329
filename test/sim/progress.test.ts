/** The progress display of long runs, and what runScenario reports to it. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { simCommand } from "../../sim/cli.ts";
import { formatProgress, ProgressDisplay } from "../../sim/progress.ts";
import { runScenario, type SimProgress, type SimResult } from "../../sim/report.ts";
import type { Scenario } from "../../sim/scenario.ts";

const HOUR = 3_600_000;

describe("formatProgress", () => {
  it("shows the bar, the share done, virtual time in the end's unit, events, their rate and the time left", () => {
    const line = formatProgress({ virtualMs: 3.5 * 24 * HOUR, endMs: 7 * 24 * HOUR, events: 18_200_000 }, 520_000, 10);
    expect(line).toBe("[#####.....]  50%  3.5 of 7 d  18.2M events (35k/s)  8m 40s, about 8m 40s left");
  });

  it("says nothing of time left at the start and at the end, and uses minutes and seconds for short runs", () => {
    expect(formatProgress({ virtualMs: 0, endMs: 10 * 60_000, events: 0 }, 0, 4)).toBe("[....]   0%  0 of 10 min  0 events  0s");
    expect(formatProgress({ virtualMs: 30_000, endMs: 30_000, events: 950 }, 2_000, 4)).toBe("[####] 100%  30 of 30 s  950 events (475/s)  2s");
    expect(formatProgress({ virtualMs: 1.25 * HOUR, endMs: 2 * HOUR, events: 1234 }, 7_300_000, 8)).toContain("1.3 of 2 h  1.2k events (0/s)  2h 01m, about 1h 13m left");
  });
});

describe("ProgressDisplay", () => {
  function display(mode: "bar" | "lines", intervalMs?: number) {
    let now = 0;
    const out: string[] = [];
    const shown = new ProgressDisplay({ write: (t) => void out.push(t), nowMs: () => now, mode, width: 4, ...(intervalMs !== undefined ? { intervalMs } : {}) });
    const at = (ms: number, fraction: number) => {
      now = ms;
      shown.update({ virtualMs: fraction * 1000, endMs: 1000, events: fraction * 100 });
    };
    return { shown, out, at };
  }

  it("redraws one line in place on a terminal, at most every interval, and ends it with the final state", () => {
    const { shown, out, at } = display("bar", 250);
    at(0, 0.1);
    at(100, 0.2); // too soon: kept for later
    at(300, 0.3);
    shown.finish();
    shown.finish();
    at(400, 0.9); // after finish: ignored
    expect(out.map((t) => t.slice(0, 12))).toEqual(["\r[....]  10%", "\r[#...]  30%", "\r[#...]  30%", "\n"]);
    expect(out.slice(0, 3).every((t) => t.endsWith("\x1b[K"))).toBe(true);
  });

  it("prints a whole line now and then into a log, 30 s apart by default", () => {
    const { shown, out, at } = display("lines");
    at(0, 0.1);
    at(29_000, 0.5);
    at(31_000, 0.6);
    shown.finish();
    expect(out.map((t) => t.slice(0, 11))).toEqual(["[....]  10%", "[##..]  60%", "[##..]  60%"]);
    expect(out.every((t) => t.endsWith("\n") && !t.includes("\r"))).toBe(true);
  });

  it("writes nothing when the run never reported", () => {
    const { shown, out } = display("bar");
    shown.finish();
    expect(out).toEqual([]);
  });
});

describe("runScenario's progress", () => {
  const scenario: Scenario = {
    name: "progress",
    seed: 3,
    endSeconds: 300,
    sampleIntervalSeconds: 30,
    cluster: { agentClasses: { std: { count: 2, resources: "cpus:4;mem:8192" } } },
    frameworks: [{ name: "jobs", kind: "tasks", tasks: { count: 40, cpus: 1, mem: 512, durationSeconds: { dist: "exp", meanSeconds: 20 }, arrival: { poisson: { ratePerSecond: 0.2 } } } }],
  };
  /** The result without what the wall clock decides. */
  const comparable = (r: SimResult) => ({ ...r, engine: { events: r.engine.events } });

  it("comes after every sample and at the end, with the events so far, and changes nothing in the result", async () => {
    const seen: SimProgress[] = [];
    const watched = await runScenario(scenario, { onProgress: (p) => void seen.push(p) });
    const plain = await runScenario(scenario);
    expect(seen.map((p) => p.virtualMs)).toEqual(Array.from({ length: 10 }, (_, i) => (i + 1) * 30_000));
    expect(seen.every((p) => p.endMs === 300_000)).toBe(true);
    const events = seen.map((p) => p.events);
    expect(events[0]).toBeGreaterThan(0);
    expect(events.every((e, i) => i === 0 || e > events[i - 1]!)).toBe(true);
    expect(events.at(-1)).toBeLessThanOrEqual(watched.engine.events);
    expect(comparable(watched)).toEqual(comparable(plain));

    // Samples that do not divide the run: the last report is the end.
    const uneven: number[] = [];
    await runScenario({ ...scenario, sampleIntervalSeconds: 70 }, { onProgress: (p) => void uneven.push(p.virtualMs) });
    expect(uneven).toEqual([70_000, 140_000, 210_000, 280_000, 300_000]);
  });
});

describe("corral sim run", () => {
  it("shows progress on stderr unless --no-progress is given", async () => {
    const dir = mkdtempSync(join(tmpdir(), "corral-sim-progress-"));
    const file = join(dir, "s.json");
    writeFileSync(file, JSON.stringify({ name: "p", seed: 1, endSeconds: 60, cluster: { agentClasses: { std: { count: 1, resources: "cpus:2;mem:2048" } } }, frameworks: [{ name: "idle", kind: "decliner" }] }));
    const written: string[] = [];
    const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);
    try {
      expect(await simCommand(["run", file])).toBe(0);
      const shown = written.join("");
      expect(shown).toContain("100%  60 of 60 s");
      written.length = 0;
      expect(await simCommand(["run", file, "--no-progress"])).toBe(0);
      expect(written.join("")).not.toContain("%");
    } finally {
      err.mockRestore();
      log.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
