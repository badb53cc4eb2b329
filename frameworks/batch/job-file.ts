/**
 * The job file: what `corral job run job.json` reads. See frameworks/batch/README.md.
 *
 * ```json
 * {
 *   "jobs": [
 *     { "id": "thumbnails", "tasks": 8, "resources": "cpus:0.5;mem:128",
 *       "command": "make-thumbs --shard $CORRAL_TASK_INDEX", "maxRetries": 2, "timeoutSeconds": 600 },
 *     { "id": "warm-up", "tasks": 2, "resources": "cpus:0.1;mem:32", "durationSeconds": 5 }
 *   ]
 * }
 * ```
 *
 * Validation collects every problem, each naming the field (`jobs[1].resources`) and the rule.
 *
 * @module
 */

import { Resources } from "../../sdk/resources.ts";
import { DEFAULT_BATCH_CONFIG, DEFAULT_MAX_RETRIES, ENV_NAME_RULE, isEnvName, JOB_ID_PATTERN, NUL_RULE, type BatchJobSpec, type BatchTaskSpec } from "./core.ts";

/** One job as written in a job file. */
export interface JobFileJob {
  /** Unique in the file: letters, digits, `_` and `-`. */
  id: string;
  /** How many tasks (copies of the command), 1 or more. */
  tasks: number;
  /** Per task, in Mesos text form, e.g. `"cpus:0.5;mem:128"`. */
  resources: string;
  /** Shell command line each task runs. Exactly one of `command` and `durationSeconds`. */
  command?: string;
  /** Each task sleeps this long instead of running a command (for trying a cluster out). */
  durationSeconds?: number;
  /** Extra environment variables of every task. @default {} */
  env?: Record<string, string>;
  /** Times a task that did not finish successfully is run again. @default 3 */
  maxRetries?: number;
  /** The job is stopped, as timed out, this long after it was submitted. @default none */
  timeoutSeconds?: number;
  /** Stop the whole job as soon as one task has used up its retries. @default false */
  failFast?: boolean;
}

/** The file: `{ "jobs": [...] }`. */
export interface JobFile {
  jobs: JobFileJob[];
}

/** Jobs in one file, at most. */
export const MAX_JOBS_PER_FILE = 10_000;
/** Tasks of one job in a file, at most. */
export const MAX_TASKS_PER_FILE_JOB = 100_000;
/** Tasks of all the jobs of a file, at most: the batch framework's default `maxLiveTasks`. */
export const MAX_TASKS_PER_FILE = DEFAULT_BATCH_CONFIG.maxLiveTasks;

/**
 * Most seconds a job's `timeoutSeconds` or a task's `durationSeconds` may give (about 31 years):
 * beyond some bound the milliseconds the framework counts in stop being finite.
 */
export const MAX_JOB_FILE_SECONDS = 1_000_000_000;

/** Raised by {@link parseJobFile}; `problems` lists every `field: rule`. */
export class JobFileError extends Error {
  readonly code = "CORRAL_ERR_INVALID_JOB_FILE";
  constructor(readonly problems: string[]) {
    super(`invalid job file:\n  ${problems.join("\n  ")}`);
    this.name = "JobFileError";
  }
}

const JOB_KEYS = ["id", "tasks", "resources", "command", "durationSeconds", "env", "maxRetries", "timeoutSeconds", "failFast"];

/**
 * Checks a parsed job file and turns it into job specs for the batch core.
 * @throws {JobFileError} listing every problem; nothing is returned then.
 */
export function parseJobFile(input: unknown): BatchJobSpec[] {
  const problems: string[] = [];
  const fail = (field: string, rule: string) => void problems.push(`${field}: ${rule}`);
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw new JobFileError(['file: must be an object such as { "jobs": [...] }']);
  const root = input as Record<string, unknown>;
  for (const key of Object.keys(root)) if (key !== "jobs") fail(key, "is not a known field (known: jobs)");
  if (!Array.isArray(root.jobs)) {
    fail("jobs", "must be an array of jobs");
    throw new JobFileError(problems);
  }
  if (root.jobs.length === 0) fail("jobs", "must not be empty");
  if (root.jobs.length > MAX_JOBS_PER_FILE) fail("jobs", `must hold at most ${MAX_JOBS_PER_FILE} jobs, got ${root.jobs.length}`);
  const ids = new Set<string>();
  const specs: BatchJobSpec[] = [];
  const total = { tasks: 0 };
  root.jobs.slice(0, MAX_JOBS_PER_FILE).forEach((value, i) => {
    const spec = checkJob(value, `jobs[${i}]`, fail, ids, total);
    if (spec) specs.push(spec);
  });
  if (problems.length > 0) throw new JobFileError(problems);
  return specs;
}

