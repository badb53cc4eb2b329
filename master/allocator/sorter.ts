/**
 * Sorters decide who is offered resources first. The allocator keeps one sorter over roles (a
 * hierarchical tree of role paths) and one flat sorter per role over that role's frameworks.
 *
 * The order is total: dominant share (lowest first), then allocation count (fewest first), then
 * name. Allocation counts only ever grow, so two otherwise equal clients take turns.
 */
import type { Rng } from "../../sdk/rng.ts";
import { addQuantities, type ScalarQuantities } from "../../sdk/resources.ts";

/** The policy interface of the allocator: who is next. */
export interface Sorter {
  /** Adds a client (inactive until {@link activate}d). Adding a present client is a no-op. */
  add(client: string): void;
  /** Removes a client and whatever allocation it still holds. */
  remove(client: string): void;
  /** True when `client` has been added and not removed. */
  contains(client: string): boolean;
  /** Lets the client appear in {@link sort} and {@link visit}. */
  activate(client: string): void;
  /** Hides the client from {@link sort} and {@link visit}; its allocation still counts. */
  deactivate(client: string): void;
  /** Sets the weight of a client or (in a hierarchical sorter) of an inner role path. */
  setWeight(path: string, weight: number): void;
  /**
   * Records resources allocated to `client` (scalar quantities in thousandths).
   * @param countAllocation whether this counts as an allocation for the tie-break. @default true
   */
  allocated(client: string, quantities: ReadonlyMap<string, number>, countAllocation?: boolean): void;
  /** Records resources given back by `client`. */
  unallocated(client: string, quantities: ReadonlyMap<string, number>): void;
  /** Sets the cluster totals that shares are measured against (including reservations). */
  setTotal(totals: ScalarQuantities): void;
  /** Active clients, first to be offered first. */
  sort(): string[];
  /** Calls `visitor` with active clients in {@link sort} order until it returns `false`. */
  visit(visitor: (client: string) => boolean): void;
  /** The client's current weighted dominant share. */
  share(client: string): number;
  /** The client's allocation (thousandths by scalar name); empty for unknown clients. */
  allocation(client: string): ScalarQuantities;
  /** How many times the client has been allocated to. */
  allocationCount(client: string): number;
}

/** Thrown on misuse of a sorter (unknown client, bad weight). */
export class SorterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SorterError";
  }
}

/** Dominant share of `allocation` against `totals`, divided by `weight`. */
export function dominantShare(allocation: ScalarQuantities, totals: ScalarQuantities, weight: number): number {
  let share = 0;
  for (const [name, millis] of allocation) {
    const total = totals.get(name);
    if (total !== undefined && total > 0) {
      const s = millis / total;
      if (s > share) share = s;
    }
  }
  return share / weight;
}

interface Node {
  /** Full path (role path or client name); a client's own leaf under an inner node shares its path. */
  readonly path: string;
  readonly parent: Node | null;
  /** The node's children (inner nodes only), kept as a heap ordered by (share, count, path). */
  readonly children: ChildHeap;
  /** Leaf nodes are clients. Inner nodes hold children and, optionally, the client of the same path. */
  readonly isLeaf: boolean;
  active: boolean;
  allocation: ScalarQuantities;
  count: number;
  share: number;
  /** Position in the parent's heap. */
  heapIndex: number;
}

function newNode(path: string, parent: Node | null, isLeaf: boolean): Node {
  return { path, parent, children: new ChildHeap(), isLeaf, active: true, allocation: new Map(), count: 0, share: 0, heapIndex: -1 };
}

function compareNodes(a: Node, b: Node): number {
  if (a.share !== b.share) return a.share < b.share ? -1 : 1;
  if (a.count !== b.count) return a.count - b.count;
  if (a.path === b.path) return a.isLeaf === b.isLeaf ? 0 : a.isLeaf ? -1 : 1;
  return a.path < b.path ? -1 : 1;
}

function pushFrontier(items: Node[], frontier: number[], position: number): void {
  frontier.push(position);
  let i = frontier.length - 1;
  while (i > 0) {
    const p = (i - 1) >>> 1;
    const parent = frontier[p]!;
    if (compareNodes(items[position]!, items[parent]!) >= 0) break;
    frontier[i] = parent;
    i = p;
  }
  frontier[i] = position;
}

