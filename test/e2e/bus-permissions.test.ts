/**
 * The README's "Securing the bus", for real: a nats-server whose users have the permissions
 * `permissionsFor` derives from the subject table, a master and an agent each with its own user,
 * and a second agent's user that tries to speak in the first agent's name; frameworks of two
 * principals, each with its own user, and one that tries to act as the other or listen to it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryAgentIdStore, createAgent } from "../../agent/agent.ts";
import { createMaster } from "../../master/shell.ts";
import { MemoryRegistryStore } from "../../master/store.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { createSchedulerDriver, isSchedulerError, type SchedulerDriver } from "../../sdk/scheduler.ts";
import { decodeEnvelope, encodeEnvelope } from "../../sdk/wire/codec.ts";
import { clusterSubjects, permissionsFor } from "../../sdk/wire/subjects.ts";
import { eventually, within } from "../harness/events.ts";
import { startNats } from "../harness/nats.ts";

const QUIET = pino({ level: "silent" });
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

/**
 * A nats-server whose users are `users` (the master's is "master" / "pw-m"), stopped after the
 * test; `as(user, pass)` connects as one of them.
 */
async function securedBus(users: ReadonlyArray<{ user: string; password: string; permissions: unknown }>): Promise<(user: string, pass: string) => Promise<NatsTransport>> {
  const server = await startNats({ jetstream: false, config: `authorization: ${JSON.stringify({ users })}\n`, probeAuth: { user: "master", pass: "pw-m" } });
  cleanups.push(() => server.stop());
  return async (user, pass) => {
    const transport = await connectNats({ servers: server.url, name: user, nats: { user, pass } });
    cleanups.push(() => transport.close());
    return transport;
  };
}

describe("per-agent NATS permissions", () => {
  it("serve an agent given its id ahead of time, and stop another agent from speaking in its name", async () => {
    const cluster = "secure";
    const users = [
      { user: "master", password: "pw-m", permissions: permissionsFor("master", cluster) },
      { user: "agent-7", password: "pw-7", permissions: permissionsFor("agent", cluster, { id: "agent-7" }) },
      { user: "agent-8", password: "pw-8", permissions: permissionsFor("agent", cluster, { id: "agent-8" }) },
    ];
    const as = await securedBus(users);

    const master = createMaster({ cluster, transport: await as("master", "pw-m"), store: new MemoryRegistryStore(), log: QUIET, config: { agentPingIntervalMs: 100, maxMissedPings: 100 } });
    cleanups.push(() => master.stop());
    await master.start();
    // The operator chose the agent's id (the file agent.id of its work dir; here its store).
    const workDir = await mkdtemp(join(tmpdir(), "corral-agent-"));
    cleanups.push(() => rm(workDir, { recursive: true, force: true }));
    const agent = createAgent({
      cluster,
      transport: await as("agent-7", "pw-7"),
      workDir,
      agentIdStore: new MemoryAgentIdStore("agent-7"),
      resources: "cpus:2;mem:1024;disk:1024;ports:[31000-31010]",
      hostname: "host7",
      http: false,
      log: QUIET,
      registrationBackoffMs: 20,
    });
    cleanups.push(() => agent.stop());
    await agent.start();
    await eventually(() => master.core.state().agents.some((a) => a.id === "agent-7" && a.active), 10_000, "agent-7 registered and listening");

    // Another agent cannot publish on agent-7's subject at all...
    const s = clusterSubjects(cluster);
    const intruder = await as("agent-8", "pw-8");
    const denied = new Promise<string>((resolve) => {
      const off = intruder.onEvent((e) => {
        if (e.type === "error") {
          off();
          resolve(String(e.error.message));
        }
      });
    });
    const leave = (senderId: string) => encodeEnvelope({ senderId, payload: "agentToMaster", agentToMaster: { kind: "unregisterNotice", unregisterNotice: { reason: "" } } });
    intruder.publish(s.masterAgent("agent-7"), leave("agent-7"));
    expect(await denied).toMatch(/permissions violation/i);
    // ...and what it claims on its own subject in agent-7's name is dropped by the master.
    intruder.publish(s.masterAgent("agent-8"), leave("agent-7"));
    await intruder.flush();
    await eventually(() => master.drops.count({ kind: "master.agent", reason: "wrong_sender" }) === 1, 10_000, "the claim to be dropped");
    expect(master.core.state().agents.map((a) => a.id)).toEqual(["agent-7"]);
    expect(master.core.sizes().goneAgents).toBe(0);
  });
});