function checkJob(value: unknown, field: string, fail: (field: string, rule: string) => void, ids: Set<string>, total: { tasks: number }): BatchJobSpec | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(field, "must be an object");
    return undefined;
  }
  const job = value as Record<string, unknown>;
  const before = { count: 0 };
  const f = (name: string, rule: string) => {
    before.count++;
    fail(`${field}.${name}`, rule);
  };
  for (const key of Object.keys(job)) if (!JOB_KEYS.includes(key)) f(key, `is not a known field (known: ${JOB_KEYS.join(", ")})`);

  const id = job.id;
  if (typeof id !== "string" || !JOB_ID_PATTERN.test(id)) f("id", "must be 1-128 letters, digits, '_' or '-', starting with a letter or digit");
  else if (ids.has(id)) f("id", `must be unique (${JSON.stringify(id)} is used twice)`);
  else ids.add(id);

  const tasks = job.tasks;
  if (typeof tasks !== "number" || !Number.isInteger(tasks) || tasks < 1) f("tasks", "must be an integer >= 1");
  else if (tasks > MAX_TASKS_PER_FILE_JOB) f("tasks", `must be at most ${MAX_TASKS_PER_FILE_JOB}`);
  // Counted before any task list is built: the framework would refuse the excess anyway.
  else if ((total.tasks += tasks) > MAX_TASKS_PER_FILE) f("tasks", `brings the file's jobs to ${total.tasks} tasks, more than the ${MAX_TASKS_PER_FILE} the batch framework keeps at once`);

  let resources: Resources | undefined;
  if (typeof job.resources !== "string") f("resources", 'is required: Mesos resource text such as "cpus:0.5;mem:128"');
  else {
    try {
      resources = Resources.parse(job.resources);
      if (resources.isEmpty()) f("resources", "must not be empty");
    } catch (err) {
      f("resources", `is not valid Mesos resource text (${err instanceof Error ? err.message : String(err)})`);
    }
  }

  const hasCommand = job.command !== undefined;
  const hasDuration = job.durationSeconds !== undefined;
  if (hasCommand === hasDuration) f(hasCommand ? "durationSeconds" : "command", "give exactly one of command and durationSeconds");
  if (hasCommand && (typeof job.command !== "string" || job.command.trim() === "")) f("command", "must be a non-empty string");
  else if (hasCommand && (job.command as string).includes("\u0000")) f("command", NUL_RULE);
  if (hasDuration && !(typeof job.durationSeconds === "number" && Number.isFinite(job.durationSeconds) && job.durationSeconds >= 0)) f("durationSeconds", "must be a number >= 0");
  else if (hasDuration && (job.durationSeconds as number) > MAX_JOB_FILE_SECONDS) f("durationSeconds", `must be <= ${MAX_JOB_FILE_SECONDS}`);

  if (job.env !== undefined) {
    if (typeof job.env !== "object" || job.env === null || Array.isArray(job.env)) f("env", "must be an object of strings");
    else {
      for (const [name, v] of Object.entries(job.env)) {
        if (!isEnvName(name)) f(`env.${name}`, ENV_NAME_RULE);
        else if (typeof v !== "string") f(`env.${name}`, "must be a string");
        else if (v.includes("\u0000")) f(`env.${name}`, NUL_RULE);
      }
    }
  }
  if (job.maxRetries !== undefined && !(typeof job.maxRetries === "number" && Number.isInteger(job.maxRetries) && job.maxRetries >= 0)) f("maxRetries", "must be an integer >= 0");
  if (job.timeoutSeconds !== undefined && !(typeof job.timeoutSeconds === "number" && Number.isFinite(job.timeoutSeconds) && job.timeoutSeconds > 0)) f("timeoutSeconds", "must be a number > 0");
  else if (typeof job.timeoutSeconds === "number" && job.timeoutSeconds > MAX_JOB_FILE_SECONDS) f("timeoutSeconds", `must be <= ${MAX_JOB_FILE_SECONDS}`);
  if (job.failFast !== undefined && typeof job.failFast !== "boolean") f("failFast", "must be true or false");
  if (before.count > 0) return undefined;

  const task: BatchTaskSpec = {
    resources: resources!,
    ...(hasCommand ? { command: job.command as string } : { durationMs: (job.durationSeconds as number) * 1000 }),
    ...(job.env !== undefined ? { env: { ...(job.env as Record<string, string>) } } : {}),
  };
  return {
    id: id as string,
    tasks: new Array<BatchTaskSpec>(tasks as number).fill(task),
    maxRetries: (job.maxRetries as number | undefined) ?? DEFAULT_MAX_RETRIES,
    ...(job.timeoutSeconds !== undefined ? { timeoutMs: (job.timeoutSeconds as number) * 1000 } : {}),
    failFast: (job.failFast as boolean | undefined) ?? false,
  };
}
