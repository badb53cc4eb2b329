/**
 * `corral job run job.json`: runs the jobs of a job file (frameworks/batch/README.md) on the
 * cluster through the batch framework, printing progress to stderr and a summary to stdout.
 * Exits 0 when every job completed, 1 when one failed, timed out or was cancelled, 2 for a bad
 * command line or job file.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { runBatchJobs, type BatchRunSummary } from "../../frameworks/batch/batch.ts";
import { DEFAULT_BATCH_CONFIG, batchConfigProblem, type BatchConfig, type BatchEvent, type BatchJobSummary } from "../../frameworks/batch/core.ts";
import { JobFileError, parseJobFile } from "../../frameworks/batch/job-file.ts";
import { roleNameError } from "../../sdk/roles.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster } from "../common.ts";
import { numberFlag, parseFlags, UsageError, type FlagSpec } from "../options.ts";

export const JOB_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
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
  try {
    const summary = await runBatchJobs({
      transport,
      cluster,
      log,
      jobs,
      framework: { name: values.name as string, roles: [values.role as string] },
      config,
      signal: interrupted.signal,
      onEvent: (event) => {
        const line = quiet ? undefined : progressLine(event, sizes);
        if (line) process.stderr.write(`corral: ${line}\n`);
      },
    });
    console.log(formatJobSummary(summary));
    if (typeof values.json === "string") writeFileSync(values.json, `${JSON.stringify(summary, null, 2)}\n`);
    if (interrupted.signal.aborted) return 130;
    return summary.completed === summary.jobs.length ? 0 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await transport.close();
  }
}
