/** `withCredits` in a small Next.js-style route handler and `withCreditsExpress` in an Express
 * app, both against the real service: hold, run, capture or release, 402 when short. */

import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import express from "express";

import { type Hold, withCredits, withCreditsExpress } from "../src/index.js";
import { client, fundedOrg, ledgerOf } from "./support.js";

const credits = client();

async function kinds(walletId: string): Promise<string[]> {
  return (await ledgerOf(walletId)).map((e) => e.kind).reverse(); // oldest first
}

async function balanceAndHeld(walletId: string): Promise<[number, number]> {
  const wallet = await credits.wallet(walletId);
  return [wallet.balance, wallet.held];
}

// -- a Next.js App Router route: app/api/reports/route.ts ---------------------------------------

type RouteContext = { params: Promise<{ org: string }> };
const ran: string[] = [];

const POST = withCredits<[RouteContext]>(credits, {
  feature: "report_generation",
  quantity: async (req) => Number(new URL(req.url).searchParams.get("n") ?? 1),
  walletId: (req) => req.headers.get("x-org"),
  member: (req) => req.headers.get("x-user"),
}, async (req, hold, { params }) => {
  const { org } = await params;
  const mode = new URL(req.url).searchParams.get("mode");
  ran.push(`${org}:${mode}`);
  if (mode === "throw") throw new Error("report builder crashed");
  if (mode === "bad") return Response.json({ error: "bad input" }, { status: 400 });
  if (mode === "partial") hold.captureCredits = 20;
  if (mode === "self") await hold.capture(10);
  return Response.json({ report: "done", held: hold.amount }, { status: 201 });
});

function call(org: string, query: string, user?: string): Promise<Response> {
  const headers: Record<string, string> = { "x-org": org };
  if (user) headers["x-user"] = user;
  return POST(new Request(`http://app.test/api/reports?${query}`, { method: "POST", headers }),
              { params: Promise.resolve({ org }) });
}

describe("withCredits (Next.js route handler)", () => {
  test("captures the whole hold when the handler answers below 400", async () => {
    const org = await fundedOrg(1000);
    const response = await call(org, "n=2");
    assert.equal(response.status, 201);
    assert.deepEqual(await response.json(), { report: "done", held: 100 });
    assert.deepEqual(await balanceAndHeld(org), [900, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "capture"]);
  });

  test("captures hold.captureCredits when the handler sets it", async () => {
    const org = await fundedOrg(1000);
    assert.equal((await call(org, "mode=partial")).status, 201);
    assert.deepEqual(await balanceAndHeld(org), [980, 0]);
  });

  test("a handler that captured itself is not captured again", async () => {
    const org = await fundedOrg(1000);
    assert.equal((await call(org, "mode=self")).status, 201);
    assert.deepEqual(await balanceAndHeld(org), [990, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "capture"]);
  });

  test("releases the hold when the handler throws, and the error propagates", async () => {
    const org = await fundedOrg(1000);
    await assert.rejects(call(org, "mode=throw"), /report builder crashed/);
    assert.deepEqual(await balanceAndHeld(org), [1000, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "release"]);
  });

  test("releases the hold when the handler answers an error", async () => {
    const org = await fundedOrg(1000);
    assert.equal((await call(org, "mode=bad")).status, 400);
    assert.deepEqual(await balanceAndHeld(org), [1000, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "release"]);
  });

  test("402 with the service's body when out of credits; the handler does not run", async () => {
    const org = await fundedOrg(40);
    ran.length = 0;
    const response = await call(org, "n=1");
    assert.equal(response.status, 402);
    assert.equal(response.headers.get("content-type"), "application/json");
    const body = await response.json() as { error: Record<string, unknown> };
    assert.equal(body.error.code, "insufficient_credits");
    assert.deepEqual([body.error.needed, body.error.available], [50, 40]);
    assert.equal(typeof body.error.message, "string");
    assert.deepEqual(ran, []);
    assert.deepEqual(await kinds(org), ["grant"]);
  });

  test("402 member_budget_exceeded for a member over their cap", async () => {
    const org = await fundedOrg(1000);
    await credits.setBudget(org, "kp_carol", { creditsPerDay: 60 });
    assert.equal((await call(org, "n=1", "kp_carol")).status, 201);
    const refused = await call(org, "n=1", "kp_carol");
    assert.equal(refused.status, 402);
    const body = await refused.json() as { error: Record<string, unknown> };
    assert.deepEqual([body.error.code, body.error.available_to_member],
                     ["member_budget_exceeded", 10]);
    assert.deepEqual(await balanceAndHeld(org), [950, 0]);
  });
});

