import { describe, expect, it } from "vitest";
import { electionFromFlags } from "../../cli/commands/master.ts";
import { durationFlag, UsageError } from "../../cli/options.ts";

describe("durationFlag", () => {
  it("reads Mesos-style units up to days and weeks (as --gc-delay is given), and plain milliseconds", () => {
    const read = (raw: string) => durationFlag({ d: raw }, "d");
    expect(read("250")).toBe(250);
    expect(read("500ms")).toBe(500);
    expect(read("1.5s")).toBe(1500);
    expect(read("2m")).toBe(120_000);
    expect(read("1h")).toBe(3_600_000);
    expect(read("2d")).toBe(2 * 86_400_000);
    expect(read("1w")).toBe(604_800_000);
    expect(durationFlag({}, "d")).toBeUndefined();
  });

  it("refuses anything else, naming the flag", () => {
    expect(() => durationFlag({ "gc-delay": "1 week" }, "gc-delay")).toThrow(UsageError);
    expect(() => durationFlag({ "gc-delay": "-1s" }, "gc-delay")).toThrow("--gc-delay must be a duration like 500ms, 1s or 2m, got '-1s'");
  });
});

describe("corral master --ha flags", () => {
  it("refuses an --advertise-url that is no http(s) URL, since standbys put it in their redirects", () => {
    expect(() => electionFromFlags({ ha: true, "advertise-url": "master-1:5050" })).toThrow(UsageError);
    expect(() => electionFromFlags({ ha: true, "advertise-url": "master-1:5050" })).toThrow("--advertise-url must be an http(s) URL such as http://master-1:5050, got 'master-1:5050'");
    expect(electionFromFlags({ ha: true, "advertise-url": "http://master-1:5050" })).toMatchObject({ advertisedUrl: "http://master-1:5050" });
  });
});
