/**
 * Module hooks that run Corral's TypeScript on node: each `.ts` file is stripped of its types by
 * esbuild (the transformer tsx uses) as it loads. Unlike tsx, it does not wrap every function in
 * a `__name(...)` call to keep its name: that gives each closure, of the thousands a simulation's
 * agents create, its own property table (about 10% of a large simulation's heap). Nothing here
 * needs it: esbuild renames nothing when it does not minify.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { transform } from "esbuild";

export async function load(url, context, nextLoad) {
  if (!url.startsWith("file:") || !url.endsWith(".ts")) return nextLoad(url, context);
  const path = fileURLToPath(url);
  const result = await transform(await readFile(path, "utf8"), {
    loader: "ts",
    format: "esm",
    target: `node${process.versions.node}`,
    sourcefile: path,
    sourcemap: "inline",
  });
  return { format: "module", source: result.code, shortCircuit: true };
}
