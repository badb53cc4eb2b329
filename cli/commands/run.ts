/**
 * `corral run --cpus 0.1 --mem 32 -- <command>`: runs one task through the SDK, like any
 * framework would, streaming its states to stderr and its stdout/stderr as they grow, and exits
 * with the task's exit code.
 */
import { randomUUID } from "node:crypto";
import { Resources } from "../../sdk/resources.ts";
import { createSchedulerDriver, type SchedulerDriver, type TaskStatus } from "../../sdk/scheduler.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster, resolveMasterUrl, untilSignal } from "../common.ts";
import { readAgentEndpoints, sandboxFileUrl } from "../sandbox-output.ts";
import { numberFlag, parseFlags, UsageError, type FlagSpec } from "../options.ts";

export const RUN_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
  master: { type: "string", help: "master HTTP URL, to find the agent's files (default: the local cluster's)" },
  cpus: { type: "string", help: "cpus for the task", default: "0.1" },
  mem: { type: "string", help: "memory for the task, in MB", default: "32" },
  disk: { type: "string", help: "disk for the task, in MB" },
  name: { type: "string", help: "task name", default: "corral-run" },
  role: { type: "string", help: "role to run in", default: "default" },
};

/**
 * Exit code of the CLI for a task's final status, as a shell would report it: the task's own exit
 * code, else 137 (128 + SIGKILL) when it was killed, by request or for going over a limit of its
 * container (as `docker run` reports an out-of-memory kill), else 1.
 */
export function exitCodeOf(status: TaskStatus): number {
  if (status.state === "TASK_FINISHED") return 0;
  if (status.exitCode !== undefined && status.exitCode !== 0) return status.exitCode;
  if (status.state === "TASK_KILLED" || status.reason.startsWith("REASON_CONTAINER_LIMITATION")) return 137;
  return 1;
}

/** Follows one sandbox file over the agent's HTTP API, writing what is new to `out`. */
class FileFollower {
  private offset = 0;
  constructor(
    private readonly url: string,
    private readonly out: NodeJS.WritableStream,
  ) {}

  /** Copies everything written so far; answers whether anything was new. */
  async drain(): Promise<boolean> {
    let grew = false;
    for (;;) {
      const response = await fetch(`${this.url}&offset=${this.offset}&length=65536`).catch(() => undefined);
      if (!response?.ok) return grew;
      const chunk = (await response.json()) as { data: string; length?: number };
      const bytes = chunk.length ?? Buffer.byteLength(chunk.data);
      if (bytes === 0) return grew;
      this.out.write(chunk.data);
      this.offset += bytes;
      grew = true;
    }
  }
}

