/**
 * The multi-host harness itself (test/harness/netns.ts): hosts reach each other through the
 * switch namespace and nothing else; a cut link blocks traffic and a restored one carries it
 * again; the test process reaches a host's port through `forward`; the machine's own interfaces
 * are untouched; and nothing is left behind, leftovers of a dead run included.
 */
import { execFileSync } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { createNetwork, namespaceExists, netnsUnavailableReason, sweepLeftoverNamespaces, type TestNetwork } from "../harness/netns.ts";

const unavailable = netnsUnavailableReason();
if (unavailable) console.warn(`netns-harness tests skipped: ${unavailable}`);

/** A one-line node program: an HTTP server answering its host's name on `port`. */
const SERVE = (name: string, port: number) => `require("http").createServer((q, s) => s.end(${JSON.stringify(name)})).listen(${port}, "0.0.0.0", () => console.log("listening"))`;
/** A node program that fetches `url` (with a short timeout) and prints the body or the error. */
const FETCH = (url: string) => `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(1500) }).then(async (r) => console.log("ok " + await r.text()), (e) => console.log("failed " + e.name))`;

function hostInterfaces(): string {
  return execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(":")[1]?.trim())
    .filter(Boolean)
    .sort()
    .join(",");
}

describe.skipIf(unavailable !== undefined)(`simulated hosts in network namespaces${unavailable ? ` (skipped: ${unavailable})` : ""}`, () => {
  let network: TestNetwork | undefined;
  afterAll(async () => {
    await network?.destroy();
  });

  it("connects hosts through the switch only, cuts and restores a link, forwards ports, and cleans up", async () => {
    const before = hostInterfaces();
    network = await createNetwork({ hosts: ["a", "b"] });
    expect(hostInterfaces()).toBe(before);
    expect(network.address("a")).toBe("10.77.0.1");

    const server = network.spawn("a", process.execPath, ["-e", SERVE("host a", 8000)]);
    await server.log.waitFor((l) => l.msg === "listening", 30_000, "the server in a");
    const fetchFromB = async () => {
      const client = network!.spawn("b", process.execPath, ["-e", FETCH(`http://${network!.address("a")}:8000/`)]);
      const line = await client.log.waitFor((l) => typeof l.msg === "string" && /^(ok|failed)/.test(l.msg), 30_000, "the fetch from b");
      await client.stop();
      return line.msg;
    };
    expect(await fetchFromB()).toBe("ok host a");

    await network.cut("a");
    expect(await fetchFromB()).toBe("failed TimeoutError");
    await network.restore("a");
    expect(await fetchFromB()).toBe("ok host a");

    // The test process reaches the port inside a, even while a is cut off from the switch.
    await network.cut("a");
    const local = await network.forward("a", 8000);
    expect(await (await fetch(`http://127.0.0.1:${local}/`)).text()).toBe("host a");

    const namespaces = ["a", "b"].map((h) => network!.namespace(h));
    await network.destroy();
    for (const ns of namespaces) expect(namespaceExists(ns)).toBe(false);
    expect(namespaceExists(`${network.prefix}switch`)).toBe(false);
    expect(hostInterfaces()).toBe(before);
  }, 120_000);

  it("sweeps the namespaces of a test process that died without cleaning up", () => {
    // A pid that cannot be alive (above the kernel's pid_max) stands for the dead run.
    const leftover = "corral-t99999999-1-switch";
    execFileSync("ip", ["netns", "add", leftover]);
    expect(sweepLeftoverNamespaces()).toContain(leftover);
    expect(namespaceExists(leftover)).toBe(false);
  });
});
