/**
 * `CreditsClient`: the kinde-credits HTTP API for a product's backend (Node 18+, edge
 * runtimes, browsers). It uses only the platform's `fetch`.
 *
 * Safe retries, the same rules as the Python client (`clients/operations.json` holds them):
 * every write carries an `Idempotency-Key` (the caller's, or one generated once per call), and
 * a timeout, a dropped connection, a 5xx or a 429 is retried with that same key and a growing,
 * jittered pause (at least `Retry-After` on a 429 or 503, capped). The service stores the first
 * successful result under the key, so a retry of a write that did go through returns that
 * result instead of charging again. A capture or release uses a key fixed per hold.
 */

import {
  CreditsError,
  ServiceUnavailableError,
  TransportError,
  errorFor,
} from "./errors.js";
import type {
  AdjustmentRequest,
  AdjustmentResult,
  BudgetRequest,
  BudgetResult,
  CheckResult,
  Forecast,
  HoldRequest,
  HoldResult,
  LedgerEntry,
  LedgerPage,
  Members,
  RefundRequest,
  RefundResult,
  SettledHold,
  TopUpRequest,
  TopUpResult,
  UsageRequest,
  UsageResult,
  Wallet,
} from "./types.js";

/** Statuses retried with the same idempotency key (then `ServiceUnavailableError`). */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 500, 502, 503, 504]);

/** The defaults of `CreditsClientOptions`, the same figures as the Python client's. */
export const DEFAULTS = Object.freeze({
  timeoutMs: 10_000,
  maxRetries: 3,
  backoffMs: 250,
  maxBackoffMs: 5_000,
});

/** Prefix of the idempotency key generated for a write the caller gave no key for. */
export const GENERATED_KEY_PREFIX = "kcc-";

export type TokenSource = string | (() => string | Promise<string>);

export interface CreditsClientOptions {
  /** Where the service answers, e.g. `https://credits.acme.com`. */
  baseUrl: string;
  /** A Kinde access token, or a function returning a current one (called for every attempt,
   * so it can refresh an M2M token). */
  token: TokenSource;
  /** Per attempt; a timed-out attempt is retried with the same key. */
  timeoutMs?: number;
  /** Retries after the first try. */
  maxRetries?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Another `fetch` (tests, instrumentation); the platform's by default. */
  fetch?: typeof fetch;
  /** How to wait between attempts (tests record the pauses instead of waiting). */
  sleep?: (ms: number) => Promise<void>;
}

export interface RequestOptions {
  json?: unknown;
  query?: Record<string, string | number | undefined | null>;
  idempotencyKey?: string;
}

export interface ApiResponse<T> {
  body: T;
  status: number;
  headers: Headers;
}

export interface RecordUsageOptions {
  feature: string;
  quantity?: number;
  member?: string;
  occurredAt?: Date | string;
  idempotencyKey?: string;
}

export interface CheckOptions {
  feature: string;
  quantity?: number;
  member?: string;
}

export interface HoldOptions {
  feature?: string;
  quantity?: number;
  credits?: number;
  member?: string;
  expiresInSeconds?: number;
  idempotencyKey?: string;
}

export type TopUpOptions =
  | { bundle: string; idempotencyKey?: string }
  | { credits: number; reason: string; expiresAfterDays?: number; idempotencyKey?: string };

export interface AdjustOptions {
  /** Non-zero: positive adds credits (a new block), negative takes them away like usage. */
  credits: number;
  /** Why (1-500 characters), shown in the wallet's history. */
  reason: string;
  /** Positive adjustments only: when the credits expire (RFC 3339). */
  expiresAt?: string;
  idempotencyKey?: string;
}

export interface RefundOptions {
  /** Why (1-500 characters), kept with the refund. */
  reason: string;
  idempotencyKey?: string;
}

export interface BudgetOptions {
  /** `null` removes the cap; left out keeps the current value. */
  creditsPerDay?: number | null;
  creditsPerMonth?: number | null;
  idempotencyKey?: string;
}

export type RecordedUsage = UsageResult & {
  /** True when the service answered from an earlier call with the same idempotency key. */
  replayed: boolean;
};

function compact<T extends object>(value: T): T {
  return Object.fromEntries(
    Object.entries(value).filter(([, v]) => v !== undefined),
  ) as T;
}

function newKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return GENERATED_KEY_PREFIX + c.randomUUID();
  // Node 18 without the global webcrypto: uniqueness is what matters, not secrecy.
  const hex = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16));
  return GENERATED_KEY_PREFIX + hex.join("");
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

function retryAfterMs(headers: Headers | undefined): number | undefined {
  const value = headers?.get("Retry-After")?.trim();
  return value && /^\d+$/.test(value) ? Number(value) * 1000 : undefined;
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class CreditsClient {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  readonly #token: TokenSource;
  readonly #fetch: typeof fetch;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(options: CreditsClientOptions) {
    if (!options?.baseUrl) throw new TypeError("CreditsClient: baseUrl is required");
    if (options.token === undefined || options.token === "") {
      throw new TypeError("CreditsClient: token is required (a string or an async function)");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
    this.maxRetries = options.maxRetries ?? DEFAULTS.maxRetries;
    this.backoffMs = options.backoffMs ?? DEFAULTS.backoffMs;
    this.maxBackoffMs = options.maxBackoffMs ?? DEFAULTS.maxBackoffMs;
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#sleep = options.sleep ?? defaultSleep;
  }

  // -- plumbing ------------------------------------------------------------------------------

  async #headers(idempotencyKey: string | undefined, hasBody: boolean): Promise<Headers> {
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    const headers = new Headers({ Authorization: `Bearer ${token}`, Accept: "application/json" });
    if (hasBody) headers.set("Content-Type", "application/json");
    if (idempotencyKey !== undefined) headers.set("Idempotency-Key", idempotencyKey);
    return headers;
  }

  #pause(attempt: number, headers: Headers | undefined): Promise<void> {
    let delay = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt)
      * (0.5 + Math.random() * 0.5);
    const after = retryAfterMs(headers);
    if (after !== undefined) delay = Math.max(delay, Math.min(after, this.maxBackoffMs));
    return this.#sleep(delay);
  }

  /**
   * One API call with retries; resolves to the JSON body, status and headers of the answer.
   * Writes (anything but GET) always send an idempotency key, so retrying them is safe.
   */
  async request<T = unknown>(method: string, path: string,
                             options: RequestOptions = {}): Promise<ApiResponse<T>> {
    const key = method !== "GET" ? options.idempotencyKey ?? newKey() : options.idempotencyKey;
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    const body = options.json === undefined ? undefined : JSON.stringify(options.json);
    for (let attempt = 0; attempt <= this.maxRetries; attempt++) {
      const last = attempt === this.maxRetries;
      const headers = await this.#headers(key, body !== undefined);
      let status: number;
      let answerHeaders: Headers;
      let text: string;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), this.timeoutMs);
      try {
        const response = await this.#fetch(url, {
          method, headers, body, signal: controller.signal,
        });
        status = response.status;
        answerHeaders = response.headers;
        text = await response.text();
      } catch (error) {
        // The request may have been applied with its answer lost: the retry carries the same
        // key, so the service answers with the first result.
        if (!(error instanceof TypeError) && !isAbort(error)) throw error;
        if (last) {
          const why = isAbort(error) ? `timed out after ${this.timeoutMs} ms` : String(error);
          throw new TransportError(`${method} ${path} failed: ${why}`, { cause: error });
        }
        await this.#pause(attempt, undefined);
        continue;
      } finally {
        clearTimeout(timer);
      }
      if (RETRY_STATUSES.has(status) && !last) {
        await this.#pause(attempt, answerHeaders);
        continue;
      }
      const parsed = parseJson(text, status);
      if (status >= 400) throw errorFor(status, parsed);
      return { body: parsed as T, status, headers: answerHeaders };
    }
    throw new ServiceUnavailableError(0, "unavailable", "no attempt was made"); // maxRetries < 0
  }

  // -- usage and checks ----------------------------------------------------------------------

  /** Debit credits for `quantity` units of `feature`. Throws InsufficientCreditsError or
   * MemberBudgetExceededError (402) when refused; nothing is charged then. */
  async recordUsage(walletId: string, options: RecordUsageOptions): Promise<RecordedUsage> {
    const occurred = options.occurredAt instanceof Date
      ? options.occurredAt.toISOString() : options.occurredAt;
    const json: UsageRequest = compact({
      feature: options.feature, quantity: options.quantity ?? 1, member: options.member,
      occurred_at: occurred,
    });
    const { body, headers } = await this.request<UsageResult>(
      "POST", `/v1/wallets/${seg(walletId)}/usage`,
      { json, idempotencyKey: options.idempotencyKey });
    return { ...body, replayed: headers.get("Idempotent-Replayed") === "true" };
  }

  /** Would this usage be allowed now (holds, overdraft and member budget included)? A hint for
   * the UI; the debit itself still decides. */
  async check(walletId: string, options: CheckOptions): Promise<CheckResult> {
    const { body } = await this.request<CheckResult>(
      "GET", `/v1/wallets/${seg(walletId)}/check`,
      { query: { feature: options.feature, quantity: options.quantity ?? 1,
                 member: options.member } });
    return body;
  }

  // -- holds ---------------------------------------------------------------------------------

  /**
   * Reserve credits now. Settle the hold with `hold.capture()` / `hold.release()`, or let
   * `hold.run(work)` do it: captured when `work` resolves, released when it throws.
   */
  async hold(walletId: string, options: HoldOptions): Promise<Hold> {
    const json: HoldRequest = compact({
      feature: options.feature, quantity: options.quantity, credits: options.credits,
      member: options.member, expires_in_seconds: options.expiresInSeconds,
    });
    const { body } = await this.request<HoldResult>(
      "POST", `/v1/wallets/${seg(walletId)}/holds`,
      { json, idempotencyKey: options.idempotencyKey });
    return new Hold(this, body);
  }

  /** Capture a hold (the whole of it, or `credits`). `Hold.capture` uses a key fixed per hold. */
  async captureHold(holdId: string, options: { credits?: number; idempotencyKey?: string } = {}
  ): Promise<SettledHold> {
    const json = options.credits !== undefined ? { credits: options.credits } : {};
    const { body } = await this.request<SettledHold>(
      "POST", `/v1/holds/${seg(holdId)}/capture`,
      { json, idempotencyKey: options.idempotencyKey });
    return body;
  }

  async releaseHold(holdId: string, options: { idempotencyKey?: string } = {}
  ): Promise<SettledHold> {
    const { body } = await this.request<SettledHold>(
      "POST", `/v1/holds/${seg(holdId)}/release`,
      { json: {}, idempotencyKey: options.idempotencyKey });
    return body;
  }

  // -- credits, reads and budgets ------------------------------------------------------------

  /** Sell a catalog `bundle`, or grant `credits` with a `reason` (credits:admin). */
  async topUp(walletId: string, options: TopUpOptions): Promise<TopUpResult> {
    const json: TopUpRequest = "bundle" in options
      ? { bundle: options.bundle }
      : compact({ credits: options.credits, reason: options.reason,
                  expires_after_days: options.expiresAfterDays });
    const { body } = await this.request<TopUpResult>(
      "POST", `/v1/wallets/${seg(walletId)}/top-ups`,
      { json, idempotencyKey: options.idempotencyKey });
    return body;
  }

  /** Correct a balance (credits:admin); a negative adjustment answers 402 rather than take
   * the wallet below zero. */
  async adjust(walletId: string, options: AdjustOptions): Promise<AdjustmentResult> {
    const json: AdjustmentRequest = compact({
      credits: options.credits, reason: options.reason, expires_at: options.expiresAt,
    });
    const { body } = await this.request<AdjustmentResult>(
      "POST", `/v1/wallets/${seg(walletId)}/adjustments`,
      { json, idempotencyKey: options.idempotencyKey });
    return body;
  }

  /** Refund the pack a purchase entry sold (credits:admin): its unused credits leave the
   * wallet; `invoice` is "reduced" (Kinde invoices one pack fewer) or "credit_note_due". */
  async refund(walletId: string, entryId: number, options: RefundOptions): Promise<RefundResult> {
    const json: RefundRequest = { reason: options.reason };
    const { body } = await this.request<RefundResult>(
      "POST", `/v1/wallets/${seg(walletId)}/purchases/${seg(String(entryId))}/refund`,
      { json, idempotencyKey: options.idempotencyKey });
    return body;
  }

  /** The runway (the dashboard's figures): pace, days left, run-out, pace by feature, credits
   * expiring unused before then, and the bundle that would last about a month. */
  async forecast(walletId: string): Promise<Forecast> {
    const { body } = await this.request<Forecast>("GET", `/v1/wallets/${seg(walletId)}/forecast`);
    return body;
  }

  async wallet(walletId: string): Promise<Wallet> {
    const { body } = await this.request<Wallet>("GET", `/v1/wallets/${seg(walletId)}`);
    return body;
  }

  /** Pages of the ledger, newest first, following `next_cursor` until the last one. */
  async *ledgerPages(walletId: string, options: { pageSize?: number } = {}
  ): AsyncGenerator<LedgerPage, void, undefined> {
    let cursor: string | null = null;
    do {
      const { body }: ApiResponse<LedgerPage> = await this.request<LedgerPage>(
        "GET", `/v1/wallets/${seg(walletId)}/ledger`,
        { query: { limit: options.pageSize ?? 50, cursor } });
      cursor = body.next_cursor ?? null;
      yield body;
    } while (cursor !== null);
  }

  /** Every ledger entry, newest first, fetched a page at a time as you iterate:
   * `for await (const entry of client.ledger("org_acme")) ...` */
  async *ledger(walletId: string, options: { pageSize?: number } = {}
  ): AsyncGenerator<LedgerEntry, void, undefined> {
    for await (const page of this.ledgerPages(walletId, options)) yield* page.entries;
  }

  /** Cap a member's spend from an org wallet (credits:admin); `null` removes a cap, an option
   * left out keeps the current value. */
  async setBudget(orgId: string, userId: string, options: BudgetOptions): Promise<BudgetResult> {
    const json: BudgetRequest = compact({
      credits_per_day: options.creditsPerDay, credits_per_month: options.creditsPerMonth,
    });
    const { body } = await this.request<BudgetResult>(
      "PUT", `/v1/wallets/${seg(orgId)}/members/${seg(userId)}/budget`,
      { json, idempotencyKey: options.idempotencyKey });
    return body;
  }

  /** Each member's spend today and this month, by feature, with their caps. */
  async members(orgId: string): Promise<Members> {
    const { body } = await this.request<Members>("GET", `/v1/wallets/${seg(orgId)}/members`);
    return body;
  }
}

