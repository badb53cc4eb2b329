import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkConstraint,
  checkConstraints,
  constraintError,
  constraintTuple,
  instancesForOffer,
  parseConstraint,
  type ConstraintTuple,
  type Placement,
} from "../../../frameworks/marathon/constraints.ts";

function host(hostname: string, attributes: Record<string, string> = {}, extra: Partial<Placement> = {}): Placement {
  return { hostname, attributes, ...extra };
}

function check(tuple: ConstraintTuple, offer: Placement, placed: Placement[] = []) {
  return checkConstraint(parseConstraint(tuple), offer, placed);
}

function reason(tuple: ConstraintTuple, offer: Placement, placed: Placement[] = []): string {
  const decision = check(tuple, offer, placed);
  if (decision.allowed) throw new Error(`expected ${JSON.stringify(tuple)} to deny`);
  return decision.reason;
}

const r1a = host("a", { rack: "r1" });
const r1b = host("b", { rack: "r1" });
const r2c = host("c", { rack: "r2" });
const r3d = host("d", { rack: "r3" });

describe("UNIQUE", () => {
  it("allows a host (or attribute value) nobody uses and denies a used one", () => {
    expect(check(["hostname", "UNIQUE"], r2c, [r1a, r1b]).allowed).toBe(true);
    expect(reason(["hostname", "UNIQUE"], r1a, [r1a])).toBe("UNIQUE hostname: host a already runs an instance");
    expect(check(["rack", "UNIQUE"], r2c, [r1a]).allowed).toBe(true);
    expect(reason(["rack", "UNIQUE"], r1b, [r1a])).toBe("UNIQUE rack: rack r1 already runs an instance");
  });

  it("denies an offer lacking the attribute", () => {
    expect(reason(["rack", "UNIQUE"], host("x"), [])).toBe("UNIQUE rack: offer has no attribute 'rack'");
  });
});

describe("CLUSTER", () => {
  it("with a value, allows only that value", () => {
    expect(check(["rack", "CLUSTER", "r1"], r1a).allowed).toBe(true);
    expect(reason(["rack", "CLUSTER", "r1"], r2c)).toBe("CLUSTER rack: offer has rack r2, needs r1");
    expect(check(["hostname", "CLUSTER", "a"], r1a).allowed).toBe(true);
  });

  it("without a value, follows wherever the first instance landed", () => {
    expect(check(["rack", "CLUSTER", ""], r2c, []).allowed).toBe(true);
    expect(check(["rack", "CLUSTER", ""], r1b, [r1a]).allowed).toBe(true);
    expect(reason(["rack", "CLUSTER", ""], r2c, [r1a])).toBe("CLUSTER rack: instances already run on rack r1, offer has r2");
  });
});

describe("GROUP_BY", () => {
  it("always allows a value not used yet", () => {
    expect(check(["rack", "GROUP_BY"], r2c, [r1a, r1b]).allowed).toBe(true);
  });

  it("allows a used value only when it is among the least loaded", () => {
    expect(check(["rack", "GROUP_BY"], r2c, [r1a, r2c]).allowed).toBe(true);
    expect(reason(["rack", "GROUP_BY"], r1a, [r1a, r1b, r2c])).toBe("GROUP_BY rack: rack r1 runs 2 instances, more than the least loaded group (1)");
  });

  it("with an expected count, waits until that many values are in use", () => {
    expect(reason(["rack", "GROUP_BY", "3"], r1b, [r1a, r2c])).toBe("GROUP_BY rack: rack r1 already runs an instance and only 2 of 3 values are in use");
    expect(check(["rack", "GROUP_BY", "3"], r3d, [r1a, r2c]).allowed).toBe(true);
    expect(check(["rack", "GROUP_BY", "3"], r1b, [r1a, r2c, r3d]).allowed).toBe(true);
  });
});

describe("LIKE and UNLIKE", () => {
  it("LIKE needs the whole value to match", () => {
    expect(check(["hostname", "LIKE", "srv2.*"], host("srv2.dc1")).allowed).toBe(true);
    expect(reason(["hostname", "LIKE", "srv2"], host("srv2.dc1"))).toBe("LIKE hostname: host srv2.dc1 does not match /srv2/");
    expect(check(["rack", "LIKE", "r[12]"], r2c).allowed).toBe(true);
    expect(reason(["rack", "LIKE", "r[12]"], r3d)).toBe("LIKE rack: rack r3 does not match /r[12]/");
  });

  it("UNLIKE denies a match and allows an offer without the attribute", () => {
    expect(reason(["rack", "UNLIKE", "r1"], r1a)).toBe("UNLIKE rack: rack r1 matches /r1/");
    expect(check(["rack", "UNLIKE", "r1"], r2c).allowed).toBe(true);
    expect(check(["rack", "UNLIKE", "r1"], host("x")).allowed).toBe(true);
    expect(check(["rack", "LIKE", "r1"], host("x")).allowed).toBe(false);
  });
});

describe("MAX_PER", () => {
  it("allows up to n instances per value", () => {
    expect(check(["rack", "MAX_PER", "2"], r1b, [r1a]).allowed).toBe(true);
    expect(reason(["rack", "MAX_PER", "2"], r1b, [r1a, r1b])).toBe("MAX_PER rack: rack r1 already runs 2 instances (max 2)");
    expect(reason(["hostname", "MAX_PER", "1"], r1a, [r1a])).toBe("MAX_PER hostname: host a already runs 1 instance (max 1)");
    expect(check(["rack", "MAX_PER", "2"], r2c, [r1a, r1b]).allowed).toBe(true);
  });
});

