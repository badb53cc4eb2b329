import { afterEach, describe, expect, it } from "vitest";
import { runHelloWeb } from "../../../frameworks/examples/hello-web.ts";
import { useNats } from "../../harness/nats.ts";
import { EventLog, eventually } from "../../harness/events.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";

const nats = useNats();
let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

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
});
