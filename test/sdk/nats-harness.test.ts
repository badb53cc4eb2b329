import { existsSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { findNatsServer, freePort, startNats } from "../harness/nats.ts";

describe("nats test harness", () => {
  it("finds the binary", () => {
    expect(findNatsServer()).toMatch(/nats-server$/);
  });

  it("starts isolated servers and cleans up after them", async () => {
    const [a, b] = await Promise.all([startNats(), startNats()]);
    expect(a.port).not.toBe(b.port);
    expect(a.storeDir).not.toBe(b.storeDir);
    expect(a.url).toBe(`nats://127.0.0.1:${a.port}`);
    const nc = await connect({ servers: a.url });
    expect(nc.info?.jetstream).toBe(true);
    await nc.close();
    await Promise.all([a.stop(), b.stop()]);
    await a.stop(); // idempotent
    expect(existsSync(a.storeDir)).toBe(false);
    expect(a.pid).toBeUndefined();
  });

  it("restarts on the same port with the JetStream store intact", async () => {
    const server = await startNats();
    try {
      const port = server.port;
      const pid = server.pid;
      let nc = await connect({ servers: server.url });
      const kv = await new Kvm(nc).create("harness");
      await kv.put("answer", "42");
      await nc.close();

      await server.restart();
      expect(server.port).toBe(port);
      expect(server.pid).not.toBe(pid);

      nc = await connect({ servers: server.url });
      const again = await new Kvm(nc).open("harness");
      expect((await again.get("answer"))?.string()).toBe("42");
      await nc.close();
    } finally {
      await server.stop();
    }
  });

  it("reports a port that is taken instead of hanging", async () => {
    const port = await freePort();
    // Hangs up on everyone, so the harness's probes fail fast and close() does not wait for them.
    const squatter: Server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => squatter.listen(port, "127.0.0.1", resolve));
    try {
      await expect(startNats({ port, jetstream: false })).rejects.toThrow(/taken/);
    } finally {
      await new Promise<void>((resolve) => squatter.close(() => resolve()));
    }
  });

  it("takes port 0 as any free port, as corral up --nats-port 0 asks (it used to wait for a server on port 0)", async () => {
    const server = await startNats({ port: 0, jetstream: false });
    try {
      expect(server.port).toBeGreaterThan(0);
      const nc = await connect({ servers: server.url });
      await nc.close();
    } finally {
      await server.stop();
    }
  });
});
