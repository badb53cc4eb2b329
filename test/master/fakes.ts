/**
 * A fake agent and a fake framework for the master shell's integration tests: plain transports on
 * a real nats-server speaking the protocol of docs/protocol.md, with inboxes that tests await
 * (with deadlines) instead of sleeping.
 */

import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { Resources } from "../../sdk/resources.ts";
import type { Subscription, Transport } from "../../sdk/transport.ts";
import { decodeEnvelope, encodeEnvelope } from "../../sdk/wire/codec.ts";
import { resourcesToWire } from "../../sdk/wire/resources.ts";
import { agentCmdSubject, frameworkEventsSubject, masterAgentSubject, masterSchedulerSubject } from "../../sdk/wire/subjects.ts";
import type {
  AgentInfo,
  AgentRegistration,
  CallResponse,
  Envelope,
  EnvelopeHeader,
  EnvelopePayload,
  FrameworkInfo,
  MasterToAgent,
  SchedulerCallBody,
  SchedulerEvent,
  TaskStatus,
} from "../../sdk/wire/types.ts";

/** Messages received so far, and a way to await the next one matching a predicate. */
export class Inbox<T> {
  private readonly items: T[] = [];
  private readonly waiters = new Set<{ match: (item: T) => boolean; resolve: (item: T) => void }>();

  push(item: T): void {
    for (const waiter of this.waiters) {
      if (waiter.match(item)) {
        this.waiters.delete(waiter);
        waiter.resolve(item);
        return;
      }
    }
    this.items.push(item);
  }

  /** Everything received and not taken yet. */
  get pending(): readonly T[] {
    return this.items;
  }

  /** Takes the first item matching `match` (already received or still to come); rejects after `timeoutMs`. */
  take(match: (item: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
    const index = this.items.findIndex(match);
    if (index >= 0) return Promise.resolve(this.items.splice(index, 1)[0]!);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (item: T) => {
          clearTimeout(timer);
          resolve(item);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }
}

/** Awaits `predicate` becoming true (checked every `everyMs`), failing after `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** A pino logger that keeps its JSON lines in memory. */
export function memoryLog(level: pino.Level = "info"): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { log: pino({ level }, stream), lines };
}

const REPLY_SUBJECT = "_INBOX.test";

function decodeReply(bytes: Uint8Array): Envelope {
  return decodeEnvelope(REPLY_SUBJECT, bytes);
}

/** A registered agent that answers pings and records the master's commands. */
export class FakeAgent {
  readonly commands = new Inbox<EnvelopeHeader & { message: MasterToAgent }>();
  private subscription: Subscription | undefined;
  private pongs = true;

  private constructor(
    private readonly transport: Transport,
    private readonly cluster: string,
    readonly agentId: string,
    readonly registration: AgentRegistration,
    readonly info: AgentInfo,
  ) {}

  /** Registers (request), listens on its command subject, then sends its first pong. */
  static async register(transport: Transport, cluster: string, options: { instanceId?: string; hostname?: string; resources?: string } = {}): Promise<FakeAgent> {
    const info: AgentInfo = {
      id: "",
      hostname: options.hostname ?? "agent-1.test",
      resources: resourcesToWire(Resources.parse(options.resources ?? "cpus:2;mem:1024")),
      attributes: [{ name: "rack", text: "r1" }],
      httpEndpoint: "",
    };
    const reply = await FakeAgent.request(transport, cluster, options.instanceId ?? `inst-${randomUUID()}`, {
      payload: "agentToMaster",
      agentToMaster: { kind: "register", register: { agentInfo: info, version: "test" } },
    });
    if (reply.payload !== "masterToAgent" || reply.masterToAgent.kind !== "registered") throw new Error(`unexpected registration reply ${JSON.stringify(reply)}`);
    const registration = reply.masterToAgent.registered;
    const agent = new FakeAgent(transport, cluster, registration.agentId, registration, { ...info, id: registration.agentId });
    await agent.listen();
    agent.send({ kind: "pong", pong: { seq: 0 } });
    return agent;
  }

  /** Sends an agent request on the sender's master.agent subject and decodes the reply. */
  static async request(transport: Transport, cluster: string, senderId: string, payload: EnvelopePayload): Promise<Envelope> {
    const bytes = await transport.request(masterAgentSubject(cluster, senderId), encodeEnvelope({ senderId, callId: randomUUID(), ...payload }), { timeoutMs: 5_000 });
    return decodeReply(bytes);
  }

  private async listen(): Promise<void> {
    this.subscription = this.transport.subscribe(agentCmdSubject(this.cluster, this.agentId), (msg) => {
      const envelope = decodeEnvelope<"masterToAgent">(msg.subject, msg.data);
      const message = envelope.masterToAgent;
      if (message.kind === "ping" && this.pongs) this.send({ kind: "pong", pong: { seq: message.ping.seq } });
      this.commands.push({ senderId: envelope.senderId, epoch: envelope.epoch, schemaVersion: envelope.schemaVersion, callId: envelope.callId, message });
    });
    await this.transport.flush();
  }

