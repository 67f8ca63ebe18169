// Drives the real @stigg/node-server-sdk (pinned in package.json) for the Python tests.
//
// stdin: one JSON document
//   {"redis": {"host", "port", "db"?}, "environmentPrefix", "edgeUrl", "apiKey",
//    "ttl"?, "entitlementsTimeoutMs"?, "logLevel"? ("ERROR" | "LOG" | "ALL" | "NONE", default "LOG"),
//    "dates"? ("ms" default, or "iso" = what JSON.stringify gives, as in stigg-golden/*.json),
//    "clockMs"? (epoch ms: the SDK's wall clock starts there and runs on; default the real clock),
//    "calls": [{"getter", "customerId", "featureId"?, "resourceId"?, "options"?, ...}]}
// stdout: one JSON document {"results": [...], "events": [[...], ...]}: per call the SDK's answer as
//   plain JSON (undefined dropped, Dates per "dates"), or {"error": message} when it threw; and the
//   SDK's cache events emitted during that call ("cacheHit", "cacheMiss", "cacheMiss(globalCustomerMissing)").
// Every SDK log goes to stderr. Exit 0 after printing; 2 when the input or the SDK setup failed.
import { Console } from 'node:console';
import { createRequire } from 'node:module';

// Nothing but the final document may reach stdout, whatever a library prints.
const stderr = new Console(process.stderr);
for (const method of ['log', 'info', 'debug', 'warn', 'error', 'trace', 'dir']) console[method] = stderr[method];

const require = createRequire(import.meta.url);
const { Stigg } = require('@stigg/node-server-sdk');
const RealDate = Date;

const REDIS_READY_TIMEOUT_MS = 10_000;
const CLOSE_TIMEOUT_MS = 2_000;

const stderrLogger = { log: stderr.log, error: stderr.error, debug: stderr.debug };

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

// The SDK decides usage-period roll-over and validUntil expiry against `new Date()` / Date.now();
// shifting them lets recorded data be replayed as of the time it was recorded.
function shiftClock(startMs) {
  const offset = startMs - RealDate.now();
  globalThis.Date = class ShiftedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(RealDate.now() + offset);
      else super(...args);
    }

    static now() {
      return RealDate.now() + offset;
    }
  };
}

function sdkConfiguration(input) {
  const { host = '127.0.0.1', port, db = 0 } = input.redis;
  const redis = { environmentPrefix: input.environmentPrefix, host, port, db };
  if (input.ttl !== undefined) redis.ttl = input.ttl;
  const config = {
    apiKey: input.apiKey,
    baseUri: input.edgeUrl,
    baseEdgeUri: input.edgeUrl,
    realtimeUpdatesEnabled: false,
    enableRemoteConfig: false,
    redis,
    logConfiguration: { logger: stderrLogger, logLevel: input.logLevel ?? 'LOG' },
  };
  if (input.entitlementsTimeoutMs !== undefined) config.entitlementsTimeout = input.entitlementsTimeoutMs;
  return config;
}

// The SDK's own wait gives up after 250 ms; before ioredis is connected every read is a miss.
async function waitForRedis(stigg) {
  const { redisClient } = stigg.entitlementsService.cacheService;
  const deadline = Date.now() + REDIS_READY_TIMEOUT_MS;
  while (redisClient.status !== 'ready') {
    if (Date.now() > deadline) throw new Error(`SDK Redis client not ready: ${redisClient.status}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function plain(value, dates) {
  if (value instanceof RealDate) return dates === 'iso' ? value.toISOString() : value.getTime();
  if (Array.isArray(value)) return value.map((item) => (item === undefined ? null : plain(item, dates)));
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [key, item] of Object.entries(value)) {
      if (item !== undefined && typeof item !== 'function') out[key] = plain(item, dates);
    }
    return out;
  }
  return value;
}

async function runCall(stigg, call) {
  const { getter, ...params } = call;
  if (getter === 'getEntitlements') return stigg.getEntitlements(params.customerId, params.resourceId);
  if (typeof stigg[getter] !== 'function' || getter.startsWith('_')) throw new Error(`unknown getter: ${getter}`);
  return stigg[getter](params);
}

async function runCalls(stigg, calls, dates) {
  const results = [];
  const events = [];
  let current = [];
  // Spelled as stigg-golden's sdkEvents: "cacheHit", "cacheMiss", "cacheMiss(globalCustomerMissing)".
  for (const name of ['cacheHit', 'cacheMiss']) {
    stigg.addListener(name, (data) => current.push(data?.globalCustomerMissing ? `${name}(globalCustomerMissing)` : name));
  }
  for (const call of calls) {
    current = [];
    try {
      results.push(plain(await runCall(stigg, call), dates));
    } catch (error) {
      results.push({ error: String(error?.message ?? error) });
    }
    events.push(current);
  }
  return { results, events };
}

async function closeQuietly(stigg) {
  const timeout = new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref());
  // Stigg.close() does not wait for its Redis connections to quit; their cleanup is awaited here.
  await Promise.race([stigg.entitlementsService.cleanup().catch(() => undefined), timeout]);
}

async function main() {
  let stigg;
  let output;
  try {
    const input = await readStdin();
    if (input.clockMs !== undefined) shiftClock(input.clockMs);
    stigg = Stigg.initialize(sdkConfiguration(input));
    await stigg.waitForInitialization();
    await waitForRedis(stigg);
    output = await runCalls(stigg, input.calls ?? [], input.dates ?? 'ms');
  } catch (error) {
    stderr.error('stigg_reader failed:', error);
    process.exit(2);
  }
  await closeQuietly(stigg);
  process.stdout.write(`${JSON.stringify(output)}\n`, () => process.exit(0));
}

main();
