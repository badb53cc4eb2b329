/**
 * A simulation worker thread of {@link SimPool} (`./parallel.ts`): runs the jobs it is sent one
 * at a time, each to its end, and answers each with its result or its error.
 *
 * @module
 */

import { parentPort } from "node:worker_threads";
import { runCheck } from "./check.ts";
import type { SimJob, WorkerReply } from "./parallel.ts";
import { runPoint } from "./plan.ts";

type JobResult = Extract<WorkerReply, { ok: true }>["result"];

async function runJob(job: SimJob): Promise<JobResult> {
  if (job.kind === "check") return runCheck(job.seed, job.options);
  const evaluate = runPoint(job.scenario, job.spec, {
    ...(job.logLevel !== undefined ? { logLevel: job.logLevel } : {}),
    ...(job.baseDir !== undefined ? { baseDir: job.baseDir } : {}),
  });
  return evaluate(job.run);
}

if (parentPort === null) throw new Error("sim/worker.ts runs only as a worker thread of SimPool");
const port = parentPort;
// Jobs are run strictly one after another (see the module comment of ./parallel.ts).
let chain: Promise<void> = Promise.resolve();
port.on("message", ({ id, job }: { id: number; job: SimJob }) => {
  chain = chain.then(async () => {
    let reply: WorkerReply;
    try {
      reply = { id, ok: true, result: await runJob(job) };
    } catch (err) {
      reply = { id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
    }
    port.postMessage(reply);
  });
});
