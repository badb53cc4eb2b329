import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_READ_LENGTH, MAX_READ_LENGTH, readSandboxFile, SandboxFileError } from "../../agent/sandbox-files.ts";

let root: string;
let sandbox: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "corral-sandbox-"));
  sandbox = join(root, "runs", "c1");
  await mkdir(join(sandbox, "logs"), { recursive: true });
  await writeFile(join(sandbox, "stdout"), "0123456789");
  await writeFile(join(sandbox, "logs", "app.log"), "inside");
  await writeFile(join(sandbox, "big"), Buffer.alloc(2 * MAX_READ_LENGTH, "x"));
  await writeFile(join(root, "secret"), "outside the sandbox");
  await symlink(join(root, "secret"), join(sandbox, "escape"));
  await symlink("../..", join(sandbox, "up"));
  await symlink("logs/app.log", join(sandbox, "inner-link"));
  await symlink(join(root, "missing"), join(sandbox, "dangling"));
  execFileSync("mkfifo", [join(sandbox, "fifo")]);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function failure(promise: Promise<unknown>): Promise<SandboxFileError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(SandboxFileError);
    return error as SandboxFileError;
  }
  throw new Error("expected the read to fail");
}

describe("readSandboxFile", () => {
  it("reads a whole small file by default", async () => {
    expect(await readSandboxFile(sandbox, "stdout")).toEqual({ data: "0123456789", offset: 0, length: 10, totalSize: 10 });
  });

  it("reads a range, and an empty tail at or past the end", async () => {
    expect(await readSandboxFile(sandbox, "stdout", { offset: 3, length: 4 })).toMatchObject({ data: "3456", offset: 3, length: 4, totalSize: 10 });
    expect(await readSandboxFile(sandbox, "stdout", { offset: 8, length: 100 })).toMatchObject({ data: "89", length: 2 });
    expect(await readSandboxFile(sandbox, "stdout", { offset: 10 })).toMatchObject({ data: "", offset: 10, length: 0 });
    expect(await readSandboxFile(sandbox, "stdout", { offset: 50 })).toMatchObject({ data: "", offset: 50, length: 0 });
    expect(await readSandboxFile(sandbox, "stdout", { length: 0 })).toMatchObject({ data: "", length: 0 });
  });

  it("ends a read on a whole UTF-8 character, so a tailer reading on from offset + length loses none", async () => {
    const text = `${"€".repeat(30_000)} and ${"😀".repeat(10_000)} done\n`;
    await writeFile(join(sandbox, "unicode"), text);
    let out = "";
    let offset = 0;
    for (;;) {
      const chunk = await readSandboxFile(sandbox, "unicode", { offset });
      if (chunk.length === 0) break;
      expect(chunk.data).not.toContain("\uFFFD");
      expect(Buffer.byteLength(chunk.data)).toBe(chunk.length);
      out += chunk.data;
      offset += chunk.length;
    }
    expect(out).toBe(text);
    // A read too short for one whole character still moves on (it cannot be cut shorter).
    expect(await readSandboxFile(sandbox, "unicode", { length: 2 })).toMatchObject({ length: 2 });
  });

  it("answers offset -1 with the size only, as Mesos does", async () => {
    expect(await readSandboxFile(sandbox, "stdout", { offset: -1 })).toEqual({ data: "", offset: 10, length: 0, totalSize: 10 });
  });

  it("takes length -1 as no length given, as Mesos does (its web UI's pailer sends it)", async () => {
    expect(await readSandboxFile(sandbox, "stdout", { offset: 2, length: -1 })).toEqual({ data: "23456789", offset: 2, length: 8, totalSize: 10 });
    expect((await readSandboxFile(sandbox, "big", { length: -1 })).length).toBe(DEFAULT_READ_LENGTH);
    expect(await readSandboxFile(sandbox, "stdout", { offset: -1, length: -1 })).toEqual({ data: "", offset: 10, length: 0, totalSize: 10 });
  });

  it("bounds reads: 64 KiB by default, at most 1 MiB", async () => {
    expect((await readSandboxFile(sandbox, "big")).length).toBe(DEFAULT_READ_LENGTH);
    const capped = await readSandboxFile(sandbox, "big", { length: 10 * MAX_READ_LENGTH });
    expect(capped.length).toBe(MAX_READ_LENGTH);
    expect(capped.totalSize).toBe(2 * MAX_READ_LENGTH);
  });

  it("reads nested paths and symlinks that stay inside", async () => {
    expect((await readSandboxFile(sandbox, "logs/app.log")).data).toBe("inside");
    expect((await readSandboxFile(sandbox, "logs/../stdout")).data).toBe("0123456789");
    expect((await readSandboxFile(sandbox, "inner-link")).data).toBe("inside");
  });

  it.each(["/etc/passwd", "../secret", "../../secret", "logs/../../secret", "..", "a\0b"])("refuses %j as outside the sandbox", async (path) => {
    expect((await failure(readSandboxFile(sandbox, path))).code).toBe("CORRAL_ERR_PATH_OUTSIDE_SANDBOX");
  });

  it("refuses symlinks that resolve outside the sandbox", async () => {
    const direct = await failure(readSandboxFile(sandbox, "escape"));
    expect(direct.code).toBe("CORRAL_ERR_PATH_OUTSIDE_SANDBOX");
    expect(direct.message).toContain("outside the sandbox");
    expect((await failure(readSandboxFile(sandbox, "up/secret"))).code).toBe("CORRAL_ERR_PATH_OUTSIDE_SANDBOX");
  });

  it("reports missing files, dangling links and a missing sandbox as NOT_FOUND", async () => {
    expect((await failure(readSandboxFile(sandbox, "nope"))).code).toBe("CORRAL_ERR_NOT_FOUND");
    expect((await failure(readSandboxFile(sandbox, "dangling"))).code).toBe("CORRAL_ERR_NOT_FOUND");
    expect((await failure(readSandboxFile(sandbox, "stdout/x"))).code).toBe("CORRAL_ERR_NOT_FOUND");
    expect((await failure(readSandboxFile(join(root, "no-such-run"), "stdout"))).code).toBe("CORRAL_ERR_NOT_FOUND");
    expect((await failure(readSandboxFile(sandbox, ""))).code).toBe("CORRAL_ERR_NOT_FOUND");
  });

  it("refuses directories and FIFOs without blocking", async () => {
    expect((await failure(readSandboxFile(sandbox, "logs"))).code).toBe("CORRAL_ERR_NOT_A_FILE");
    expect((await failure(readSandboxFile(sandbox, "."))).code).toBe("CORRAL_ERR_NOT_A_FILE");
    expect((await failure(readSandboxFile(sandbox, "fifo"))).code).toBe("CORRAL_ERR_NOT_A_FILE");
  });

  it.each([
    [{ offset: -2 }, /offset/],
    [{ offset: 1.5 }, /offset/],
    [{ length: -2 }, /length/],
    [{ length: Number.NaN }, /length/],
  ])("refuses the range %j", async (range, field) => {
    const error = await failure(readSandboxFile(sandbox, "stdout", range));
    expect(error.code).toBe("CORRAL_ERR_BAD_RANGE");
    expect(error.message).toMatch(field);
  });
});
