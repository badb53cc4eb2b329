import { afterEach, describe, expect, it } from "vitest";
import { connectNats, type NatsTransport, type NatsTransportEvent } from "../../sdk/nats-transport.ts";
import { TransportError, isTransportError, type IncomingMessage, type Transport } from "../../sdk/transport.ts";
import { DropCounter, encodeEnvelope, handleSafely, safeDecode } from "../../sdk/wire/codec.ts";
import { clusterSubjects, permissionsFor } from "../../sdk/wire/subjects.ts";
import { startNats, useNats } from "../harness/nats.ts";
import { MemoryLogger, agentInfo } from "./fixtures.ts";

const nats = useNats();
const enc = new TextEncoder();
const dec = new TextDecoder();

const open: NatsTransport[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.close()));
});

async function client(name: string, log = new MemoryLogger(), url = nats.url): Promise<NatsTransport> {
  const t = await connectNats({ servers: url, name, log, reconnect: { timeWaitMs: 50, jitterMs: 10 } });
  open.push(t);
  return t;
}

/** Resolves with the next `count` messages delivered on `subject`. */
function collect(t: Transport, subject: string, count: number): Promise<IncomingMessage[]> {
  return new Promise((resolve) => {
    const got: IncomingMessage[] = [];
    const sub = t.subscribe(subject, (msg) => {
      got.push(msg);
      if (got.length === count) {
        sub.unsubscribe();
        resolve(got);
      }
    });
  });
}

/** Resolves on the first transport event of `type`. */
function nextEvent(t: NatsTransport, type: NatsTransportEvent["type"]): Promise<NatsTransportEvent> {
  return new Promise((resolve) => {
    const off = t.onEvent((e) => {
      if (e.type === type) {
        off();
        resolve(e);
      }
    });
  });
}

