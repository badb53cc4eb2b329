/**
 * Test doubles for the agent shell's integration tests: a "master" made of a plain NATS transport
 * that records what agents publish and answers registrations, a collector that awaits a predicate
 * with a deadline (no sleeps standing in for synchronisation), a pino logger whose records can
 * be awaited the same way, and containers that outlive the agent that started them.
 */
import { Writable } from "node:stream";
import { EventLog } from "../harness/events.ts";
import pino, { type Logger } from "pino";
import { InstantContainerizer } from "../../agent/containerizer/instant.ts";
import type { CheckpointedContainer, ContainerHandle, ContainerSpec, ContainerUsage, Containerizer, RecoveredContainer, Termination } from "../../agent/containerizer/types.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import type { TaskRef } from "../../sdk/task-key.ts";
import type { IncomingMessage, Subscription } from "../../sdk/transport.ts";
import { encodeEnvelope, safeDecode } from "../../sdk/wire/codec.ts";
import { agentCmdSubject, subjectWildcard } from "../../sdk/wire/subjects.ts";
import type { AgentRegistration, AgentToMaster, FrameworkInfo, MasterToAgent, TaskInfo, TaskStatus } from "../../sdk/wire/types.ts";

/**
 * The shared {@link EventLog}, with these tests' argument order: what is awaited before the
 * deadline.
 */
export class Collector<T> {
  private readonly log = new EventLog<T>();

  get items(): readonly T[] {
    return this.log.items;
  }

  push(item: T): void {
    this.log.push(item);
  }

  /** Resolves with the first item (already collected or future) matching `predicate`. */
  waitFor(predicate: (item: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
    return this.log.waitFor(predicate, timeoutMs, what);
  }

  /** Items matching `predicate` so far. */
  filter(predicate: (item: T) => boolean): T[] {
    return this.log.filter(predicate);
  }
}

/** One message an agent sent to the master subject. */
export interface Received {
  /** The subject it came on (the sender's own `master.agent.<id>`). */
  subject: string;
  senderId: string;
  message: AgentToMaster;
  /** Set on requests (REGISTER/REREGISTER). */
  request?: IncomingMessage;
  /** Position in arrival order. */
  index: number;
}

/** How the fake master answers registrations. */
export interface AutoRegister {
  /** Id given to agents that REGISTER without one. @default "agent-1" */
  agentId?: string;
  pingTimeoutSeconds?: number;
  /** Epoch of the answers. @default 0 */
  epoch?: number;
  masterId?: string;
}

/** A pretend master: subscribes to the agent subjects of `cluster`, records and optionally answers. */
export class FakeMaster {
  readonly received = new Collector<Received>();
  private sub: Subscription | undefined;
  private count = 0;
  /** When set, REGISTER/REREGISTER requests are answered with it. */
  autoRegister: AutoRegister | undefined;
  /** When true, every status update with a uuid is acknowledged at once. */
  autoAck = false;
  /** Epoch put on commands. */
  epoch = 0;

  private constructor(
    readonly transport: NatsTransport,
    readonly cluster: string,
  ) {}

  static async connect(url: string, cluster: string): Promise<FakeMaster> {
    const transport = await connectNats({ servers: url, name: `fake-master-${cluster}` });
    return new FakeMaster(transport, cluster);
  }

  /** Starts listening (the "master comes up"); resolves once the server has the subscription. */
  async listen(): Promise<void> {
    this.sub = this.transport.subscribe(subjectWildcard("masterAgent", this.cluster), (msg) => this.onMessage(msg));
    await this.transport.flush();
  }

  private onMessage(msg: IncomingMessage): void {
    const decoded = safeDecode(msg.subject, msg.data, { expect: ["agentToMaster"] });
    if (!decoded.ok) throw decoded.error;
    const envelope = decoded.envelope;
    const item: Received = { subject: msg.subject, senderId: envelope.senderId, message: envelope.agentToMaster, index: this.count++ };
    if (msg.reply) item.request = msg;
    if (this.autoRegister && msg.reply) this.answerRegistration(item, this.autoRegister);
    if (this.autoAck && item.message.kind === "statusUpdate") {
      const status = item.message.statusUpdate.status!;
      if (status.uuid.length > 0) this.ack(status);
    }
    this.received.push(item);
  }

  /** Replies to a REGISTER (registered) or REREGISTER (reregistered, keeping the agent's id). */
  answerRegistration(item: Received, options: AutoRegister = {}): void {
    const m = item.message;
    const registration: AgentRegistration = {
      agentId: m.kind === "reregister" ? m.reregister.agentInfo!.id : (options.agentId ?? "agent-1"),
      pingIntervalSeconds: 15,
      pingTimeoutSeconds: options.pingTimeoutSeconds ?? 75,
      masterId: options.masterId ?? "master-1",
    };
    const reply: MasterToAgent =
      m.kind === "reregister" ? { kind: "reregistered", reregistered: registration } : { kind: "registered", registered: registration };
    this.transport.respond(
      item.request!,
      encodeEnvelope({ senderId: registration.masterId, epoch: options.epoch ?? 0, payload: "masterToAgent", masterToAgent: reply }),
    );
  }

