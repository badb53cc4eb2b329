/**
 * Test helpers for the scheduler driver: a scripted master that speaks the framework side of
 * docs/protocol.md over a real Transport (no mocked NATS), hand-driven timers, and a deadline-bound
 * wait for a condition.
 */

import type { Clock, TimerHandle, Timers } from "../../sdk/clock.ts";
import { Resources } from "../../sdk/resources.ts";
import type { IncomingMessage, Subscription, Transport } from "../../sdk/transport.ts";
import { decodeEnvelope, encodeEnvelope } from "../../sdk/wire/codec.ts";
import { resourcesToWire } from "../../sdk/wire/resources.ts";
import { frameworkEventsSubject, masterSchedulerSubject } from "../../sdk/wire/subjects.ts";
import type { Attribute, CallResponse, Offer, SchedulerCall, SchedulerCallKind, SchedulerEvent } from "../../sdk/wire/types.ts";

/** An offer of framework `fw-1` as the master sends it, of `resources` in Mesos text form. */
export function wireOffer(id: string, agentId = "agent-1", resources = "cpus:2;mem:1024;ports:[31000-31009]", attributes: Attribute[] = []): Offer {
  return { id, frameworkId: "fw-1", agentId, hostname: `${agentId}.example`, role: "default", resources: resourcesToWire(Resources.parse(resources)), attributes };
}

/** Waits until `predicate` holds, failing with `what` after `timeoutMs`. */
export async function until(predicate: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** One call the master received. */
export interface SeenCall {
  call: SchedulerCall;
  senderId: string;
  callId: string;
}

/** How the master answers a call: a response, SUBSCRIBED, or nothing (the caller times out). */
export type Answer = { response: CallResponse } | { subscribed: { frameworkId: string } } | "silent";

export const OK: CallResponse = { ok: true, errorCode: "", message: "" };

/** Plays the leading master on `corral.<cluster>.master.scheduler`. */
export class ScriptedMaster {
  readonly calls: SeenCall[] = [];
  frameworkId = "fw-1";
  masterId = "master-1";
  epoch = 1;
  heartbeatIntervalSeconds = 30;
  /** Put in SUBSCRIBED as `lastEventSeq` when set (a master that numbers its events). */
  lastEventSeq: number | undefined;
  /** Overrides the default answer (SUBSCRIBED for subscribe, ok for the rest) when it returns one. */
  script: (call: SchedulerCall, seen: SeenCall) => Answer | undefined = () => undefined;
  /** Runs before the answer is sent, e.g. to publish an event first. */
  beforeAnswer: (call: SchedulerCall) => Promise<void> | void = () => undefined;
  private sub: Subscription | undefined;

  constructor(
    readonly transport: Transport,
    readonly cluster: string,
  ) {}

  async listen(): Promise<void> {
    this.sub = this.transport.subscribe(masterSchedulerSubject(this.cluster), (msg) => this.onCall(msg));
    await this.transport.flush();
  }

  close(): void {
    this.sub?.unsubscribe();
  }

  private async onCall(msg: IncomingMessage): Promise<void> {
    const env = decodeEnvelope(msg.subject, msg.data, { expect: ["schedulerCall"] });
    const seen: SeenCall = { call: env.schedulerCall, senderId: env.senderId, callId: env.callId };
    this.calls.push(seen);
    await this.beforeAnswer(seen.call);
    const answer = this.script(seen.call, seen) ?? this.defaultAnswer(seen.call);
    if (answer === "silent") return;
    const header = { senderId: this.masterId, epoch: this.epoch, callId: env.callId };
    const bytes =
      "response" in answer
        ? encodeEnvelope({ ...header, payload: "callResponse", callResponse: answer.response })
        : encodeEnvelope({
            ...header,
            payload: "schedulerEvent",
            schedulerEvent: {
              kind: "subscribed",
              subscribed: {
                frameworkId: answer.subscribed.frameworkId,
                heartbeatIntervalSeconds: this.heartbeatIntervalSeconds,
                masterId: this.masterId,
                ...(this.lastEventSeq !== undefined ? { lastEventSeq: this.lastEventSeq } : {}),
              },
            },
          });
    this.transport.respond(msg, bytes);
  }

  private defaultAnswer(call: SchedulerCall): Answer {
    if (call.kind === "subscribe") return { subscribed: { frameworkId: call.frameworkId || this.frameworkId } };
    return { response: OK };
  }

  /** Publishes an event on the framework's events subject. */
  publish(event: SchedulerEvent, epoch = this.epoch, frameworkId = this.frameworkId): void {
    const bytes = encodeEnvelope({ senderId: this.masterId, epoch, payload: "schedulerEvent", schedulerEvent: event });
    this.transport.publish(frameworkEventsSubject(this.cluster, frameworkId), bytes);
  }

  /** Publishes raw bytes on the framework's events subject. */
  publishRaw(bytes: Uint8Array): void {
    this.transport.publish(frameworkEventsSubject(this.cluster, this.frameworkId), bytes);
  }

  /** The calls of one kind, in arrival order. */
  callsOf<K extends SchedulerCallKind>(kind: K): Array<Extract<SchedulerCall, { kind: K }>> {
    return this.calls.map((c) => c.call).filter((c): c is Extract<SchedulerCall, { kind: K }> => c.kind === kind);
  }

  seenOf(kind: SchedulerCallKind): SeenCall[] {
    return this.calls.filter((c) => c.call.kind === kind);
  }
}

/**
 * Timers fired by hand: {@link advance} moves the clock and runs every timer that falls due, in
 * order (including timers those callbacks set).
 */
export class ManualTimers implements Timers, Clock {
  private time: number;
  private seq = 0;
  private readonly pending = new Map<number, { due: number; callback: () => void }>();

  constructor(startMs = 1_000_000) {
    this.time = startMs;
  }

  now(): number {
    return this.time;
  }

  set(delayMs: number, callback: () => void): TimerHandle {
    const id = this.seq++;
    this.pending.set(id, { due: this.time + Math.max(0, delayMs), callback });
    return { cancel: () => this.pending.delete(id) };
  }

  /** How many timers are armed. */
  armed(): number {
    return this.pending.size;
  }

  advance(deltaMs: number): void {
    const target = this.time + deltaMs;
    for (;;) {
      let next: [number, { due: number; callback: () => void }] | undefined;
      for (const entry of this.pending) if (entry[1].due <= target && (next === undefined || entry[1].due < next[1].due)) next = entry;
      if (next === undefined) break;
      this.pending.delete(next[0]);
      this.time = Math.max(this.time, next[1].due);
      next[1].callback();
    }
    this.time = target;
  }
}
