import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterAll, describe, expect, it, vi } from "vitest";
import { simCommand } from "../../sim/cli.ts";
import { runScenario } from "../../sim/report.ts";
import { SimCluster, type SimLogEvent } from "../../sim/cluster.ts";
import { validateScenario } from "../../sim/scenario.ts";
import { splitCsvLine, TraceError } from "../../sim/traces/csv.ts";
import { SAMPLES_DIR, sampleFiles } from "../../sim/traces/samples/generate.ts";
import { loadTrace } from "../../sim/traces/trace.ts";
import type { BatchSimFramework } from "../../sim/workloads/batch.ts";
import type { TraceSpec } from "../../sim/workloads/spec.ts";

const GOOGLE: TraceSpec = {
  format: "google-2011",
  taskEvents: "sim/traces/samples/google-2011/task_events/part-00000-of-00001.csv.gz",
  machineEvents: "sim/traces/samples/google-2011/machine_events/part-00000-of-00001.csv",
  machineShape: "cpus:16;mem:32768",
};
const ALIBABA: TraceSpec = {
  format: "alibaba-2018",
  batchTask: "sim/traces/samples/alibaba-2018/batch_task.csv",
  machineMeta: "sim/traces/samples/alibaba-2018/machine_meta.csv",
  machineShape: "cpus:96;mem:131072",
};