function popFrontier(items: Node[], frontier: number[]): number {
  const top = frontier[0]!;
  const last = frontier.pop()!;
  const n = frontier.length;
  if (n === 0) return top;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const smaller = r < n && compareNodes(items[frontier[r]!]!, items[frontier[l]!]!) < 0 ? r : l;
    if (compareNodes(items[frontier[smaller]!]!, items[last]!) >= 0) break;
    frontier[i] = frontier[smaller]!;
    i = smaller;
  }
  frontier[i] = last;
  return top;
}

/**
 * Siblings in a binary min-heap. Allocation changes move one node by O(log n) swaps — with
 * thousands of equally-shared frameworks a sorted array would shift them all on every
 * allocation — and an in-order walk that stops early costs O(k log k) for the first k nodes.
 */
class ChildHeap {
  readonly items: Node[] = [];

  get size(): number {
    return this.items.length;
  }

  push(node: Node): void {
    node.heapIndex = this.items.length;
    this.items.push(node);
    this.siftUp(node.heapIndex);
  }

  remove(node: Node): void {
    const index = node.heapIndex;
    if (this.items[index] !== node) return;
    const last = this.items.pop()!;
    if (last !== node) {
      this.items[index] = last;
      last.heapIndex = index;
      this.restore(index);
    }
    node.heapIndex = -1;
  }

  /** Re-establishes heap order after `node`'s key changed. */
  update(node: Node): void {
    if (this.items[node.heapIndex] === node) this.restore(node.heapIndex);
  }

