/**
 * Writes the small trace samples of this folder: made-up rows in the published column layouts of
 * Google's clusterdata-2011 (`task_events`, `machine_events`) and Alibaba's cluster-trace-v2018
 * (`batch_task`, `machine_meta`). Nothing here is taken from the real traces: a few hand-made jobs
 * and machines exercise the readers' rules (failures and retries, kills, tasks that only fit one
 * machine, machines added, updated and removed, rows to skip), and seeded filler jobs add volume.
 *
 * ```sh
 * npx tsx sim/traces/samples/generate.ts     # rewrites the files; test/sim/trace.test.ts checks they match
 * ```
 *
 * @module
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { SeededRng } from "../../../sdk/rng.ts";

/** Folder of the samples. */
export const SAMPLES_DIR = dirname(fileURLToPath(import.meta.url));

/** Sample files (path relative to this folder → text; `.gz` files are compressed when written). */
export function sampleFiles(): Record<string, string> {
  return {
    "google-2011/machine_events/part-00000-of-00001.csv": googleMachines(),
    "google-2011/task_events/part-00000-of-00001.csv.gz": googleTasks(),
    "alibaba-2018/machine_meta.csv": alibabaMachines(),
    "alibaba-2018/batch_task.csv": alibabaTasks(),
  };
}

// ---- Google clusterdata-2011 ---------------------------------------------------------------------

/** Trace µs of a replay second (the trace window starts at 600 s). */
const at = (seconds: number): number => Math.round((600 + seconds) * 1e6);
const AFTER_WINDOW = "9223372036854775807";
const SUBMIT = 0;
const SCHEDULE = 1;
const FAIL = 3;
const FINISH = 4;
const KILL = 5;
const UPDATE_PENDING = 7;

function googleMachines(): string {
  // time, machine ID, event type (0 ADD, 1 REMOVE, 2 UPDATE), platform ID, CPUs, memory
  const rows = [
    [0, 101, 0, "pA", 0.5, 0.5],
    [0, 102, 0, "pA", 0.5, 0.5],
    [0, 103, 0, "pB", 1, 1],
    [0, 105, 0, "pA", "", ""], // no capacity: skipped
    [at(120), 104, 0, "pA", 0.5, 0.25],
    [at(200), 101, 2, "pA", 0.5, 0.4], // UPDATE: not replayed
    [at(300), 102, 1, "pA", "", ""],
  ];
  return rows.map((r) => r.join(",")).join("\n") + "\n";
}

interface GoogleRow {
  time: number | string;
  job: number;
  task: number;
  machine: number | "";
  event: number;
  cpu: number;
  mem: number;
}

function googleTasks(): string {
  const rows: GoogleRow[] = [];
  const row = (time: number | string, job: number, task: number, event: number, cpu: number, mem: number, machine: number | "" = "") =>
    rows.push({ time, job, task, machine, event, cpu, mem });
  /** One task: submitted, then runs [start, end) per attempt, resubmitted after each failure. */
  const task = (job: number, index: number, cpu: number, mem: number, submit: number, runs: Array<[number, number, number]>, machine = 101) => {
    row(submit === 0 ? 0 : at(submit), job, index, SUBMIT, cpu, mem);
    runs.forEach(([start, end, how], i) => {
      if (i > 0) row(at(start - 0.5), job, index, SUBMIT, cpu, mem);
      row(start === 0 ? 0 : at(start), job, index, SCHEDULE, cpu, mem, machine);
      row(at(end), job, index, how, cpu, mem, machine);
    });
  };
  // Job 1: three small tasks running since before the window, finishing at 60 s.
  for (let i = 0; i < 3; i++) task(6000000001, i, 0.05, 0.01, 0, [[0, 60, FINISH]]);
  // Job 2: one task of 12 of 16 cpus: only machine 103 holds it. Runs 100 s.
  task(6000000002, 0, 0.75, 0.05, 10, [[10.5, 110.5, FINISH]], 103);
  // Job 3: 4.8 cpus and 90 % of the largest memory: only machine 103, once job 2 is done.
  task(6000000003, 0, 0.3, 0.9, 20, [[115, 175, FINISH]], 103);
  // Job 4: four tasks; task 2 fails after 30 s and finishes on its second run (40 s).
  for (let i = 0; i < 4; i++) task(6000000004, i, 0.02, 0.004, 30, i === 2 ? [[31, 61, FAIL], [62, 102, FINISH]] : [[31, 71, FINISH]]);
  // Job 5: one task finishes, the other is killed by its user: the job fails.
  task(6000000005, 0, 0.02, 0.004, 40, [[41, 61, FINISH]]);
  task(6000000005, 1, 0.02, 0.004, 40, [[41, 51, KILL]]);
  // Job 6: two tasks of 7.2 cpus still running when the run ends.
  for (let i = 0; i < 2; i++) task(6000000006, i, 0.45, 0.02, 250, [[251, 451, FINISH]]);
  // Job 7: submitted, never scheduled in the trace: skipped.
  row(at(50), 6000000007, 0, SUBMIT, 0.02, 0.004);
  // Job 8: its request grows while it waits (UPDATE_PENDING) to 0.04 cpus.
  row(at(60), 6000000008, 0, SUBMIT, 0.02, 0.004);
  row(at(61), 6000000008, 0, UPDATE_PENDING, 0.04, 0.004);
  row(at(62), 6000000008, 0, SCHEDULE, 0.04, 0.004, 102);
  row(at(92), 6000000008, 0, FINISH, 0.04, 0.004, 102);
  // An event after the trace window: skipped.
  row(AFTER_WINDOW, 6000000008, 1, SUBMIT, 0.02, 0.004);

  // Filler: small jobs, mostly finishing.
  const rng = new SeededRng("corral-google-2011-sample");
  for (let j = 0; j < 12; j++) {
    const job = 6100000000 + j;
    const submit = Math.round(rng.next() * 380);
    const tasks = 1 + rng.int(4);
    for (let i = 0; i < tasks; i++) {
      const start = submit + rng.int(3);
      const end = start + 5 + rng.int(56);
      const cpu = Number((0.01 + rng.next() * 0.02).toFixed(4));
      const mem = Number((0.001 + rng.next() * 0.004).toFixed(4));
      task(job, i, cpu, mem, submit, [[start, end, rng.next() < 0.1 ? FAIL : FINISH]]);
    }
  }
  const time = (r: GoogleRow) => (typeof r.time === "string" ? Number.MAX_VALUE : r.time);
  rows.sort((a, b) => time(a) - time(b));
  // time, missing info, job ID, task index, machine ID, event type, user, scheduling class,
  // priority, CPU request, memory request, disk space request, different-machines restriction
  const lines = rows.map((r) => [r.time, "", r.job, r.task, r.machine, r.event, `user${r.job % 3}`, r.job % 4, r.event === SCHEDULE ? 9 : 2, r.cpu, r.mem, 0.0002, 0].join(","));
  return lines.join("\n") + "\n";
}

