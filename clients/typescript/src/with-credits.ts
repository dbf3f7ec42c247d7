/**
 * Charge credits for a route of the product's own app: `withCredits` wraps a fetch-style
 * handler (`(req: Request) => Response`: Next.js route handlers, edge runtimes, Hono...) and
 * `withCreditsExpress` an Express handler. The same rules as the Python client's
 * `@requires_credits`:
 *
 * - before the handler runs, the credits are held; when the wallet or the member's budget
 *   cannot cover them the answer is 402 with the service's error body, and the handler does
 *   not run;
 * - after it, the hold is captured (all of it, or `hold.captureCredits`) when the handler
 *   answered below 400, and released when it answered an error or threw (the error then
 *   propagates);
 * - a hold is settled at most once, with a key fixed per hold, so nothing is ever captured
 *   twice; if the handler settles the hold itself, the wrapper leaves it alone.
 *
 * The capture happens once the handler has produced its answer: a refused capture must not
 * turn a finished response into an error, so it is reported to `onCaptureError` (a hold that
 * outlived `expiresInSeconds` can no longer be captured; more than was held is captured as the
 * whole hold).
 */

import type { CreditsClient, Hold } from "./client.js";
import {
  CreditsError,
  InsufficientCreditsError,
  MemberBudgetExceededError,
} from "./errors.js";

type Maybe<T> = T | Promise<T>;

export interface WithCreditsOptions<Req> {
  /** The catalog feature the route uses. */
  feature: string;
  /** Units held per call (default 1), or computed from the request. */
  quantity?: number | ((req: Req) => Maybe<number>);
  /** Whose wallet pays: a Kinde org code (`org_...`) or user id (`kp_...`). */
  walletId: (req: Req) => Maybe<string | undefined | null>;
  /** For an org wallet, the member spending (their Kinde user id), for team budgets. */
  member?: (req: Req) => Maybe<string | undefined | null>;
  /** How long the hold lives if the process dies before settling it (service default 900). */
  expiresInSeconds?: number;
  /** A capture that failed after the response was ready (logged by default). */
  onCaptureError?: (error: unknown, hold: Hold) => void;
}

function refusalBody(refused: CreditsError): string {
  return JSON.stringify({ error: { ...refused.details, code: refused.code,
                                   message: refused.message } });
}

function isRefusal(error: unknown): error is CreditsError {
  return error instanceof InsufficientCreditsError || error instanceof MemberBudgetExceededError;
}

async function placeHold<Req>(client: CreditsClient, options: WithCreditsOptions<Req>,
                              req: Req): Promise<Hold> {
  const walletId = await options.walletId(req);
  if (!walletId) {
    throw new Error("withCredits: walletId(req) gave no wallet; it must return the org code "
                    + "or user id that pays for this route");
  }
  const quantity = typeof options.quantity === "function"
    ? await options.quantity(req) : options.quantity ?? 1;
  const member = options.member ? (await options.member(req)) ?? undefined : undefined;
  return client.hold(walletId, {
    feature: options.feature, quantity, member, expiresInSeconds: options.expiresInSeconds,
  });
}

async function releaseQuietly(hold: Hold): Promise<void> {
  // The handler's own outcome matters more; an unreleased hold expires by itself.
  try {
    await hold.release();
  } catch {
    // nothing more to do: the release was retried with its fixed key
  }
}

function defaultCaptureError(error: unknown, hold: Hold): void {
  const why = error instanceof CreditsError ? `(${error.code}) ${error.message}` : String(error);
  console.error(`withCredits: hold ${hold.holdId} was not captured: ${why}`);
}

async function captureOrReport<Req>(hold: Hold, options: WithCreditsOptions<Req>
): Promise<void> {
  if (hold.settled !== undefined) return;
  try {
    await hold.capture(hold.captureCredits);
    return;
  } catch (error) {
    let failure: unknown = error;
    if (error instanceof CreditsError && error.code === "capture_exceeds_hold"
        && hold.captureCredits !== undefined) {
      try {
        await hold.capture(undefined);
        return;
      } catch (again) {
        failure = again;
      }
    }
    (options.onCaptureError ?? defaultCaptureError)(failure, hold);
  }
}

