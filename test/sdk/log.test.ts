import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { componentField, componentLogger } from "../../sdk/log.ts";

/** A pino logger writing its lines into an array, as `corral up`'s file logger writes them. */
function capture(): { log: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const log = pino({ base: null }, { write: (line: string) => void lines.push(line.trim()) });
  return { log, lines };
}

const count = (line: string, key: string) => line.split(`"${key}":`).length - 1;

describe("componentLogger", () => {
  it("writes component once when the caller bound the same one (corral up's agent and master loggers)", () => {
    const { log, lines } = capture();
    componentLogger(log.child({ component: "agent", agent: 1 }), "agent").info("registered");
    componentLogger(log.child({ component: "master" }), "master", { masterId: "m1" }).info("elected");
    expect(lines.map((l) => count(l, "component"))).toEqual([1, 1]);
    expect(JSON.parse(lines[0]!)).toMatchObject({ component: "agent", agent: 1 });
    expect(JSON.parse(lines[1]!)).toMatchObject({ component: "master", masterId: "m1" });
  });

  it("binds a part under another component as its subcomponent, and binds the component when none is", () => {
    const { log, lines } = capture();
    componentLogger(log.child({ component: "agent" }), "agent-http").info("listening");
    componentLogger(log, "agent").info("alone");
    expect(lines.map((l) => count(l, "component"))).toEqual([1, 1]);
    expect(JSON.parse(lines[0]!)).toMatchObject({ component: "agent", subcomponent: "agent-http" });
    expect(JSON.parse(lines[1]!)).toMatchObject({ component: "agent" });
  });

  it("is needed: a plain pino child repeats the key", () => {
    const { log, lines } = capture();
    log.child({ component: "agent" }).child({ component: "agent" }).info("twice");
    expect(count(lines[0]!, "component")).toBe(2);
  });
});

describe("componentField", () => {
  it("names the component in a log call once, under a logger that binds one or none (the scheduler driver inside Marathon)", () => {
    const { log, lines } = capture();
    const marathon = log.child({ component: "marathon" });
    marathon.info({ ...componentField(marathon, "scheduler-driver"), frameworkId: "f1" }, "subscribed");
    log.info({ ...componentField(log, "scheduler-driver") }, "alone");
    marathon.info({ ...componentField(marathon, "marathon") }, "same");
    expect(lines.map((l) => count(l, "component"))).toEqual([1, 1, 1]);
    expect(JSON.parse(lines[0]!)).toMatchObject({ component: "marathon", subcomponent: "scheduler-driver" });
    expect(JSON.parse(lines[1]!)).toMatchObject({ component: "scheduler-driver" });
  });
});