// ---- Alibaba cluster-trace-v2018 -----------------------------------------------------------------

function alibabaMachines(): string {
  // machine_id, time_stamp, failure_domain_1, failure_domain_2, cpu_num, mem_size, status
  const rows = [
    ["m_1", 0, 1, "d1", 96, 100, "USING"],
    ["m_2", 0, 2, "d1", 96, 100, "USING"],
    ["m_3", 0, 3, "d2", 64, 50, "USING"],
    ["m_4", 100, 4, "d2", 96, 100, "USING"], // joins at 100 s
    ["m_1", 200, 1, "d1", 96, 100, "USING"], // a later row of m_1: not replayed
    ["m_5", 0, 5, "d2", 0, 100, "USING"], // no cpus: skipped
  ];
  return rows.map((r) => r.join(",")).join("\n") + "\n";
}

function alibabaTasks(): string {
  // task_name, instance_num, job_name, task_type, status, start_time, end_time, plan_cpu, plan_mem
  const rows: Array<Array<string | number>> = [
    ["M1", 4, "j_1", 1, "Terminated", 10, 70, 100, 0.5],
    ["R2_1", 2, "j_1", 1, "Terminated", 75, 105, 200, 1],
    ["task_c2FtcGxlLTE=", 1, "j_2", 12, "Failed", 20, 50, 50, 0.2],
    // 60 cores and 60 % of the largest memory: not on m_3 (half the memory).
    ["M1", 1, "j_3", 1, "Terminated", 30, 90, 6000, 60],
    ["M1", 2, "j_4", 1, "Running", 150, 0, 100, 1],
    ["M1", 3, "j_5", 1, "Waiting", 0, 0, 100, 1],
    ["M2", 1, "j_6", 1, "Terminated", 0, 0, 100, 1],
    ["M1", 1, "j_7", 1, "Terminated", 60, 40, 100, 1],
    ["M1", 1, "j_8", 1, "Terminated", 110, 130, "", ""],
    // 90 cores each: one per large machine.
    ["J1", 2, "j_9", 1, "Terminated", 120, 180, 9000, 90],
  ];
  const rng = new SeededRng("corral-alibaba-2018-sample");
  for (let j = 0; j < 10; j++) {
    const job = `j_${100 + j}`;
    const start0 = 1 + rng.int(300);
    const tasks = 1 + rng.int(3);
    for (let t = 0; t < tasks; t++) {
      const start = start0 + t * (5 + rng.int(20));
      const end = start + 5 + rng.int(56);
      const name = t === 0 ? "M1" : `R${t + 1}_${t}`;
      rows.push([name, 1 + rng.int(5), job, 1, rng.next() < 0.1 ? "Failed" : "Terminated", start, end, 50 * (1 + rng.int(4)), Number((0.1 + rng.next() * 0.9).toFixed(2))]);
    }
  }
  return rows.map((r) => r.join(",")).join("\n") + "\n";
}

/** Writes every sample file. */
export function writeSamples(dir = SAMPLES_DIR): string[] {
  const written: string[] = [];
  for (const [path, text] of Object.entries(sampleFiles())) {
    const file = join(dir, path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, path.endsWith(".gz") ? gzipSync(text) : text);
    written.push(file);
  }
  return written;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const file of writeSamples()) console.log(`wrote ${file}`);
}
