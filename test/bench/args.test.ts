import { describe, expect, it } from "vitest";
import { BenchUsageError, parseBenchArgs } from "../../bench/lib.ts";

const FLAGS = { quick: "boolean", agents: "integer > 0", apps: "integer >= 0", days: "number > 0", hold: "number >= 0", cases: "text" } as const;

describe("parseBenchArgs", () => {
  it("reads numbers by their rule, switches and texts, in both --name value and --name=value forms", () => {
    const flags = parseBenchArgs(["--quick", "--agents", "20", "--apps=0", "--days", "1.5", "--hold", "0", "--cases", "10k,get"], FLAGS);
    expect(flags.on("quick")).toBe(true);
    expect([flags.number("agents"), flags.number("apps"), flags.number("days"), flags.number("hold")]).toEqual([20, 0, 1.5, 0]);
    expect(flags.text("cases")).toBe("10k,get");
  });

  it("answers undefined and false for flags not given", () => {
    const flags = parseBenchArgs([], FLAGS);
    expect([flags.on("quick"), flags.number("agents"), flags.text("cases")]).toEqual([false, undefined, undefined]);
  });

  it.each([
    [["--agnets", "10"], "Unknown option '--agnets'"],
    [["extra"], "Unexpected argument 'extra'"],
    [["--agents", "0"], "--agents: must be an integer > 0, got '0'"],
    [["--agents", "2.5"], "--agents: must be an integer > 0, got '2.5'"],
    [["--apps=-1"], "--apps: must be an integer >= 0, got '-1'"],
    [["--days", "soon"], "--days: must be a number > 0, got 'soon'"],
    [["--days="], "--days: must be a number > 0, got ''"],
    [["--hold", "Infinity"], "--hold: must be a number >= 0, got 'Infinity'"],
    [["--cases"], "argument missing"],
  ])("refuses %j: %s", (args, message) => {
    let caught: unknown;
    try {
      parseBenchArgs(args, FLAGS);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(BenchUsageError);
    expect((caught as Error).message).toContain(message);
  });
});
