/**
 * A real Corral cluster for integration tests: a master and agents (in-process, each with its own
 * NATS connection, as separate processes would have) on the test file's real nats-server, plus a
 * way to run an agent as a real child process (for SIGKILL tests), and a recording framework.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { createAgent, type Agent, type AgentOptions } from "../../agent/agent.ts";
import { createMaster, type Master } from "../../master/shell.ts";
import type { MasterConfig } from "../../master/core.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { createSchedulerDriver, type FrameworkOptions, type OfferView, type SchedulerDriver, type SchedulerDriverOptions, type TaskStatus } from "../../sdk/scheduler.ts";
import { EventLog, eventually } from "./events.ts";

let clusterSeq = 0;
/** Components log only errors in tests, so that failures stand out. */
const QUIET = pino({ level: "error" });

export interface TestClusterOptions {
  natsUrl: string;
  /** One entry per agent. */
  agents?: Array<Partial<Pick<AgentOptions, "resources" | "attributes" | "hostname" | "statusUpdateRetry">>>;
  master?: Partial<MasterConfig>;
}

export interface TestCluster {
  readonly cluster: string;
  readonly natsUrl: string;
  readonly master: Master;
  readonly agents: Agent[];
  connect(name?: string): Promise<NatsTransport>;
  /**
   * Starts an agent as a `corral agent` child process; kill it with `child.kill("SIGKILL")`. Give
   * `workDir` to restart an agent on the same work dir (the caller then removes it).
   */
  /** `isolation` is `corral agent --isolation` (default: the agent's own default, "auto"). */
  spawnAgent(resources: string, hostname: string, opts?: { workDir?: string; isolation?: string }): Promise<ChildProcess>;
  stop(): Promise<void>;
}

/** Fast timings so that loss and failover tests take seconds, not minutes. */
export const FAST_MASTER: Partial<MasterConfig> = {
  allocationIntervalMs: 100,
  agentPingIntervalMs: 200,
  maxMissedPings: 3,
  frameworkHeartbeatIntervalMs: 200,
  maxMissedFrameworkHeartbeats: 5,
};

export async function startCluster(options: TestClusterOptions): Promise<TestCluster> {
  const cluster = `t${process.pid}x${++clusterSeq}`;
  const transports: NatsTransport[] = [];
  const children: ChildProcess[] = [];
  const workDirs: string[] = [];
  const connect = async (name = "test") => {
    const transport = await connectNats({ servers: options.natsUrl, name });
    transports.push(transport);
    return transport;
  };
  const master = createMaster({ cluster, transport: await connect("master"), config: { ...FAST_MASTER, ...options.master }, log: QUIET });
  await master.start();
  const agents: Agent[] = [];
  for (const [i, spec] of (options.agents ?? [{}]).entries()) {
    const workDir = await mkdtemp(join(tmpdir(), "corral-agent-"));
    workDirs.push(workDir);
    const agent = createAgent({
      cluster,
      transport: await connect(`agent${i}`),
      workDir,
      resources: spec.resources ?? "cpus:2;mem:1024;disk:1024;ports:[31000-31099]",
      hostname: spec.hostname ?? `host${i + 1}`,
      log: QUIET,
      ...(spec.attributes ? { attributes: spec.attributes } : {}),
      ...(spec.statusUpdateRetry ? { statusUpdateRetry: spec.statusUpdateRetry } : {}),
    });
    await agent.start();
    agents.push(agent);
  }
  await eventually(() => master.core.sizes().agents === agents.length, 10_000, "agents registered");
  return {
    cluster,
    natsUrl: options.natsUrl,
    master,
    agents,
    connect,
    async spawnAgent(resources, hostname, opts = {}) {
      const workDir = opts.workDir ?? (await mkdtemp(join(tmpdir(), "corral-agent-proc-")));
      if (opts.workDir === undefined) workDirs.push(workDir);
      const child = spawn(
        join(process.cwd(), "bin/corral"), // one process: bin/corral execs node itself
        [
          ...["agent", "--nats", options.natsUrl, "--cluster", cluster, "--work-dir", workDir, "--resources", resources, "--hostname", hostname, "--port", "0", "--log-level", "warn"],
          ...(opts.isolation ? ["--isolation", opts.isolation] : []),
        ],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      children.push(child);
      return child;
    },
    async stop() {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      for (const agent of agents) await agent.stop().catch(() => undefined);
      await master.stop().catch(() => undefined);
      for (const transport of transports) await transport.close().catch(() => undefined);
      for (const dir of workDirs) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A framework whose offers and updates are recorded for tests to await. */
export interface RecordingFramework {
  readonly driver: SchedulerDriver;
  readonly offers: EventLog<OfferView>;
  readonly updates: EventLog<TaskStatus>;
  readonly errors: EventLog<string>;
  /** The latest status of a task, if any. */
  latest(taskId: string): TaskStatus | undefined;
}

export function recordingFramework(
  transport: NatsTransport,
  cluster: string,
  framework: FrameworkOptions,
  extra: Partial<Omit<SchedulerDriverOptions, "transport" | "cluster" | "framework" | "callbacks">> = {},
): RecordingFramework {
  const offers = new EventLog<OfferView>();
  const updates = new EventLog<TaskStatus>();
  const errors = new EventLog<string>();
  const driver = createSchedulerDriver({
    transport,
    cluster,
    framework,
    ...extra,
    callbacks: {
      offers: (list) => list.forEach((o) => offers.push(o)),
      update: (status) => updates.push(status),
      error: (message) => errors.push(message),
    },
  });
  return {
    driver,
    offers,
    updates,
    errors,
    latest: (taskId) => [...updates.items].reverse().find((s) => s.taskId === taskId),
  };
}
