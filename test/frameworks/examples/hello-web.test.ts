import { afterEach, describe, expect, it } from "vitest";
import { runHelloWeb } from "../../../frameworks/examples/hello-web.ts";
import { useNats } from "../../harness/nats.ts";
import { EventLog, eventually } from "../../harness/events.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { connectNats, type NatsTransport } from "../../../sdk/nats-transport.ts";
import type { Offer } from "../../../sdk/wire/types.ts";
import { ScriptedMaster, wireOffer } from "../../sdk/scripted-master.ts";

const nats = useNats();
let cluster: TestCluster | undefined;
const transports: NatsTransport[] = [];
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
  await Promise.all(transports.splice(0).map((t) => t.close()));
});

const webOffer = (id: string, agentId: string): Offer => wireOffer(id, agentId, "cpus:1;mem:1024;ports:[31000-31009]");

describe("hello-web example framework", () => {
  it("keeps its web servers up on a real cluster and relaunches one that ends", async () => {
    // Agents advertise loopback addresses so the printed URLs can be fetched.
    cluster = await startCluster({ natsUrl: nats.url, agents: [{ hostname: "127.0.0.1" }, { hostname: "127.0.0.1", resources: "cpus:2;mem:1024;disk:1024;ports:[31100-31199]" }] });
    const up = new EventLog<{ url: string; taskId: string }>();
    const driver = await runHelloWeb({ transport: await cluster.connect(), cluster: cluster.cluster, instances: 2, onUp: (url, taskId) => up.push({ url, taskId }) });
    try {
      await up.waitFor(() => up.items.length >= 2, 20_000, "two servers up");
      for (const { url, taskId } of up.items.slice(0, 2)) {
        // RUNNING means started, not yet listening: the server answers once Node is up.
        const body = await eventually(async () => (await fetch(url).then((r) => r.text()).catch(() => undefined)) || undefined, 10_000, `${url} to answer`);
        expect(body).toContain(`hello from ${taskId}`);
      }
      await driver.kill(up.items[0]!.taskId);
      const replacement = await up.waitFor((s) => s.taskId === "hello-web-3", 20_000, "a replacement");
      expect(replacement.url).toMatch(/^http:\/\/127\.0\.0\.1:31[01]\d\d$/);
    } finally {
      await driver.stop({ teardown: true });
    }
  });

  it("launches on a later offer when the master refuses an ACCEPT (the server never started)", async () => {
    const [masterBus, frameworkBus] = await Promise.all([connectNats({ servers: nats.url, name: "scripted-master" }), connectNats({ servers: nats.url, name: "hello-web" })]);
    transports.push(masterBus, frameworkBus);
    const master = new ScriptedMaster(masterBus, "hello");
    master.beforeAnswer = (call) => {
      if (call.kind === "heartbeat" && master.callsOf("heartbeat").length === 1) master.publish({ kind: "offers", offers: { offers: [webOffer("o-1", "a1")] } });
      // The first offer is gone by the time its ACCEPT arrives; a second one follows.
      if (call.kind === "accept" && master.callsOf("accept").length === 1) master.publish({ kind: "offers", offers: { offers: [webOffer("o-2", "a2")] } });
    };
    master.script = (call) =>
      call.kind === "accept" && call.accept.offerIds[0] === "o-1" ? { response: { ok: false, errorCode: "CORRAL_ERR_OFFER_RESCINDED", message: "offer o-1 was rescinded" } } : undefined;
    await master.listen();
    const driver = await runHelloWeb({ transport: frameworkBus, cluster: "hello", instances: 1 });
    try {
      const usesO2 = (c: (typeof master.calls)[number]) => (c.call.kind === "accept" && c.call.accept.offerIds.includes("o-2")) || (c.call.kind === "decline" && c.call.decline.offerIds.includes("o-2"));
      await eventually(() => master.calls.some(usesO2), 10_000, "o-2 used or declined");
      expect(master.callsOf("accept").map((a) => a.accept.offerIds)).toEqual([["o-1"], ["o-2"]]);
      expect(master.callsOf("decline")).toEqual([]);
    } finally {
      await driver.stop({ teardown: true });
    }
  });

  it("refuses an instance count that is not a whole number (a typo would launch on every offer)", async () => {
    const transport = await connectNats({ servers: nats.url, name: "hello-web" });
    transports.push(transport);
    for (const instances of [Number.NaN, -1, 1.5]) {
      await expect(runHelloWeb({ transport, cluster: "hello-bad", instances })).rejects.toThrow(/^instances: must be an integer >= 0, got /);
    }
  });
});
