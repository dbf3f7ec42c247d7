/** What the tests share: the server `run.ts` started, its tokens, and a misbehaving proxy. */

import { randomUUID } from "node:crypto";
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";

import { CreditsClient, type CreditsClientOptions } from "../src/index.js";

function need(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\``);
  return value;
}

export const server = {
  get url(): string { return need("KC_BASE_URL"); },
  tokens: {
    get admin(): string { return need("KC_TOKEN_ADMIN"); },
    get write(): string { return need("KC_TOKEN_WRITE"); },
    get otherOrgAdmin(): string { return need("KC_TOKEN_OTHER_ORG_ADMIN"); },
    get user(): string { return need("KC_TOKEN_USER"); },
  },
};

/** Pauses the client asked for, recorded instead of waited (no test depends on time). */
export class RecordedSleep {
  readonly pauses: number[] = [];
  readonly sleep = async (ms: number): Promise<void> => {
    this.pauses.push(ms);
  };
}

export function client(options: Partial<CreditsClientOptions> = {}): CreditsClient {
  return new CreditsClient({ baseUrl: server.url, token: server.tokens.admin,
                             sleep: new RecordedSleep().sleep, ...options });
}

export function freshOrg(): string {
  return `org_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

export async function fundedOrg(credits = 1000): Promise<string> {
  const org = freshOrg();
  await client().topUp(org, { credits, reason: "team credits" });
  return org;
}

export async function ledgerOf(walletId: string): Promise<{ kind: string; amount: number }[]> {
  const entries = [];
  for await (const entry of client().ledger(walletId, { pageSize: 200 })) entries.push(entry);
  return entries;
}

export async function usageAmounts(walletId: string): Promise<number[]> {
  return (await ledgerOf(walletId)).filter((e) => e.kind === "usage").map((e) => e.amount);
}

/**
 * - "drop": forward to the service (which applies the request), then close the client's
 *   connection without an answer;
 * - "stall": forward, then never answer (the client times out);
 * - "429": answer 429 with `Retry-After: <retryAfter>` without forwarding;
 * - "503": answer 503 without forwarding.
 * Faults apply to requests whose method is in `methods`, in the order queued.
 */
export type Fault = "drop" | "stall" | "429" | "503";

export interface SeenRequest {
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  forwarded: boolean;
  fault: Fault | undefined;
}

export class FaultyProxy {
  readonly faults: Fault[] = [];
  readonly seen: SeenRequest[] = [];
  retryAfter = "1";
  #server: Server;
  #stalled = new Set<ServerResponse>();
  readonly #upstream: URL;
  readonly #methods: Set<string>;

  constructor(upstream: string, methods: string[] = ["POST", "PUT"]) {
    this.#upstream = new URL(upstream);
    this.#methods = new Set(methods);
    this.#server = createServer((req, res) => void this.#handle(req, res));
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  start(): Promise<this> {
    return new Promise((done) => this.#server.listen(0, "127.0.0.1", () => done(this)));
  }

  stop(): Promise<void> {
    for (const res of this.#stalled) res.destroy();
    this.#server.closeAllConnections();
    return new Promise((done) => this.#server.close(() => done()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const method = req.method ?? "GET";
    const fault = this.#methods.has(method) ? this.faults.shift() : undefined;
    const key = req.headers["idempotency-key"];
    const seen: SeenRequest = { method, path: req.url ?? "", fault, forwarded: false,
                                idempotencyKey: Array.isArray(key) ? key[0] : key };
    this.seen.push(seen);
    if (fault === "429" || fault === "503") {
      const status = Number(fault);
      const payload = JSON.stringify({ error: { code: status === 429 ? "rate_limited"
        : "unavailable", message: "try again" } });
      res.writeHead(status, { "Content-Type": "application/json",
                              ...(status === 429 ? { "Retry-After": this.retryAfter } : {}) });
      res.end(payload);
      return;
    }
    const answer = await this.#forward(method, req.url ?? "/", req.headers, body);
    seen.forwarded = true;
    if (fault === "drop") {
      res.socket?.destroy(); // applied by the service, the answer lost on the way back
      return;
    }
    if (fault === "stall") {
      this.#stalled.add(res); // never answered; stop() closes it
      return;
    }
    res.writeHead(answer.status, answer.headers);
    res.end(answer.body);
  }

  #forward(method: string, path: string, headers: IncomingHttpHeaders, body: Buffer
  ): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
    const { host: _host, connection: _connection, ...rest } = headers;
    return new Promise((done, fail) => {
      const upstream = httpRequest({
        host: this.#upstream.hostname, port: this.#upstream.port, method, path,
        headers: { ...rest, "content-length": String(body.length) },
      }, (response) => {
        const parts: Buffer[] = [];
        response.on("data", (chunk: Buffer) => parts.push(chunk));
        response.on("end", () => {
          const out: Record<string, string> = {};
          for (const [name, value] of Object.entries(response.headers)) {
            if (value !== undefined && !["connection", "transfer-encoding", "keep-alive"]
              .includes(name)) out[name] = Array.isArray(value) ? value.join(", ") : value;
          }
          done({ status: response.statusCode ?? 502, headers: out, body: Buffer.concat(parts) });
        });
        response.on("error", fail);
      });
      upstream.on("error", fail);
      upstream.end(body);
    });
  }
}
