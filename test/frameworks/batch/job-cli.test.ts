/**
 * `corral job run` as a user runs it: a child process against a real cluster (nats-server,
 * master, agent), reading a job file.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { batchConfigFromFlags, JOB_FLAGS } from "../../../cli/commands/job.ts";
import { parseFlags, UsageError } from "../../../cli/options.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { useNats } from "../../harness/nats.ts";

const CORRAL = join(process.cwd(), "bin/corral");
const nats = useNats();
let cluster: TestCluster | undefined;
let dir: string | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

function corral(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  // No cluster file to fall back on: the flags name the cluster.
  const env = { ...process.env, CORRAL_HOME: join(tmpdir(), "corral-no-home") };
  const child = spawn(CORRAL, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on("close", (status) => resolve({ status, stdout, stderr })));
}

describe("corral job run", () => {
  it("runs a job file on the cluster, prints progress and a summary, and exits 1 when a job failed", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    dir = await mkdtemp(join(tmpdir(), "corral-job-"));
    const file = join(dir, "job.json");
    await writeFile(
      file,
      JSON.stringify({
        jobs: [
          { id: "hello", tasks: 2, resources: "cpus:0.1;mem:32", command: "echo hello $CORRAL_TASK_INDEX" },
          { id: "nope", tasks: 1, resources: "cpus:0.1;mem:32", command: "exit 7", maxRetries: 1 },
        ],
      }),
    );
    const out = join(dir, "summary.json");
    const run = await corral(["job", "run", file, "--nats", nats.url, "--cluster", cluster.cluster, "--json", out]);
    expect(run.stderr).toContain("corral: job hello: submitted, 2 tasks");
    expect(run.stderr).toContain("corral: job nope: task 0 attempt 0 exit 7");
    expect(run.stderr).toContain(", retrying");
    expect(run.stderr).toContain(", giving up");
    expect(run.stderr).toMatch(/corral: job hello: completed after [\d.]+ s \(2\/2 tasks finished, 0 failed, 0 retries\)/);
    expect(run.stdout).toMatch(/^JOB\s+STATE\s+TASKS\s+FINISHED\s+FAILED\s+RETRIES/m);
    expect(run.stdout).toMatch(/^hello\s+completed\s+2\s+2\s+0\s+0/m);
    expect(run.stdout).toMatch(/^nope\s+failed\s+1\s+0\s+1\s+1/m);
    expect(run.stdout).toContain("nope: last failure nope.0.1 TASK_FAILED exit 7");
    expect(run.stdout).toContain("2 jobs: 1 completed, 1 failed, 0 timed out, 0 cancelled");
    expect(run.status).toBe(1);
    const summary = JSON.parse(await readFile(out, "utf8")) as { jobs: Array<{ id: string; state: string }> };
    expect(summary.jobs.map((j) => [j.id, j.state])).toEqual([
      ["hello", "completed"],
      ["nope", "failed"],
    ]);
  }, 60_000);

  it("refuses a bad job file before connecting, naming each field and rule (exit 2)", async () => {
    dir = await mkdtemp(join(tmpdir(), "corral-job-"));
    const file = join(dir, "bad.json");
    await writeFile(file, JSON.stringify({ jobs: [{ id: "x", tasks: 0, resources: "cpus:1", command: "true", durationSeconds: 1 }] }));
    const run = await corral(["job", "run", file, "--nats", "nats://127.0.0.1:1"]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain("jobs[0].tasks: must be an integer >= 1");
    expect(run.stderr).toContain("jobs[0].durationSeconds: give exactly one of command and durationSeconds");
    const badFlag = await corral(["job", "run", file, "--max-held-offers", "0"]);
    expect(badFlag.status).toBe(2);
    expect(badFlag.stderr).toContain("--max-held-offers must be an integer >= 1");
    const usage = await corral(["job", "start"]);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain("unknown subcommand 'start'");
  }, 60_000);

  it("refuses a bad --role or an empty --name before connecting (exit 2)", async () => {
    const file = join(process.cwd(), "examples/jobs/hello.json");
    const role = await corral(["job", "run", file, "--nats", "nats://127.0.0.1:1", "--role", "data team"]);
    expect(role.status).toBe(2);
    expect(role.stderr).toContain("corral job: --role role must not contain whitespace or control characters, got 'data team'");
    const star = await corral(["job", "run", file, "--nats", "nats://127.0.0.1:1", "--role", "*"]);
    expect(star.status).toBe(2);
    expect(star.stderr).toContain("corral job: --role '*' is not a role name");
    const name = await corral(["job", "run", file, "--nats", "nats://127.0.0.1:1", "--name", " "]);
    expect(name.status).toBe(2);
    expect(name.stderr).toContain("corral job: --name must not be empty");
  }, 60_000);

  it("passes the offer-keeping flags to the batch framework, as a simulated batch framework takes them", () => {
    const flags = (args: string[]) => batchConfigFromFlags(parseFlags(args, JOB_FLAGS).values);
    expect(flags([])).toEqual({ refuseSeconds: 5, offerHoldSeconds: 0, maxHeldOffers: 1000 });
    expect(flags(["--offer-hold-seconds", "3600", "--max-held-offers", "50", "--refuse-seconds", "2"])).toEqual({ refuseSeconds: 2, offerHoldSeconds: 3600, maxHeldOffers: 50 });
    expect(() => flags(["--offer-hold-seconds=-1"])).toThrow(new UsageError("--offer-hold-seconds must be a finite number >= 0"));
    expect(() => flags(["--max-held-offers", "2.5"])).toThrow(/--max-held-offers must be an integer >= 1/);
    expect(() => flags(["--offer-hold-seconds", "soon"])).toThrow(/--offer-hold-seconds must be a number, got 'soon'/);
  });
});