export async function runCommand(args: string[]): Promise<number> {
  const { values, rest } = parseFlags(args, RUN_FLAGS);
  if (rest.length === 0) throw new UsageError("nothing to run: corral run [flags] -- <command>");
  const command = rest.join(" ");
  let resourcesText = `cpus:${numberFlag(values, "cpus") ?? 0.1};mem:${numberFlag(values, "mem") ?? 32}`;
  const disk = numberFlag(values, "disk");
  if (disk !== undefined) resourcesText += `;disk:${disk}`;
  const resources = Resources.parse(resourcesText);
  const { nats, cluster } = resolveCluster(values);
  const masterUrl = resolveMasterUrl(values);
  const log = makeLogger(values["log-level"] as string);
  const taskId = `run-${randomUUID().slice(0, 8)}`;
  const transport = await connect(nats, "corral-run", log);

  let launched = false;
  // What the offers that did not fit had, to say why nothing starts (see NO_FIT_HINT_MS).
  let largestDeclined: Resources | undefined;
  let offersSeen = 0;
  let followers: FileFollower[] = [];
  let settle: (status: TaskStatus) => void = () => {};
  const finished = new Promise<TaskStatus>((resolve) => (settle = resolve));

  let toldWhyBlind = false;
  /** The agent's HTTP endpoint from the master's /state; undefined (said once, on stderr) when it cannot be had. */
  const agentEndpoint = async (agentId: string): Promise<string | undefined> => {
    try {
      return (await readAgentEndpoints(masterUrl)).get(agentId);
    } catch (err) {
      if (!toldWhyBlind) process.stderr.write(`corral: cannot stream the task's output: ${(err as Error).message}\n`);
      toldWhyBlind = true;
      return undefined;
    }
  };

  // Streaming is a convenience: failing to find the agent must not keep the final status (and the
  // exit code) from being handled, as it did when this threw inside the update callback.
  const startFollowing = async (agentId: string) => {
    const endpoint = await agentEndpoint(agentId);
    if (!endpoint) return;
    const url = (path: string) => sandboxFileUrl(endpoint, driver.frameworkId()!, taskId, path);
    followers = [new FileFollower(url("stdout"), process.stdout), new FileFollower(url("stderr"), process.stderr)];
  };

  const driver: SchedulerDriver = createSchedulerDriver({
    transport,
    cluster,
    log,
    framework: { name: `corral run ${values.name as string}`, roles: [values.role as string] },
    callbacks: {
      offers: async (offers) => {
        for (const offer of offers) {
          offersSeen++;
          if (launched || !offer.resources.contains(resources)) {
            if (!launched && (largestDeclined === undefined || offer.resources.scalar("cpus") > largestDeclined.scalar("cpus"))) largestDeclined = offer.resources;
            await driver.decline([offer.id], { refuseSeconds: 60 });
            continue;
          }
          launched = true;
          await driver.launch(offer, [{ taskId, name: values.name as string, resources, command }]);
          await driver.suppress();
        }
      },
      update: async (status) => {
        if (status.taskId !== taskId) return;
        process.stderr.write(`corral: ${taskId} ${status.state}${status.message ? `: ${status.message}` : ""}\n`);
        if (status.state === "TASK_RUNNING" || TERMINAL_TASK_STATES.has(status.state)) {
          if (followers.length === 0) await startFollowing(status.agentId);
        }
        if (TERMINAL_TASK_STATES.has(status.state)) settle(status);
      },
    },
  });

  // Ctrl-C (or SIGTERM) kills the task, as it would a command run in the foreground; without this
  // the process died and the task ran on until the master missed the driver's heartbeats. A second
  // Ctrl-C, while the kill is under way, ends `corral run` at once (the handler is gone by then).
  const interrupted = untilSignal();
  await driver.start();
  process.stderr.write(`corral: waiting for an offer of ${resources} to run ${taskId}\n`);
  // Output is streamed while the task runs; the interval is the refresh rate of a terminal.
  const streaming = setInterval(() => void Promise.all(followers.map((f) => f.drain())), 250);
  // A task that no agent can hold would otherwise wait without a word.
  const noFitHint = setTimeout(() => {
    if (launched) return;
    process.stderr.write(
      offersSeen === 0
        ? "corral: no offer yet: is an agent registered, with free resources in this role? (corral state); still waiting, Ctrl-C to give up\n"
        : `corral: no offer fits ${resources} yet (the largest had ${largestDeclined ?? "?"}); still waiting, Ctrl-C to give up\n`,
    );
  }, NO_FIT_HINT_MS);
  const outcome = await Promise.race([finished.then((status) => ({ status })), interrupted.then((signal) => ({ signal }))]);
  let code: number;
  if ("signal" in outcome) {
    process.stderr.write(`corral: interrupted: ${launched ? `killing ${taskId}` : "no task was launched"}\n`);
    if (launched) {
      await driver.kill(taskId).catch((err: Error) => process.stderr.write(`corral: could not kill ${taskId}: ${err.message}\n`));
      // Its TASK_KILLED, within the agent's grace period and a margin; the teardown below kills it anyway.
      await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, RUN_KILL_WAIT_MS).unref())]);
    }
    code = 128 + (outcome.signal === "SIGTERM" ? 15 : 2);
  } else {
    code = exitCodeOf(outcome.status);
  }
  clearInterval(streaming);
  clearTimeout(noFitHint);
  for (const follower of followers) await follower.drain();
  await driver.stop({ teardown: true });
  await transport.close();
  return code;
}

/** How long `corral run` waits for an offer that fits before it says what the offers had. */
const NO_FIT_HINT_MS = 5_000;

/** How long an interrupted `corral run` waits for its task's TASK_KILLED: the agent's 3 s grace period and a margin. */
const RUN_KILL_WAIT_MS = 10_000;
