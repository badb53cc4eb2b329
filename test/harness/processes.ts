/**
 * Corral components as real child processes (`bin/corral <command> ...`) for failover tests that
 * SIGKILL them, with their JSON log lines (stderr) recorded for tests to await; and a tap on the
 * bus that records every task launch and kill the masters send to agents.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { NatsTransport } from "../../sdk/nats-transport.ts";
import { safeDecode } from "../../sdk/wire/codec.ts";
import { subjectWildcard } from "../../sdk/wire/subjects.ts";
import { EventLog } from "./events.ts";

/** A `corral` child process; its log lines arrive in `log` with the time they were received. */
export interface CorralProcess {
  readonly child: ChildProcess;
  readonly log: EventLog<Record<string, unknown>>;
  /** True until the process exited. */
  alive(): boolean;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (a clean stop: an agent kills its tasks), SIGKILL after `graceMs`; waits for the exit. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts `bin/corral ...args`; the caller registers `kill` as a cleanup. */
export function spawnCorral(args: string[]): CorralProcess {
  const child = spawn(join(process.cwd(), "bin/corral"), args, { stdio: ["ignore", "ignore", "pipe"] });
  const log = new EventLog<Record<string, unknown>>();
  createInterface({ input: child.stderr! }).on("line", (line) => {
    try {
      log.push({ ...(JSON.parse(line) as Record<string, unknown>), receivedAt: Date.now() });
    } catch {
      log.push({ msg: line, receivedAt: Date.now() });
    }
  });
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    log,
    alive,
    async kill() {
      if (!alive()) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
    async stop(graceMs = 20_000) {
      if (!alive()) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** One command a master sent to an agent. */
export interface TappedCommand {
  kind: "runTask" | "killTask";
  taskId: string;
  agentSubject: string;
  atMs: number;
}

/**
 * Records every `runTask` and `killTask` any master sends to any agent of `cluster` (all of them
 * go over `corral.<cluster>.agent.<id>.cmd`): the ground truth of what was launched and killed,
 * whichever master or framework instance led at the time.
 */
export function tapAgentCommands(transport: NatsTransport, cluster: string): { commands: EventLog<TappedCommand>; launchesPerTask(): Map<string, number>; stop(): void } {
  const commands = new EventLog<TappedCommand>();
  const sub = transport.subscribe(subjectWildcard("agentCmd", cluster), (msg) => {
    const decoded = safeDecode(msg.subject, msg.data);
    if (!decoded.ok || decoded.envelope.payload !== "masterToAgent") return;
    const command = decoded.envelope.masterToAgent;
    if (command.kind === "runTask" && command.runTask.task) commands.push({ kind: "runTask", taskId: command.runTask.task.taskId, agentSubject: msg.subject, atMs: Date.now() });
    if (command.kind === "killTask") commands.push({ kind: "killTask", taskId: command.killTask.taskId, agentSubject: msg.subject, atMs: Date.now() });
  });
  return {
    commands,
    launchesPerTask() {
      const counts = new Map<string, number>();
      for (const c of commands.items) if (c.kind === "runTask") counts.set(c.taskId, (counts.get(c.taskId) ?? 0) + 1);
      return counts;
    },
    stop: () => sub.unsubscribe(),
  };
}