describe("NatsTransport against a real nats-server", () => {
  it("publishes and subscribes", async () => {
    const [sub, pub] = [await client("sub"), await client("pub")];
    const received = collect(sub, "t.pubsub", 2);
    await sub.flush(); // the server has our SUB before anything is published
    pub.publish("t.pubsub", enc.encode("one"));
    pub.publish("t.pubsub", enc.encode("two"));
    const msgs = await received;
    expect(msgs.map((m) => dec.decode(m.data))).toEqual(["one", "two"]);
    expect(msgs[0]!.subject).toBe("t.pubsub");
    expect(msgs[0]!.reply).toBeUndefined();
  });

  it("shares a queue group's messages, each delivered once", async () => {
    const [a, b, pub] = [await client("qa"), await client("qb"), await client("qpub")];
    const seen: string[] = [];
    let resolveAll!: () => void;
    const all = new Promise<void>((r) => (resolveAll = r));
    const handler = (msg: IncomingMessage) => {
      seen.push(dec.decode(msg.data));
      if (seen.length === 20) resolveAll();
    };
    a.subscribe("t.queue", handler, { queue: "workers" });
    b.subscribe("t.queue", handler, { queue: "workers" });
    await Promise.all([a.flush(), b.flush()]);
    for (let i = 0; i < 20; i++) pub.publish("t.queue", enc.encode(String(i)));
    await all;
    // Flush everything in flight; a duplicate would have arrived by now.
    await pub.flush();
    await Promise.all([a.flush(), b.flush()]);
    expect(seen.sort((x, y) => Number(x) - Number(y))).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
  });

  it("does request/reply", async () => {
    const [server, caller] = [await client("responder"), await client("caller")];
    server.subscribe("t.echo", (msg) => server.respond(msg, enc.encode(`echo:${dec.decode(msg.data)}`)));
    await server.flush();
    const reply = await caller.request("t.echo", enc.encode("hi"), { timeoutMs: 2_000 });
    expect(dec.decode(reply)).toBe("echo:hi");
    // respond() without a reply subject is a no-op, not an error.
    expect(() => server.respond({ subject: "t.echo", data: new Uint8Array() }, enc.encode("x"))).not.toThrow();
  });

  it("reports no responders and timeouts with stable codes", async () => {
    const [silent, caller] = [await client("silent"), await client("caller")];
    const noOne = caller.request("t.nobody", enc.encode("?"), { timeoutMs: 2_000 });
    await expect(noOne).rejects.toSatisfy((e) => isTransportError(e, "CORRAL_ERR_NO_RESPONDERS"));
    let asked!: () => void;
    const wasAsked = new Promise<void>((r) => (asked = r));
    silent.subscribe("t.silent", () => asked()); // hears the request, never answers
    await silent.flush();
    const timeout = caller.request("t.silent", enc.encode("?"), { timeoutMs: 150 });
    await wasAsked;
    await expect(timeout).rejects.toSatisfy((e) => isTransportError(e, "CORRAL_ERR_REQUEST_TIMEOUT"));
  });

  it("keeps a subscription alive when its handler throws or rejects", async () => {
    const log = new MemoryLogger();
    const [sub, pub] = [await client("fragile", log), await client("pub")];
    const good: string[] = [];
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    sub.subscribe("t.fragile", (msg) => {
      const text = dec.decode(msg.data);
      if (text === "throw") throw new Error("handler exploded");
      if (text === "reject") return Promise.reject(new Error("handler rejected"));
      good.push(text);
      if (text === "last") done();
      return undefined;
    });
    // Another subscription on the same connection must be unaffected as well.
    const other = collect(sub, "t.other", 1);
    await sub.flush();
    for (const text of ["first", "throw", "reject", "throw", "last"]) pub.publish("t.fragile", enc.encode(text));
    pub.publish("t.other", enc.encode("still here"));
    await finished;
    expect(good).toEqual(["first", "last"]);
    expect(dec.decode((await other)[0]!.data)).toBe("still here");
    const errors = log.at("error").map((e) => (e.obj as { err: Error }).err.message);
    expect(errors).toEqual(expect.arrayContaining(["handler exploded", "handler rejected"]));
  });

  it("carries envelopes end to end behind handleSafely", async () => {
    const subjects = clusterSubjects("it");
    const [master, agent, stranger] = [await client("master"), await client("agent"), await client("stranger")];
    const counter = new DropCounter();
    master.subscribe(
      subjects.masterAgent("boot-1"),
      handleSafely(
        new MemoryLogger(),
        counter,
        (env, msg) => {
          if (env.agentToMaster.kind !== "register") return;
          const reply = encodeEnvelope({
            senderId: "master-1",
            epoch: 1,
            callId: env.callId,
            payload: "masterToAgent",
            masterToAgent: {
              kind: "registered",
              registered: { agentId: "agent-9", pingIntervalSeconds: 15, pingTimeoutSeconds: 75, masterId: "master-1" },
            },
          });
          master.respond(msg, reply);
        },
        { expect: ["agentToMaster"] },
      ),
    );
    await master.flush();
    // Garbage first: it must be counted and must not stop the subscription.
    stranger.publish(subjects.masterAgent("boot-1"), new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    await stranger.flush();
    const request = encodeEnvelope({
      senderId: "boot-1",
      callId: "reg-1",
      payload: "agentToMaster",
      agentToMaster: { kind: "register", register: { agentInfo: { ...agentInfo, id: "" }, version: "0.1.0" } },
    });
    const bytes = await agent.request(subjects.masterAgent("boot-1"), request, { timeoutMs: 2_000 });
    const reply = safeDecode("_INBOX.reply", bytes, { expect: ["masterToAgent"] });
    expect(reply.ok).toBe(true);
    if (reply.ok) {
      expect(reply.envelope.callId).toBe("reg-1");
      expect(reply.envelope.masterToAgent).toMatchObject({ kind: "registered", registered: { agentId: "agent-9" } });
    }
    expect(counter.count({ kind: "master.agent", reason: "decode_error" })).toBe(1);
  });

  it("refuses use after close, and close is idempotent", async () => {
    const t = await connectNats({ servers: nats.url, name: "closer" });
    const sub = t.subscribe("t.closed", () => {});
    await t.close();
    await t.close();
    expect(() => sub.unsubscribe()).not.toThrow();
    expect(() => t.publish("t.closed", new Uint8Array())).toThrow(TransportError);
    await expect(t.request("t.closed", new Uint8Array())).rejects.toSatisfy((e) =>
      isTransportError(e, "CORRAL_ERR_TRANSPORT_CLOSED"),
    );
    expect(() => t.subscribe("t.closed", () => {})).toThrow(/closed/);
  });

  it("fails fast on a wrong URL instead of hanging", async () => {
    const unused = await startNats({ jetstream: false });
    const url = unused.url;
    await unused.stop();
    await expect(connectNats({ servers: url, name: "nobody-home", connectTimeoutMs: 1_000 })).rejects.toThrow();
  });
});

describe("NatsTransport across a nats-server restart", () => {
  it("reconnects and delivers again", async () => {
    const server = await startNats();
    try {
      const sub = await client("survivor-sub", new MemoryLogger(), server.url);
      const pub = await client("survivor-pub", new MemoryLogger(), server.url);
      const first = collect(sub, "t.restart", 1);
      await sub.flush();
      pub.publish("t.restart", enc.encode("before"));
      expect(dec.decode((await first)[0]!.data)).toBe("before");

      const subBack = nextEvent(sub, "reconnect");
      const pubBack = nextEvent(pub, "reconnect");
      const subLost = nextEvent(sub, "disconnect");
      await server.restart();
      await subLost;
      await Promise.all([subBack, pubBack]);

      // The client re-sends its SUBs on reconnect; a flush proves the server has them.
      const second = collect(sub, "t.restart", 1);
      await sub.flush();
      pub.publish("t.restart", enc.encode("after"));
      expect(dec.decode((await second)[0]!.data)).toBe("after");

      // Request/reply works again too.
      sub.subscribe("t.restart.echo", (msg) => sub.respond(msg, msg.data));
      await sub.flush();
      expect(dec.decode(await pub.request("t.restart.echo", enc.encode("ping"), { timeoutMs: 2_000 }))).toBe("ping");
    } finally {
      await Promise.all(open.splice(0).map((t) => t.close()));
      await server.stop();
    }
  });
});

describe("permissionsFor on a real nats-server", () => {
  it("lets each role do its job and nothing else", async () => {
    const cluster = "sec";
    const users = [
      { user: "master", password: "pw-m", permissions: permissionsFor("master", cluster) },
      { user: "agent", password: "pw-a", permissions: permissionsFor("agent", cluster, { id: "a1" }) },
      { user: "framework", password: "pw-f", permissions: permissionsFor("framework", cluster, { id: "f1" }) },
    ];
    // nats-server's configuration format accepts JSON.
    const server = await startNats({
      jetstream: false,
      config: `authorization: ${JSON.stringify({ users })}\n`,
      probeAuth: { user: "master", pass: "pw-m" },
    });
    const as = async (user: string, pass: string) => {
      const t = await connectNats({ servers: server.url, name: user, nats: { user, pass } });
      open.push(t);
      return t;
    };
    try {
      const s = clusterSubjects(cluster);
      const master = await as("master", "pw-m");
      const agent = await as("agent", "pw-a");
      const framework = await as("framework", "pw-f");

      // Allowed: a framework call answered by the master (allow_responses), a master command to the agent.
      master.subscribe(s.masterScheduler(), (msg) => master.respond(msg, enc.encode("ok")));
      await master.flush();
      expect(dec.decode(await framework.request(s.masterScheduler(), enc.encode("call"), { timeoutMs: 2_000 }))).toBe("ok");
      const cmd = collect(agent, s.agentCmd("a1"), 1);
      await agent.flush();
      master.publish(s.agentCmd("a1"), enc.encode("ping"));
      expect(dec.decode((await cmd)[0]!.data)).toBe("ping");

      // Forbidden: a framework publishing to an agent; an agent publishing a framework call.
      const frameworkDenied = nextEvent(framework, "error");
      framework.publish(s.agentCmd("a1"), enc.encode("rm -rf"));
      expect(String((await frameworkDenied as { error: Error }).error.message)).toMatch(/permissions violation/i);
      const agentDenied = nextEvent(agent, "error");
      agent.publish(s.masterScheduler(), enc.encode("teardown"));
      expect(String((await agentDenied as { error: Error }).error.message)).toMatch(/permissions violation/i);
      // Allowed: an agent talking to the master on its own subject. Forbidden: on another agent's.
      const own = collect(master, s.masterAgent("a1"), 1);
      await master.flush();
      agent.publish(s.masterAgent("a1"), enc.encode("pong"));
      expect(dec.decode((await own)[0]!.data)).toBe("pong");
      const impostorDenied = nextEvent(agent, "error");
      agent.publish(s.masterAgent("a2"), enc.encode("unregister a2"));
      expect(String((await impostorDenied as { error: Error }).error.message)).toMatch(/permissions violation/i);
      // Forbidden: an agent listening to another agent's commands.
      const spyDenied = nextEvent(agent, "error");
      agent.subscribe(s.agentCmd("a2"), () => {});
      expect(String((await spyDenied as { error: Error }).error.message)).toMatch(/permissions violation/i);
    } finally {
      await Promise.all(open.splice(0).map((t) => t.close()));
      await server.stop();
    }
  });
});