describe("IS", () => {
  it("allows exactly the value", () => {
    expect(check(["rack", "IS", "r3"], r3d).allowed).toBe(true);
    expect(reason(["rack", "IS", "r3"], r1a)).toBe("IS rack: offer has rack r1, needs r3");
  });
});

describe("fields", () => {
  it("reads @hostname, @region and @zone", () => {
    const east = host("e1", {}, { region: "us-east", zone: "a" });
    const west = host("w1", {}, { region: "us-west", zone: "b" });
    expect(check(["@hostname", "UNIQUE"], east, [west]).allowed).toBe(true);
    expect(reason(["@region", "IS", "us-west"], east)).toBe("IS @region: offer has region us-east, needs us-west");
    expect(reason(["@zone", "UNIQUE"], east, [host("e2", {}, { zone: "a" })])).toBe("UNIQUE @zone: zone a already runs an instance");
  });

  it("does not read attributes inherited from Object.prototype", () => {
    expect(check(["constructor", "LIKE", ".*"], host("x")).allowed).toBe(false);
  });
});

describe("checkConstraints", () => {
  it("answers with the first denying constraint", () => {
    const constraints: ConstraintTuple[] = [
      ["hostname", "UNIQUE"],
      ["rack", "IS", "r1"],
    ];
    expect(checkConstraints(constraints, r1b, [r1a])).toEqual({ allowed: true });
    const denied = checkConstraints(constraints, r1a, [r1a]);
    expect(denied.allowed === false && denied.constraint).toEqual({ field: "hostname", operator: "UNIQUE" });
    expect(checkConstraints([], r1a, [r1a])).toEqual({ allowed: true });
  });
});

describe("constraint rules", () => {
  it("validate values as Marathon does", () => {
    expect(constraintError(["hostname", "UNIQUE"])).toBeNull();
    expect(constraintError(["hostname", "UNIQUE", ""])).toBeNull(); // Marathon's examples write it
    expect(parseConstraint(["hostname", "UNIQUE", ""])).toEqual({ field: "hostname", operator: "UNIQUE" });
    expect(constraintError(["hostname", "UNIQUE", "x"])).toBe("Value specified but not used");
    expect(constraintError(["rack", "GROUP_BY", "-2"])).toBeNull();
    expect(constraintError(["rack", "MAX_PER", "99999999999"])).toContain("positive integer");
    expect(constraintError(["rack", "IS", ""])).toBe("Missing value");
    expect(constraintError(["", "UNIQUE"])).toBe("Missing field and operator");
    expect(constraintError(["a", "LIKE", "x".repeat(1001)])).toContain("at most 1000");
    expect(() => parseConstraint(["a", "NOPE"])).toThrow(RangeError);
    expect(constraintTuple(parseConstraint(["rack", "MAX_PER", "2"]))).toEqual(["rack", "MAX_PER", "2"]);
  });
});

describe("instancesForOffer", () => {
  it("stops at the first instance a constraint would refuse on the same offer", () => {
    expect(instancesForOffer([["hostname", "UNIQUE"]], r1a, [], { wanted: 5 })).toMatchObject({ count: 1, stoppedBy: "constraint" });
    expect(instancesForOffer([["hostname", "MAX_PER", "3"]], r1a, [r1a], { wanted: 5 })).toMatchObject({ count: 2, stoppedBy: "constraint" });
    const denied = instancesForOffer([["hostname", "UNIQUE"]], r1a, [r1a], { wanted: 5 });
    expect(denied.count).toBe(0);
    expect(denied.denial?.allowed === false && denied.denial.reason).toBe("UNIQUE hostname: host a already runs an instance");
  });

  it("respects what is wanted, the per-offer cap (default 5) and the resources left", () => {
    expect(instancesForOffer([], r1a, [], { wanted: 3 })).toEqual({ count: 3, stoppedBy: "wanted" });
    expect(instancesForOffer([], r1a, [], { wanted: 50 })).toEqual({ count: 5, stoppedBy: "maxInstancesPerOffer" });
    expect(instancesForOffer([], r1a, [], { wanted: 50, maxInstancesPerOffer: 2 })).toEqual({ count: 2, stoppedBy: "maxInstancesPerOffer" });
    expect(instancesForOffer([], r1a, [], { wanted: 50, fitsAnother: (n) => n < 4 })).toEqual({ count: 4, stoppedBy: "resources" });
  });

  it("never exceeds MAX_PER or breaks UNIQUE, whatever was placed before", () => {
    const hosts = ["a", "b", "c"].map((h) => host(h, { rack: h === "c" ? "r2" : "r1" }));
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...hosts), { maxLength: 8 }), fc.constantFrom(...hosts), fc.integer({ min: 1, max: 4 }), (placed, offer, max) => {
        const plan = instancesForOffer([["rack", "MAX_PER", String(max)]], offer, placed, { wanted: 10, maxInstancesPerOffer: 10 });
        const before = placed.filter((p) => p.attributes.rack === offer.attributes.rack).length;
        expect(before + plan.count).toBe(Math.max(before, max));
        const unique = instancesForOffer([["hostname", "UNIQUE"]], offer, placed, { wanted: 10 });
        expect(unique.count).toBe(placed.some((p) => p.hostname === offer.hostname) ? 0 : 1);
      }),
    );
  });
});
