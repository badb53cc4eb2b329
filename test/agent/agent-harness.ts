/**
 * Test doubles for the agent shell's integration tests: a "master" made of a plain NATS transport
 * that records what agents publish and answers registrations, a collector that awaits a predicate
 * with a deadline (no sleeps standing in for synchronisation), and a pino logger whose records can
 * be awaited the same way.
 */
import { Writable } from "node:stream";
import { EventLog } from "../harness/events.ts";
import pino, { type Logger } from "pino";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import type { IncomingMessage, Subscription } from "../../sdk/transport.ts";
import { encodeEnvelope, safeDecode } from "../../sdk/wire/codec.ts";
import { agentCmdSubject, masterAgentSubject } from "../../sdk/wire/subjects.ts";
import type { AgentRegistration, AgentToMaster, MasterToAgent, TaskInfo, TaskStatus } from "../../sdk/wire/types.ts";

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

/** A pretend master: subscribes to the agent subject of `cluster`, records and optionally answers. */
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
    this.sub = this.transport.subscribe(masterAgentSubject(this.cluster), (msg) => this.onMessage(msg));
    await this.transport.flush();
  }

  private onMessage(msg: IncomingMessage): void {
    const decoded = safeDecode(msg.subject, msg.data, { expect: ["agentToMaster"] });
    if (!decoded.ok) throw decoded.error;
    const envelope = decoded.envelope;
    const item: Received = { senderId: envelope.senderId, message: envelope.agentToMaster, index: this.count++ };
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

  runTask(agentId: string, task: TaskInfo, frameworkId = "fw-1"): void {
    this.send(agentId, {
      kind: "runTask",
      runTask: {
        framework: { id: frameworkId, name: "test", roles: ["*"], principal: "", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: false, hostname: "" },
        task,
      },
    });
  }

  /** Status updates received so far for `taskId`, in arrival order. */
  statuses(taskId: string): TaskStatus[] {
    return this.received.items.flatMap((r) =>
      r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.taskId === taskId ? [r.message.statusUpdate.status] : [],
    );
  }

  /** Waits for a status update of `taskId` in `state`. */
  async waitForStatus(taskId: string, state: TaskStatus["state"], timeoutMs?: number): Promise<TaskStatus> {
    const item = await this.received.waitFor(
      (r) => r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.taskId === taskId && r.message.statusUpdate.status.state === state,
      `${state} of ${taskId}`,
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