  /** Publishes a command to an agent. */
  send(agentId: string, command: MasterToAgent, epoch = this.epoch): void {
    this.transport.publish(agentCmdSubject(this.cluster, agentId), encodeEnvelope({ senderId: "master-1", epoch, payload: "masterToAgent", masterToAgent: command }));
  }

  /** Publishes raw bytes to an agent's command subject. */
  sendRaw(agentId: string, data: Uint8Array): void {
    this.transport.publish(agentCmdSubject(this.cluster, agentId), data);
  }

  ack(status: TaskStatus): void {
    this.send(status.agentId, { kind: "statusUpdateAck", statusUpdateAck: { frameworkId: status.frameworkId, taskId: status.taskId, uuid: status.uuid } });
  }

  /** Sends `run_task` for `task` of framework `frameworkId`; `framework` overrides FrameworkInfo fields. */
  runTask(agentId: string, task: TaskInfo, frameworkId = "fw-1", framework: Partial<FrameworkInfo> = {}): void {
    this.send(agentId, {
      kind: "runTask",
      runTask: {
        framework: { id: frameworkId, name: "test", roles: ["*"], principal: "", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: false, hostname: "", ...framework },
        task,
      },
    });
  }

  /**
   * Status updates received so far for a task, in arrival order: by task id alone (of any
   * framework), or by framework and task id.
   */
  statuses(task: string | TaskRef): TaskStatus[] {
    return this.received.items.flatMap((r) => {
      const status = r.message.kind === "statusUpdate" ? r.message.statusUpdate.status : undefined;
      return status !== undefined && isOf(status, task) ? [status] : [];
    });
  }

  /** Waits for a status update of a task (named as in {@link statuses}) in `state`. */
  async waitForStatus(task: string | TaskRef, state: TaskStatus["state"], timeoutMs?: number): Promise<TaskStatus> {
    const item = await this.received.waitFor(
      (r) => r.message.kind === "statusUpdate" && r.message.statusUpdate.status !== undefined && isOf(r.message.statusUpdate.status, task) && r.message.statusUpdate.status.state === state,
      `${state} of ${typeof task === "string" ? task : `${task.taskId} of ${task.frameworkId}`}`,
      timeoutMs,
    );
    return (item.message as Extract<AgentToMaster, { kind: "statusUpdate" }>).statusUpdate.status!;
  }

  /** Waits for a pong with `seq` and returns its arrival record. */
  waitForPong(seq: number, timeoutMs?: number): Promise<Received> {
    return this.received.waitFor((r) => r.message.kind === "pong" && r.message.pong.seq === seq, `pong ${seq}`, timeoutMs);
  }

  async close(): Promise<void> {
    this.sub?.unsubscribe();
    await this.transport.close();
  }
}

function isOf(status: TaskStatus, task: string | TaskRef): boolean {
  if (typeof task === "string") return status.taskId === task;
  return status.taskId === task.taskId && status.frameworkId === task.frameworkId;
}

/**
 * A host whose containers outlive the agent that started them, as the Linux containerizer's do,
 * for recovery tests without root: each agent gets a {@link Containerizer} view of it, and a view
 * that was closed (its agent stopped without killing its tasks) no longer hears of its containers,
 * as a dead agent would not. Containers run in memory ({@link InstantContainerizer}) until killed.
 */
export class SurvivingHost {
  private readonly containers = new InstantContainerizer();

  /** A containerizer for one agent's lifetime. */
  view(): Containerizer {
    const host = this.containers;
    let closed = false;
    const unlessClosed = <T>(promise: Promise<T>): Promise<T> => promise.then((value) => (closed ? new Promise<T>(() => undefined) : value));
    return {
      launch: (spec: ContainerSpec): Promise<ContainerHandle> => host.launch(spec),
      kill: (containerId: string): Promise<Termination> => unlessClosed(host.kill(containerId)),
      wait: (containerId: string): Promise<Termination> => unlessClosed(host.wait(containerId)),
      usage: (containerId: string): Promise<ContainerUsage> => host.usage(containerId),
      containers: (): string[] => host.containers(),
      recover: async (checkpointed: ReadonlyArray<CheckpointedContainer>): Promise<RecoveredContainer[]> => {
        const running = new Set(host.containers());
        return checkpointed.map((c) => ({ containerId: c.containerId, running: running.has(c.containerId) }));
      },
      destroyAll: () => host.destroyAll(),
      close: async () => {
        closed = true;
      },
    };
  }

  /** Ids of the containers running on the host. */
  running(): string[] {
    return this.containers.containers();
  }
}

/** A shell task as the master would send it. */
export function shellTask(taskId: string, agentId: string, command: string, extra: Partial<TaskInfo> = {}): TaskInfo {
  return {
    taskId,
    name: taskId,
    agentId,
    resources: [
      { name: "cpus", role: "*", value: "scalar", scalar: 0.1 },
      { name: "mem", role: "*", value: "scalar", scalar: 32 },
      { name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 31000, end: 31001 }] } },
    ],
    command: { value: command, arguments: [], shell: true, environment: { GREETING: "hi" }, user: "" },
    labels: {},
    ...extra,
  };
}

/** A pino logger at debug level whose parsed records land in `records`. */
export function capturingLogger(): { log: Logger; records: Collector<Record<string, unknown>> } {
  const records = new Collector<Record<string, unknown>>();
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() !== "") records.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  return { log: pino({ level: "debug" }, stream), records };
}