const scratch = mkdtempSync(join(tmpdir(), "corral-trace-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function problemsOf(spec: TraceSpec): string[] {
  try {
    loadTrace(spec);
  } catch (err) {
    expect(err).toBeInstanceOf(TraceError);
    return (err as TraceError).problems;
  }
  return [];
}

/** Runs a shipped sample scenario, probing the number of registered agents at the given seconds. */
async function replay(file: string, probeSeconds: number[]) {
  const scenario = validateScenario(JSON.parse(readFileSync(join(SAMPLES_DIR, file), "utf8")), { baseDir: SAMPLES_DIR });
  const events: SimLogEvent[] = [];
  const cluster = new SimCluster(scenario, { eventLog: (e) => void events.push(e), baseDir: SAMPLES_DIR });
  const agents: Record<number, number> = {};
  for (const s of probeSeconds) cluster.engine.after(s * 1000, () => void (agents[s] = cluster.master.core.sizes().agents), { settle: false });
  await cluster.run();
  const fw = [...cluster.frameworks.values()][0] as BatchSimFramework;
  const launches = events.filter((e) => e.type === "launch");
  const launch = (task: string) => launches.find((e) => e.task === task);
  const ended = (job: string) => events.find((e) => e.type === "batch-job-ended" && e.job === job);
  await cluster.shutdown();
  return { cluster, fw, events, agents, launches, launch, ended };
}

describe("trace samples", () => {
  it("are what the generator writes (the samples are made up, not copied)", () => {
    for (const [path, text] of Object.entries(sampleFiles())) {
      const bytes = readFileSync(join(SAMPLES_DIR, path));
      expect(path.endsWith(".gz") ? gunzipSync(bytes).toString("utf8") : bytes.toString("utf8")).toBe(text);
    }
  });

  it("validate as scenarios", () => {
    for (const file of ["google-2011.json", "alibaba-2018.json"]) {
      expect(() => validateScenario(JSON.parse(readFileSync(join(SAMPLES_DIR, file), "utf8")), { baseDir: SAMPLES_DIR })).not.toThrow();
    }
  });
});

describe("Google clusterdata-2011 reader", () => {
  it("reads task_events (gzip) and machine_events into jobs, attempts and machines, scaled by the machine shape", () => {
    const trace = loadTrace(GOOGLE, { untilMs: 400_000 });
    expect(trace.stats).toEqual({
      rows: 135,
      jobs: 19,
      tasks: 43,
      attempts: 44,
      machines: 4,
      skipped: {
        "task events after the run's end": 4,
        "task events after the trace window": 1,
        "tasks never scheduled in the trace": 1,
        "machines added without a capacity": 1,
        "machine UPDATE events (capacity changes are not replayed)": 1,
      },
    });
    const job = (id: string) => trace.jobs.find((j) => j.id === id)!;
    // Running since before the window: submitted at the start, 60 s runs.
    expect(job("6000000001")).toMatchObject({ submitMs: 0, tasks: [{ attempts: [{ durationMs: 60_000, ok: true, end: "FINISH" }] }, {}, {}] });
    expect(job("6000000002").tasks[0]).toMatchObject({ submitMs: 10_000, cpus: 12, mem: 1638.4, attempts: [{ durationMs: 100_000, ok: true }] });
    expect(job("6000000004").tasks[2]!.attempts).toEqual([
      { durationMs: 30_000, ok: false, end: "FAIL" },
      { durationMs: 40_000, ok: true, end: "FINISH" },
    ]);
    expect(job("6000000005").tasks[1]!.attempts).toEqual([{ durationMs: 10_000, ok: false, end: "KILL" }]);
    // Its end lies after the run: replayed as running until the run ends.
    expect(job("6000000006").tasks[0]!.attempts).toEqual([{ ok: true, end: "RUNNING" }]);
    // UPDATE_PENDING raised the request before it ran.
    expect(job("6000000008").tasks[0]!.cpus).toBe(0.64);
    expect(trace.jobs.some((j) => j.id === "6000000007")).toBe(false);
    expect(trace.machines).toEqual([
      { atMs: 0, type: "add", machineId: "101", cpus: 8, mem: 16384 },
      { atMs: 0, type: "add", machineId: "102", cpus: 8, mem: 16384 },
      { atMs: 0, type: "add", machineId: "103", cpus: 16, mem: 32768 },
      { atMs: 120_000, type: "add", machineId: "104", cpus: 8, mem: 8192 },
      { atMs: 300_000, type: "remove", machineId: "102" },
    ]);
  });

  it("names the file, line, column and rule of bad rows", () => {
    const tasks = join(scratch, "task_events.csv");
    writeFileSync(tasks, ["0,,1,0,,0,u,0,0,0.1,0.1,0,0", "5,,1,0,,9,u,0,0,0.1,0.1,0,0", "6,,1,x,,1,u,0,0,lots,0.1,0,0", "7,,1,0,,1,u,0,0,0.1,0.1,0", '8,,1,0,,1,"u,0,0,0.1,0.1,0,0'].join("\n"));
    expect(problemsOf({ ...GOOGLE, taskEvents: tasks, machineEvents: undefined })).toEqual([
      `trace: ${tasks}:2: column 6 (event type): must be <= 8, got "9"`,
      `trace: ${tasks}:3: column 4 (task index): must be a number, got "x"`,
      `trace: ${tasks}:3: column 10 (CPU request): must be a number, got "lots"`,
      `trace: ${tasks}:4: task_events rows have 13 columns, this one has 12`,
      `trace: ${tasks}:5: a quoted field is not closed`,
    ]);
    expect(problemsOf({ ...GOOGLE, machineEvents: undefined, maxTasks: 10 })[0]).toMatch(/the trace holds more than maxTasks \(10\) tasks/);
  });

  it("refuses job IDs that pass as integers but are not written in digits (they would become invalid batch job ids)", () => {
    const tasks = join(scratch, "odd_job_ids.csv");
    writeFileSync(tasks, ["700000000,,1.0,0,,0,u,0,0,0.1,0.1,0,0", "700000000,,+5,0,,0,u,0,0,0.1,0.1,0,0", "700000000,,1e3,0,,0,u,0,0,0.1,0.1,0,0", "700000000,, 12 ,0,,0,u,0,0,0.1,0.1,0,0"].join("\n"));
    expect(problemsOf({ ...GOOGLE, taskEvents: tasks, machineEvents: undefined })).toEqual([
      `trace: ${tasks}:1: column 3 (job ID): must be written in digits only, got "1.0"`,
      `trace: ${tasks}:2: column 3 (job ID): must be written in digits only, got "+5"`,
      `trace: ${tasks}:3: column 3 (job ID): must be written in digits only, got "1e3"`,
    ]);
  });

  it("reads a job with more tasks than a function call takes arguments (150,000, within the default maxTasks)", () => {
    const tasks = join(scratch, "big_job_task_events.csv");
    const rows: string[] = [];
    for (let i = 0; i < 150_000; i++) rows.push(`${700_000_000 + i},,7,${i},,0,u,0,0,0.01,0.01,0,0`);
    writeFileSync(tasks, `${rows.join("\n")}\n${rows.map((r) => r.replace(",,0,u,", ",m1,1,u,")).join("\n")}\n`);
    const trace = loadTrace({ ...GOOGLE, taskEvents: tasks, machineEvents: undefined });
    expect(trace.stats).toMatchObject({ jobs: 1, tasks: 150_000 });
    expect(trace.jobs[0]!.submitMs).toBe(100_000);
  });
});

describe("Google clusterdata-2011 reader on a window with nothing in it", () => {
  it("refuses task_events whose rows all fall after the run's end, naming the files", () => {
    const part = join(scratch, "late-task-events.csv");
    // SUBMIT and SCHEDULE at 1000 s of trace time: 400 s after the start (origin 600 s), past a 300 s run.
    writeFileSync(part, ["1000000000,,6,0,,0,u,0,0,0.1,0.1,0,0", "1000000000,,6,0,m1,1,u,0,0,0.1,0.1,0,0"].join("\n"));
    let problems: string[] = [];
    try {
      loadTrace({ ...GOOGLE, taskEvents: [part], machineEvents: undefined }, { untilMs: 300_000 });
    } catch (err) {
      problems = (err as TraceError).problems;
    }
    expect(problems).toEqual([`trace: ${part}: no task to replay before the run's end (2 rows read; skipped: 2 task events after the run's end); a trace replay needs at least one`]);
  });
});

describe("Alibaba cluster-trace-v2018 reader", () => {
  it("reads batch_task and machine_meta: instances as tasks, start/end times, cpus relative to the largest machine", () => {
    const trace = loadTrace(ALIBABA, { untilMs: 400_000 });
    expect(trace.stats).toEqual({
      rows: 30,
      jobs: 15,
      tasks: 72,
      attempts: 72,
      machines: 4,
      skipped: {
        "later machine_meta rows of a machine": 1,
        "machines without a valid capacity": 1,
        "tasks in state Waiting": 3,
        "tasks without a start time": 1,
        "tasks ending before they start (or never)": 1,
        "tasks without a resource plan": 1,
      },
    });
    const job = (id: string) => trace.jobs.find((j) => j.id === id)!;
    const j1 = job("j_1");
    expect(j1.submitMs).toBe(10_000);
    expect(j1.tasks.map((t) => [t.submitMs, t.cpus, t.mem, t.attempts[0]!.durationMs])).toEqual([
      ...new Array(4).fill([10_000, 1, 655.36, 60_000]),
      ...new Array(2).fill([75_000, 2, 1310.72, 30_000]),
    ]);
    expect(job("j_2").tasks[0]!.attempts).toEqual([{ durationMs: 30_000, ok: false, end: "Failed" }]);
    expect(job("j_4").tasks.map((t) => t.attempts)).toEqual([[{ ok: true, end: "RUNNING" }], [{ ok: true, end: "RUNNING" }]]);
    expect(trace.machines).toEqual([
      { atMs: 0, type: "add", machineId: "m_1", cpus: 96, mem: 131072 },
      { atMs: 0, type: "add", machineId: "m_2", cpus: 96, mem: 131072 },
      { atMs: 0, type: "add", machineId: "m_3", cpus: 64, mem: 65536 },
      { atMs: 100_000, type: "add", machineId: "m_4", cpus: 96, mem: 131072 },
    ]);
    // A smaller shape scales cpus by shape / largest cpu_num and memory by the shape.
    const half = loadTrace({ ...ALIBABA, machineShape: "cpus:48;mem:65536" });
    expect(half.machines[2]).toMatchObject({ cpus: 32, mem: 32768 });
    expect(half.jobs.find((j) => j.id === "j_1")!.tasks[0]).toMatchObject({ cpus: 0.5, mem: 327.68 });
  });

  it("names the file, line, column and rule of bad rows", () => {
    const tasks = join(scratch, "batch_task.csv");
    writeFileSync(tasks, ["M1,1,j_1,1,Terminated,1,2,100,1", "M1,-1,j_2,1,Terminated,1,2,100,1", "M1,1,j.3,1,Terminated,1,2,100,1", "M1,1,j_4,1,Terminated,soon,2,100,1"].join("\n"));
    expect(problemsOf({ ...ALIBABA, batchTask: tasks, machineMeta: undefined })).toEqual([
      `trace: ${tasks}:2: column 2 (instance_num): must be >= 0, got "-1"`,
      `trace: ${tasks}:3: column 3 (job_name): must be letters, digits, '_' or '-', got "j.3"`,
      `trace: ${tasks}:4: column 6 (start_time): must be a number, got "soon"`,
    ]);
  });

  it("keeps a machine's valid capacity when a later row with an earlier time has none", () => {
    const meta = join(scratch, "redated_machine_meta.csv");
    // m_1's second row is dated earlier (it becomes the joining time) but records no capacity.
    writeFileSync(meta, ["m_1,50,1,1,96,100,USING", "m_1,10,1,1,0,0,USING", "m_2,0,1,1,48,50,USING"].join("\n"));
    const trace = loadTrace({ ...ALIBABA, machineMeta: meta });
    expect(trace.machines).toEqual([
      { atMs: 0, type: "add", machineId: "m_2", cpus: 48, mem: 65536 },
      { atMs: 50_000, type: "add", machineId: "m_1", cpus: 96, mem: 131072 },
    ]);
    expect(trace.stats.skipped["machines without a valid capacity"]).toBe(1);
  });

  it("refuses a trace with nothing to replay (an empty file, or every row skipped), naming the files", () => {
    const empty = join(scratch, "empty_batch_task.csv");
    writeFileSync(empty, "");
    expect(problemsOf({ ...ALIBABA, batchTask: empty })).toEqual([
      `trace: ${empty}: no task to replay before the run's end (0 rows read); a trace replay needs at least one`,
    ]);
    const waiting = join(scratch, "waiting_batch_task.csv");
    writeFileSync(waiting, ["M1,2,j_1,1,Waiting,1,2,100,1", "M2,1,j_2,1,Terminated,0,2,100,1"].join("\n"));
    expect(problemsOf({ ...ALIBABA, batchTask: waiting })).toEqual([
      `trace: ${waiting}: no task to replay before the run's end (2 rows read; skipped: 2 tasks in state Waiting, 1 tasks without a start time); a trace replay needs at least one`,
    ]);
  });

  it("reads more machines than a function call takes arguments (150,000, with maxMachines raised)", () => {
    const meta = join(scratch, "many_machine_meta.csv");
    const rows: string[] = [];
    for (let i = 0; i < 150_000; i++) rows.push(`m_${i},0,1,1,${i === 7 ? 96 : 64},50,USING`);
    writeFileSync(meta, `${rows.join("\n")}\n`);
    const trace = loadTrace({ ...ALIBABA, machineMeta: meta, maxMachines: 200_000 });
    expect(trace.stats.machines).toBe(150_000);
    // cpus scale by the largest cpu_num: that machine gets the shape's 96, the others 64.
    expect(trace.machines[7]).toMatchObject({ machineId: "m_7", cpus: 96 });
    expect(trace.machines[0]).toMatchObject({ machineId: "m_0", cpus: 64 });
  });
});

describe("splitCsvLine", () => {
  it("splits plain and quoted fields", () => {
    expect(splitCsvLine("a,,b")).toEqual(["a", "", "b"]);
    expect(splitCsvLine('"x,y","he said ""hi""",3')).toEqual(["x,y", 'he said "hi"', "3"]);
    expect(splitCsvLine('"a"b')).toBe("expected a comma after a quoted field at character 4");
  });
});

describe("trace replay", () => {
  it("replays the Google sample: machines come and go, tasks land where they fit, when the trace says", async () => {
    const r = await replay("google-2011.json", [60, 110, 150, 350]);
    expect(r.fw.trace!.stats.tasks).toBe(43);
    expect(r.cluster.stats.submitted).toBe(43);
    expect(r.fw.jobStats.submitted).toBe(19);
    // 101-103 from the start, 104 added at 120 s, 102 removed at 300 s.
    expect(r.agents).toEqual({ 60: 3, 110: 3, 150: 4, 350: 3 });

    // Job 2 needs 12 cpus: only machine 103. Job 3 needs 90 % of 103's memory and 4.8 cpus:
    // also 103, once job 2's 100 s run is over.
    const j2 = r.launch("6000000002.0.0")!;
    const j3 = r.launch("6000000003.0.0")!;
    expect(j2.host).toBe("agent-google.103-0");
    expect(j3.host).toBe("agent-google.103-0");
    expect(j2.t).toBeGreaterThanOrEqual(10_000);
    expect(j2.t).toBeLessThan(11_500);
    const j2End = r.ended("6000000002")!.t;
    expect(j2End - j2.t).toBeGreaterThanOrEqual(100_000);
    expect(j3.t).toBeGreaterThan(j2End);
    expect(j3.t - j2End).toBeLessThan(3000);
    expect(r.ended("6000000003")).toMatchObject({ outcome: "completed" });

    // Job 1 runs from the start for 60 s.
    expect(r.ended("6000000001")).toMatchObject({ outcome: "completed", tasks: 3, finished: 3 });
    expect(r.ended("6000000001")!.t).toBeGreaterThanOrEqual(60_000);
    expect(r.ended("6000000001")!.t).toBeLessThan(62_000);
    // Job 4's task 2 fails its first run (30 s) like in the trace, then finishes on the second.
    const failed = r.events.find((e) => e.type === "batch-task-failed" && e.task === "6000000004.2.0")!;
    expect(failed).toMatchObject({ state: "TASK_FAILED", retrying: true });
    expect(failed.t - r.launch("6000000004.2.0")!.t).toBeCloseTo(30_000, -2);
    expect(r.launch("6000000004.2.1")).toBeDefined();
    expect(r.ended("6000000004")).toMatchObject({ outcome: "completed", retries: 1 });
    // Job 5's killed task fails the job (no retries beyond the trace's own, plus 1 for losses).
    expect(r.ended("6000000005")).toMatchObject({ outcome: "failed", finished: 1, failed: 1 });

    // Nothing runs on 104 before it exists; what ran on 102 when it was removed was killed.
    expect(r.launches.filter((e) => e.host === "agent-google.104-0").every((e) => e.t >= 120_000)).toBe(true);
    const on102 = r.launches.filter((e) => e.host === "agent-google.102-0").map((e) => String(e.task));
    const killedAt300 = r.events.filter((e) => e.type === "status" && e.state === "TASK_KILLED" && e.t >= 300_000 && e.t < 301_000).map((e) => String(e.task));
    expect(killedAt300.length).toBeGreaterThan(0);
    expect(killedAt300.every((t) => on102.includes(t))).toBe(true);
    expect(r.launches.filter((e) => e.host === "agent-google.102-0").every((e) => e.t < 300_000)).toBe(true);
  }, 60_000);

  it("replays the Alibaba sample: instances as tasks, big tasks only on big machines, a machine joining later", async () => {
    const r = await replay("alibaba-2018.json", [60, 110]);
    expect(r.cluster.stats.submitted).toBe(72);
    expect(r.fw.jobStats.submitted).toBe(15);
    expect(r.agents).toEqual({ 60: 3, 110: 4 });

    // j_1's four instances start at 10 s and end 60 s later.
    const j1 = [0, 1, 2, 3].map((i) => r.launch(`j_1.${i}.0`)!);
    for (const l of j1) {
      expect(l.t).toBeGreaterThanOrEqual(10_000);
      expect(l.t).toBeLessThan(11_500);
    }
    // 60 % of the largest memory does not fit m_3 (half of it).
    expect(["agent-alibaba.m_1-0", "agent-alibaba.m_2-0"]).toContain(r.launch("j_3.0.0")!.host);
    // 90 cores each: two different large machines (m_4 has joined by 120 s).
    const j9 = [r.launch("j_9.0.0")!, r.launch("j_9.1.0")!];
    expect(j9[0]!.host).not.toBe(j9[1]!.host);
    expect(j9.every((l) => l.host !== "agent-alibaba.m_3-0")).toBe(true);
    expect(r.launches.filter((e) => e.host === "agent-alibaba.m_4-0").every((e) => e.t >= 100_000)).toBe(true);
    expect(r.ended("j_2")).toMatchObject({ outcome: "failed" });
    expect(r.ended("j_1")).toMatchObject({ outcome: "completed", tasks: 6, finished: 6 });
    // j_4 was still running when the trace ended: its tasks run to the end of the simulation.
    expect(r.ended("j_4")).toBeUndefined();
    expect(r.launch("j_4.0.0")!.t).toBeGreaterThanOrEqual(150_000);
  }, 60_000);
});

describe("trace file names in a scenario", () => {
  it("are read from the scenario file's folder, not the current directory", async () => {
    // A scenario and its trace moved together to a folder of their own: only the scenario's
    // folder can resolve "trace/…" (the tests run from the repository's root).
    const folder = mkdtempSync(join(scratch, "moved-"));
    for (const [path, text] of Object.entries(sampleFiles())) {
      if (!path.startsWith("google-2011/")) continue;
      const file = join(folder, "trace", path.slice("google-2011/".length));
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, path.endsWith(".gz") ? gzipSync(text) : text);
    }
    const scenario = {
      seed: 1,
      endSeconds: 60,
      cluster: { agentClasses: {} },
      frameworks: [
        {
          name: "google",
          kind: "batch",
          trace: {
            format: "google-2011",
            taskEvents: ["trace/task_events/part-00000-of-00001.csv.gz"],
            machineEvents: "trace/machine_events/part-00000-of-00001.csv",
            machineShape: "cpus:16;mem:32768",
          },
        },
      ],
    };
    const file = join(folder, "scenario.json");
    writeFileSync(file, JSON.stringify(scenario));
    const out = join(folder, "result.json");
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);
    const code = await simCommand(["run", file, "--json", out]);
    log.mockRestore();
    expect(code).toBe(0);
    const result = JSON.parse(readFileSync(out, "utf8")) as { tasks: { submitted: number }; agents: { atEnd: number } };
    expect(result.tasks.submitted).toBeGreaterThan(0);
    expect(result.agents.atEnd).toBe(3);

    // Built from an object (no file), the same names are read from the current directory.
    await expect(runScenario(scenario)).rejects.toThrow(/no such file: trace\/task_events\/part-00000-of-00001\.csv\.gz \(relative paths are read from the current directory\)/);
  });

  it("keep absolute names as they are", () => {
    const absolute = { ...GOOGLE, taskEvents: join(process.cwd(), GOOGLE.taskEvents as string), machineEvents: join(process.cwd(), GOOGLE.machineEvents!) };
    expect(loadTrace(absolute, { baseDir: scratch }).stats).toEqual(loadTrace(GOOGLE).stats);
  });
});
