/**
 * The smallest useful framework: run N copies of a shell command, one per offer, and report how
 * they ended.
 *
 * ```sh
 * tsx frameworks/examples/run-copies.ts --nats nats://127.0.0.1:4222 --instances 3 -- "echo hi"
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { connectNats } from "../../sdk/nats-transport.ts";
import { Resources } from "../../sdk/resources.ts";
import { createSchedulerDriver, type OfferView } from "../../sdk/scheduler.ts";
import type { Logger, Transport } from "../../sdk/transport.ts";
import { TERMINAL_TASK_STATES, type TaskState } from "../../sdk/wire/types.ts";

/** Options of {@link runCopies}. */
export interface RunCopiesOptions {
  transport: Transport;
  /** @default "corral" */
  cluster?: string;
  /** Shell command line each copy runs. */
  command: string;
  /** How many copies. */
  instances: number;
  /** Cpus per copy. @default 0.1 */
  cpus?: number;
  /** Memory per copy, in MB. @default 32 */
  mem?: number;
  /** Framework name, also the prefix of task ids. @default "run-copies" */
  name?: string;
  /** @default silent */
  log?: Logger;
  /** Aborting tears the framework down (killing the copies) and rejects. @default none */
  signal?: AbortSignal;
}

/** How one copy ended. */
export interface CopyResult {
  taskId: string;
  agentId: string;
  state: TaskState;
  message: string;
}

/** What {@link runCopies} resolves with. */
export interface RunCopiesSummary {
  frameworkId: string;
  /** By task id. */
  copies: CopyResult[];
  /** Copies that ended in TASK_FINISHED. */
  finished: number;
  /** Copies that ended in any other terminal state. */
  failed: number;
}

/** Runs `instances` copies of `command` and resolves once every copy is in a terminal state. */
export async function runCopies(options: RunCopiesOptions): Promise<RunCopiesSummary> {
  const { transport, command, instances, name = "run-copies" } = options;
  if (!Number.isInteger(instances) || instances < 1) throw new RangeError(`instances must be a positive integer, got ${instances}`);
  const perCopy = Resources.scalar("cpus", options.cpus ?? 0.1).add(Resources.scalar("mem", options.mem ?? 32));
  const copies = new Map<string, CopyResult>(); // launched (or being launched), by task id
  let nextId = 0;
  let settle!: { resolve: (summary: RunCopiesSummary) => void; reject: (err: Error) => void };
  const outcome = new Promise<RunCopiesSummary>((resolve, reject) => (settle = { resolve, reject }));

  const launchOn = async (offer: OfferView): Promise<void> => {
    const taskId = `${name}-${nextId++}`;
    copies.set(taskId, { taskId, agentId: offer.agentId, state: "TASK_STAGING", message: "" });
    try {
      // What the copy leaves of the offer is declined for 5 s, like the unused offers below.
      await driver.launch(offer, [{ taskId, resources: perCopy, command }], { refuseSeconds: 5 });
    } catch (err) {
      copies.delete(taskId); // never launched: another offer will do
      options.log?.warn({ err, taskId }, "launch failed");
    }
  };

  const driver = createSchedulerDriver({
    transport,
    cluster: options.cluster,
    log: options.log,
    framework: { name },
    callbacks: {
      offers: async (offers) => {
        for (const offer of offers) {
          if (copies.size < instances && offer.resources.contains(perCopy)) await launchOn(offer);
          else await driver.decline([offer.id], { refuseSeconds: 5 }).catch(() => undefined);
        }
        if (copies.size >= instances) await driver.suppress().catch(() => undefined);
      },
      update: (status) => {
        const copy = copies.get(status.taskId);
        if (copy === undefined) return;
        copy.state = status.state;
        copy.message = status.message;
        const all = [...copies.values()];
        if (all.length === instances && all.every((c) => TERMINAL_TASK_STATES.has(c.state))) {
          const finished = all.filter((c) => c.state === "TASK_FINISHED").length;
          all.sort((a, b) => a.taskId.localeCompare(b.taskId, "en", { numeric: true }));
          settle.resolve({ frameworkId: driver.frameworkId()!, copies: all, finished, failed: all.length - finished });
        }
      },
      error: (message) => settle.reject(new Error(message)),
    },
  });

  const abort = () => settle.reject(new Error("aborted"));
  if (options.signal?.aborted) throw new Error("aborted");
  options.signal?.addEventListener("abort", abort, { once: true });
  try {
    await Promise.race([driver.start(), outcome]); // an abort must not wait for a master to answer
    return await outcome;
  } finally {
    options.signal?.removeEventListener("abort", abort);
    // Done (or given up): remove the framework so the master forgets it and kills any leftovers.
    await driver.stop({ teardown: true }).catch(() => undefined);
  }
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      nats: { type: "string", default: "nats://127.0.0.1:4222" },
      cluster: { type: "string", default: "corral" },
      instances: { type: "string", default: "1" },
      cpus: { type: "string", default: "0.1" },
      mem: { type: "string", default: "32" },
      name: { type: "string", default: "run-copies" },
    },
  });
  const command = positionals.join(" ");
  if (command === "") {
    console.error('usage: run-copies.ts [--nats URL] [--cluster NAME] [--instances N] [--cpus C] [--mem MB] -- "command"');
    return 2;
  }
  const transport = await connectNats({ servers: values.nats, name: values.name });
  const interrupted = new AbortController();
  process.once("SIGINT", () => interrupted.abort());
  try {
    const summary = await runCopies({
      transport,
      cluster: values.cluster,
      command,
      instances: Number(values.instances),
      cpus: Number(values.cpus),
      mem: Number(values.mem),
      name: values.name,
      signal: interrupted.signal,
    });
    console.log(JSON.stringify(summary, null, 2));
    return summary.failed === 0 ? 0 : 1;
  } finally {
    await transport.close();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exitCode = 2;
    },
  );
}
