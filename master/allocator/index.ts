/** The allocator's public surface: embed it with `createAllocator`. */
export {
  AllocatorError,
  HierarchicalAllocator,
  MAX_QUOTA_QUANTITY,
  createAllocator,
  type AgentSpec,
  type AgentUsage,
  type AgentView,
  type AllocatorErrorCode,
  type AllocatorOptions,
  type FrameworkSpec,
  type OfferPlan,
  type QuotaConfig,
} from "./allocator.ts";
export { DrfSorter, RandomSorter, SorterError, dominantShare, type DrfSorterOptions, type Sorter } from "./sorter.ts";
