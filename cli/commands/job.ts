/**
 * `corral job run job.json`: runs the jobs of a job file (frameworks/batch/README.md) on the
 * cluster through the batch framework, printing progress to stderr and a summary to stdout. The
 * tasks' output stays in their sandboxes: a failed task's last stderr lines come with its failure,
 * and the summary says how to read a task's stdout from its agent.
 * Exits 0 when every job completed, 1 when one failed, timed out or was cancelled, 2 for a bad
 * command line or job file.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { runBatchJobs, type BatchRunSummary } from "../../frameworks/batch/batch.ts";
import { DEFAULT_BATCH_CONFIG, batchConfigProblem, type BatchConfig, type BatchEvent, type BatchJobSummary } from "../../frameworks/batch/core.ts";
import { JobFileError, parseJobFile } from "../../frameworks/batch/job-file.ts";
import { roleNameError } from "../../sdk/roles.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster, resolveMasterUrl } from "../common.ts";
import { agentEndpoints, sandboxFileUrl, tailSandboxFile } from "../sandbox-output.ts";
import { numberFlag, parseFlags, UsageError, type FlagSpec } from "../options.ts";

export const JOB_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
  master: { type: "string", help: "master HTTP URL, to find the agents holding the tasks' output (default: the local cluster's)" },
  name: { type: "string", help: "framework name", default: "corral-job" },
  role: { type: "string", help: "role to run in", default: "default" },
  // The framework's own defaults, so that the flags and the batch README cannot drift apart.
  "refuse-seconds": { type: "string", help: "how long declined offers are filtered", default: String(DEFAULT_BATCH_CONFIG.refuseSeconds) },
  "offer-hold-seconds": { type: "string", help: "keep an offer nothing fits this long for work to come (0: decline it)", default: String(DEFAULT_BATCH_CONFIG.offerHoldSeconds) },
  "max-held-offers": { type: "string", help: "offers kept at once, at most (with --offer-hold-seconds)", default: String(DEFAULT_BATCH_CONFIG.maxHeldOffers) },
  json: { type: "string", help: "also write the summary as JSON to this file" },
  quiet: { type: "boolean", help: "print only the summary" },
};

export const JOB_USAGE = `usage: corral job run <job.json> [flags]

Runs the jobs of a job file on the cluster (the one \`corral up\` started, or --nats/--cluster),
printing progress to stderr and a summary to stdout. Exits 0 if every job completed, 1 otherwise.
A failed task's last stderr lines are printed with its failure; every task's stdout and stderr
stay in its sandbox on its agent, where the agent's /files/read serves them (the summary names one).

job file: { "jobs": [ { "id": "hello", "tasks": 4, "resources": "cpus:0.1;mem:32",
                        "command": "echo task $CORRAL_TASK_INDEX", "maxRetries": 3, "timeoutSeconds": 60 } ] }`;

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** One progress line per event worth a line, or undefined. Large jobs report finishes per 10 %. */
export function progressLine(event: BatchEvent, sizes: Map<string, number>): string | undefined {
  switch (event.type) {
    case "job-submitted":
      sizes.set(event.jobId, event.tasks);
      return `job ${event.jobId}: submitted, ${event.tasks} task${event.tasks === 1 ? "" : "s"}`;
    case "task-failed": {
      const why = event.exitCode !== undefined ? `exit ${event.exitCode}` : event.state;
      const message = event.message ? ` (${event.message})` : "";
      return `job ${event.jobId}: task ${event.index} attempt ${event.attempt} ${why}${message}${event.retrying ? ", retrying" : ", giving up"}`;
    }
    case "task-launch-failed":
      return `job ${event.jobId}: task ${event.index} could not be launched (${event.error}), queued again`;
    case "job-ended": {
      const s = event.summary;
      const detail = `${s.finished}/${s.tasks} tasks finished, ${s.failed} failed, ${s.retries} retries`;
      return `job ${event.jobId}: ${event.outcome} after ${seconds(s.elapsedMs)} (${detail})`;
    }
    default:
      return undefined;
  }
}