  /** Rebuilds the heap after many keys changed at once. */
  heapify(): void {
    for (let i = 0; i < this.items.length; i++) this.items[i]!.heapIndex = i;
    for (let i = (this.items.length >>> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  /** Calls `visitor` in ascending order until it returns false; answers whether it ran to the end. */
  visitInOrder(visitor: (node: Node) => boolean): boolean {
    const items = this.items;
    if (items.length === 0) return true;
    // Most walks stop at the first node: settle that without building anything.
    if (!visitor(items[0]!)) return false;
    // Then a second, small heap of candidate positions: the smallest unvisited node is always a
    // child of a visited one, so only those become candidates.
    const frontier: number[] = [];
    if (items.length > 1) frontier.push(1);
    if (items.length > 2) pushFrontier(items, frontier, 2);
    while (frontier.length > 0) {
      const top = popFrontier(items, frontier);
      if (!visitor(items[top]!)) return false;
      const left = 2 * top + 1;
      if (left < items.length) pushFrontier(items, frontier, left);
      if (left + 1 < items.length) pushFrontier(items, frontier, left + 1);
    }
    return true;
  }

  private restore(index: number): void {
    if (index > 0 && compareNodes(this.items[index]!, this.items[(index - 1) >>> 1]!) < 0) this.siftUp(index);
    else this.siftDown(index);
  }

  private siftUp(index: number): void {
    const items = this.items;
    const node = items[index]!;
    while (index > 0) {
      const parentIndex = (index - 1) >>> 1;
      const parent = items[parentIndex]!;
      if (compareNodes(node, parent) >= 0) break;
      items[index] = parent;
      parent.heapIndex = index;
      index = parentIndex;
    }
    items[index] = node;
    node.heapIndex = index;
  }

  private siftDown(index: number): void {
    const items = this.items;
    const node = items[index]!;
    const n = items.length;
    for (;;) {
      const l = 2 * index + 1;
      if (l >= n) break;
      const r = l + 1;
      const smaller = r < n && compareNodes(items[r]!, items[l]!) < 0 ? r : l;
      if (compareNodes(items[smaller]!, node) >= 0) break;
      items[index] = items[smaller]!;
      items[index]!.heapIndex = index;
      index = smaller;
    }
    items[index] = node;
    node.heapIndex = index;
  }
}

/**
 * Options of {@link DrfSorter}.
 */
export interface DrfSorterOptions {
  /**
   * Treat client names as `/`-separated role paths and compare siblings by subtree share
   * (the role sorter); otherwise names are opaque (a framework sorter).
   * @default false
   */
  hierarchical?: boolean;
}

/**
 * Weighted Dominant Resource Fairness. Children of every node are kept sorted and repositioned
 * incrementally when an allocation changes, so choosing the next client does not re-sort;
 * a change of cluster totals (which moves every share) marks the tree for one full re-sort.
 */
export class DrfSorter implements Sorter {
  private readonly hierarchical: boolean;
  private readonly root: Node = newNode("", null, false);
  /** Leaf nodes of clients, by name. */
  private readonly clients = new Map<string, Node>();
  /** Inner nodes, by path (hierarchical only). */
  private readonly inner = new Map<string, Node>();
  private readonly weights = new Map<string, number>();
  private totals: ScalarQuantities = new Map();
  private dirty = false;

  /** @param options see {@link DrfSorterOptions} */
  constructor(options: DrfSorterOptions = {}) {
    this.hierarchical = options.hierarchical ?? false;
  }

  add(client: string): void {
    if (this.clients.has(client)) return;
    const existingInner = this.inner.get(client);
    const parent = existingInner ?? this.ensureParentOf(client);
    const leaf = newNode(client, parent, true);
    leaf.active = false;
    this.clients.set(client, leaf);
    this.insertChild(parent, leaf);
  }

  remove(client: string): void {
    const leaf = this.clients.get(client);
    if (!leaf) return;
    if (leaf.allocation.size > 0) this.unallocated(client, new Map(leaf.allocation));
    this.detach(leaf);
    this.clients.delete(client);
    this.pruneUpwards(leaf.parent);
  }

  contains(client: string): boolean {
    return this.clients.has(client);
  }

  activate(client: string): void {
    this.leaf(client).active = true;
  }

  deactivate(client: string): void {
    this.leaf(client).active = false;
  }

  setWeight(path: string, weight: number): void {
    if (!(Number.isFinite(weight) && weight > 0)) throw new SorterError(`weight of '${path}' must be a positive finite number, got ${weight}`);
    this.weights.set(path, weight);
    this.dirty = true;
  }

  allocated(client: string, quantities: ReadonlyMap<string, number>, countAllocation = true): void {
    this.change(this.leaf(client), quantities, 1, countAllocation);
  }

  unallocated(client: string, quantities: ReadonlyMap<string, number>): void {
    this.change(this.leaf(client), quantities, -1, false);
  }

  setTotal(totals: ScalarQuantities): void {
    this.totals = new Map(totals);
    this.dirty = true;
  }

  sort(): string[] {
    const out: string[] = [];
    this.visit((client) => {
      out.push(client);
      return true;
    });
    return out;
  }

  visit(visitor: (client: string) => boolean): void {
    if (this.dirty) this.resortAll();
    this.currentVisitor = visitor;
    try {
      this.visitNode(this.root);
    } finally {
      this.currentVisitor = () => true;
    }
  }

  share(client: string): number {
    if (this.dirty) this.resortAll();
    return this.clients.get(client)?.share ?? 0;
  }

  allocation(client: string): ScalarQuantities {
    return new Map(this.clients.get(client)?.allocation ?? []);
  }

  allocationCount(client: string): number {
    return this.clients.get(client)?.count ?? 0;
  }

  /** The weighted share of an inner role path (its subtree), for `/state` and tests. */
  subtreeShare(path: string): number {
    if (this.dirty) this.resortAll();
    return (this.inner.get(path) ?? this.clients.get(path))?.share ?? 0;
  }

  private visitNode(node: Node): boolean {
    return node.children.visitInOrder(this.visitChild);
  }

  /** The visitor of the walk in progress; walks of one sorter never nest, so one slot is enough. */
  private currentVisitor: (client: string) => boolean = () => true;

  /** Bound once: a walk allocates no closure per node. */
  private readonly visitChild = (child: Node): boolean =>
    child.isLeaf ? !child.active || this.currentVisitor(child.path) : this.visitNode(child);

  private leaf(client: string): Node {
    const node = this.clients.get(client);
    if (!node) throw new SorterError(`unknown client '${client}'`);
    return node;
  }

  private weightOf(node: Node): number {
    return this.weights.get(node.path) ?? 1;
  }

  private computeShare(node: Node): number {
    return dominantShare(node.allocation, this.totals, this.weightOf(node));
  }

  /** Applies an allocation change from a leaf up to the root, keeping sibling order. */
  private change(leaf: Node, quantities: ReadonlyMap<string, number>, sign: 1 | -1, countAllocation: boolean): void {
    if (sign < 0) {
      for (const [name, millis] of quantities) {
        if ((leaf.allocation.get(name) ?? 0) < millis) throw new SorterError(`'${leaf.path}' gives back more ${name} than it was allocated`);
      }
    }
    for (let node: Node | null = leaf; node && node !== this.root; node = node.parent) {
      addQuantities(node.allocation, quantities, sign);
      if (countAllocation) node.count++;
      node.share = this.computeShare(node);
      if (!this.dirty) node.parent!.children.update(node);
    }
  }

  private insertChild(parent: Node, child: Node): void {
    child.share = this.computeShare(child);
    parent.children.push(child);
  }

  private detach(node: Node): void {
    node.parent!.children.remove(node);
  }

  /** Finds or creates the inner node under which `client`'s leaf hangs. */
  private ensureParentOf(client: string): Node {
    if (!this.hierarchical) return this.root;
    const cut = client.lastIndexOf("/");
    return cut < 0 ? this.root : this.ensureInner(client.slice(0, cut));
  }

  /** Finds or creates the inner node of `path`, moving a client leaf of that path under it. */
  private ensureInner(path: string): Node {
    const existing = this.inner.get(path);
    if (existing) return existing;
    const leafOfPath = this.clients.get(path);
    const parent = leafOfPath ? leafOfPath.parent! : this.ensureParentOf(path);
    const node = newNode(path, parent, false);
    this.inner.set(path, node);
    if (leafOfPath) {
      // The client of this path becomes the inner node's own ("virtual") leaf.
      this.detach(leafOfPath);
      (leafOfPath as { parent: Node | null }).parent = node;
      addQuantities(node.allocation, leafOfPath.allocation, 1);
      node.count = leafOfPath.count;
      node.children.push(leafOfPath);
      node.share = this.computeShare(node);
    }
    this.insertChild(parent, node);
    return node;
  }

  /** Removes inner nodes left without children, from `node` up. */
  private pruneUpwards(node: Node | null): void {
    while (node && node !== this.root && node.children.size === 0) {
      const parent = node.parent;
      this.detach(node);
      this.inner.delete(node.path);
      node = parent;
    }
  }

  private resortAll(): void {
    const recompute = (node: Node): void => {
      for (const child of node.children.items) {
        recompute(child);
        child.share = this.computeShare(child);
      }
      node.children.heapify();
    };
    recompute(this.root);
    this.dirty = false;
  }
}

/**
 * A seeded random order, for comparison studies: every {@link sort} or {@link visit} is a fresh
 * permutation of the active clients. Shares are still tracked (for `/state`), with weight ignored
 * in the order.
 */
export class RandomSorter implements Sorter {
  private readonly drf: DrfSorter;

  /** @param rng the source of every permutation; equal seeds give equal orders */
  constructor(
    private readonly rng: Rng,
    options: DrfSorterOptions = {},
  ) {
    this.drf = new DrfSorter(options);
  }

  add(client: string): void {
    this.drf.add(client);
  }
  remove(client: string): void {
    this.drf.remove(client);
  }
  contains(client: string): boolean {
    return this.drf.contains(client);
  }
  activate(client: string): void {
    this.drf.activate(client);
  }
  deactivate(client: string): void {
    this.drf.deactivate(client);
  }
  setWeight(path: string, weight: number): void {
    this.drf.setWeight(path, weight);
  }
  allocated(client: string, quantities: ReadonlyMap<string, number>, countAllocation = true): void {
    this.drf.allocated(client, quantities, countAllocation);
  }
  unallocated(client: string, quantities: ReadonlyMap<string, number>): void {
    this.drf.unallocated(client, quantities);
  }
  setTotal(totals: ScalarQuantities): void {
    this.drf.setTotal(totals);
  }
  sort(): string[] {
    // Start from a canonical order so the permutation depends only on the seed and the clients.
    const clients = this.drf.sort().sort();
    for (let i = clients.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [clients[i], clients[j]] = [clients[j]!, clients[i]!];
    }
    return clients;
  }
  visit(visitor: (client: string) => boolean): void {
    for (const client of this.sort()) if (!visitor(client)) return;
  }
  share(client: string): number {
    return this.drf.share(client);
  }
  allocation(client: string): ScalarQuantities {
    return this.drf.allocation(client);
  }
  allocationCount(client: string): number {
    return this.drf.allocationCount(client);
  }
}