  /** Stops answering pings (to play a dead agent). */
  silence(): void {
    this.pongs = false;
  }

  send(message: Extract<EnvelopePayload, { payload: "agentToMaster" }>["agentToMaster"]): void {
    this.transport.publish(masterAgentSubject(this.cluster, this.agentId), encodeEnvelope({ senderId: this.agentId, payload: "agentToMaster", agentToMaster: message }));
  }

  sendStatus(frameworkId: string, status: Partial<TaskStatus> & Pick<TaskStatus, "taskId" | "state">): void {
    const full: TaskStatus = {
      message: "",
      source: "SOURCE_AGENT",
      reason: "REASON_UNSPECIFIED",
      agentId: this.agentId,
      frameworkId,
      uuid: new Uint8Array(16).map((_, i) => i + 1),
      timestamp: Date.now() / 1000,
      ...status,
    };
    this.send({ kind: "statusUpdate", statusUpdate: { frameworkId, status: full } });
  }

  /** Takes the next command of `kind`. */
  next<K extends MasterToAgent["kind"]>(kind: K, timeoutMs?: number): Promise<EnvelopeHeader & { message: Extract<MasterToAgent, { kind: K }> }> {
    return this.commands.take((c) => c.message.kind === kind, `agent command ${kind}`, timeoutMs) as Promise<EnvelopeHeader & { message: Extract<MasterToAgent, { kind: K }> }>;
  }

  close(): void {
    this.subscription?.unsubscribe();
  }
}

/** A framework driver reduced to the protocol: requests on master.scheduler, events on its subject. */
export class FakeFramework {
  readonly events = new Inbox<EnvelopeHeader & { event: SchedulerEvent }>();
  frameworkId = "";
  private subscription: Subscription | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly cluster: string,
    readonly senderId = `driver-${randomUUID()}`,
  ) {}

  static info(extra: Partial<FrameworkInfo> = {}): FrameworkInfo {
    return { id: "", name: "fake", roles: ["web"], principal: "", failoverTimeoutSeconds: 3600, checkpoint: false, partitionAware: true, hostname: "", ...extra };
  }

  /** Sends one call and decodes the reply envelope. */
  async call(body: SchedulerCallBody, frameworkId = this.frameworkId): Promise<Envelope> {
    const bytes = await this.transport.request(
      masterSchedulerSubject(this.cluster),
      encodeEnvelope({ senderId: this.senderId, callId: randomUUID(), payload: "schedulerCall", schedulerCall: { frameworkId, ...body } }),
      { timeoutMs: 5_000 },
    );
    return decodeReply(bytes);
  }

  /** A call expected to be answered with a CallResponse. */
  async callResponse(body: SchedulerCallBody, frameworkId = this.frameworkId): Promise<CallResponse> {
    const reply = await this.call(body, frameworkId);
    if (reply.payload !== "callResponse") throw new Error(`expected a CallResponse, got ${JSON.stringify(reply)}`);
    return reply.callResponse;
  }

  /**
   * SUBSCRIBE (with `frameworkId` for a failover); on success listens for events and sends the first
   * heartbeat, as the protocol asks. Returns the refusal when the master refuses.
   */
  async subscribe(info: FrameworkInfo = FakeFramework.info(), frameworkId = ""): Promise<CallResponse | undefined> {
    const reply = await this.call({ kind: "subscribe", subscribe: { frameworkInfo: info } }, frameworkId);
    if (reply.payload === "callResponse") return reply.callResponse;
    if (reply.payload !== "schedulerEvent" || reply.schedulerEvent.kind !== "subscribed") throw new Error(`unexpected subscribe reply ${JSON.stringify(reply)}`);
    this.frameworkId = reply.schedulerEvent.subscribed.frameworkId;
    this.subscription = this.transport.subscribe(frameworkEventsSubject(this.cluster, this.frameworkId), (msg) => {
      const envelope = decodeEnvelope<"schedulerEvent">(msg.subject, msg.data);
      this.events.push({ senderId: envelope.senderId, epoch: envelope.epoch, schemaVersion: envelope.schemaVersion, callId: envelope.callId, event: envelope.schedulerEvent });
    });
    await this.transport.flush();
    const ready = await this.callResponse({ kind: "heartbeat", heartbeat: {} });
    if (!ready.ok) throw new Error(`first heartbeat refused: ${JSON.stringify(ready)}`);
    return undefined;
  }

  /** Takes the next event of `kind` (optionally matching `match`). */
  next<K extends SchedulerEvent["kind"]>(
    kind: K,
    match: (event: Extract<SchedulerEvent, { kind: K }>) => boolean = () => true,
    timeoutMs?: number,
  ): Promise<EnvelopeHeader & { event: Extract<SchedulerEvent, { kind: K }> }> {
    return this.events.take((e) => e.event.kind === kind && match(e.event as Extract<SchedulerEvent, { kind: K }>), `framework event ${kind}`, timeoutMs) as Promise<
      EnvelopeHeader & { event: Extract<SchedulerEvent, { kind: K }> }
    >;
  }

  close(): void {
    this.subscription?.unsubscribe();
  }
}
