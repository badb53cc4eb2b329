import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Resources, ResourceError, type ResourceEntry } from "../../sdk/resources.ts";
import { isSelfOrAncestor, roleNameError, selfAndAncestors, topLevelRole } from "../../sdk/roles.ts";

const r = (text: string) => Resources.parse(text);

describe("Resources text form", () => {
  it("parses the agent flag form and prints it back in normal order", () => {
    const res = r("cpus:4;mem:8192;disk:20000;ports:[31000-32000];cpus(eng):2");
    expect(res.scalar("cpus")).toBe(6);
    expect(res.reserved("eng").scalar("cpus")).toBe(2);
    expect(res.unreserved().scalar("cpus")).toBe(4);
    expect(res.ranges("ports")).toEqual([{ begin: 31000, end: 32000 }]);
    expect(res.rangesSize("ports")).toBe(1001);
    expect(res.toString()).toBe("cpus:4;cpus(eng):2;disk:20000;mem:8192;ports:[31000-32000]");
    expect(Resources.parse(res.toString()).equals(res)).toBe(true);
  });

  it("parses sets, multiple ranges, hierarchical roles and (*)", () => {
    const res = r("zones(eng/web):{b,a};ports:[1-2,5-6];gpus(*):1");
    expect(res.toString()).toBe("gpus:1;ports:[1-2,5-6];zones(eng/web):{a,b}");
  });

  it("keeps three decimals exactly: 0.1 + 0.2 cpus is 0.3", () => {
    const sum = Resources.scalar("cpus", 0.1).add(Resources.scalar("cpus", 0.2));
    expect(sum.scalar("cpus")).toBe(0.3);
    expect(sum.equals(Resources.scalar("cpus", 0.3))).toBe(true);
    let acc = Resources.empty();
    for (let i = 0; i < 1000; i++) acc = acc.add(Resources.scalar("cpus", 0.001));
    expect(acc.scalar("cpus")).toBe(1);
    expect(Resources.scalar("cpus", 0.0004).isEmpty()).toBe(true); // below the precision: rounds to nothing
  });

  it.each([
    ["cpus:-1", "negative"],
    ["cpus:NaN", "not a number"],
    ["cpus:Infinity", "not a number"],
    ["cpus:1e400", "finite"],
    ["cpus", "expected name:value"],
    ["cpus:abc", "not a number"],
    ["ports:[5-3]", "ends before it begins"],
    ["ports:[1-10,5-20]", "overlapping"],
    ["ports:[1-10", "unterminated"],
    ["s:{a,a}", "duplicate set item"],
    ["cpus():1", "role must not be empty"],
    ["cpus(.):1", "'.'"],
    ["cpus(..):1", "'..'"],
    ["cpus(-eng):1", "start with '-'"],
    ["cpus(a b):1", "whitespace"],
    ["cpus(/eng):1", "start or end with '/'"],
    ["cpus(eng/):1", "start or end with '/'"],
    ["cpus(eng//web):1", "'//'"],
    ["cpus(eng/..):1", "'..'"],
    ["cpus:1;cpus:2", "given twice"],
    ["c#pus:1", "use only letters, digits, '_', '.' or '-'"],
    [`${"x".repeat(65)}:1`, "at most 64 characters, got 65"],
  ])("rejects %s naming the token (%s)", (text, rule) => {
    let caught: unknown;
    try {
      Resources.parse(text);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ResourceError);
    expect((caught as ResourceError).code).toBe("CORRAL_ERR_BAD_RESOURCES");
    expect((caught as ResourceError).message).toContain(rule);
  });

  it("refuses a set item the text form cannot carry (';' separates resources), so every value prints as text that parses back to it", () => {
    expect(() => Resources.set("zones", ["a;b"])).toThrow(/invalid set item 'a;b' in 'zones'/);
    expect(() => Resources.fromJSON([{ name: "zones", set: { item: ["a", "b;c"] } }])).toThrow(/invalid set item 'b;c' in 'resources\[0\]'/);
    const odd = Resources.set("zones", ["a(b)", "c:d", "[e]"]);
    expect(Resources.parse(odd.toString()).equals(odd)).toBe(true);
  });

  it("takes whitespace around names, roles, colons and values, as Mesos trims them", () => {
    const spaced = r(" cpus : 2 ; mem :1024;disk( eng/web ) : 10 ; ports : [ 31000 - 32000 ] ; zones (eng) : { a , b } ");
    expect(spaced.toString()).toBe("cpus:2;disk(eng/web):10;mem:1024;ports:[31000-32000];zones(eng):{a,b}");
    // Whitespace inside a name or a role is still refused (Mesos would keep it as part of the name).
    expect(() => r("c pus:1")).toThrow(/cannot parse resource 'c pus:1'/);
    expect(() => r("cpus(a b):1")).toThrow(/whitespace/);
  });

  it("names the offending token among good ones", () => {
    expect(() => r("cpus:1;mem:lots;disk:5")).toThrow(/'mem:lots'/);
  });
});

