/**
 * The command line end to end: `corral up` in its own process (embedded nats-server, master, two
 * agents), then `corral run` and `corral state` finding it through the cluster file, then Ctrl-C.
 */
import { describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { freePort } from "../harness/nats.ts";
import { EventLog, within } from "../harness/events.ts";

const CORRAL = join(process.cwd(), "bin/corral");

function lines(child: ChildProcess): EventLog<string> {
  const log = new EventLog<string>();
  let buffer = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    const parts = buffer.split("\n");
    buffer = parts.pop()!;
    for (const line of parts) log.push(line);
  });
  return log;
}

/** An agent's environment for flag tests: nothing to connect to, no work dir to create. */
const AGENT_ENV = { ...process.env, CORRAL_HOME: "/nonexistent", CORRAL_NATS: "nats://127.0.0.1:1", CORRAL_WORK_DIR: "/nonexistent/agent" };

/**
 * Runs `corral args` to its end; one still running after `timeoutMs` is interrupted (SIGINT, so a
 * `corral up` that should have refused to start stops what it started; SIGKILL 10 s later) and
 * ends with a null status.
 */
function corral(args: readonly string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 30_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(CORRAL, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const interrupt = setTimeout(() => child.kill("SIGINT"), timeoutMs);
    const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs + 10_000);
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (status) => {
      clearTimeout(interrupt);
      clearTimeout(kill);
      resolve({ status, stdout, stderr });
    });
  });
}

/**
 * Stops a `corral up` that a failed test left running: SIGINT first, so that it stops its
 * nats-server and its tasks (a SIGKILL would orphan them), then SIGKILL after 20 s.
 */
async function stopUp(up: ChildProcess): Promise<void> {
  if (up.exitCode !== null || up.signalCode !== null) return;
  const exited = new Promise((resolve) => up.once("exit", resolve));
  up.kill("SIGINT");
  const timer = setTimeout(() => up.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(timer);
}

/** `run` over `items`, at most `width` at a time; the results in the items' order. */
async function inTurns<T, R>(items: readonly T[], width: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await run(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  return results;
}

/** Processes whose command line names `home` (a `corral up`'s nats-server, agents, tasks): none may outlive it. */
function processesOf(home: string): string[] {
  return readdirSync("/proc")
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(home);
      } catch {
        return false; // Gone meanwhile.
      }
    });
}

