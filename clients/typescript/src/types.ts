/**
 * The API's shapes, named: every type here is taken from `generated/openapi.ts`, which
 * `npm run generate` writes from the service's OpenAPI document (`clients/openapi.json`).
 * Field names are the API's own (snake_case), so what you read is what the service sent.
 */

import type { components, paths } from "./generated/openapi.js";

type Schemas = components["schemas"];
type Json<T> = T extends { content: { "application/json": infer B } } ? B : never;

export type Wallet = Schemas["Wallet"];
export type LedgerEntry = Schemas["Entry"];
export type LedgerPage = Schemas["LedgerPage"];
export type UsageResult = Schemas["UsageResult"];
export type CheckResult = Schemas["CheckResult"];
export type HoldResult = Schemas["HoldResult"];
export type SettledHold = Schemas["SettledHold"];
export type Members = Schemas["Members"];
export type BudgetResult = Json<
  paths["/v1/wallets/{wallet_id}/members/{user_id}/budget"]["put"]["responses"][200]>;
export type TopUpResult = Json<paths["/v1/wallets/{wallet_id}/top-ups"]["post"]["responses"][201]>;
export type Forecast = Schemas["Forecast"];
export type RefundResult = Schemas["RefundResult"];
export type AdjustmentResult = Json<
  paths["/v1/wallets/{wallet_id}/adjustments"]["post"]["responses"][201]>;

export type UsageRequest = Schemas["UsageRequest"];
export type HoldRequest = Schemas["HoldRequest"];
export type TopUpRequest = Schemas["TopUpRequest"];
export type BudgetRequest = Schemas["BudgetRequest"];
export type AdjustmentRequest = Schemas["AdjustmentRequest"];
export type RefundRequest = Schemas["RefundRequest"];
export type CaptureRequest = Schemas["CaptureRequest"];
export type CheckQuery = NonNullable<
  paths["/v1/wallets/{wallet_id}/check"]["get"]["parameters"]["query"]>;
export type LedgerQuery = NonNullable<
  paths["/v1/wallets/{wallet_id}/ledger"]["get"]["parameters"]["query"]>;
