import { describe, expect, it } from "vitest";
import { BenchUsageError } from "../../bench/lib.ts";
import { runSimBench } from "../../bench/sim.ts";

describe("npm run bench -- sim: its own option rules, checked before anything runs", () => {
  it.each([
    [["--wire", "json"], "--wire: must be one of messages, bytes, got 'json'"],
    [["--full", "--agents", "5"], "--full sets the size itself; drop --agents"],
  ])("refuses %j: %s", async (args, message) => {
    const attempt = runSimBench(args);
    await expect(attempt).rejects.toBeInstanceOf(BenchUsageError);
    await expect(attempt).rejects.toThrow(message);
  });
});
