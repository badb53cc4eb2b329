import { describe, expect, it } from "vitest";
import { SeededRng } from "../../sdk/rng.ts";
import { isTransportError } from "../../sdk/transport.ts";
import { SimEngine } from "../../sim/engine.ts";
import { SimNetwork, subjectMatches, type SimNetworkOptions } from "../../sim/network.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function world(options: Partial<SimNetworkOptions> = {}) {
  const engine = new SimEngine({ startMs: 0 });
  const network = new SimNetwork(engine, { rng: new SeededRng(1), latency: { dist: "fixed", ms: 5 }, ...options });
  return { engine, network };
}

describe("SimNetwork", () => {
  it("matches NATS wildcards", () => {
    expect(subjectMatches("a.*.c", "a.b.c")).toBe(true);
    expect(subjectMatches("a.*", "a.b.c")).toBe(false);
    expect(subjectMatches("a.>", "a.b.c")).toBe(true);
    expect(subjectMatches("a.>", "a")).toBe(false);
    expect(subjectMatches("a.b", "a.b")).toBe(true);
  });

  it("delivers after the link latency, in order, to exact and wildcard subscribers", async () => {
    const { engine, network } = world();
    const a = network.endpoint("a");
    const b = network.endpoint("b");
    const got: string[] = [];
    b.subscribe("x.y", (m) => void got.push(`exact ${text(m.data)}@${engine.now()}`));
    b.subscribe("x.*", (m) => void got.push(`wild ${text(m.data)}@${engine.now()}`));
    a.publish("x.y", bytes("1"));
    a.publish("x.y", bytes("2"));
    a.publish("x.z", bytes("3"));
    await engine.run();
    expect(got).toEqual(["exact 1@5", "wild 1@5", "exact 2@5", "wild 2@5", "wild 3@5"]);
  });

  it("with a wildcard subscriber, delivers to subscriptions made or ended after a subject was last sent to", async () => {
    const { engine, network } = world();
    const a = network.endpoint("a");
    const b = network.endpoint("b");
    const got: string[] = [];
    const wild = b.subscribe("x.*", (m) => void got.push(`wild ${text(m.data)}`));
    a.publish("x.y", bytes("1"));
    await engine.run();
    const exact = b.subscribe("x.y", (m) => void got.push(`exact ${text(m.data)}`));
    a.publish("x.y", bytes("2"));
    await engine.run();
    wild.unsubscribe();
    a.publish("x.y", bytes("3"));
    await engine.run();
    b.subscribe("x.>", (m) => void got.push(`rest ${text(m.data)}`));
    exact.unsubscribe();
    a.publish("x.y", bytes("4"));
    await engine.run();
    expect(got).toEqual(["wild 1", "exact 2", "wild 2", "exact 3", "rest 4"]);
  });

  it("keeps per-link FIFO order even with random latency", async () => {
    const { engine, network } = world({ latency: { dist: "exp", minMs: 0.1, meanMs: 20 } });
    const a = network.endpoint("a");
    const got: number[] = [];
    network.endpoint("b").subscribe("s", (m) => void got.push(Number(text(m.data))));
    for (let i = 0; i < 100; i++) a.publish("s", bytes(String(i)));
    await engine.run();
    expect(got).toEqual([...Array(100).keys()]);
  });

  it("answers requests, times out on virtual time, and reports no responders", async () => {
    const { engine, network } = world();
    const server = network.endpoint("server");
    const client = network.endpoint("client");
    server.subscribe("echo", (m) => server.respond(m, m.data));
    const reply = client.request("echo", bytes("hi"), { timeoutMs: 100 });
    await engine.run();
    expect(text(await reply)).toBe("hi");
    expect(engine.now()).toBe(10);

    await expect(client.request("nobody", bytes("x"))).rejects.toSatisfy((e: unknown) => isTransportError(e, "CORRAL_ERR_NO_RESPONDERS"));

    network.partition([["server"], ["client"]]);
    const cut = client.request("echo", bytes("hi"), { timeoutMs: 100 });
    const outcome = cut.then(
      () => "answered",
      (e: unknown) => (isTransportError(e, "CORRAL_ERR_REQUEST_TIMEOUT") ? `timeout@${engine.now()}` : String(e)),
    );
    await engine.run();
    expect(await outcome).toBe("timeout@110");
  });

  it("partitions and down nodes cut messages both ways; healing restores them", async () => {
    const { engine, network } = world();
    const a = network.endpoint("a");
    const b = network.endpoint("b");
    const c = network.endpoint("c");
    const got: string[] = [];
    for (const [name, t] of [["a", a], ["b", b], ["c", c]] as const) t.subscribe("all", (m) => void got.push(`${name}<${text(m.data)}`));
    network.partition([["a"], ["b"]]);
    a.publish("all", bytes("a1"));
    b.publish("all", bytes("b1"));
    await engine.run();
    expect(got.sort()).toEqual(["a<a1", "a<b1", "b<a1", "b<b1", "c<a1", "c<b1"].filter((s) => s !== "b<a1" && s !== "a<b1"));
    got.length = 0;
    network.heal();
    network.setDown("c", true);
    a.publish("all", bytes("a2"));
    c.publish("all", bytes("c2"));
    await engine.run();
    expect(got.sort()).toEqual(["a<a2", "b<a2"]);
    expect(network.stats.cut).toBeGreaterThan(0);
  });

  it("drops a message in flight when the receiver goes down before it arrives", async () => {
    const { engine, network } = world();
    const got: string[] = [];
    network.endpoint("b").subscribe("s", (m) => void got.push(text(m.data)));
    network.endpoint("a").publish("s", bytes("1"));
    engine.at(2, () => network.setDown("b", true));
    await engine.run();
    expect(got).toEqual([]);
  });

  it("loses and duplicates messages at the configured rates, reproducibly per seed", async () => {
    const run = async (seed: number) => {
      const engine = new SimEngine({ startMs: 0 });
      const network = new SimNetwork(engine, { rng: new SeededRng(seed), lossRate: 0.2, duplicateRate: 0.1 });
      const got: string[] = [];
      network.endpoint("b").subscribe("s", (m) => void got.push(text(m.data)));
      const a = network.endpoint("a");
      for (let i = 0; i < 2000; i++) a.publish("s", bytes(String(i)));
      await engine.run();
      return { got: got.join(","), stats: network.stats };
    };
    const one = await run(7);
    expect(one.stats.lost / 2000).toBeGreaterThan(0.15);
    expect(one.stats.lost / 2000).toBeLessThan(0.25);
    expect(one.stats.duplicated / 1600).toBeGreaterThan(0.06);
    expect(one.stats.duplicated / 1600).toBeLessThan(0.14);
    expect((await run(7)).got).toBe(one.got);
    expect((await run(8)).got).not.toBe(one.got);
  });

  it("gives each message to one member of a queue group", async () => {
    const { engine, network } = world();
    const counts = { q1: 0, q2: 0, plain: 0 };
    network.endpoint("w1").subscribe("work", () => void counts.q1++, { queue: "workers" });
    network.endpoint("w2").subscribe("work", () => void counts.q2++, { queue: "workers" });
    network.endpoint("w3").subscribe("work", () => void counts.plain++);
    const p = network.endpoint("p");
    for (let i = 0; i < 100; i++) p.publish("work", bytes("x"));
    await engine.run();
    expect(counts.q1 + counts.q2).toBe(100);
    expect(counts.q1).toBeGreaterThan(20);
    expect(counts.q2).toBeGreaterThan(20);
    expect(counts.plain).toBe(100);
  });

  it("behaves as a closed transport after close", async () => {
    const { network } = world();
    const a = network.endpoint("a");
    const sub = a.subscribe("s", () => {});
    await a.close();
    await a.close();
    sub.unsubscribe();
    expect(() => a.publish("s", bytes("x"))).toThrow(/closed/);
    await expect(a.request("s", bytes("x"))).rejects.toSatisfy((e: unknown) => isTransportError(e, "CORRAL_ERR_TRANSPORT_CLOSED"));
    await expect(a.flush()).rejects.toThrow(/closed/);
    expect(network.endpoint("a")).not.toBe(a);
  });
});
