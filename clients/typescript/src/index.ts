/**
 * @kinde-credits/client: call the kinde-credits service from a Node, Next.js or edge backend.
 *
 *     import { CreditsClient } from "@kinde-credits/client";
 *     const credits = new CreditsClient({ baseUrl: "https://credits.acme.com", token: getM2mToken });
 *     await credits.recordUsage("org_acme", { feature: "report_generation", member: "kp_alice" });
 *
 * Typed from the service's OpenAPI document, safe to retry (every write carries an idempotency
 * key), no dependency beyond the platform's `fetch`.
 */

export {
  CreditsClient,
  DEFAULTS,
  GENERATED_KEY_PREFIX,
  Hold,
  RETRY_STATUSES,
} from "./client.js";
export type {
  AdjustOptions,
  ApiResponse,
  BudgetOptions,
  CheckOptions,
  CreditsClientOptions,
  HoldOptions,
  RecordedUsage,
  RecordUsageOptions,
  RefundOptions,
  RequestOptions,
  TokenSource,
  TopUpOptions,
} from "./client.js";
export {
  AlreadyRefundedError,
  CreditsError,
  CreditsHeldError,
  ERRORS_BY_CODE,
  ERRORS_BY_STATUS,
  errorFor,
  ForbiddenError,
  HoldNotOpenError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidRequestError,
  MemberBudgetExceededError,
  NoBillingCustomerError,
  NotFoundError,
  NotRefundableError,
  PaymentOverdueError,
  ServiceUnavailableError,
  TransportError,
  UnauthorizedError,
  UnknownBundleError,
  UnknownFeatureError,
} from "./errors.js";
export type { ErrorDetails } from "./errors.js";
export type * from "./types.js";
export type { components, paths } from "./generated/openapi.js";
export { withCredits, withCreditsExpress } from "./with-credits.js";
export type { ExpressResponseLike, WithCreditsOptions } from "./with-credits.js";
