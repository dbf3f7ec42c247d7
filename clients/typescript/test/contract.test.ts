/**
 * The shared contract (`clients/operations.json`) against the service's OpenAPI document
 * (`clients/openapi.json`) and this client; `tests/unit/test_client_contract.py` checks the
 * same list against the Python client. Also: the committed generated types are what
 * openapi-typescript makes of the committed document. No server needed.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as sdk from "../src/index.js";
import { CreditsClient, DEFAULTS, GENERATED_KEY_PREFIX, RETRY_STATUSES } from "../src/index.js";

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const clientsDir = resolve(packageRoot, "..");

interface Operation {
  python: string; typescript: string; method: string; path: string;
  idempotency_key?: "per_call" | "per_hold"; key_prefix?: string; pages?: string;
}
interface ErrorEntry { code: string; status: number; python: string; typescript: string }
interface Contract {
  operations: Operation[];
  errors: ErrorEntry[];
  status_fallbacks: Record<string, string>;
  exhausted_retries: { typescript: string; codes: string[] };
  transport_failure: { typescript: string; status: number; code: string };
  retry: {
    statuses: number[]; max_retries: number; backoff_seconds: number;
    max_backoff_seconds: number; timeout_seconds: number; generated_key_prefix: string;
    idempotency_key_header: string; replayed_header: string;
  };
}
type OpenApi = {
  paths: Record<string, Record<string, {
    parameters?: { name: string; in: string }[];
    responses: Record<string, { description?: string; $ref?: string }>;
  }>>;
};

const contract = JSON.parse(readFileSync(join(clientsDir, "operations.json"), "utf8")) as Contract;
const openapi = JSON.parse(readFileSync(join(clientsDir, "openapi.json"), "utf8")) as OpenApi;

function operation(op: Operation) {
  return openapi.paths[op.path]?.[op.method.toLowerCase()];
}

test("every shared operation is a route of the OpenAPI document", () => {
  for (const op of contract.operations) {
    const found = operation(op);
    assert.ok(found, `${op.method} ${op.path} (${op.typescript}) is not in openapi.json`);
    const keyed = (found.parameters ?? []).some(
      (p) => p.in === "header" && p.name === contract.retry.idempotency_key_header);
    assert.equal(keyed, op.method !== "GET",
                 `${op.method} ${op.path}: Idempotency-Key documented for writes only`);
    assert.equal(op.idempotency_key !== undefined, op.method !== "GET", op.typescript);
  }
});

test("CreditsClient has exactly the shared operations", () => {
  const methods = Object.getOwnPropertyNames(CreditsClient.prototype)
    .filter((name) => name !== "constructor" && name !== "request").sort();
  assert.deepEqual(methods, contract.operations.map((op) => op.typescript).sort());
});

// How to call each operation once; a new operation in operations.json needs a line here.
const SAMPLE_CALLS: Record<string, (c: CreditsClient) => Promise<unknown>> = {
  recordUsage: (c) => c.recordUsage("org_a", { feature: "f" }),
  check: (c) => c.check("org_a", { feature: "f" }),
  hold: (c) => c.hold("org_a", { credits: 5 }),
  captureHold: (c) => c.captureHold("hold_1"),
  releaseHold: (c) => c.releaseHold("hold_1"),
  topUp: (c) => c.topUp("org_a", { bundle: "starter" }),
  wallet: (c) => c.wallet("org_a"),
  ledger: async (c) => { for await (const _ of c.ledger("org_a")) break; },
  ledgerPages: async (c) => { for await (const _ of c.ledgerPages("org_a")) break; },
  setBudget: (c) => c.setBudget("org_a", "kp_b", { creditsPerDay: 5 }),
  members: (c) => c.members("org_a"),
  adjust: (c) => c.adjust("org_a", { credits: 5, reason: "goodwill" }),
  refund: (c) => c.refund("org_a", 7, { reason: "mistake" }),
  forecast: (c) => c.forecast("org_a"),
};
const ANSWER = { hold_id: "hold_1", amount: 5, entries: [], next_cursor: null };

function pathPattern(template: string): RegExp {
  const escaped = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&");
  return new RegExp(`^${escaped.replace(/\{[a-z_]+\}/g, "[^/]+")}$`);
}

test("each operation calls its route, with a generated key on writes", async () => {
  for (const op of contract.operations) {
    const sent: { method: string; path: string; key: string | null }[] = [];
    const fake: typeof fetch = async (input, init) => {
      sent.push({ method: init?.method ?? "GET", path: new URL(String(input)).pathname,
                  key: new Headers(init?.headers).get("Idempotency-Key") });
      return new Response(JSON.stringify(ANSWER), { status: 200 });
    };
    const call = SAMPLE_CALLS[op.typescript];
    assert.ok(call, `no sample call for ${op.typescript}`);
    await call(new CreditsClient({ baseUrl: "http://svc.test", token: "t", fetch: fake }));
    const last = sent.at(-1)!;
    assert.equal(last.method, op.method, op.typescript);
    assert.match(last.path, pathPattern(op.path), op.typescript);
    if (op.idempotency_key === "per_call") {
      assert.ok(last.key?.startsWith(contract.retry.generated_key_prefix), op.typescript);
    } else if (op.method === "GET") {
      assert.equal(last.key, null, op.typescript);
    }
  }
});

test("the error classes: one per shared code, by status when the code is unknown", () => {
  const exported = sdk as unknown as Record<string, unknown>;
  for (const entry of contract.errors) {
    const cls = exported[entry.typescript];
    assert.equal(typeof cls, "function", `${entry.typescript} is not exported`);
    const error = sdk.errorFor(entry.status, { error: { code: entry.code, message: "m" } });
    assert.equal(error.constructor, cls, entry.code);
    assert.ok(error instanceof sdk.CreditsError);
    assert.deepEqual([error.status, error.code, error.message], [entry.status, entry.code, "m"]);
  }
  assert.deepEqual(Object.keys(sdk.ERRORS_BY_CODE).sort(),
                   contract.errors.map((e) => e.code).sort());
  for (const [status, code] of Object.entries(contract.status_fallbacks)) {
    const byStatus = sdk.errorFor(Number(status), { error: { code: "new_code", message: "m" } });
    assert.equal(byStatus.constructor, sdk.ERRORS_BY_CODE[code], `status ${status}`);
  }
  assert.deepEqual(Object.keys(sdk.ERRORS_BY_STATUS).sort(),
                   Object.keys(contract.status_fallbacks).sort());
  const exhausted = exported[contract.exhausted_retries.typescript];
  for (const status of contract.retry.statuses) {
    assert.equal(sdk.errorFor(status, {}).constructor, exhausted, `status ${status}`);
  }
  const transport = new sdk.TransportError("down");
  assert.equal(transport.constructor, exported[contract.transport_failure.typescript]);
  assert.deepEqual([transport.status, transport.code],
                   [contract.transport_failure.status, contract.transport_failure.code]);
});

test("every error code the OpenAPI document names is in the shared list", () => {
  const known = new Set([...contract.errors.map((e) => e.code),
                         ...contract.exhausted_retries.codes]);
  const statuses = new Set<string>();
  for (const methods of Object.values(openapi.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      if (method === "parameters") continue;
      for (const [status, response] of Object.entries(op.responses)) {
        statuses.add(status);
        if (!status.startsWith("4") && !status.startsWith("5")) continue;
        // "not_found: ...", "insufficient_credits (error.needed, ...) or ... hold_not_open"
        const description = (response.description ?? "").replace(/error\.[a-z_]+/g, "");
        const codes = description.match(/\b[a-z]+_[a-z_]+\b|^[a-z]+(?=:)/g) ?? [];
        for (const code of codes) assert.ok(known.has(code), `${status}: ${code} is not listed`);
      }
    }
  }
  for (const entry of contract.errors) {
    assert.ok(statuses.has(String(entry.status)), `no operation answers ${entry.status}`);
  }
});

test("the retry rules and defaults are the shared ones", () => {
  assert.deepEqual([...RETRY_STATUSES].sort(), [...contract.retry.statuses].sort());
  assert.deepEqual(DEFAULTS, {
    timeoutMs: contract.retry.timeout_seconds * 1000,
    maxRetries: contract.retry.max_retries,
    backoffMs: contract.retry.backoff_seconds * 1000,
    maxBackoffMs: contract.retry.max_backoff_seconds * 1000,
  });
  assert.equal(GENERATED_KEY_PREFIX, contract.retry.generated_key_prefix);
});

test("the committed types are what openapi-typescript makes of openapi.json", () => {
  const out = mkdtempSync(join(tmpdir(), "kc-types-"));
  try {
    const bin = join(packageRoot, "node_modules", "openapi-typescript", "bin", "cli.js");
    const script = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8"))
      .scripts.generate as string;
    // The same flags as `npm run generate`, writing to a temporary file instead.
    const flags = script.split(" ").slice(2).filter((a, i, all) => a !== "--output"
      && all[i - 1] !== "--output");
    execFileSync(process.execPath, [bin, join(clientsDir, "openapi.json"), ...flags,
                                    "--output", join(out, "openapi.ts")], { stdio: "pipe" });
    const fresh = readFileSync(join(out, "openapi.ts"), "utf8");
    const committed = readFileSync(join(packageRoot, "src", "generated", "openapi.ts"), "utf8");
    assert.ok(fresh === committed,
              "src/generated/openapi.ts is stale: run `npm run generate` and commit it");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("a hold's capture and release use the shared key prefixes, fixed per hold", async () => {
  const sent: string[] = [];
  const fake: typeof fetch = async (input, init) => {
    const path = new URL(String(input)).pathname;
    sent.push(`${path} ${new Headers(init?.headers).get("Idempotency-Key")}`);
    const body = path.endsWith("/holds") ? { hold_id: "hold_1", amount: 5 } : { status: "x" };
    return new Response(JSON.stringify(body), { status: 200 });
  };
  const client = new CreditsClient({ baseUrl: "http://svc.test", token: "t", fetch: fake });
  const [capture, release] = ["captureHold", "releaseHold"].map(
    (name) => contract.operations.find((op) => op.typescript === name)!);
  assert.equal(capture?.idempotency_key, "per_hold");
  await (await client.hold("org_a", { credits: 5 })).capture();
  await (await client.hold("org_a", { credits: 5 })).release();
  assert.deepEqual(sent.filter((line) => !line.startsWith("/v1/wallets")), [
    `/v1/holds/hold_1/capture ${capture?.key_prefix}hold_1`,
    `/v1/holds/hold_1/release ${release?.key_prefix}hold_1`,
  ]);
});