/** The summary table. */
export function formatJobSummary(summary: BatchRunSummary): string {
  const header = ["JOB", "STATE", "TASKS", "FINISHED", "FAILED", "RETRIES", "WAIT p50", "WAIT max", "TIME"];
  const rows = summary.jobs.map((j: BatchJobSummary) => [
    j.id,
    j.state,
    String(j.tasks),
    String(j.finished),
    String(j.failed),
    String(j.retries),
    j.waitMs.count ? seconds(j.waitMs.p50) : "-",
    j.waitMs.count ? seconds(j.waitMs.max) : "-",
    seconds(j.elapsedMs),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  const out = [line(header), ...rows.map(line)];
  for (const j of summary.jobs) {
    if (j.state !== "completed" && j.lastFailure) {
      const f = j.lastFailure;
      out.push(`  ${j.id}: last failure ${f.taskId} ${f.state}${f.exitCode !== undefined ? ` exit ${f.exitCode}` : ""}${f.message ? `: ${f.message}` : ""}`);
    }
  }
  const n = summary.jobs.length;
  out.push(`${n} job${n === 1 ? "" : "s"}: ${summary.completed} completed, ${summary.failed} failed, ${summary.timedOut} timed out, ${summary.cancelled} cancelled`);
  return out.join("\n");
}

/**
 * The batch framework's tunables that `corral job run` takes as flags (the same settings a
 * simulated `batch` framework takes in a scenario), checked; a bad value is a {@link UsageError}.
 */
export function batchConfigFromFlags(values: Record<string, string | boolean | undefined>): Pick<BatchConfig, "refuseSeconds" | "offerHoldSeconds" | "maxHeldOffers"> {
  const setting = (flag: string, key: "refuseSeconds" | "offerHoldSeconds" | "maxHeldOffers"): number => {
    const value = numberFlag(values, flag) ?? DEFAULT_BATCH_CONFIG[key];
    const problem = batchConfigProblem(key, value);
    if (problem !== undefined) throw new UsageError(`--${flag} ${problem}`);
    return value;
  };
  return { refuseSeconds: setting("refuse-seconds", "refuseSeconds"), offerHoldSeconds: setting("offer-hold-seconds", "offerHoldSeconds"), maxHeldOffers: setting("max-held-offers", "maxHeldOffers") };
}

/** Last lines of a failed task's stderr printed with its failure. */
const TAIL_LINES = 5;

/** Where the tasks' stdout and stderr are, with the command to read one. */
async function outputHint(task: { taskId: string; agentId: string }, frameworkId: string | undefined, endpoint: string | undefined): Promise<string> {
  const where = "task output: each task's stdout and stderr stay in its sandbox on its agent";
  if (endpoint === undefined || frameworkId === undefined) return `${where} (the agent's /files/read?frameworkId=...&taskId=...&path=stdout)`;
  return `${where}, e.g. curl -s '${sandboxFileUrl(endpoint, frameworkId, task.taskId, "stdout")}'`;
}

export async function jobCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "run") throw new UsageError(sub === undefined ? `missing subcommand\n\n${JOB_USAGE}` : `unknown subcommand '${sub}'\n\n${JOB_USAGE}`);
  const { values, rest: files } = parseFlags(rest, JOB_FLAGS);
  if (files.length !== 1) throw new UsageError(`expected one job file, got ${files.length}\n\n${JOB_USAGE}`);
  const file = files[0]!;
  const config = batchConfigFromFlags(values);
  // Checked here, before connecting: the SDK would refuse them only once the driver is built.
  const roleProblem = roleNameError(values.role as string);
  if (roleProblem !== null) throw new UsageError(`--role ${roleProblem}, got '${String(values.role)}'`);
  if (String(values.name).trim() === "") throw new UsageError("--name must not be empty");
  let jobs;
  try {
    jobs = parseJobFile(JSON.parse(readFileSync(file, "utf8")));
  } catch (err) {
    const message = err instanceof JobFileError ? err.message : `cannot read it: ${err instanceof Error ? err.message : String(err)}`;
    console.error(`corral job run: ${file}: ${message}`);
    return 2;
  }
  const { nats, cluster } = resolveCluster(values);
  const log = makeLogger(values["log-level"] as string);
  const transport = await connect(nats, values.name as string, log);
  const interrupted = new AbortController();
  const onSignal = () => {
    process.stderr.write("corral: stopping the jobs\n");
    interrupted.abort();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const sizes = new Map<string, number>();
  const quiet = values.quiet === true;
  // The tasks' output is in their sandboxes, on the agents; the master's /state says where those
  // are. Without a master URL (--nats alone) the jobs still run, with less said about the output.
  let masterUrl: string | undefined;
  try {
    masterUrl = resolveMasterUrl(values);
  } catch {
    masterUrl = undefined;
  }
  let endpoints: Promise<Map<string, string>> | undefined;
  const endpointOf = async (agentId: string): Promise<string | undefined> => {
    if (masterUrl === undefined) return undefined;
    let known = await (endpoints ??= agentEndpoints(masterUrl));
    if (!known.has(agentId)) known = await (endpoints = agentEndpoints(masterUrl));
    return known.get(agentId);
  };
  // Printed before the summary, so that every failure's lines come before it.
  const tails: Promise<void>[] = [];
  let example: { taskId: string; agentId: string } | undefined;
  const printTail = async (event: Extract<BatchEvent, { type: "task-failed" }>, frameworkId: string | undefined) => {
    const endpoint = await endpointOf(event.agentId);
    if (endpoint === undefined || frameworkId === undefined) return;
    const lines = await tailSandboxFile(sandboxFileUrl(endpoint, frameworkId, event.taskId, "stderr"), TAIL_LINES);
    if (lines?.length) process.stderr.write(lines.map((line) => `corral:   ${event.taskId} stderr: ${line}\n`).join(""));
  };
  try {
    const summary = await runBatchJobs({
      transport,
      cluster,
      log,
      jobs,
      framework: { name: values.name as string, roles: [values.role as string] },
      config,
      signal: interrupted.signal,
      onEvent: (event, framework) => {
        const line = quiet ? undefined : progressLine(event, sizes);
        if (line) process.stderr.write(`corral: ${line}\n`);
        // A finished task's output is the example: a failed one's stderr is printed already.
        if (event.type === "task-finished" || (event.type === "task-failed" && example === undefined)) example = { taskId: event.taskId, agentId: event.agentId };
        if (event.type === "task-failed" && !quiet) tails.push(printTail(event, framework.driver.frameworkId()));
      },
    });
    await Promise.all(tails);
    console.log(formatJobSummary(summary));
    if (example !== undefined) console.log(await outputHint(example, summary.frameworkId, await endpointOf(example.agentId)));
    if (typeof values.json === "string") writeFileSync(values.json, `${JSON.stringify(summary, null, 2)}\n`);
    if (interrupted.signal.aborted) return 130;
    return summary.completed === summary.jobs.length ? 0 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await transport.close();
  }
}
