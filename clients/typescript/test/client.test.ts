/** Every call of `CreditsClient` against the real service, with its typed errors, the ledger
 * across pages, and holds settled by `hold.run`. */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AlreadyRefundedError,
  CreditsClient,
  ForbiddenError,
  HoldNotOpenError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidRequestError,
  MemberBudgetExceededError,
  NotFoundError,
  NotRefundableError,
  UnauthorizedError,
  UnknownBundleError,
  UnknownFeatureError,
} from "../src/index.js";
import { client, fundedOrg, server, usageAmounts } from "./support.js";

const admin = client();

test("budgets, checks and usage, with the replayed flag and every typed error", async () => {
  const org = await fundedOrg(1000);
  await admin.setBudget(org, "kp_alice", { creditsPerDay: 120 });
  const budget = await admin.setBudget(org, "kp_alice", { creditsPerMonth: 1000 });
  assert.deepEqual([budget.credits_per_day, budget.credits_per_month], [120, 1000]);

  const check = await admin.check(org, { feature: "report_generation", quantity: 2,
                                         member: "kp_alice" });
  assert.deepEqual([check.allowed, check.credits, check.available], [true, 100, 120]);
  const used = await admin.recordUsage(org, { feature: "report_generation", quantity: 2,
                                              member: "kp_alice", idempotencyKey: "report-1" });
  assert.deepEqual([used.balance, used.member, used.replayed], [900, "kp_alice", false]);
  const again = await admin.recordUsage(org, { feature: "report_generation", quantity: 2,
                                               member: "kp_alice", idempotencyKey: "report-1" });
  assert.equal(again.replayed, true);
  assert.deepEqual(again.entry, used.entry);

  const refused = await admin.check(org, { feature: "report_generation", member: "kp_alice" });
  assert.equal(refused.allowed, false);
  assert.equal(refused.code, "member_budget_exceeded");
  await assert.rejects(
    admin.recordUsage(org, { feature: "report_generation", member: "kp_alice" }),
    (e: unknown) => e instanceof MemberBudgetExceededError && e.status === 402
      && e.code === "member_budget_exceeded" && e.needed === 50 && e.availableToMember === 20);
  await assert.rejects(admin.recordUsage(org, { feature: "api_call", idempotencyKey: "report-1" }),
                       IdempotencyConflictError);
  await assert.rejects(admin.recordUsage(org, { feature: "nope" }),
                       (e: unknown) => e instanceof UnknownFeatureError
                         && e instanceof InvalidRequestError && e.code === "unknown_feature");
  await assert.rejects(admin.recordUsage(org, { feature: "api_call", member: "not-a-user" }),
                       (e: unknown) => e instanceof InvalidRequestError && e.status === 422);
  await assert.rejects(admin.topUp(org, { bundle: "no_such_pack" }), UnknownBundleError);
  await assert.rejects(client({ token: server.tokens.otherOrgAdmin }).wallet(org), NotFoundError);
  await assert.rejects(client({ token: server.tokens.write }).topUp(
    org, { credits: 5, reason: "no" }), (e: unknown) => e instanceof ForbiddenError
      && e.status === 403 && e.code === "forbidden");
  await assert.rejects(client({ token: "not-a-token" }).wallet(org), UnauthorizedError);

  const members = await admin.members(org);
  assert.equal(members.members[0]?.member, "kp_alice");
  assert.equal(members.members[0]?.today.spent, 100);
});

test("402 when the wallet is short: nothing charged, the numbers on the error", async () => {
  const org = await fundedOrg(120);
  const error = await admin.recordUsage(org, { feature: "report_generation", quantity: 3 })
    .then(() => assert.fail("usage past the balance was accepted"), (e: unknown) => e);
  assert.ok(error instanceof InsufficientCreditsError, String(error));
  assert.deepEqual([error.status, error.code, error.needed, error.available],
                   [402, "insufficient_credits", 150, 120]);
  assert.match(error.message, /150/);
  assert.equal(error.name, "InsufficientCreditsError");
  assert.equal((await admin.wallet(org)).balance, 120);
  assert.deepEqual(await usageAmounts(org), []);
});