describe("Resources JSON form", () => {
  it("round-trips through Mesos-style JSON", () => {
    const res = r("cpus:1.5;mem(eng):512;ports:[80-80,443-443];s:{x}");
    const json = res.toJSON();
    expect(json).toContainEqual({ name: "mem", role: "eng", type: "SCALAR", scalar: { value: 512 } });
    expect(Resources.fromJSON(JSON.parse(JSON.stringify(json))).equals(res)).toBe(true);
  });

  it("takes a name of 64 characters and refuses one of 65, in both forms", () => {
    expect(Resources.parse(`${"n".repeat(64)}:1`).toJSON()).toHaveLength(1);
    expect(() => Resources.fromJSON([{ name: "n".repeat(65), scalar: { value: 1 } }])).toThrow(/resources\[0\].*at most 64 characters/);
  });

  it("rejects bad JSON elements naming the index", () => {
    expect(() => Resources.fromJSON([{ name: "cpus", type: "SCALAR", scalar: { value: -1 } }])).toThrow(/negative/);
    expect(() => Resources.fromJSON([{ name: "cpus", scalar: { value: 1 } }, { name: "mem" }])).toThrow(/resources\[1\]/);
    expect(() => Resources.fromJSON({})).toThrow(ResourceError);
  });
});

describe("Resources arithmetic", () => {
  it("subtract refuses to go negative and trySubtract answers null", () => {
    expect(() => r("cpus:1").subtract(r("cpus:2"))).toThrow(/not contained/);
    expect(r("cpus:1").trySubtract(r("mem:1"))).toBeNull();
    expect(r("ports:[1-10]").trySubtract(r("ports:[5-11]"))).toBeNull();
    expect(r("cpus(eng):2").trySubtract(r("cpus:1"))).toBeNull(); // a reservation is not unreserved
  });

  it("splits ranges and sets on subtract", () => {
    expect(r("ports:[1-10]").subtract(r("ports:[3-4,7-7]")).toString()).toBe("ports:[1-2,5-6,8-10]");
    expect(r("s:{a,b,c}").subtract(r("s:{b}")).toString()).toBe("s:{a,c}");
  });

  it("filters allocatable resources for a role by the reservation tree", () => {
    const res = r("cpus:1;cpus(eng):2;cpus(eng/web):4;cpus(ops):8");
    expect(res.allocatableTo("eng/web").scalar("cpus")).toBe(7);
    expect(res.allocatableTo("eng").scalar("cpus")).toBe(3);
    expect(res.allocatableTo("engineering").scalar("cpus")).toBe(1);
    expect(res.flatten().toString()).toBe("cpus:15");
  });

  it("refuses to mix kinds under one name", () => {
    expect(() => r("x:1").add(r("x:[1-2]"))).toThrow(/scalar in one operand/);
  });

  it("refuses one name of two kinds under different reservations, in every form and in a sum", () => {
    // Else the bag is half ports and half a scalar "ports" (quantities count it, flatten throws).
    expect(() => r("ports:[1-2];ports(eng):3")).toThrow(/resource 'ports' is a ranges for role '\*' and a scalar for role 'eng'/);
    expect(() => Resources.fromJSON([{ name: "x", role: "eng", scalar: { value: 1 } }, { name: "x", set: { item: ["a"] } }])).toThrow(/resource 'x' is a set for role '\*' and a scalar for role 'eng'/);
    expect(() => r("ports(eng):[1-2]").add(r("ports:3"))).toThrow(/resource 'ports' is a scalar for role '\*' and a ranges for role 'eng'/);
    expect(r("ports:[1-2];ports(eng):[3-4]").flatten().toString()).toBe("ports:[1-4]");
  });
});

describe("roles", () => {
  it("knows the tree", () => {
    expect(selfAndAncestors("a/b/c")).toEqual(["a/b/c", "a/b", "a"]);
    expect(isSelfOrAncestor("a", "a/b")).toBe(true);
    expect(isSelfOrAncestor("a", "ab")).toBe(false);
    expect(topLevelRole("eng/web")).toBe("eng");
    expect(roleNameError("*")).not.toBeNull();
    expect(roleNameError("*", true)).toBeNull();
    expect(roleNameError("eng/web")).toBeNull();
  });
});