// -- an Express app -----------------------------------------------------------------------------

describe("withCreditsExpress (Express app)", () => {
  let base = "";
  let close: () => Promise<void> = async () => {};
  const errors: string[] = [];

  before(async () => {
    const app = express();
    app.use(express.json());
    app.post("/reports/:org", withCreditsExpress<express.Request, express.Response>(credits, {
      feature: "report_generation",
      walletId: (req) => String(req.params.org),
      quantity: (req) => Number(req.body?.n ?? 1),
    }, async (req, res, hold: Hold) => {
      const mode = req.body?.mode;
      if (mode === "throw") throw new Error("express handler crashed");
      if (mode === "bad") {
        res.status(422).json({ error: "no" });
        return;
      }
      if (mode === "partial") hold.captureCredits = 15;
      if (mode === "stream") {
        // Like `await pipeline(stream, res)`: the handler waits until its answer is sent.
        res.status(200);
        res.write("part 1, ");
        res.end("part 2");
        await once(res, "finish");
        return;
      }
      res.status(201).json({ report: "done", hold: res.locals.creditsHold === hold });
    }));
    app.use((err: Error, _req: express.Request, res: express.Response,
             _next: express.NextFunction) => {
      errors.push(err.message);
      res.status(500).json({ error: "internal" });
    });
    const listening = app.listen(0, "127.0.0.1");
    await new Promise<void>((done) => listening.once("listening", () => done()));
    base = `http://127.0.0.1:${(listening.address() as AddressInfo).port}`;
    close = () => new Promise((done) => {
      listening.closeAllConnections();
      listening.close(() => done());
    });
  });

  after(() => close());

  function post(org: string, body: object): Promise<Response> {
    return fetch(`${base}/reports/${org}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  test("captures after a successful answer", async () => {
    const org = await fundedOrg(1000);
    const response = await post(org, { n: 3 });
    assert.equal(response.status, 201);
    assert.deepEqual(await response.json(), { report: "done", hold: true });
    assert.deepEqual(await balanceAndHeld(org), [850, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "capture"]);
  });

  test("captures hold.captureCredits", async () => {
    const org = await fundedOrg(1000);
    assert.equal((await post(org, { mode: "partial" })).status, 201);
    assert.deepEqual(await balanceAndHeld(org), [985, 0]);
  });

  // The timeout only turns a hang (the end of the answer held back forever) into a failure.
  test("a handler that waits for its response to finish is captured, not stuck",
       { timeout: 20_000 }, async () => {
    const org = await fundedOrg(1000);
    const response = await post(org, { mode: "stream" });
    assert.equal(await response.text(), "part 1, part 2");
    assert.deepEqual(await balanceAndHeld(org), [950, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "capture"]);
  });

  test("an exception releases the hold and reaches Express's error handler", async () => {
    const org = await fundedOrg(1000);
    const response = await post(org, { mode: "throw" });
    assert.equal(response.status, 500);
    assert.ok(errors.includes("express handler crashed"));
    assert.deepEqual(await balanceAndHeld(org), [1000, 0]);
    assert.deepEqual(await kinds(org), ["grant", "hold", "release"]);
  });

  test("an error answer releases the hold", async () => {
    const org = await fundedOrg(1000);
    assert.equal((await post(org, { mode: "bad" })).status, 422);
    assert.deepEqual(await balanceAndHeld(org), [1000, 0]);
  });

  test("402 with the service's body when out of credits", async () => {
    const org = await fundedOrg(100);
    const response = await post(org, { n: 3 });
    assert.equal(response.status, 402);
    const body = await response.json() as { error: Record<string, unknown> };
    assert.deepEqual([body.error.code, body.error.needed, body.error.available],
                     ["insufficient_credits", 150, 100]);
    assert.deepEqual(await kinds(org), ["grant"]);
  });
});
