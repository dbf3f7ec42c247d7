/** The retry rules in detail, on a scripted `fetch` (no server): what is retried, with which
 * key and pause, and what is not. */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CreditsClient,
  InsufficientCreditsError,
  ServiceUnavailableError,
  TransportError,
} from "../src/index.js";
import { RecordedSleep } from "./support.js";

type Step = Response | Error;

function scripted(steps: Step[]) {
  const calls: { method: string; url: string; headers: Headers; body: string | undefined }[] = [];
  const fetchFn: typeof fetch = async (input, init) => {
    calls.push({ method: init?.method ?? "GET", url: String(input),
                 headers: new Headers(init?.headers), body: init?.body as string | undefined });
    const step = steps.shift();
    if (step === undefined) throw new Error("no more scripted answers");
    if (step instanceof Error) throw step;
    return step;
  };
  return { calls, fetchFn };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status, headers: { "Content-Type": "application/json", ...headers } });
}

const usage = { entry: { id: 1 }, balance: 9, available: 9, value: "" };

test("connection errors, 5xx and 429 are retried with one generated key", async () => {
  const sleep = new RecordedSleep();
  const { calls, fetchFn } = scripted([
    new TypeError("fetch failed"), json(502, {}), json(429, {}, { "Retry-After": "3" }),
    json(201, usage),
  ]);
  let tokens = 0;
  const client = new CreditsClient({ baseUrl: "http://svc.test/", fetch: fetchFn,
                                     sleep: sleep.sleep, token: async () => `t${++tokens}` });
  const result = await client.recordUsage("org_a", { feature: "f" });
  assert.equal(result.balance, 9);
  assert.equal(calls.length, 4);
  const keys = calls.map((c) => c.headers.get("Idempotency-Key"));
  assert.ok(keys[0]?.startsWith("kcc-"));
  assert.equal(new Set(keys).size, 1);
  assert.deepEqual(calls.map((c) => c.headers.get("Authorization")),
                   ["Bearer t1", "Bearer t2", "Bearer t3", "Bearer t4"]);
  assert.equal(calls[0]?.url, "http://svc.test/v1/wallets/org_a/usage");
  assert.deepEqual(JSON.parse(calls[0]?.body ?? ""), { feature: "f", quantity: 1 });
  assert.equal(sleep.pauses.length, 3);
  assert.ok(sleep.pauses[2]! >= 3000);
  // Backoff grows and is jittered within [0.5, 1] of 250 ms * 2^attempt.
  assert.ok(sleep.pauses[0]! >= 125 && sleep.pauses[0]! <= 250);
  assert.ok(sleep.pauses[1]! >= 250 && sleep.pauses[1]! <= 500);
});

test("Retry-After is capped at maxBackoffMs", async () => {
  const sleep = new RecordedSleep();
  const { fetchFn } = scripted([json(503, {}, { "Retry-After": "3600" }), json(201, usage)]);
  const client = new CreditsClient({ baseUrl: "http://svc.test", token: "t", fetch: fetchFn,
                                     sleep: sleep.sleep });
  await client.recordUsage("org_a", { feature: "f" });
  assert.deepEqual(sleep.pauses, [5000]);
});

test("a refusal (4xx) is not retried; a GET sends no key", async () => {
  const sleep = new RecordedSleep();
  const { calls, fetchFn } = scripted([
    json(402, { error: { code: "insufficient_credits", message: "short", needed: 5,
                         available: 1 } }),
    json(200, { allowed: true, credits: 1, available: 1, wallet_available: 1 }),
  ]);
  const client = new CreditsClient({ baseUrl: "http://svc.test", token: "t", fetch: fetchFn,
                                     sleep: sleep.sleep });
  await assert.rejects(client.recordUsage("org_a", { feature: "f", idempotencyKey: "k1" }),
                       (e: unknown) => e instanceof InsufficientCreditsError && e.needed === 5);
  await client.check("org_a", { feature: "f", member: "kp_x" });
  assert.equal(calls.length, 2);
  assert.equal(calls[0]?.headers.get("Idempotency-Key"), "k1");
  assert.equal(calls[1]?.headers.get("Idempotency-Key"), null);
  assert.equal(calls[1]?.url, "http://svc.test/v1/wallets/org_a/check?feature=f&quantity=1"
    + "&member=kp_x");
  assert.deepEqual(sleep.pauses, []);
});

test("after the last retry: ServiceUnavailableError for a status, TransportError for a drop",
     async () => {
  const sleep = new RecordedSleep();
  const busy = scripted([json(503, { error: { code: "outcome_unknown", message: "retry" } }),
                         json(503, { error: { code: "outcome_unknown", message: "retry" } })]);
  const client = new CreditsClient({ baseUrl: "http://svc.test", token: "t", maxRetries: 1,
                                     fetch: busy.fetchFn, sleep: sleep.sleep });
  await assert.rejects(client.topUp("org_a", { bundle: "starter" }),
                       (e: unknown) => e instanceof ServiceUnavailableError
                         && e.code === "outcome_unknown" && e.status === 503);
  const down = scripted([new TypeError("fetch failed"), new TypeError("fetch failed")]);
  const offline = new CreditsClient({ baseUrl: "http://svc.test", token: "t", maxRetries: 1,
                                      fetch: down.fetchFn, sleep: sleep.sleep });
  await assert.rejects(offline.wallet("org_a"), TransportError);
});

test("an error of the caller's own (the token function) is not retried", async () => {
  const { calls, fetchFn } = scripted([]);
  const client = new CreditsClient({ baseUrl: "http://svc.test", fetch: fetchFn,
                                     token: async () => { throw new Error("no token"); } });
  await assert.rejects(client.wallet("org_a"), /no token/);
  assert.equal(calls.length, 0);
});

test("a non-JSON error answer still becomes a typed error", async () => {
  const { fetchFn } = scripted([new Response("<html>bad gateway</html>", { status: 404 })]);
  const client = new CreditsClient({ baseUrl: "http://svc.test", token: "t", fetch: fetchFn });
  await assert.rejects(client.wallet("org_a"), (e: unknown) => e instanceof Error
    && e.name === "NotFoundError" && e.message.includes("bad gateway"));
});