// --- properties -------------------------------------------------------------------------------

const roleArb = fc.constantFrom("*", "eng", "eng/web", "ops");
const scalarArb = fc.record({
  kind: fc.constant("scalar" as const),
  name: fc.constantFrom("cpus", "mem", "disk"),
  role: roleArb,
  millis: fc.integer({ min: 0, max: 10_000_000 }),
});
const rangesArb = fc.record({
  kind: fc.constant("ranges" as const),
  name: fc.constant("ports"),
  role: roleArb,
  ranges: fc.uniqueArray(fc.integer({ min: 0, max: 200 }), { maxLength: 30 }).map((ports) => ports.map((p) => ({ begin: p, end: p }))),
});
const setArb = fc.record({
  kind: fc.constant("set" as const),
  name: fc.constant("zones"),
  role: roleArb,
  items: fc.uniqueArray(fc.constantFrom("a", "b", "c", "d", "e"), { maxLength: 5 }),
});
const resourcesArb = fc
  .array(fc.oneof(scalarArb, rangesArb, setArb), { maxLength: 8 })
  .map((entries) => {
    // One entry per (name, role): the same port in two entries of one bag would overlap.
    const seen = new Set<string>();
    return Resources.of(entries.filter((e) => !seen.has(`${e.name}/${e.role}`) && seen.add(`${e.name}/${e.role}`)) as ResourceEntry[]);
  });
/** Two bags with disjoint ranges and sets, so that their sum is a plain union. */
const disjointPairArb = fc.tuple(resourcesArb, resourcesArb).map(([a, b]) => {
  const bWithoutOverlap = b.filter((e) => e.kind === "scalar");
  return [a, bWithoutOverlap] as const;
});

describe("Resources laws (fast-check)", () => {
  it("add is commutative and associative", () => {
    fc.assert(
      fc.property(resourcesArb, resourcesArb, resourcesArb, (a, b, c) => {
        expect(a.add(b).equals(b.add(a))).toBe(true);
        expect(a.add(b).add(c).equals(a.add(b.add(c)))).toBe(true);
      }),
    );
  });

  it("subtract undoes add, and a sum contains both parts", () => {
    fc.assert(
      fc.property(disjointPairArb, ([a, b]) => {
        const sum = a.add(b);
        expect(sum.contains(a)).toBe(true);
        expect(sum.contains(b)).toBe(true);
        expect(sum.subtract(b).equals(a)).toBe(true);
        expect(sum.subtract(a).equals(b)).toBe(true);
      }),
    );
  });

  it("contains agrees with trySubtract, and empty is the identity", () => {
    fc.assert(
      fc.property(resourcesArb, resourcesArb, (a, b) => {
        expect(a.contains(b)).toBe(a.trySubtract(b) !== null);
        expect(a.add(Resources.empty()).equals(a)).toBe(true);
        expect(a.contains(Resources.empty())).toBe(true);
        expect(a.subtract(a).isEmpty()).toBe(true);
      }),
    );
  });

  it("text and JSON forms round-trip", () => {
    fc.assert(
      fc.property(resourcesArb, (a) => {
        expect(Resources.parse(a.toString()).equals(a)).toBe(true);
        expect(Resources.fromJSON(JSON.parse(JSON.stringify(a))).equals(a)).toBe(true);
      }),
    );
  });

  it("scalar quantities add up exactly", () => {
    fc.assert(
      fc.property(resourcesArb, resourcesArb, (a, b) => {
        expect(a.add(b).scalarMillis("cpus")).toBe(a.scalarMillis("cpus") + b.scalarMillis("cpus"));
      }),
    );
  });
});

describe("wire conversion", async () => {
  const { resourcesFromWire, resourcesToWire } = await import("../../sdk/wire/resources.ts");
  it("round-trips through the wire form and validates on the way in", () => {
    const res = r("cpus:1.5;mem(eng):512;ports:[31000-31005];zones:{a,b}");
    expect(resourcesFromWire(resourcesToWire(res)).equals(res)).toBe(true);
    expect(() => resourcesFromWire([{ name: "cpus", role: "*", value: "scalar", scalar: -1 }])).toThrow(ResourceError);
    expect(() => resourcesFromWire([{ name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 5, end: 1 }] } }])).toThrow(/ends before/);
  });
});
