/**
 * The agent's watch on the master's pings, on virtual time: the real agent on the simulator's
 * engine and network, with a pretend master that answers registrations and pings when told. The
 * virtual clock makes the deadline exact (no wall-clock slack in the assertions).
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { InstantContainerizer } from "../../agent/containerizer/instant.ts";
import { MemoryAgentIdStore, createAgent, type Agent } from "../../agent/agent.ts";
import { SeededRng } from "../../sdk/rng.ts";
import { encodeEnvelope, safeDecode } from "../../sdk/wire/codec.ts";
import { agentCmdSubject, subjectWildcard } from "../../sdk/wire/subjects.ts";
import type { AgentToMaster } from "../../sdk/wire/types.ts";
import { SimEngine } from "../../sim/engine.ts";
import { SimNetwork, type SimTransport } from "../../sim/network.ts";

const LATENCY_MS = 1;

/** What the pretend master heard from the agent, at which virtual ms since the start. */
interface Heard {
  atMs: number;
  kind: AgentToMaster["kind"];
}

function world(pingTimeoutSecondsByAnswer: number[]) {
  const engine = new SimEngine({ startMs: 0 });
  const network = new SimNetwork(engine, { rng: new SeededRng(7), latency: { dist: "fixed", ms: LATENCY_MS } });
  const master: SimTransport = network.endpoint("master");
  const heard: Heard[] = [];
  let answers = 0;
  master.subscribe(subjectWildcard("masterAgent", "corral"), (msg) => {
    const decoded = safeDecode(msg.subject, msg.data, { expect: ["agentToMaster"] });
    if (!decoded.ok) throw decoded.error;
    const message = decoded.envelope.agentToMaster;
    heard.push({ atMs: engine.now(), kind: message.kind });
    if (!msg.reply) return;
    // Registrations are answered, each with the next timeout of the list (the last one repeats).
    const pingTimeoutSeconds = pingTimeoutSecondsByAnswer[Math.min(answers++, pingTimeoutSecondsByAnswer.length - 1)]!;
    const registration = { agentId: "agent-1", pingIntervalSeconds: 15, pingTimeoutSeconds, masterId: "master-1" };
    const reply = message.kind === "reregister" ? { kind: "reregistered" as const, reregistered: registration } : { kind: "registered" as const, registered: registration };
    master.respond(msg, encodeEnvelope({ senderId: "master-1", epoch: 0, payload: "masterToAgent", masterToAgent: reply }, master));
  });
  const agent: Agent = createAgent({
    transport: network.endpoint("agent"),
    workDir: "/sim/agent",
    agentIdStore: new MemoryAgentIdStore(),
    resources: "cpus:2;mem:1024;disk:1024;ports:[31000-31010]",
    http: false,
    containerizer: new InstantContainerizer({ clock: engine.clock, timers: engine.timers }),
    isolation: "sim",
    clock: engine.clock,
    timers: engine.timers,
    rng: new SeededRng(8),
    log: pino({ level: "silent" }),
  });
  let seq = 0;
  const pingAt = (atMs: number) =>
    engine.at(atMs, () => master.publish(agentCmdSubject("corral", "agent-1"), encodeEnvelope({ senderId: "master-1", epoch: 0, payload: "masterToAgent", masterToAgent: { kind: "ping", ping: { seq: ++seq } } }, master)));
  return { engine, agent, heard, pingAt };
}

describe("agent: the master's pings", () => {
  it("stays registered while pings come more often than the timeout, and re-registers exactly one timeout after the last", async () => {
    const { engine, agent, heard, pingAt } = world([75]);
    await agent.start();
    // Pings every 15 s for 10 minutes (eight timeouts), then none.
    const lastPingMs = 600_000;
    for (let t = 15_000; t <= lastPingMs; t += 15_000) pingAt(t);
    await engine.run({ untilMs: lastPingMs + 75_000 + 10 * LATENCY_MS });
    const registrations = heard.filter((h) => h.kind === "register" || h.kind === "reregister");
    expect(registrations.map((h) => h.kind)).toEqual(["register", "reregister"]);
    expect(heard.filter((h) => h.kind === "pong")).toHaveLength(1 + lastPingMs / 15_000 + 1);
    // Heard LATENCY_MS after the ping it answers; the re-registration leaves the agent exactly
    // 75 s after the last ping reached it.
    expect(registrations[1]!.atMs).toBe(lastPingMs + LATENCY_MS + 75_000 + LATENCY_MS);
    expect(agent.state().registered).toBe(true);
    await agent.stop();
  });

  it("counts a new registration's timeout from that registration, also when it is shorter than the last", async () => {
    // The first master says 75 s, the one answering the re-registration 10 s.
    const { engine, agent, heard, pingAt } = world([75, 10]);
    await agent.start();
    pingAt(60_000);
    await engine.run({ untilMs: 200_000 });
    const registrations = heard.filter((h) => h.kind === "register" || h.kind === "reregister");
    // 75 s of silence after the ping at 60 s; then, answered with 10 s and never pinged, one
    // re-registration every 10 s (and the round trip of its answer).
    expect(registrations[1]!.atMs).toBe(60_000 + LATENCY_MS + 75_000 + LATENCY_MS);
    const gaps = registrations.slice(2).map((h, i) => h.atMs - registrations[i + 1]!.atMs);
    expect(gaps.length).toBeGreaterThan(3);
    for (const gap of gaps) expect(gap).toBe(10_000 + 2 * LATENCY_MS);
    await agent.stop();
  });
});