test("the ledger is an async iterable across pages, newest first", async () => {
  const org = await fundedOrg(1000);
  for (let i = 1; i <= 4; i++) await admin.recordUsage(org, { feature: "api_call", quantity: i });
  const seen: string[] = [];
  const counting = new CreditsClient({
    baseUrl: server.url, token: server.tokens.admin,
    fetch: (input, init) => {
      seen.push(String(input));
      return fetch(input, init);
    },
  });
  const amounts: number[] = [];
  for await (const entry of counting.ledger(org, { pageSize: 2 })) amounts.push(entry.amount);
  assert.deepEqual(amounts, [-4, -3, -2, -1, 1000]);
  assert.equal(seen.length, 3); // 2 + 2 + 1 entries
  assert.ok(seen.slice(1).every((url) => new URL(url).searchParams.has("cursor")));

  const pages = [];
  for await (const page of admin.ledgerPages(org, { pageSize: 2 })) pages.push(page);
  assert.deepEqual(pages.map((p) => p.entries.length), [2, 2, 1]);
  assert.equal(pages.at(-1)?.next_cursor, null);

  // Stopping early fetches no further page.
  seen.length = 0;
  for await (const entry of counting.ledger(org, { pageSize: 2 })) {
    assert.equal(entry.kind, "usage");
    break;
  }
  assert.equal(seen.length, 1);
});

test("wallet reads, top-ups with a bundle, and the user's own view", async () => {
  const org = await fundedOrg(100);
  const sold = await admin.topUp(org, { bundle: "starter", idempotencyKey: `order-${org}` });
  const replay = await admin.topUp(org, { bundle: "starter", idempotencyKey: `order-${org}` });
  assert.deepEqual(replay, sold);
  const wallet = await admin.wallet(org);
  assert.deepEqual([wallet.wallet_id, wallet.owner_type, wallet.balance, wallet.held],
                   [org, "org", sold.balance, 0]);
  const mine = await client({ token: async () => server.tokens.user }).wallet("kp_ts_reader");
  assert.deepEqual([mine.wallet_id, mine.balance], ["kp_ts_reader", 0]);
});

test("holds: run captures on success (or captureCredits), releases on error", async () => {
  const org = await fundedOrg(1000);
  const hold = await admin.hold(org, { feature: "report_generation", quantity: 2 });
  assert.equal((await admin.wallet(org)).held, 100);
  await hold.run(async () => "report");
  assert.equal(hold.settled?.captured_amount, 100);
  assert.equal((await admin.wallet(org)).balance, 900);

  const partial = await admin.hold(org, { credits: 80, member: "kp_bob" });
  await partial.run((h) => { h.captureCredits = 30; });
  assert.equal((await admin.wallet(org)).balance, 870);

  const failing = await admin.hold(org, { credits: 500 });
  await assert.rejects(failing.run(() => { throw new Error("job failed"); }), /job failed/);
  assert.equal(failing.settled?.status, "released");
  const wallet = await admin.wallet(org);
  assert.deepEqual([wallet.balance, wallet.held], [870, 0]);

  // Settled once: a second capture answers the first outcome; the service refuses others.
  assert.deepEqual(await hold.capture(), hold.settled);
  await assert.rejects(admin.captureHold(hold.holdId, { credits: 10 }), HoldNotOpenError);
  const released = await admin.hold(org, { credits: 10 });
  const answer = await admin.releaseHold(released.holdId);
  assert.equal(answer.status, "released");
  assert.deepEqual(await usageAmounts(org), []);
});

test("adjust, refund and forecast: the same figures as the service", async () => {
  const org = await fundedOrg(1000);
  const added = await admin.adjust(org, { credits: 250, reason: "outage credit",
                                          expiresAt: "2099-01-01T00:00:00Z" });
  assert.deepEqual([added.balance, added.entry.reason], [1250, "outage credit"]);
  await assert.rejects(admin.adjust(org, { credits: -5000, reason: "too much" }),
                       InsufficientCreditsError);
  await assert.rejects(admin.refund(org, added.entry.id, { reason: "not a purchase" }),
                       NotRefundableError);
  const sale = await admin.topUp(org, { bundle: "starter" });
  const refund = await admin.refund(org, sale.entry.id, { reason: "bought by mistake" });
  assert.deepEqual([refund.refunded_credits, refund.refunded_amount, refund.currency],
                   [5000, "49.00", "USD"]);
  await assert.rejects(admin.refund(org, sale.entry.id, { reason: "again" }),
                       AlreadyRefundedError);
  await admin.recordUsage(org, { feature: "report_generation", quantity: 2 });
  const forecast = await admin.forecast(org);
  assert.equal(forecast.available, 1150);
  assert.ok(forecast.credits_per_day > 0 && forecast.days_left !== null);
  assert.ok(forecast.suggested_bundle !== null);
});