describe("per-principal NATS permissions", () => {
  it("keep one principal's frameworks from calling as another principal, taking over its framework, or reading its events", async () => {
    const cluster = "secure";
    const users = [
      { user: "master", password: "pw-m", permissions: permissionsFor("master", cluster) },
      { user: "team-a", password: "pw-a", permissions: permissionsFor("framework", cluster, { principal: "team-a" }) },
      { user: "team-b", password: "pw-b", permissions: permissionsFor("framework", cluster, { principal: "team-b" }) },
    ];
    const as = await securedBus(users);
    /** The next permissions violation the server reports to `transport`. */
    const violation = (transport: NatsTransport) =>
      within(
        new Promise<string>((resolve) => {
          const off = transport.onEvent((e) => {
            if (e.type === "error" && /permissions violation/i.test(String(e.error.message))) {
              off();
              resolve(String(e.error.message));
            }
          });
        }),
        10_000,
        "a permissions violation",
      );

    const master = createMaster({ cluster, transport: await as("master", "pw-m"), store: new MemoryRegistryStore(), log: QUIET, config: { frameworkHeartbeatIntervalMs: 100 } });
    cleanups.push(() => master.stop());
    await master.start();
    const driver = (transport: NatsTransport, principal: string, id?: string): SchedulerDriver => {
      const d = createSchedulerDriver({ cluster, transport, framework: { name: principal, principal, roles: ["web"], failoverTimeoutSeconds: 60, ...(id ? { id } : {}) }, requestTimeoutMs: 2_000 });
      cleanups.push(() => d.stop());
      return d;
    };
    // A framework of team-a subscribes on its principal's subject and hears its events (the master's heartbeats).
    const teamA = await as("team-a", "pw-a");
    const a = driver(teamA, "team-a");
    const { frameworkId } = await a.start();
    expect(master.core.state().frameworks).toMatchObject([{ id: frameworkId, principal: "team-a" }]);
    await eventually(() => a.stats().eventsReceived >= 2, 10_000, "team-a's framework to hear its events");

    const s = clusterSubjects(cluster);
    const teamB = await as("team-b", "pw-b");
    // team-b cannot call on team-a's subject, nor on the shared one...
    for (const subject of [s.masterScheduler("team-a"), s.masterScheduler()]) {
      const denied = violation(teamB);
      teamB.publish(subject, encodeEnvelope({ senderId: a.instanceId, payload: "schedulerCall", schedulerCall: { frameworkId, kind: "teardown", teardown: {} } }));
      expect(await denied).toMatch(/publish/i);
    }
    // ...nor listen to team-a's events, one framework's or all of them.
    for (const subject of [s.frameworkEvents(frameworkId, "team-a"), "corral.secure.framework.team-a.*.events", "corral.secure.framework.>"]) {
      const denied = violation(teamB);
      teamB.subscribe(subject, () => {});
      expect(await denied).toMatch(/subscription/i);
    }
    // On its own subject, a SUBSCRIBE with team-a's framework id, or naming team-a, is refused.
    const thief = driver(teamB, "team-b", frameworkId);
    const refused = await thief.start().catch((err: unknown) => err);
    expect(isSchedulerError(refused, "CORRAL_ERR_UNAUTHORIZED")).toBe(true);
    expect((refused as Error).message).toContain(`framework '${frameworkId}' is registered under principal 'team-a', and this call came under principal 'team-b'`);
    const claim = encodeEnvelope({
      senderId: "claimant",
      callId: "claim-1",
      payload: "schedulerCall",
      schedulerCall: { frameworkId: "", kind: "subscribe", subscribe: { frameworkInfo: { id: "", name: "claim", roles: ["web"], principal: "team-a", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: true, hostname: "" } } },
    });
    const answer = decodeEnvelope("_INBOX.x", await teamB.request(s.masterScheduler("team-b"), claim, { timeoutMs: 5_000 }));
    expect(answer).toMatchObject({ payload: "callResponse", callResponse: { ok: false, errorCode: "CORRAL_ERR_UNAUTHORIZED" } });
    // team-a's framework carries on, still the only one, still its instance's.
    expect(a.state()).toBe("subscribed");
    const heard = a.stats().eventsReceived;
    await eventually(() => a.stats().eventsReceived > heard, 10_000, "team-a's framework to go on hearing its events");
    expect(master.core.state().frameworks.map((f) => [f.id, f.principal])).toEqual([[frameworkId, "team-a"]]);
  });
});
