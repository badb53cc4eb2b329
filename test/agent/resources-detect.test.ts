import { statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import { AttributeParseError, detectResources, parseAttributes, probeHost } from "../../agent/resources-detect.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe("detectResources", () => {
  it("keeps 1 GiB of memory and 5 GiB of disk for the system on a large host", () => {
    const detected = detectResources({ cpus: 64, memBytes: 256 * GiB, diskBytes: 2000 * GiB });
    expect(detected).toEqual({
      cpus: 64,
      memMb: 255 * 1024,
      diskMb: 1995 * 1024,
      ports: [{ begin: 31000, end: 32000 }],
      text: "cpus:64;mem:261120;disk:2042880;ports:[31000-32000]",
    });
  });

  it("takes half of memory under 2 GiB and half of disk under 10 GiB", () => {
    const detected = detectResources({ cpus: 1, memBytes: 1536 * MiB, diskBytes: 8 * GiB });
    expect(detected.memMb).toBe(768);
    expect(detected.diskMb).toBe(4096);
    expect(detected.text).toBe("cpus:1;mem:768;disk:4096;ports:[31000-32000]");
  });

  it("switches rules exactly at 2 GiB of memory and 10 GiB of disk", () => {
    expect(detectResources({ cpus: 2, memBytes: 2 * GiB, diskBytes: 10 * GiB })).toMatchObject({ memMb: 1024, diskMb: 5 * 1024 });
    expect(detectResources({ cpus: 2, memBytes: 2 * GiB - 1, diskBytes: 10 * GiB - 1 })).toMatchObject({ memMb: 1023, diskMb: 5119 });
  });

  it("rounds odd byte counts down to whole MiB", () => {
    const detected = detectResources({ cpus: 4, memBytes: 16 * GiB + 123_456, diskBytes: 100 * GiB + 999 });
    expect(detected.memMb).toBe(15 * 1024);
    expect(detected.diskMb).toBe(95 * 1024);
  });

  it("handles an empty disk and tiny memory without going negative", () => {
    expect(detectResources({ cpus: 1, memBytes: 0, diskBytes: 0 })).toMatchObject({ memMb: 0, diskMb: 0 });
  });

  it("lets the operator override individual resources and ports", () => {
    const detected = detectResources(
      { cpus: 8, memBytes: 32 * GiB, diskBytes: 500 * GiB },
      { cpus: 6.5, memMb: 20_000, ports: [{ begin: 8000, end: 8999 }, { begin: 31000, end: 31999 }] },
    );
    expect(detected.text).toBe("cpus:6.5;mem:20000;disk:506880;ports:[8000-8999, 31000-31999]");
  });

  it("names the bad field", () => {
    expect(() => detectResources({ cpus: Number.NaN, memBytes: 0, diskBytes: 0 })).toThrow(/host\.cpus/);
    expect(() => detectResources({ cpus: 1, memBytes: -1, diskBytes: 0 })).toThrow(/host\.memBytes/);
    expect(() => detectResources({ cpus: 1, memBytes: 0, diskBytes: 0 }, { diskMb: -5 })).toThrow(/diskMb/);
    expect(() => detectResources({ cpus: 1, memBytes: 0, diskBytes: 0 }, { ports: [{ begin: 2000, end: 1000 }] })).toThrow(/ports\[0\]/);
  });
});

describe("probeHost", () => {
  it("measures this machine", async () => {
    const host = await probeHost(tmpdir());
    expect(host.cpus).toBeGreaterThanOrEqual(1);
    expect(host.memBytes).toBeGreaterThan(0);
    expect(host.diskBytes).toBeGreaterThanOrEqual(0);
    expect(detectResources(host).text).toMatch(/^cpus:\d+;mem:\d+;disk:\d+;ports:\[31000-32000\]$/);
  });

  it("takes the size of the work directory's file system, not its free space, as Mesos does", async () => {
    // With the free space, an agent restarted beside the sandboxes of its running tasks would offer
    // less disk while those tasks still hold theirs: the same bytes counted twice.
    const fs = await statfs(tmpdir());
    const host = await probeHost(tmpdir());
    expect(host.diskBytes).toBe(fs.blocks * fs.bsize);
  });

  it("fails for a missing work directory", async () => {
    await expect(probeHost("/nonexistent/corral/work")).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("parseAttributes", () => {
  it("parses name:value pairs, trimming and skipping empty pieces", () => {
    expect(parseAttributes("rack:r1;zone:a")).toEqual([
      { name: "rack", value: "r1" },
      { name: "zone", value: "a" },
    ]);
    expect(parseAttributes(" rack : r1 ;; gpu:[0-3];")).toEqual([
      { name: "rack", value: "r1" },
      { name: "gpu", value: "[0-3]" },
    ]);
    expect(parseAttributes("endpoint:10.0.0.1:8080")).toEqual([{ name: "endpoint", value: "10.0.0.1:8080" }]);
    expect(parseAttributes("")).toEqual([]);
  });

  it.each([
    ["rack:r1;zone", "zone", /missing ":"/],
    ["rack:r1;:a", ":a", /empty name/],
    ["rack:", "rack:", /empty value/],
    ["rack:r1;zone:a;rack:r2", "rack:r2", /duplicate name "rack"/],
  ])("rejects %j naming the bad token", (input, token, rule) => {
    let caught: unknown;
    try {
      parseAttributes(input);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(AttributeParseError);
    expect(caught).toMatchObject({ code: "CORRAL_ERR_BAD_ATTRIBUTES", token });
    expect((caught as Error).message).toContain(`"${token}"`);
    expect((caught as Error).message).toMatch(rule);
  });
});
