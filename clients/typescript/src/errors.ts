/**
 * Typed errors of the kinde-credits API: one class per stable error `code`, the same classes
 * as the Python client's (`kinde_credits_client.errors`), listed in `clients/operations.json`.
 *
 * Every error carries the HTTP `status`, the API's `code` and `message` (the service's words),
 * the class name as `name`, and the whole error object as `details`; the 402s add the numbers a product shows ("needs 50, you have 12").
 */

/** The error object of an error answer: `{"error": {"code", "message", ...}}`. */
export interface ErrorDetails {
  code: string;
  message: string;
  [field: string]: unknown;
}

/** Anything the credits service refused, or could not be reached for. */
export class CreditsError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: ErrorDetails;

  constructor(status: number, code: string, message: string, details?: Partial<ErrorDetails>) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.details = { ...details, code, message };
  }
}

function int(value: unknown): number {
  return typeof value === "number" ? value : Number(value ?? 0) || 0;
}

/** 402: the wallet cannot pay for this. `needed` and `available` say by how much. */
export class InsufficientCreditsError extends CreditsError {
  get needed(): number {
    return int(this.details.needed);
  }
  get available(): number {
    return int(this.details.available);
  }
}

/** 402: this member of the org would go past a budget the org's admin set. */
export class MemberBudgetExceededError extends CreditsError {
  get needed(): number {
    return int(this.details.needed);
  }
  get availableToMember(): number {
    return int(this.details.available_to_member);
  }
}

/** 422 (or 400): the request itself is wrong; sending it again will not help. */
export class InvalidRequestError extends CreditsError {}
export class UnknownFeatureError extends InvalidRequestError {}
export class UnknownBundleError extends InvalidRequestError {}
/** 401: the access token is missing, expired or not accepted. */
export class UnauthorizedError extends CreditsError {}
/** 403: the token lacks the scope (credits:write for usage, credits:admin for grants). */
export class ForbiddenError extends CreditsError {}
/** 404: no such wallet or hold, or not one this token may see. */
export class NotFoundError extends CreditsError {}
/** 409: the idempotency key was used before with a different request. */
export class IdempotencyConflictError extends CreditsError {}
/** 409: the hold was already captured, released, or it expired. */
export class HoldNotOpenError extends CreditsError {}
/** 402: the customer's last Kinde payment failed; pack sales wait until it succeeds. */
export class PaymentOverdueError extends CreditsError {}
/** 409: a pack sale needs the wallet's Kinde billing customer, and it has none yet. */
export class NoBillingCustomerError extends CreditsError {}
/** 409: only purchases with unused credits are refunded (not grants or allotments). */
export class NotRefundableError extends CreditsError {}
/** 409: the pack was refunded before; a pack goes back at most once. */
export class AlreadyRefundedError extends CreditsError {}
/** 409: open holds need the pack's credits; capture or release them, then refund. */
export class CreditsHeldError extends CreditsError {}
/** 5xx or 429 after every retry: the service is unwell; nothing was charged twice. */
export class ServiceUnavailableError extends CreditsError {}

/**
 * The service could not be reached (or kept dropping the connection or timing out) after
 * every retry. A write may or may not have been applied: call again with the same
 * `idempotencyKey`, which returns the first result if it was.
 */
export class TransportError extends CreditsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(0, "transport_error", message);
    if (options?.cause !== undefined) {
      Object.defineProperty(this, "cause", { value: options.cause, enumerable: false });
    }
  }
}

type ErrorClass = new (status: number, code: string, message: string,
                       details?: Partial<ErrorDetails>) => CreditsError;

/** Error class by the API's `code` (the list in clients/operations.json). */
export const ERRORS_BY_CODE: Readonly<Record<string, ErrorClass>> = Object.freeze({
  insufficient_credits: InsufficientCreditsError,
  member_budget_exceeded: MemberBudgetExceededError,
  invalid_request: InvalidRequestError,
  unknown_feature: UnknownFeatureError,
  unknown_bundle: UnknownBundleError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  idempotency_conflict: IdempotencyConflictError,
  hold_not_open: HoldNotOpenError,
  payment_overdue: PaymentOverdueError,
  no_billing_customer: NoBillingCustomerError,
  not_refundable: NotRefundableError,
  already_refunded: AlreadyRefundedError,
  credits_held: CreditsHeldError,
});

/** Error class by HTTP status, for an answer whose code is not one of the above. */
export const ERRORS_BY_STATUS: Readonly<Record<number, ErrorClass>> = Object.freeze({
  400: InvalidRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  422: InvalidRequestError,
});

/** The typed error for an error answer (`{"error": {"code", "message", ...}}`). */
export function errorFor(status: number, body: unknown): CreditsError {
  const raw = typeof body === "object" && body !== null
    ? (body as { error?: unknown }).error : undefined;
  const error: Record<string, unknown> = typeof raw === "object" && raw !== null
    ? raw as Record<string, unknown> : { code: "", message: `HTTP ${status}` };
  const code = typeof error.code === "string" ? error.code : "";
  const message = typeof error.message === "string" && error.message
    ? error.message : `HTTP ${status}`;
  const cls = (Object.hasOwn(ERRORS_BY_CODE, code) ? ERRORS_BY_CODE[code] : undefined)
    ?? ERRORS_BY_STATUS[status]
    ?? (status >= 500 || status === 429 ? ServiceUnavailableError : CreditsError);
  return new cls(status, code, message, error as Partial<ErrorDetails>);
}
