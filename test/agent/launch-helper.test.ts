/**
 * The launch helper with a real shell: supervisors start in their own process groups, report their end on
 * descriptor 3, and a dead helper fails its pending launches and is replaced by the next launch.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LaunchHelper } from "../../agent/containerizer/launch-helper.ts";
import { EventLog } from "../harness/events.ts";

const SETSID = "/usr/bin/setsid";
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "corral-launch-helper-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A supervisor-like script: writes its process group id, then reports `status` on descriptor 3. */
async function script(name: string, status: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `cut -d' ' -f5 /proc/$$/stat > ${JSON.stringify(`${path}.pgid`)}\nprintf 'exit %s %s\\n' "$1" ${status} >&3\n`);
  return path;
}

/** The two ways a helper runs: bash with job control, or any shell with setsid. */
const FLAVOURS = [
  { name: "bash, job control", options: { shell: "/bin/bash", shellArgs: ["--norc", "--noprofile"] } },
  { name: "sh with setsid", options: { setsid: SETSID } },
];

describe("LaunchHelper", () => {
  it.each(FLAVOURS)("$name: starts each script as a process group leader and relays its report under the launch's number", async ({ options }) => {
    const exits = new EventLog<[number, number]>();
    const helper = new LaunchHelper({ ...options, onExit: (launch, status) => exits.push([launch, status]) });
    try {
      const first = helper.launch(await script("a b.sh", 7)); // a space in the path is kept
      const second = helper.launch(await script("c.sh", 0));
      const [pidA, pidB] = await Promise.all([first.pid, second.pid]);
      await exits.waitFor(([n]) => n === first.launch, 10_000, "the first report");
      await exits.waitFor(([n]) => n === second.launch, 10_000, "the second report");
      expect(new Map(exits.items)).toEqual(new Map([[first.launch, 7], [second.launch, 0]]));
      expect(first.launch).not.toBe(second.launch);
      // Each leads its own process group, which the last-resort kill signals as a whole.
      expect(Number(await readFile(join(dir, "a b.sh.pgid"), "utf8"))).toBe(pidA);
      expect(Number(await readFile(join(dir, "c.sh.pgid"), "utf8"))).toBe(pidB);
    } finally {
      await helper.close();
    }
    expect(() => helper.launch(join(dir, "c.sh"))).toThrow(/closed/);
  });

  it("refuses a path with a newline; a helper that dies fails what it had not started, and the next launch gets a new one", async () => {
    const exits = new EventLog<[number, number]>();
    const helper = new LaunchHelper({ ...FLAVOURS[0]!.options, onExit: (launch, status) => exits.push([launch, status]) });
    try {
      expect(() => helper.launch(`${dir}/x\ny`)).toThrow(/newline/);
      const first = helper.launch(await script("d.sh", 3));
      expect(await first.pid).toBeGreaterThan(0);
      await exits.waitFor(([n, status]) => n === first.launch && status === 3, 10_000, "d.sh's report");
      // A stopped helper cannot answer; killed, it fails the launch it held.
      const helperPid = helper.pid!;
      process.kill(helperPid, "SIGSTOP");
      const stuck = helper.launch(await script("never.sh", 0));
      process.kill(helperPid, "SIGKILL");
      await expect(stuck.pid).rejects.toThrow(/launch helper exited/);
      const next = helper.launch(await script("e.sh", 4));
      expect(await next.pid).toBeGreaterThan(0);
      expect(helper.pid).not.toBe(helperPid);
      await exits.waitFor(([n, status]) => n === next.launch && status === 4, 10_000, "e.sh's report");
    } finally {
      await helper.close();
    }
  });
});