describe("corral CLI", () => {
  it("brings a cluster up, runs a command through it with its output and exit code, and stops cleanly", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const env = { ...process.env, CORRAL_HOME: home };
    const up = spawn(CORRAL, ["up", "--agents", "2", "--master-port", "0", "--marathon-port", "0", "--nats-port", String(await freePort()), "--allocation-interval", "200ms"], { env, stdio: ["ignore", "pipe", "inherit"] });
    // `corral run`s that a failed assertion would leave waiting.
    const strays: ChildProcess[] = [];
    try {
      const out = lines(up);
      await out.waitFor((l) => l.includes("Press Ctrl-C"), 30_000, "corral up to be ready");
      expect(out.items.some((l) => l.startsWith("  agent 2"))).toBe(true);
      expect(existsSync(join(home, "cluster.json"))).toBe(true);

      const run = spawnSync(CORRAL, ["run", "--cpus", "0.1", "--mem", "32", "--", "echo hello from $CORRAL_TASK_ID on $HOST; echo uid $(id -u); echo oops >&2; exit 3"], { env, encoding: "utf8", timeout: 60_000 });
      expect(run.stdout).toMatch(/hello from run-[0-9a-f]{8} on 127\.0\.0\.[12]/);
      // As root, `corral up` isolates tasks and runs them as nobody.
      if (process.getuid?.() === 0) expect(run.stdout).toContain("uid 65534");
      expect(run.stderr).toContain("oops");
      expect(run.stderr).toContain("TASK_FAILED");
      expect(run.status).toBe(3);

      // Output streaming needs the master's HTTP API; without it the task still runs and its exit code is still returned.
      const noHttp = `http://127.0.0.1:${await freePort()}`;
      const blind = spawnSync(CORRAL, ["run", "--master", noHttp, "--cpus", "0.1", "--mem", "32", "--", "echo unseen; exit 4"], { env, encoding: "utf8", timeout: 30_000 });
      expect(blind.stderr).toContain(`corral: cannot stream the task's output: cannot reach the master at ${noHttp}`);
      expect(blind.stderr).toContain("TASK_FAILED");
      expect(blind.status).toBe(4);

      // A task no agent can hold does not wait in silence: it says what the offers had.
      const tooBig = spawn(CORRAL, ["run", "--cpus", "64", "--mem", "32", "--", "true"], { env, stdio: ["ignore", "ignore", "pipe"] });
      strays.push(tooBig);
      const tooBigErr = lines({ stdout: tooBig.stderr } as unknown as ChildProcess);
      const hint = await tooBigErr.waitFor((l) => l.includes("no offer fits"), 30_000, "corral run to say that no offer fits");
      expect(hint).toMatch(/^corral: no offer fits cpus:64;mem:32 yet \(the largest had cpus:\d+;.*mem:\d+.*\); still waiting, Ctrl-C to give up$/);
      const tooBigExited = new Promise<number | null>((resolve) => tooBig.once("exit", (code) => resolve(code)));
      tooBig.kill("SIGINT");
      expect(await within(tooBigExited, 20_000, "corral run to give up")).toBe(130);

      // Ctrl-C kills the task (it used to keep running until the master missed the gone driver's heartbeats) and exits 130.
      const marker = `corral-run-interrupted-${process.pid}-${Date.now()}`;
      const long = spawn(CORRAL, ["run", "--cpus", "0.1", "--mem", "32", "--", `echo started; exec sleep 1000 # ${marker}`], { env, stdio: ["ignore", "pipe", "pipe"] });
      strays.push(long);
      let longErr = "";
      long.stderr!.on("data", (chunk: Buffer) => (longErr += chunk.toString()));
      await lines(long).waitFor((l) => l === "started", 30_000, "corral run's task to start");
      const longExited = new Promise<number | null>((resolve) => long.once("exit", (code) => resolve(code)));
      long.kill("SIGINT");
      expect(await within(longExited, 20_000, "corral run to stop after Ctrl-C")).toBe(130);
      expect(longErr).toMatch(/corral: interrupted: killing run-[0-9a-f]{8}/);
      expect(longErr).toContain("TASK_KILLED");
      const stillRunning = readdirSync("/proc").filter((pid) => /^\d+$/.test(pid)).filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(marker);
        } catch {
          return false; // Gone meanwhile.
        }
      });
      expect(stillRunning).toEqual([]);

      const state = spawnSync(CORRAL, ["state", "--json"], { env, encoding: "utf8", timeout: 30_000 });
      expect(state.status).toBe(0);
      const parsed = JSON.parse(state.stdout) as { agents: unknown[]; completedFrameworks: Array<{ name: string }> };
      expect(parsed.agents).toHaveLength(2);
      expect(parsed.completedFrameworks.some((f) => f.name.startsWith("corral run"))).toBe(true);

      // Marathon through the CLI: deploy the example app, see it listed, and a bad spec refused.
      const deploy = spawnSync(CORRAL, ["app", "deploy", join(process.cwd(), "examples/apps/hello.json")], { env, encoding: "utf8", timeout: 120_000 });
      expect(deploy.stdout).toContain("deployed");
      expect(deploy.status).toBe(0);
      const list = spawnSync(CORRAL, ["app", "list"], { env, encoding: "utf8", timeout: 30_000 });
      expect(list.stdout).toMatch(/^\/hello\s+2\/2 running\s+2 healthy/m);
      const badFile = join(home, "bad.json");
      await writeFile(badFile, JSON.stringify({ id: "/bad", cmd: "x", args: ["y"], instances: -1 }));
      const bad = spawnSync(CORRAL, ["app", "deploy", badFile], { env, encoding: "utf8", timeout: 30_000 });
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain("/instances: got -1, expected 0 or more");
      // A group file with relative ids and a nested group, as Marathon takes them: every app is followed, under its full id.
      const groupFile = join(home, "group.json");
      const app = (id: string) => ({ id, cmd: "exec sleep 1000", instances: 1, cpus: 0.1, mem: 32 });
      await writeFile(groupFile, JSON.stringify({ id: "/rel", apps: [app("a")], groups: [{ id: "sub", apps: [app("b")] }] }));
      const group = spawnSync(CORRAL, ["app", "deploy", groupFile], { env, encoding: "utf8", timeout: 60_000 });
      expect({ status: group.status, stderr: group.stderr }).toEqual({ status: 0, stderr: "" });
      expect(group.stdout).toMatch(/^ {2}\/rel\/a: 1 running/m);
      expect(group.stdout).toMatch(/^ {2}\/rel\/sub\/b: 1 running/m);
      expect(group.stdout).toMatch(/^ {2}rel_a\.[0-9a-f-]+ {2}127\.0\.0\.[12]:\d*$/m);
      expect(group.stdout).toMatch(/^ {2}rel_sub_b\.[0-9a-f-]+ {2}127\.0\.0\.[12]:\d*$/m);
      // Scaling an app that does not exist says so (Marathon's PUT would create it, and refuse it for its missing cmd).
      const missing = spawnSync(CORRAL, ["app", "scale", "/nope", "3"], { env, encoding: "utf8", timeout: 30_000 });
      expect({ status: missing.status, stderr: missing.stderr }).toEqual({ status: 2, stderr: "corral app scale: GET /v2/apps/nope: 404 App '/nope' does not exist\n" });
      expect(spawnSync(CORRAL, ["app", "list"], { env, encoding: "utf8", timeout: 30_000 }).stdout).not.toContain("/nope");
      // A batch job's output stays in the sandboxes: a failed task's last stderr lines are shown, and the summary says how to read the rest.
      const jobFile = join(home, "jobs.json");
      await writeFile(jobFile, JSON.stringify({ jobs: [
        { id: "ok", tasks: 1, resources: "cpus:0.1;mem:32", command: "echo hello from task $CORRAL_TASK_INDEX" },
        { id: "bad", tasks: 1, resources: "cpus:0.1;mem:32", command: "echo first >&2; echo boom >&2; exit 2", maxRetries: 0 },
      ] }));
      const job = spawnSync(CORRAL, ["job", "run", jobFile], { env, encoding: "utf8", timeout: 60_000 });
      expect(job.status).toBe(1);
      expect(job.stderr).toMatch(/^corral: {3}bad\.0\.0 stderr: first\ncorral: {3}bad\.0\.0 stderr: boom$/m);
      const outputHint = /^task output: each task's stdout and stderr stay in its sandbox on its agent, e\.g\. curl -s '(\S+)'$/m.exec(job.stdout);
      expect(outputHint, job.stdout).not.toBeNull();
      expect(((await (await fetch(outputHint![1]!)).json()) as { data: string }).data).toBe("hello from task 0\n");

      // Removing an app waits, as the other app commands do, until its deployment has killed its tasks.
      const removed = spawnSync(CORRAL, ["app", "rm", "/hello"], { env, encoding: "utf8", timeout: 60_000 });
      expect({ status: removed.status, stderr: removed.stderr }).toEqual({ status: 0, stderr: "" });
      const { marathonUrl } = JSON.parse(await readFile(join(home, "cluster.json"), "utf8")) as { marathonUrl: string };
      expect(await (await fetch(`${marathonUrl}/v2/deployments`)).json()).toEqual([]);
      expect(removed.stdout).toMatch(/^deployment [0-9a-f-]+: removing \/hello, killing its tasks\n\/hello removed, its tasks killed\n$/);

      const exited = new Promise<number | null>((resolve) => up.once("exit", (code) => resolve(code)));
      up.kill("SIGINT");
      expect(await exited).toBe(0);
      expect(existsSync(join(home, "cluster.json"))).toBe(false);
      const none = spawnSync(CORRAL, ["state"], { env, encoding: "utf8" });
      expect(none.status).toBe(2);
      expect(none.stderr).toContain("corral up");
    } finally {
      for (const stray of strays) if (stray.exitCode === null && stray.signalCode === null) stray.kill("SIGKILL");
      await stopUp(up);
      await rm(home, { recursive: true, force: true });
    }
  }, 120_000);

  it("refuses a second corral up on the same work dir or cluster file before starting anything, and leaves the first running", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const env = { ...process.env, CORRAL_HOME: home };
    const upArgs = async (...extra: string[]) => ["up", "--agents", "1", "--master-port", "0", "--marathon-port", "0", "--nats-port", String(await freePort()), ...extra];
    // A lock left by a `corral up` that died without cleaning up (its pid is gone) does not block the next one.
    await mkdir(join(home, "up"), { recursive: true });
    const dead = spawnSync("true");
    await writeFile(join(home, "up", "up.lock"), `${dead.pid}\n`);
    const up = spawn(CORRAL, await upArgs(), { env, stdio: ["ignore", "pipe", "inherit"] });
    try {
      const out = lines(up);
      await out.waitFor((l) => l.includes("Press Ctrl-C"), 30_000, "the first corral up to be ready");
      const first = JSON.parse(await readFile(join(home, "cluster.json"), "utf8")) as { pid: number; masterUrl: string };
      expect(first.pid).toBe(up.pid);

      // The same work dir, another cluster file and other ports: refused before a nats-server or agent is started on its state.
      const again = await corral(await upArgs("--work-dir", join(home, "up")), { ...env, CORRAL_HOME: join(home, "elsewhere") }, 15_000);
      expect({ status: again.status, stdout: again.stdout }).toEqual({ status: 1, stdout: "" });
      expect(again.stderr).toContain(`corral up: ${join(home, "up")} is in use by another corral up (pid ${up.pid})`);
      expect(again.stderr).toContain(`kill -INT ${up.pid}`);
      // The same cluster file, another work dir: client commands would lose the first cluster.
      const other = await corral(await upArgs("--work-dir", join(home, "other")), env, 15_000);
      expect({ status: other.status, stdout: other.stdout }).toEqual({ status: 1, stdout: "" });
      expect(other.stderr).toContain(`corral up: a cluster started by corral up (pid ${up.pid}, master ${first.masterUrl}) is running`);
      expect(other.stderr).toContain("CORRAL_HOME");
      expect(existsSync(join(home, "other"))).toBe(false);
      expect(existsSync(join(home, "elsewhere", "cluster.json"))).toBe(false);

      // The first is untouched: still found, still serving.
      expect(JSON.parse(await readFile(join(home, "cluster.json"), "utf8"))).toEqual(first);
      const state = spawnSync(CORRAL, ["state", "--json"], { env, encoding: "utf8", timeout: 30_000 });
      expect(state.status).toBe(0);
      expect((JSON.parse(state.stdout) as { agents: unknown[] }).agents).toHaveLength(1);

      const exited = new Promise<number | null>((resolve) => up.once("exit", (code) => resolve(code)));
      up.kill("SIGINT");
      expect(await exited).toBe(0);
      expect(existsSync(join(home, "up", "up.lock"))).toBe(false);
    } finally {
      await stopUp(up);
      await rm(home, { recursive: true, force: true });
    }
  }, 90_000);

  it("stops the demo cluster cleanly on a terminal's Ctrl-C (SIGINT to its whole process group): the bus outlives the components, nothing is left behind", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const env = { ...process.env, CORRAL_HOME: home };
    // detached: `corral up` leads a process group of its own, as a shell's foreground job does.
    const up = spawn(CORRAL, ["up", "--demo", "--agents", "1", "--master-port", "0", "--marathon-port", "0", "--nats-port", String(await freePort())], { env, stdio: ["ignore", "pipe", "inherit"], detached: true });
    try {
      const out = lines(up);
      await out.waitFor((l) => l.includes("Press Ctrl-C"), 90_000, "corral up --demo to deploy the example app");
      const tasks = out.items.flatMap((l) => /^ {2}\/hello: (hello\.[0-9a-f-]+) serving http:\/\/127\.0\.0\.1:\d+$/.exec(l)?.[1] ?? []);
      expect(tasks).toHaveLength(2);

      const exited = new Promise<number | null>((resolve) => up.once("exit", (code) => resolve(code)));
      process.kill(-up.pid!, "SIGINT");
      expect(await within(exited, 30_000, "corral up to stop")).toBe(0);

      // The embedded nats-server got the Ctrl-C too, and used to die first: every component then
      // stopped without its bus (each connection's drain timing out, 2 s apiece).
      const log = await readFile(join(home, "up", "corral.log"), "utf8");
      expect(log).not.toContain('"msg":"nats disconnected"');
      expect(log).not.toContain("nats drain timed out");
      // No process of this cluster (nats-server, tasks, their supervisors) is left, nor a task's cgroup.
      expect(processesOf(home)).toEqual([]);
      const cgroupDirs = ["/sys/fs/cgroup/corral", ...(existsSync("/sys/fs/cgroup") ? readdirSync("/sys/fs/cgroup").map((c) => `/sys/fs/cgroup/${c}/corral`) : [])].filter((d) => existsSync(d));
      const leftCgroups = cgroupDirs.flatMap((d) => readdirSync(d).filter((name) => tasks.some((t) => name.startsWith(`${t}-`))));
      expect(leftCgroups).toEqual([]);
      expect(existsSync(join(home, "cluster.json"))).toBe(false);
    } finally {
      await stopUp(up);
      await rm(home, { recursive: true, force: true });
    }
  }, 120_000);

  it("stops what it started when Ctrl-C comes while it is still starting (the demo's deployment under way)", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const env = { ...process.env, CORRAL_HOME: home };
    const up = spawn(CORRAL, ["up", "--demo", "--agents", "1", "--master-port", "0", "--marathon-port", "0", "--nats-port", String(await freePort())], { env, stdio: ["ignore", "pipe", "inherit"], detached: true });
    try {
      const out = lines(up);
      await out.waitFor((l) => l.startsWith("Deploying /hello"), 60_000, "corral up --demo to start deploying");
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => up.once("exit", (code, signal) => resolve([code, signal])));
      process.kill(-up.pid!, "SIGINT");
      // Killed by the signal, it left its nats-server and the demo's tasks running.
      expect(await within(exited, 30_000, "corral up to stop")).toEqual([0, null]);
      expect(out.items).not.toContain("Press Ctrl-C to stop.");
      expect(processesOf(home)).toEqual([]);
      expect(existsSync(join(home, "up", "up.lock"))).toBe(false);
    } finally {
      await stopUp(up);
      await rm(home, { recursive: true, force: true });
    }
  }, 90_000);

  it("stops the cluster cleanly when its terminal is closed (SIGHUP to its process group)", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const env = { ...process.env, CORRAL_HOME: home };
    const up = spawn(CORRAL, ["up", "--agents", "1", "--master-port", "0", "--marathon-port", "0", "--nats-port", String(await freePort())], { env, stdio: ["ignore", "pipe", "inherit"], detached: true });
    try {
      await lines(up).waitFor((l) => l.includes("Press Ctrl-C"), 30_000, "corral up to be ready");
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => up.once("exit", (code, signal) => resolve([code, signal])));
      process.kill(-up.pid!, "SIGHUP");
      // Killed by the signal, it left its nats-server running (that one reloads its config on SIGHUP) and its files behind.
      expect(await within(exited, 30_000, "corral up to stop")).toEqual([0, null]);
      expect(processesOf(home)).toEqual([]);
      expect(existsSync(join(home, "cluster.json"))).toBe(false);
    } finally {
      await stopUp(up);
      await rm(home, { recursive: true, force: true });
    }
  }, 60_000);

  it("says at start that CORRAL_NATS (exported for client commands) replaces its embedded nats-server", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const nats = `nats://127.0.0.1:${await freePort()}`;
    const up = spawn(CORRAL, ["up", "--master-port", "0", "--marathon-port", "0"], { env: { ...process.env, CORRAL_HOME: home, CORRAL_NATS: nats }, stdio: ["ignore", "ignore", "pipe"] });
    try {
      const err = lines({ stdout: up.stderr } as unknown as ChildProcess);
      const notice = await err.waitFor((l) => l.startsWith("corral up: using the NATS"), 30_000, "corral up to name the NATS it uses");
      expect(notice).toBe(`corral up: using the NATS at ${nats} (from CORRAL_NATS) instead of starting one; unset CORRAL_NATS (or drop --nats) for an embedded nats-server`);
    } finally {
      await stopUp(up);
      await rm(home, { recursive: true, force: true });
    }
  }, 60_000);

  it("refuses corral up when its master or Marathon port is taken, naming the flag, before starting anything", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const env = { ...process.env, CORRAL_HOME: home };
      for (const flag of ["--master-port", "--marathon-port"]) {
        const other = flag === "--master-port" ? "--marathon-port" : "--master-port";
        const refused = await corral(["up", flag, String(port), other, "0", "--nats-port", String(await freePort())], env, 15_000);
        expect({ flag, status: refused.status, stdout: refused.stdout }).toEqual({ flag, status: 1, stdout: "" });
        expect(refused.stderr).toContain(`corral up: ${flag} ${port}: 127.0.0.1:${port} is in use (another corral up, or another program); choose another port, or 0 for any free one`);
        expect(existsSync(join(home, "up", "nats"))).toBe(false);
        expect(existsSync(join(home, "up", "up.lock"))).toBe(false);
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      await rm(home, { recursive: true, force: true });
    }
  });

  it("explains bad flags and unknown commands", async () => {
    const [bad, unknown] = await Promise.all([
      corral(["run", "--cpus", "lots", "--", "true"], { ...process.env, CORRAL_HOME: "/nonexistent", CORRAL_NATS: "nats://127.0.0.1:1" }),
      corral(["fly"]),
    ]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("--cpus must be a number");
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'fly'");
  });

  it("refuses an agent's bad flags before it connects to anything, naming the flag", async () => {
    const cases = [
      [["--resources", "cpus:4;ports:[1-70000]"], "--resources: ports [1-70000]: port numbers are 1 to 65535"],
      [["--resources", "ports:[0-0]"], "--resources: ports [0-0]"],
      [["--resources", "cpus:lots"], "--resources: 'lots' is not a number"],
      [["--attributes", "rack"], "--attributes: "],
      [["--port", "70000"], "--port must be a port number from 0 to 65535, got '70000'"],
      [["--port", "http"], "--port must be"],
      [["--pids-max", "0"], "--pids-max must be a positive integer, got '0'"],
      [["--gc-delay", "soon"], "--gc-delay must be a duration like 500ms, 1s or 2m, got 'soon'"],
      [["--disk-watch-interval", "0"], "--disk-watch-interval must be longer than 0, got '0'"],
      [["--gc-disk-headroom", "1.5"], "--gc-disk-headroom must be a number from 0 to 1, got '1.5'"],
      [["--gc-disk-headroom", "lots"], "--gc-disk-headroom must be a number, got 'lots'"],
    ] as const;
    // Each case is a whole node process; two at a time, as many as CI has cores.
    const results = await inTurns(cases, 2, ([flags]) => corral(["agent", "--isolation", "none", ...flags], AGENT_ENV));
    cases.forEach(([flags, says], i) => {
      expect({ flags, status: results[i]!.status, stderr: results[i]!.stderr }).toEqual({ flags, status: 2, stderr: expect.stringContaining(says) });
    });
  });

  it("refuses the bad flags of master and up before starting anything, naming the flag", async () => {
    const cases = [
      [["master", "--port", "70000"], "corral master: --port must be a port number from 0 to 65535, got '70000'"],
      [["up", "--master-port=-1"], "corral up: --master-port must be a port number from 0 to 65535, got '-1'"],
      [["up", "--masters", "3", "--master-port", "65534"], "corral up: --master-port 65534: 3 consecutive ports from it would pass 65535"],
      [["up", "--nats-port", "4222x"], "corral up: --nats-port must be a port number"],
    ] as const;
    const results = await inTurns(cases, 2, ([args]) => corral(args, AGENT_ENV));
    cases.forEach(([args, says], i) => {
      expect({ args, status: results[i]!.status, stderr: results[i]!.stderr }).toEqual({ args, status: 2, stderr: expect.stringContaining(says) });
    });
  });

  it("keeps an agent's chosen id in its work dir, refuses another id for it, and names an unreachable master", async () => {
    // --agent-id: a chosen id is kept in the work dir (before connecting); another id for that dir, or a bad one, is refused.
    const idDir = await mkdtemp(join(tmpdir(), "corral-cli-agent-id-"));
    try {
      const chosen = spawnSync(CORRAL, ["agent", "--isolation", "none", "--work-dir", idDir, "--agent-id", "edge-7"], { encoding: "utf8", env: AGENT_ENV });
      expect(chosen.stderr).toContain("connection refused"); // the flag was taken; NATS is not there
      expect(await readFile(join(idDir, "agent.id"), "utf8")).toBe("edge-7\n");
      for (const [id, says] of [
        ["edge-8", `--agent-id: ${idDir} belongs to agent 'edge-7', not 'edge-8'`],
        ["a.b", "--agent-id: must not contain \".\""],
      ] as const) {
        const refused = spawnSync(CORRAL, ["agent", "--isolation", "none", "--work-dir", idDir, "--agent-id", id], { encoding: "utf8", env: AGENT_ENV });
        expect({ id, status: refused.status, stderr: refused.stderr }).toEqual({ id, status: 2, stderr: expect.stringContaining(says) });
      }
    } finally {
      await rm(idDir, { recursive: true, force: true });
    }
    // A master that does not answer is named, with why.
    const deadMaster = `http://127.0.0.1:${await freePort()}`;
    const dead = spawnSync(CORRAL, ["state", "--master", deadMaster], { encoding: "utf8", env: { ...process.env, CORRAL_HOME: "/nonexistent" } });
    expect(dead.status).toBe(1);
    expect(dead.stderr).toBe(`corral state: cannot reach the master at ${deadMaster}: connection refused (ECONNREFUSED)\n`);
    // So is a Marathon, and a --marathon that is no URL.
    const deadMarathon = `http://127.0.0.1:${await freePort()}`;
    const noMarathon = spawnSync(CORRAL, ["app", "list", "--marathon", deadMarathon], { encoding: "utf8", env: { ...process.env, CORRAL_HOME: "/nonexistent" } });
    expect({ status: noMarathon.status, stderr: noMarathon.stderr }).toEqual({ status: 1, stderr: `corral app list: cannot reach Marathon at ${deadMarathon}: connection refused (ECONNREFUSED)\n` });
    const marathonNotUrl = spawnSync(CORRAL, ["app", "list", "--marathon", "localhost:8080"], { encoding: "utf8", env: { ...process.env, CORRAL_HOME: "/nonexistent" } });
    expect({ status: marathonNotUrl.status, stderr: marathonNotUrl.stderr }).toEqual({ status: 2, stderr: "corral app: --marathon must be an http(s) URL such as http://host:8080, got 'localhost:8080'\n" });
    const notUrl = spawnSync(CORRAL, ["state", "--master", "master-1:5050"], { encoding: "utf8", env: { ...process.env, CORRAL_HOME: "/nonexistent" } });
    expect(notUrl.status).toBe(2);
    expect(notUrl.stderr).toContain("--master must be an http(s) URL such as http://host:5050, got 'master-1:5050'");
    const help = spawnSync(CORRAL, ["agent", "--help"], { encoding: "utf8" });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("CORRAL_WORK_DIR");
  });

  it("refuses a bad --role-acl or principal before connecting, naming the flag, the file and the field", async () => {
    const env = { ...process.env, CORRAL_HOME: "/nonexistent", CORRAL_NATS: "nats://127.0.0.1:1" };
    // NATS is not there: an answer naming the file shows it was read and checked first.
    const aclDir = await mkdtemp(join(tmpdir(), "corral-cli-role-acl-"));
    try {
      await writeFile(join(aclDir, "torn.json"), '{"principals": ');
      await writeFile(join(aclDir, "bad-role.json"), JSON.stringify({ principals: { marathon: ["web", "../etc"] } }));
      await writeFile(join(aclDir, "typo.json"), JSON.stringify({ principal: { marathon: ["web"] } }));
      for (const [file, says] of [
        ["missing.json", `--role-acl ${join(aclDir, "missing.json")}: cannot be read (ENOENT`],
        ["torn.json", `--role-acl ${join(aclDir, "torn.json")}: not JSON (`],
        ["bad-role.json", `--role-acl ${join(aclDir, "bad-role.json")}: principals.marathon[1]: role path components must not be '..'`],
        ["typo.json", `--role-acl ${join(aclDir, "typo.json")}: principal: unknown field (expected principals, permissive)`],
      ] as const) {
        const refused = spawnSync(CORRAL, ["master", "--role-acl", join(aclDir, file)], { encoding: "utf8", env });
        expect({ file, status: refused.status, stderr: refused.stderr }).toEqual({ file, status: 2, stderr: expect.stringContaining(says) });
      }
    } finally {
      await rm(aclDir, { recursive: true, force: true });
    }
    // A principal names subjects: one that cannot is refused before Marathon connects.
    const marathon = spawnSync(CORRAL, ["marathon", "--principal", "team.a"], { encoding: "utf8", env });
    expect({ status: marathon.status, stderr: marathon.stderr }).toEqual({ status: 2, stderr: expect.stringContaining('--principal: must not contain "."') });
  }, 60_000);

  it.skipIf(process.getuid?.() !== 0)("refuses, as root, an agent whose task users this host does not know", () => {
    const agentEnv = { ...process.env, CORRAL_HOME: "/nonexistent", CORRAL_NATS: "nats://127.0.0.1:1", CORRAL_WORK_DIR: "/nonexistent/agent" };
    for (const [flags, says] of [
      [["--default-user", "no-such-user-corral"], '--default-user: unknown user "no-such-user-corral" (not in /etc/passwd)'],
      [["--allowed-users", "nobody,no-such-user-corral"], '--allowed-users: unknown user "no-such-user-corral"'],
    ] as const) {
      const refused = spawnSync(CORRAL, ["agent", "--isolation", "posix", ...flags], { encoding: "utf8", env: agentEnv });
      expect({ flags, status: refused.status, stderr: refused.stderr }).toEqual({ flags, status: 2, stderr: expect.stringContaining(says) });
    }
  });
});
