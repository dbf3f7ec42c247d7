/**
 * `npm test`: start the real service (`kinde-credits serve`, local mode, a fresh SQLite
 * database in a temporary directory), mint local access tokens with `kinde-credits token`,
 * run every compiled test file with Node's own test runner against it, then stop the server.
 *
 * Which `kinde-credits`: $KINDE_CREDITS_BIN, else the repository's .venv (scripts/test makes
 * it), else the one on PATH.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url)); // build/test
const packageRoot = resolve(here, "..", "..");
const repoRoot = resolve(packageRoot, "..", "..");

function kindeCredits(): string {
  if (process.env.KINDE_CREDITS_BIN) return process.env.KINDE_CREDITS_BIN;
  const venv = process.env.KINDE_CREDITS_VENV ?? join(repoRoot, ".venv");
  const local = join(venv, "bin", "kinde-credits");
  return existsSync(local) ? local : "kinde-credits";
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((done, fail) => {
    const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
    child.on("error", fail);
    child.on("close", (code) => code === 0
      ? done(out.trim()) : fail(new Error(`${bin} ${args.join(" ")} exited ${code}: ${err}`)));
  });
}

async function waitReady(url: string, server: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) {
      throw new Error(`the server exited (${server.exitCode}):\n${readFileSync(log, "utf8")}`);
    }
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the server did not answer /healthz:\n${readFileSync(log, "utf8")}`);
}

async function main(): Promise<number> {
  const bin = kindeCredits();
  const var_ = mkdtempSync(join(tmpdir(), "kc-ts-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // Local mode whatever the caller's environment says: no KINDE_*, our own database.
  const env: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("KINDE_") && k !== "DATABASE_URL"));
  Object.assign(env, {
    DATABASE_URL: `sqlite:///${join(var_, "credits.db")}`,
    KINDE_CREDITS_VAR_DIR: var_,
    PUBLIC_URL: url,
    RUN_WORKER: "false",
  });
  const log = join(var_, "server.log");
  const server = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", String(port),
                             "--workers", "2", "--threads", "4", "--no-worker"],
                       { env, stdio: ["ignore", openSync(log, "a"), openSync(log, "a")] });
  const stop = () => {
    if (server.exitCode === null) server.kill("SIGTERM");
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  try {
    await new Promise<void>((done, fail) => {
      server.once("spawn", done);
      server.once("error", (e) => fail(new Error(`cannot start ${bin}: ${e.message}`)));
    });
    await waitReady(url, server, log);
    const [admin, write, otherOrgAdmin, user] = await Promise.all([
      run(bin, ["token", "--m2m", "--scope", "credits:admin"], env),
      run(bin, ["token", "--m2m", "--scope", "credits:write"], env),
      run(bin, ["token", "--m2m", "--scope", "credits:admin", "--org", "org_other"], env),
      run(bin, ["token", "--sub", "kp_ts_reader"], env),
    ]);
    const files = readdirSync(here).filter((f) => f.endsWith(".test.js")).sort()
      .map((f) => join(here, f));
    const only = process.argv.slice(2);
    const tests = only.length ? files.filter((f) => only.some((o) => f.includes(o))) : files;
    const child = spawn(process.execPath, ["--test", ...tests], {
      stdio: "inherit",
      env: { ...process.env, KC_BASE_URL: url, KC_TOKEN_ADMIN: admin, KC_TOKEN_WRITE: write,
             KC_TOKEN_OTHER_ORG_ADMIN: otherOrgAdmin, KC_TOKEN_USER: user },
    });
    return await new Promise<number>((done) => child.on("close", (code) => done(code ?? 1)));
  } finally {
    stop();
    await new Promise<void>((done) => server.exitCode !== null ? done()
      : server.once("exit", () => done()));
    rmSync(var_, { recursive: true, force: true });
  }
}

main().then((code) => process.exit(code), (error: unknown) => {
  console.error(error);
  process.exit(1);
});
