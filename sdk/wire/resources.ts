/**
 * Conversion between the wire's `Resource[]` and the {@link Resources} algebra. Conversion from
 * the wire validates (a bad quantity, name, role or overlapping range is a {@link ResourceError}),
 * so a handler can turn it into a clear rejection.
 */
import { Resources, toMillis, type ResourceEntry } from "../resources.ts";
import type { Resource } from "./types.ts";

/** Reads wire resources into the algebra. @throws ResourceError naming the offending resource */
export function resourcesFromWire(resources: readonly Resource[]): Resources {
  const entries: ResourceEntry[] = resources.map((r) => {
    switch (r.value) {
      case "scalar":
        return { kind: "scalar", name: r.name, role: r.role || "*", millis: toMillis(r.scalar, r.name) };
      case "ranges":
        return { kind: "ranges", name: r.name, role: r.role || "*", ranges: r.ranges.range.map((x) => ({ begin: x.begin, end: x.end })) };
      case "set":
        return { kind: "set", name: r.name, role: r.role || "*", items: [...r.set.item] };
    }
  });
  return Resources.of(entries);
}

/** Writes the algebra in wire form. */
export function resourcesToWire(resources: Resources): Resource[] {
  return resources.entries.map((e): Resource => {
    switch (e.kind) {
      case "scalar":
        return { name: e.name, role: e.role, value: "scalar", scalar: e.millis / 1000 };
      case "ranges":
        return { name: e.name, role: e.role, value: "ranges", ranges: { range: e.ranges.map((x) => ({ begin: x.begin, end: x.end })) } };
      case "set":
        return { name: e.name, role: e.role, value: "set", set: { item: [...e.items] } };
    }
  });
}