/**
 * An open hold. It settles once: `capture` and `release` use a key fixed per hold, so a
 * retried or repeated capture can never charge twice, and once one of them has succeeded,
 * later calls answer that first outcome without asking the service again.
 */
export class Hold {
  readonly holdId: string;
  readonly amount: number;
  readonly data: HoldResult;
  /** What a successful `run` (or `withCredits`) captures; undefined captures the whole hold. */
  captureCredits: number | undefined = undefined;
  #settled: SettledHold | undefined;
  #settling: Promise<SettledHold> | undefined;
  readonly #client: CreditsClient;

  constructor(client: CreditsClient, data: HoldResult) {
    this.#client = client;
    this.data = data;
    this.holdId = data.hold_id;
    this.amount = data.amount;
  }

  /** The capture or release answer, once the hold has been settled through this object. */
  get settled(): SettledHold | undefined {
    return this.#settled;
  }

  capture(credits?: number): Promise<SettledHold> {
    return this.#settle(() => this.#client.captureHold(
      this.holdId, { credits, idempotencyKey: `capture-${this.holdId}` }));
  }

  release(): Promise<SettledHold> {
    return this.#settle(() => this.#client.releaseHold(
      this.holdId, { idempotencyKey: `release-${this.holdId}` }));
  }

  #settle(call: () => Promise<SettledHold>): Promise<SettledHold> {
    if (this.#settling === undefined) {
      this.#settling = call().then(
        (settled) => (this.#settled = settled),
        (error: unknown) => {
          this.#settling = undefined; // not settled: a later call may try again (same key)
          throw error;
        },
      );
    }
    return this.#settling;
  }

  /**
   * Run `work` against this hold: when it resolves, the hold is captured (`captureCredits`,
   * or the whole hold) unless `work` settled it itself; when it throws, the hold is released
   * and the error propagates (a failed release does not hide it: the hold expires by itself).
   */
  async run<T>(work: (hold: Hold) => T | Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await work(this);
    } catch (error) {
      if (this.#settling === undefined) await this.release().catch(ignoreCreditsError);
      throw error;
    }
    if (this.#settling === undefined) await this.capture(this.captureCredits);
    return result;
  }
}

function ignoreCreditsError(error: unknown): void {
  if (!(error instanceof CreditsError)) throw error;
}

function parseJson(text: string, status: number): unknown {
  try {
    const body: unknown = JSON.parse(text);
    return typeof body === "object" && body !== null && !Array.isArray(body)
      ? body : { value: body };
  } catch {
    return { error: { code: "", message: text.slice(0, 200) || `HTTP ${status}` } };
  }
}
