/**
 * The master's input queue on a real nats-server: bus messages beyond a slice wait their turn in
 * order, frameworks' calls and agents' messages in turn, and beyond `maxQueuedInputs` they are
 * shed and counted while the master keeps serving.
 */
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { NatsTransport } from "../../sdk/nats-transport.ts";
import { encodeEnvelope } from "../../sdk/wire/codec.ts";
import { agentCmdSubject, masterAgentSubject, masterSchedulerSubject } from "../../sdk/wire/subjects.ts";
import { createMaster, type Master } from "../../master/shell.ts";
import { MemoryRegistryStore } from "../../master/store.ts";
import { connectBus, useNats } from "../harness/nats.ts";
import { useCleanups } from "../harness/cleanups.ts";
import { eventually } from "../harness/events.ts";
import { FakeFramework, memoryLog } from "./fakes.ts";

const nats = useNats();
const defer = useCleanups();

const bus = (name: string): Promise<NatsTransport> => connectBus(nats, name, defer);

async function startMaster(cluster: string, inputSliceMs: number, maxQueuedInputs: number): Promise<Master> {
  const master = createMaster({ cluster, transport: await bus("master"), store: new MemoryRegistryStore(), log: memoryLog("error").log, inputSliceMs, maxQueuedInputs });
  defer(() => master.stop());
  await master.start();
  return master;
}

const heartbeat = (frameworkId: string) =>
  encodeEnvelope({ senderId: "flood", callId: randomUUID(), payload: "schedulerCall", schedulerCall: { frameworkId, kind: "heartbeat", heartbeat: {} } });

describe("the master's input queue", () => {
  it("answers every call of a burst that outlasts a slice", async () => {
    const cluster = `inbox${process.pid}a`;
    const master = await startMaster(cluster, 0.01, 100_000);
    const framework = new FakeFramework(await bus("framework"), cluster);
    expect(await framework.subscribe()).toBeUndefined();
    const client = await bus("client");
    const answers = await Promise.all(Array.from({ length: 300 }, () => client.request(masterSchedulerSubject(cluster), heartbeat(framework.frameworkId), { timeoutMs: 10_000 })));
    expect(answers).toHaveLength(300);
    expect(master.isLeader()).toBe(true);
    expect(await (await fetch(`${master.httpUrl()}/metrics`)).text()).toContain("corral_master_inputs_shed_total 0");
  });

  it("does not keep a framework's call waiting behind a backlog of agent messages", async () => {
    const cluster = `inbox${process.pid}c`;
    await startMaster(cluster, 0.01, 100_000);
    const framework = new FakeFramework(await bus("framework"), cluster);
    expect(await framework.subscribe()).toBeUndefined();
    // One connection sees both the master's commands to agents and its answer to our call, in the
    // order the master sent them.
    const client = await bus("client");
    let commands = 0;
    client.subscribe(agentCmdSubject(cluster, "ghost-0").replace("ghost-0", "*"), () => {
      commands++;
    });
    await client.flush();
    // A backlog of pongs from agents the master does not know: it asks each to re-register.
    const backlog = 3000;
    const flood = await bus("flood");
    for (let i = 0; i < backlog; i++) {
      flood.publish(masterAgentSubject(cluster, `ghost-${i}`), encodeEnvelope({ senderId: `ghost-${i}`, callId: "", payload: "agentToMaster", agentToMaster: { kind: "pong", pong: { seq: 0 } } }));
    }
    await flood.flush();
    await client.request(masterSchedulerSubject(cluster), heartbeat(framework.frameworkId), { timeoutMs: 30_000 });
    const commandsBeforeAnswer = commands;
    await eventually(() => commands === backlog, 30_000, "every agent message to be handled");
    // Answered while most of the agents' backlog was still queued, not after all of it.
    expect(commandsBeforeAnswer).toBeLessThan(backlog / 2);
  });

  it("sheds and counts inputs beyond maxQueuedInputs, and keeps serving", async () => {
    const cluster = `inbox${process.pid}b`;
    const master = await startMaster(cluster, 0.01, 5);
    const framework = new FakeFramework(await bus("framework"), cluster);
    expect(await framework.subscribe()).toBeUndefined();
    const flood = await bus("flood");
    for (let i = 0; i < 2000; i++) flood.publish(masterSchedulerSubject(cluster), heartbeat(framework.frameworkId));
    await flood.flush();
    const shed = async () => Number(/corral_master_inputs_shed_total (\d+)/.exec(await (await fetch(`${master.httpUrl()}/metrics`)).text())?.[1] ?? 0);
    await eventually(async () => (await shed()) > 0, 10_000, "inputs to be shed");
    // Still serving: a call made after the flood is answered.
    await eventually(async () => (await framework.callResponse({ kind: "heartbeat", heartbeat: {} })).ok, 10_000, "an answer after the flood");
  });
});