/** Settle after the handler: capture below 400, release otherwise (unless already settled).
 * Never throws: the handler's answer or error is what the caller gets. */
async function settle<Req>(hold: Hold, status: number, options: WithCreditsOptions<Req>
): Promise<void> {
  if (hold.settled !== undefined) return;
  if (status >= 400) await releaseQuietly(hold);
  else await captureOrReport(hold, options);
}

/**
 * Wrap a fetch-style route handler, e.g. a Next.js App Router route:
 *
 *     export const POST = withCredits(credits, {
 *       feature: "report_generation",
 *       walletId: async () => (await getKindeServerSession().getOrganization())?.orgCode,
 *     }, async (req, hold) => Response.json(await buildReport(req)));
 *
 * The handler gets the request, the open `Hold` and whatever else the framework passed
 * (Next.js: `{ params }`).
 */
export function withCredits<Ctx extends unknown[] = unknown[], Req extends Request = Request>(
  client: CreditsClient,
  options: WithCreditsOptions<Req>,
  handler: (req: Req, hold: Hold, ...rest: Ctx) => Maybe<Response>,
): (req: Req, ...rest: Ctx) => Promise<Response> {
  return async (req: Req, ...rest: Ctx): Promise<Response> => {
    let hold: Hold;
    try {
      hold = await placeHold(client, options, req);
    } catch (error) {
      if (!isRefusal(error)) throw error;
      return new Response(refusalBody(error), {
        status: 402, headers: { "Content-Type": "application/json" },
      });
    }
    let response: Response;
    try {
      response = await handler(req, hold, ...rest);
    } catch (error) {
      await releaseQuietly(hold);
      throw error;
    }
    await settle(hold, response.status, options);
    return response;
  };
}

/** The parts of Express's `res` the wrapper uses (Express 4 and 5 both fit). */
export interface ExpressResponseLike {
  statusCode: number;
  status(code: number): unknown;
  setHeader(name: string, value: string): unknown;
  end: (...args: any[]) => unknown;
  locals?: Record<string, unknown>;
}

/**
 * Wrap an Express handler. The hold is settled by the status the handler answers with, when it
 * ends the response (`res.json(...)`, `res.end()`, the end of a piped stream), and the end
 * reaches the caller only after that, so the caller never sees the answer before the charge.
 * A handler that throws (or rejects) before answering releases the hold, and the error goes to
 * `next(error)`. The hold is also at `res.locals.creditsHold`.
 *
 *     app.post("/reports", withCreditsExpress(credits, {
 *       feature: "report_generation",
 *       walletId: (req) => req.user.orgCode,
 *       member: (req) => req.user.id,
 *     }, async (req, res, hold) => { res.status(201).json(await buildReport()); }));
 */
export function withCreditsExpress<Req, Res extends ExpressResponseLike>(
  client: CreditsClient,
  options: WithCreditsOptions<Req>,
  handler: (req: Req, res: Res, hold: Hold) => unknown,
): (req: Req, res: Res, next: (error?: unknown) => void) => Promise<void> {
  return async (req: Req, res: Res, next: (error?: unknown) => void): Promise<void> => {
    let hold: Hold;
    try {
      hold = await placeHold(client, options, req);
    } catch (error) {
      if (!isRefusal(error)) {
        next(error);
        return;
      }
      res.status(402);
      res.setHeader("Content-Type", "application/json");
      res.end(refusalBody(error));
      return;
    }
    if (res.locals) res.locals.creditsHold = hold;
    // Settle when the handler ends the response (its status is then final) and let the end
    // through only after that, so the caller never sees the answer before the charge; or,
    // if the handler returns without ending it, settle by the status when it returns.
    let settling: Promise<void> | undefined;
    const end = res.end;
    res.end = (...args: unknown[]) => {
      res.end = end;
      settling ??= settle(hold, res.statusCode, options);
      void settling.then(() => end.apply(res, args));
      return res;
    };
    try {
      await handler(req, res, hold);
    } catch (error) {
      if (settling === undefined) {
        res.end = end;
        settling = releaseQuietly(hold);
      }
      await settling;
      next(error);
      return;
    }
    if (settling === undefined) {
      res.end = end;
      settling = settle(hold, res.statusCode, options);
    }
    await settling;
  };
}
