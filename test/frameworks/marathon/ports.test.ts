import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { pickPorts } from "../../../frameworks/marathon/ports.ts";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";

const defs = (...ports: number[]) => ports.map((port) => ({ port }));

describe("pickPorts", () => {
  const offer = Resources.parse("cpus:4;mem:4096;ports:[31000-31002,31010-31010]");

  it("takes the lowest free ports for dynamic ports", () => {
    const pick = pickPorts({ portDefinitions: defs(0, 0) }, offer);
    expect(pick).toMatchObject({ ok: true, hostPorts: [31000, 31001] });
    expect(pick.ok && pick.resources.toString()).toBe("ports:[31000-31001]");
  });

  it("treats non-zero ports as service ports unless requirePorts is set", () => {
    expect(pickPorts({ portDefinitions: defs(8080) }, offer)).toMatchObject({ ok: true, hostPorts: [31000] });
    expect(pickPorts({ portDefinitions: defs(8080), requirePorts: true }, offer)).toEqual({ ok: false, reason: "required port 8080 is not offered" });
  });

  it("uses required ports exactly and fills dynamic ones around them", () => {
    const pick = pickPorts({ portDefinitions: defs(0, 31000, 0), requirePorts: true }, offer);
    expect(pick).toMatchObject({ ok: true, hostPorts: [31001, 31000, 31002] });
    expect(pick.ok && pick.resources.toString()).toBe("ports:[31000-31002]");
  });

  it("explains when there are not enough ports", () => {
    const pick = pickPorts({ portDefinitions: defs(0, 0, 0, 0, 0) }, offer);
    expect(pick).toEqual({ ok: false, reason: "needs 5 dynamic ports, the offer has 4 free ports left for the dynamic ones" });
    expect(pickPorts({ portDefinitions: defs(0) }, Resources.parse("cpus:1"))).toMatchObject({ ok: false });
    expect(pickPorts({ portDefinitions: defs(31000, 31000), requirePorts: true }, offer)).toEqual({ ok: false, reason: "port 31000 is required twice" });
  });

  it("needs nothing for an app without ports", () => {
    expect(pickPorts({ portDefinitions: [] }, Resources.empty())).toEqual({ ok: true, hostPorts: [], resources: Resources.empty() });
  });

  it("keeps reservations: reserved ports first, only accepted roles", () => {
    const mixed = Resources.parse("ports:[31000-31001];ports(web):[32000-32000]");
    const pick = pickPorts({ portDefinitions: defs(0, 0) }, mixed);
    expect(pick).toMatchObject({ ok: true, hostPorts: [32000, 31000] });
    expect(pick.ok && pick.resources.toString()).toBe("ports:[31000-31000];ports(web):[32000-32000]");
    expect(pickPorts({ portDefinitions: defs(0, 0) }, mixed, { acceptedRoles: ["*"] })).toMatchObject({ ok: true, hostPorts: [31000, 31001] });
    expect(pickPorts({ portDefinitions: defs(32000), requirePorts: true }, mixed, { acceptedRoles: ["*"] })).toEqual({
      ok: false,
      reason: "required port 32000 is not offered to roles *",
    });
  });

  it("picks random ports reproducibly from an injected Rng", () => {
    const wide = Resources.parse("ports:[20000-29999]");
    const a = pickPorts({ portDefinitions: defs(0, 0, 0) }, wide, { rng: new SeededRng(7) });
    const b = pickPorts({ portDefinitions: defs(0, 0, 0) }, wide, { rng: new SeededRng(7) });
    expect(a).toEqual(b);
    expect(a.ok && a.hostPorts).not.toEqual([20000, 20001, 20002]);
  });

  it("always returns distinct offered ports whose resources the offer contains", () => {
    const rangesArb = fc.array(fc.tuple(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 0, max: 5 })), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(rangesArb, fc.array(fc.integer({ min: 0, max: 520 }), { maxLength: 6 }), fc.boolean(), fc.option(fc.integer()), (ranges, ports, requirePorts, seed) => {
        const offer = Resources.of(ranges.map(([begin, len]) => ({ kind: "ranges" as const, name: "ports", role: "*", ranges: [{ begin, end: begin + len }] })));
        const pick = pickPorts({ portDefinitions: defs(...ports), requirePorts }, offer, seed === null ? {} : { rng: new SeededRng(seed) });
        if (!pick.ok) return;
        expect(new Set(pick.hostPorts).size).toBe(ports.length);
        expect(offer.contains(pick.resources)).toBe(true);
        expect(pick.resources.rangesSize("ports")).toBe(ports.length);
        if (requirePorts) ports.forEach((p, i) => p !== 0 && expect(pick.hostPorts[i]).toBe(p));
      }),
    );
  });
});
