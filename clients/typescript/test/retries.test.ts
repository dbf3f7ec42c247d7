/** The retry rules against the real service through a proxy that misbehaves on purpose: one
 * Idempotency-Key per logical call, reused on every retry, so each write is charged once. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  CreditsClient,
  ServiceUnavailableError,
  TransportError,
} from "../src/index.js";
import { FaultyProxy, RecordedSleep, fundedOrg, server, usageAmounts } from "./support.js";

let proxy: FaultyProxy;

before(async () => {
  proxy = await new FaultyProxy(server.url).start();
});

after(async () => {
  await proxy.stop();
});

function throughProxy(sleep: RecordedSleep, options: { timeoutMs?: number; maxRetries?: number }
  = {}): CreditsClient {
  return new CreditsClient({ baseUrl: proxy.url, token: server.tokens.admin,
                             sleep: sleep.sleep, ...options });
}

function keysFor(path: string): (string | undefined)[] {
  return proxy.seen.filter((r) => r.path === path).map((r) => r.idempotencyKey);
}

test("an answer dropped after the service applied the usage: retried, charged once", async () => {
  const org = await fundedOrg(1000);
  const sleep = new RecordedSleep();
  proxy.faults.push("drop");
  const used = await throughProxy(sleep).recordUsage(org, { feature: "report_generation" });
  assert.equal(used.replayed, true); // the retry got the first attempt's stored answer
  assert.equal(used.balance, 950);
  const keys = keysFor(`/v1/wallets/${org}/usage`);
  assert.equal(keys.length, 2);
  assert.ok(keys[0]?.startsWith("kcc-"));
  assert.equal(keys[1], keys[0]);
  assert.equal(sleep.pauses.length, 1);
  assert.deepEqual(await usageAmounts(org), [-50]);
});

test("a 429 with Retry-After: waits at least that long, same key, charged once", async () => {
  const org = await fundedOrg(1000);
  const sleep = new RecordedSleep();
  proxy.retryAfter = "2";
  proxy.faults.push("429");
  const used = await throughProxy(sleep).recordUsage(
    org, { feature: "report_generation", idempotencyKey: `mine-${org}` });
  assert.equal(used.replayed, false); // the 429 never reached the service
  assert.deepEqual(keysFor(`/v1/wallets/${org}/usage`), [`mine-${org}`, `mine-${org}`]);
  assert.equal(sleep.pauses.length, 1);
  assert.ok(sleep.pauses[0]! >= 2000, `paused ${sleep.pauses[0]} ms, Retry-After said 2 s`);
  assert.deepEqual(await usageAmounts(org), [-50]);
});

test("a stalled answer times out and is retried with the same key: charged once", async () => {
  const org = await fundedOrg(1000);
  const sleep = new RecordedSleep();
  proxy.faults.push("stall");
  const hold = await throughProxy(sleep, { timeoutMs: 500 }).hold(org, { credits: 70 });
  const keys = keysFor(`/v1/wallets/${org}/holds`);
  assert.equal(keys.length, 2);
  assert.equal(keys[1], keys[0]);
  const wallet = await throughProxy(sleep).wallet(org);
  assert.deepEqual([wallet.held, wallet.holds.length], [70, 1]);
  assert.equal(wallet.holds[0]?.hold_id, hold.holdId);
});

test("a hold's capture keeps its fixed key across a dropped answer", async () => {
  const org = await fundedOrg(1000);
  const sleep = new RecordedSleep();
  const credits = throughProxy(sleep);
  const hold = await credits.hold(org, { credits: 100 });
  proxy.faults.push("drop");
  const settled = await hold.capture(60);
  assert.equal(settled.captured_amount, 60);
  assert.deepEqual(keysFor(`/v1/holds/${hold.holdId}/capture`),
                   [`capture-${hold.holdId}`, `capture-${hold.holdId}`]);
  assert.equal((await credits.wallet(org)).balance, 940);
});

test("5xx on every attempt: ServiceUnavailableError after maxRetries, nothing applied",
     async () => {
  const org = await fundedOrg(1000);
  const sleep = new RecordedSleep();
  proxy.faults.push("503", "503", "503");
  await assert.rejects(
    throughProxy(sleep, { maxRetries: 2 }).recordUsage(org, { feature: "api_call" }),
    (e: unknown) => e instanceof ServiceUnavailableError && e.status === 503);
  const keys = keysFor(`/v1/wallets/${org}/usage`);
  assert.equal(keys.length, 3);
  assert.equal(new Set(keys).size, 1);
  assert.equal(sleep.pauses.length, 2);
  assert.deepEqual(await usageAmounts(org), []);
});

test("dropped on every attempt: TransportError; the same key later returns the result",
     async () => {
  const org = await fundedOrg(1000);
  const sleep = new RecordedSleep();
  proxy.faults.push("drop", "drop");
  const key = `order-${org}`;
  await assert.rejects(
    throughProxy(sleep, { maxRetries: 1 }).recordUsage(org, { feature: "api_call", quantity: 7,
                                                              idempotencyKey: key }),
    (e: unknown) => e instanceof TransportError && e.status === 0);
  const later = await throughProxy(sleep).recordUsage(
    org, { feature: "api_call", quantity: 7, idempotencyKey: key });
  assert.equal(later.replayed, true);
  assert.deepEqual(await usageAmounts(org), [-7]);
});
