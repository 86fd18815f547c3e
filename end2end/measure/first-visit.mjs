#!/usr/bin/env node
// B7: what a first visit of an account page costs: bytes on the wire, and time until a click works.
//
//   node measure/first-visit.mjs [BASE_URL] [--runs 3] [--warmup 1] [--click-timeout-ms 15000]
//                                [--interval-ms 25] [--settle-ms 500]
//   (or: npm run measure:first-visit -- http://127.0.0.1:3000 --runs 5)
//
// The base URL is the first argument, else $BASE_URL, else $E2E_BASE_URL, else
// http://127.0.0.1:3000. Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM_PATH), as in
// playwright.config.ts: nothing is downloaded.
//
// The user: a fresh one is signed up through the API, unless $MEASURE_USERNAME and
// $MEASURE_PASSWORD name an existing one (sign-ups are rate-limited per address, 20 an hour by
// default). Either way a new account is opened for them (the API again) before anything is
// measured, and each measured visit then runs in a NEW browser context that carries only the
// session cookie: empty HTTP cache, no open connections, a new renderer (cold V8, nothing
// compiled yet).
//
// Each visit:
//  - bytes: every response's Network.loadingFinished.encodedDataLength (CDP), i.e. bytes on the
//    wire after compression, headers included, from the navigation until the page has hydrated,
//    a click worked and the network has been quiet (bar the live stream) for --settle-ms.
//  - first working click: from the moment the navigation commits, the Deposit button of the
//    deposit form is clicked (real mouse events) every --interval-ms, with the amount field
//    left empty. Once hydrated, the form's handler checks the amount in the browser (WASM) and
//    writes "Invalid amount: …" into the deposit error line; nothing is sent to the server. The
//    time reported is when that message appeared in the DOM (performance.now(), i.e. since the
//    navigation started), seen by a MutationObserver in the page.
//  - hydrated: when <body data-hydrated="true"> appeared (the app's marker, set by an effect
//    once the WASM has taken over; end2end/tests/fixtures.ts waits for it the same way).
// Unthrottled and throttled visits (CDP Network.emulateNetworkConditions: 10 Mbit/s each way,
// 40 ms latency) alternate; --runs of each are measured after --warmup unmeasured visits, which
// keep the server's own first-request costs out of the numbers.
//
// Output: one human-readable line per visit, a summary, then one line
//   RESULT {"bytes_first_visit":…,"ms_first_click_throttled_median":…,…,"runs":[…]}
// for a Rust bench to parse. Exit codes: 0 measured; 1 a visit failed (no click worked within
// --click-timeout-ms, the page said the account is missing, …); 2 the server could not be
// reached or the user/account could not be set up; 64 bad arguments.

import { parseArgs } from "node:util";
import { chromium, request as apiRequest } from "@playwright/test";

const PASSWORD_FOR_NEW_USERS = "correct horse battery staple";

/** 10 Mbit/s = 1,250,000 bytes/s each way, 40 ms added to every request (Chromium applies it
 * per request, not per TCP round trip). */
const THROTTLED = { offline: false, latency: 40, downloadThroughput: 1_250_000, uploadThroughput: 1_250_000 };

// What the probe clicks and watches, from end2end/tests/fixtures.ts (`move`) and
// account.spec.ts ("amounts are checked in the browser before any request"): app/src/ui/money_form.rs
// renders <form data-testid="deposit-form"> with a submit button "Deposit" and
// <p data-testid="deposit-error">, which only the hydrated form's handler fills.
const DEPOSIT_FORM = '[data-testid="deposit-form"]';
const DEPOSIT_ERROR = '[data-testid="deposit-error"]';
const ACCOUNT_MISSING = '[data-testid="account-missing"]';

class Failure extends Error {
  constructor(message, exitCode) {
    super(message);
    this.exitCode = exitCode;
  }
}

// ---------------------------------------------------------------------------------------------
// Arguments

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        runs: { type: "string", default: "3" },
        warmup: { type: "string", default: "1" },
        "click-timeout-ms": { type: "string", default: "15000" },
        "interval-ms": { type: "string", default: "25" },
        "settle-ms": { type: "string", default: "500" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    throw new Failure(`${error.message} (see --help)`, 64);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    // The comment at the top of this file is the manual.
    console.log("usage: node measure/first-visit.mjs [BASE_URL] [--runs N] [--warmup N] [--click-timeout-ms MS] [--interval-ms MS] [--settle-ms MS]");
    process.exit(0);
  }
  if (positionals.length > 1) throw new Failure(`one base URL at most, got ${positionals.join(" ")}`, 64);
  const integer = (name, min) => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value < min) throw new Failure(`--${name} must be an integer ≥ ${min}, got ${values[name]}`, 64);
    return value;
  };
  const baseURL = (positionals[0] ?? process.env.BASE_URL ?? process.env.E2E_BASE_URL ?? "http://127.0.0.1:3000").replace(/\/+$/, "");
  try {
    new URL(baseURL);
  } catch {
    throw new Failure(`not a URL: ${baseURL}`, 64);
  }
  return {
    baseURL,
    runs: integer("runs", 1),
    warmup: integer("warmup", 0),
    clickTimeoutMs: integer("click-timeout-ms", 100),
    intervalMs: integer("interval-ms", 1),
    settleMs: integer("settle-ms", 0),
  };
}

// ---------------------------------------------------------------------------------------------
// Set-up: the server answers, a user is signed in and owns an account

async function checkReachable(baseURL) {
  try {
    const response = await fetch(`${baseURL}/health`, { signal: AbortSignal.timeout(5_000) });
    if (!response.ok) throw new Error(`GET /health answered ${response.status}: ${(await response.text()).slice(0, 200)}`);
  } catch (error) {
    throw new Failure(`the server at ${baseURL} is not reachable: ${error.cause?.message ?? error.message}`, 2);
  }
}

/** Signs a user up (or in) and opens an account for them, all through the HTTP API (the routes
 * end2end/tests/fixtures.ts uses); returns the session (Playwright storage state) and the
 * account's id once the read model has it, so that the page does not say "Account not found". */
async function setUp(baseURL) {
  const api = await apiRequest.newContext({ baseURL, timeout: 10_000 });
  try {
    const existing = process.env.MEASURE_USERNAME;
    const username = existing ?? `firstvisit-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;
    const password = existing ? process.env.MEASURE_PASSWORD ?? "" : PASSWORD_FOR_NEW_USERS;
    const route = existing ? "/api/auth/sign-in" : "/api/auth/sign-up";
    const signedIn = await api.post(route, { data: { username, password } });
    if (signedIn.status() !== 200) {
      const hint = signedIn.status() === 429 && !existing ? " (sign-ups are rate-limited: set MEASURE_USERNAME and MEASURE_PASSWORD to reuse a user)" : "";
      throw new Failure(`POST ${route} answered ${signedIn.status()}: ${(await signedIn.text()).slice(0, 300)}${hint}`, 2);
    }

    // A balance above zero, so that the page shows no "Close account" button (not that the
    // probe would touch it).
    const created = await api.post("/api/commands/create-account", { data: { ownerId: username, initialBalance: 10 } });
    if (created.status() !== 200) {
      throw new Failure(`POST /api/commands/create-account answered ${created.status()}: ${(await created.text()).slice(0, 300)}`, 2);
    }
    const { accountId, position } = await created.json();

    // The consistency token: the query answers once the read model has passed the creation.
    const deadline = Date.now() + 15_000;
    let last = "";
    while (Date.now() < deadline) {
      const read = await api.get(`/api/queries/accounts/${accountId}?after=${encodeURIComponent(position)}`);
      if (read.status() === 200) return { username, accountId, storageState: await api.storageState() };
      last = `${read.status()}: ${(await read.text()).slice(0, 200)}`;
      await sleep(200);
    }
    throw new Failure(`the read model did not show account ${accountId} within 15 s (last answer ${last})`, 2);
  } catch (error) {
    if (error instanceof Failure) throw error;
    throw new Failure(`setting up a user and an account failed: ${error.message}`, 2);
  } finally {
    await api.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// In the page: installed before any of the page's own scripts run (addInitScript)

/** Runs in the page at document start. Records, on `window.__firstVisit`, in performance.now()
 * time (milliseconds since the navigation started):
 *  - each click that reaches the deposit button, and when the deposit error line first gets
 *    text (the click worked) and when <body data-hydrated> appears;
 *  - every WebAssembly compile/instantiate call: whether the streaming API was used, on what.
 * It also stops the browser's own form submission. Before hydration the deposit form is plain
 * HTML with no action, so a click on Deposit would submit it as GET to the same page (a full
 * reload, with ?amount=) and restart the very visit being measured; after hydration the app's
 * handler calls preventDefault itself, so blocking it changes nothing the app does. The
 * submissions blocked before hydration are counted: each was a reload a real user would get.
 * Nothing here touches the DOM, which the hydration must find as the server sent it. */
function instrumentPage({ depositForm, depositError }) {
  const state = {
    clicks: [],
    nativeSubmitsBlocked: 0,
    hydratedAt: null,
    reactedAt: null,
    reaction: null,
    wasm: [],
  };
  Object.defineProperty(window, "__firstVisit", { value: state });

  window.addEventListener(
    "submit",
    (event) => {
      if (document.body?.getAttribute("data-hydrated") !== "true") state.nativeSubmitsBlocked += 1;
      event.preventDefault();
    },
    true,
  );
  window.addEventListener(
    "click",
    (event) => {
      if (event.target instanceof Element && event.target.closest(`${depositForm} button`)) {
        state.clicks.push({ at: event.timeStamp, trusted: event.isTrusted });
      }
    },
    true,
  );

  // Mutation records arrive in a microtask right after the change: no polling lag.
  const observer = new MutationObserver(() => {
    const now = performance.now();
    if (state.hydratedAt === null && document.body?.getAttribute("data-hydrated") === "true") state.hydratedAt = now;
    if (state.reactedAt === null) {
      const text = document.querySelector(depositError)?.textContent?.trim();
      // Only the hydrated handler's own message counts (money_form.rs: "Invalid amount: …").
      if (text && text.startsWith("Invalid amount")) {
        state.reactedAt = now;
        state.reaction = text;
      }
    }
    if (state.hydratedAt !== null && state.reactedAt !== null) observer.disconnect();
  });
  observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["data-hydrated"] });

  // wasm-bindgen's glue calls instantiateStreaming(fetch response) when the browser has it and
  // falls back to instantiate(arrayBuffer) if that throws (e.g. not served as application/wasm).
  // The wrappers only watch: the same arguments go to the same functions.
  const describe = (value) => {
    if (value instanceof Response) return "Response";
    if (value instanceof Promise) return "Promise<Response>";
    if (value instanceof WebAssembly.Module) return "Module";
    if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return `bytes(${value.byteLength})`;
    return typeof value;
  };
  for (const api of ["instantiateStreaming", "compileStreaming", "instantiate", "compile"]) {
    const original = WebAssembly[api];
    if (typeof original !== "function") continue;
    WebAssembly[api] = function (source, ...rest) {
      const call = { api, at: performance.now(), on: describe(source), doneAt: null, ok: null };
      state.wasm.push(call);
      if (api.endsWith("Streaming")) {
        Promise.resolve(source).then(
          (response) => {
            call.url = response.url;
            call.contentType = response.headers.get("content-type");
          },
          () => {},
        );
      }
      return original.call(WebAssembly, source, ...rest).then(
        (value) => {
          call.doneAt = performance.now();
          call.ok = true;
          return value;
        },
        (error) => {
          call.doneAt = performance.now();
          call.ok = false;
          call.error = String(error);
          throw error;
        },
      );
    };
  }
}

/** What the page shows about itself once the visit is over: its timing, and how its scripts
 * and the WASM were loaded. */
function pageSnapshot() {
  const state = window.__firstVisit;
  const navigation = performance.getEntriesByType("navigation")[0];
  const ms = (value) => (value ? Math.round(value) : null);
  return {
    state,
    navigation: navigation && {
      ttfb: ms(navigation.responseStart),
      responseEnd: ms(navigation.responseEnd),
      domContentLoaded: ms(navigation.domContentLoadedEventEnd),
      load: ms(navigation.loadEventEnd),
    },
    bundle: performance
      .getEntriesByType("resource")
      .filter((entry) => /\/pkg\//.test(entry.name))
      .map((entry) => ({
        url: entry.name,
        initiatorType: entry.initiatorType,
        start: ms(entry.startTime),
        end: ms(entry.responseEnd),
      })),
    scripts: [...document.scripts].map((script) => ({
      type: script.type || "classic",
      src: script.getAttribute("src"),
      // Leptos's hydration script: an inline script that import()s the glue.
      importsGlue: !script.src && /\bimport\(/.test(script.textContent),
    })),
    preloads: [...document.querySelectorAll('link[rel="modulepreload"], link[rel="preload"]')].map((link) => ({
      rel: link.rel,
      as: link.getAttribute("as"),
      type: link.getAttribute("type"),
      crossorigin: link.getAttribute("crossorigin") !== null,
      href: link.getAttribute("href"),
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// Over CDP: what crossed the wire

/** Follows every request of the page over the DevTools protocol. A request's bytes are its
 * loadingFinished.encodedDataLength (all received bytes: headers and the body as sent, i.e.
 * compressed); one still open at the end (the live stream) counts what it got so far. */
function trackNetwork(cdp) {
  const requests = new Map();
  const entry = (id) => {
    if (!requests.has(id)) {
      requests.set(id, {
        url: "", method: "", type: "", mimeType: "", status: null, encoding: "", secFetchMode: "", secFetchDest: "",
        headerBytes: 0, streamedBytes: 0, decodedBytes: 0, bytes: null, done: false, failed: null, redirectBytes: 0, fromCache: false,
      });
    }
    return requests.get(id);
  };
  const header = (headers, name) => {
    for (const [key, value] of Object.entries(headers ?? {})) if (key.toLowerCase() === name) return value;
    return "";
  };
  cdp.on("Network.requestWillBeSent", (event) => {
    const request = entry(event.requestId);
    // A redirect keeps the request id: its hop's bytes are counted, its details replaced.
    if (event.redirectResponse) request.redirectBytes += event.redirectResponse.encodedDataLength ?? 0;
    request.url = event.request.url;
    request.method = event.request.method;
    request.type = event.type ?? request.type;
  });
  // Chromium adds the Sec-Fetch-* headers below the page: only the extra-info event has them.
  cdp.on("Network.requestWillBeSentExtraInfo", (event) => {
    const request = entry(event.requestId);
    request.secFetchMode = header(event.headers, "sec-fetch-mode");
    request.secFetchDest = header(event.headers, "sec-fetch-dest");
  });
  cdp.on("Network.responseReceived", (event) => {
    const request = entry(event.requestId);
    request.type = event.type ?? request.type;
    request.status = event.response.status;
    request.mimeType = event.response.mimeType;
    request.encoding = header(event.response.headers, "content-encoding");
    request.headerBytes = event.response.encodedDataLength ?? 0;
    request.fromCache = Boolean(event.response.fromDiskCache || event.response.fromPrefetchCache || event.response.fromServiceWorker);
  });
  cdp.on("Network.dataReceived", (event) => {
    const request = entry(event.requestId);
    request.streamedBytes += event.encodedDataLength;
    request.decodedBytes += event.dataLength;
  });
  cdp.on("Network.loadingFinished", (event) => {
    const request = entry(event.requestId);
    request.bytes = event.encodedDataLength;
    request.done = true;
  });
  cdp.on("Network.loadingFailed", (event) => {
    const request = entry(event.requestId);
    request.failed = event.canceled ? "canceled" : event.errorText;
    request.done = true;
  });

  const counted = () => [...requests.values()].filter((request) => request.url && !/^(data|blob):/.test(request.url));
  return {
    /** Requests still loading, bar the live stream (an EventSource never finishes). */
    inFlight: () => counted().filter((request) => !request.done && request.type !== "EventSource").length,
    list: () =>
      counted().map((request) => ({
        ...request,
        bytes: request.redirectBytes + (request.bytes ?? request.headerBytes + request.streamedBytes),
        open: !request.done,
      })),
  };
}

/** Throttles (or not) this page's network. Network.emulateNetworkConditions is deprecated in
 * newer Chromium in favour of emulateNetworkConditionsByRule, which an empty urlPattern applies
 * to every request; the second is tried if the first is refused. Returns the method used. */
async function emulate(cdp, conditions) {
  try {
    await cdp.send("Network.emulateNetworkConditions", conditions);
    return "Network.emulateNetworkConditions";
  } catch (first) {
    try {
      const { offline, ...rule } = conditions;
      await cdp.send("Network.emulateNetworkConditionsByRule", { offline, matchedNetworkConditions: [{ urlPattern: "", ...rule }] });
      return "Network.emulateNetworkConditionsByRule";
    } catch (second) {
      throw new Failure(`cannot emulate network conditions: ${first.message}; ${second.message}`, 1);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One visit

const kindOf = (request) => {
  if (request.mimeType === "application/wasm" || /\.wasm(\?|$)/.test(request.url)) return "wasm";
  if (request.type === "Document") return "document";
  if (request.type === "Script" || /\.m?js(\?|$)/.test(request.url)) return "script";
  if (request.type === "Stylesheet" || /\.css(\?|$)/.test(request.url)) return "stylesheet";
  if (request.type === "EventSource") return "eventsource";
  if (request.type === "Fetch" || request.type === "XHR") return "api";
  return (request.type || "other").toLowerCase();
};

async function visit(browser, { baseURL, accountId, storageState, throttled, clickTimeoutMs, intervalMs, settleMs }) {
  const context = await browser.newContext({ storageState });
  try {
    const page = await context.newPage();
    const problems = [];
    page.on("console", (message) => {
      const text = message.text();
      // Chromium logs every 4xx as "Failed to load resource"; not the app's (as in fixtures.ts).
      if ((message.type() === "error" || message.type() === "warning") && !text.startsWith("Failed to load resource")) {
        problems.push(`${message.type()}: ${text.slice(0, 300)}`);
      }
    });
    page.on("pageerror", (error) => problems.push(`uncaught: ${String(error).slice(0, 300)}`));
    await page.addInitScript(instrumentPage, { depositForm: DEPOSIT_FORM, depositError: DEPOSIT_ERROR });

    const cdp = await context.newCDPSession(page);
    const network = trackNetwork(cdp);
    await cdp.send("Network.enable");
    // Unthrottled visits set nothing at all: no emulation layer in the way.
    const emulation = throttled ? await emulate(cdp, THROTTLED) : "none";

    const url = `${baseURL}/accounts/${accountId}`;
    // "commit": back as soon as the answer's headers are in, so that the clicks start while the
    // page is still arriving, as a user's would.
    const response = await page.goto(url, { waitUntil: "commit", timeout: clickTimeoutMs });
    if (!response) throw new Failure(`navigating to ${url} got no answer`, 1);
    if (/\/sign-in/.test(page.url())) {
      throw new Failure(`the account page sent the browser to sign in (${page.url()}): the session cookie did not carry over (a Secure cookie on plain http?)`, 1);
    }
    if (response.status() !== 200) throw new Failure(`GET ${url} answered ${response.status()}`, 1);

    const click = await probeFirstWorkingClick(page, { clickTimeoutMs, intervalMs });

    // Whatever the visit still loads right after (the refetch that going live makes, a poll):
    // until nothing but the live stream has been in flight for settleMs, 5 s at most.
    const settleDeadline = Date.now() + 5_000;
    let quietSince = Date.now();
    while (Date.now() < settleDeadline) {
      if (network.inFlight() > 0) quietSince = Date.now();
      else if (Date.now() - quietSince >= settleMs) break;
      await sleep(50);
    }
    const settled = network.inFlight() === 0;

    const snapshot = await withTimeout(page.evaluate(pageSnapshot), 5_000, "reading the page's timings");
    const requests = network.list();
    return { throttled, emulation, click, settled, snapshot, requests, problems };
  } finally {
    await context.close().catch(() => {});
  }
}

/** Clicks Deposit (empty amount) every intervalMs until the page shows the form's validation
 * message, the sign that the click reached the hydrated app. Each attempt is a real mouse click
 * at the button (Playwright, `force`: no waiting for the page to look ready, which is the
 * point); the clock is the page's own, so the round trips to the browser do not count. */
async function probeFirstWorkingClick(page, { clickTimeoutMs, intervalMs }) {
  const button = page.locator(DEPOSIT_FORM).getByRole("button", { name: "Deposit" });
  const started = Date.now();
  let attempts = 0;
  let lastError = "";
  for (;;) {
    const left = clickTimeoutMs - (Date.now() - started);
    if (left <= 0) {
      throw new Failure(
        `no click on Deposit worked within ${clickTimeoutMs} ms (${attempts} clicks made${lastError ? `; last click error: ${lastError}` : ""})`,
        1,
      );
    }
    try {
      await button.click({ force: true, timeout: Math.min(left, 1_000) });
      attempts += 1;
    } catch (error) {
      if (page.isClosed()) throw new Failure("the page closed while clicking", 1);
      // Not there yet (still streaming in) or moving: try again.
      lastError = error.message.split("\n")[0];
    }
    let seen = null;
    try {
      seen = await withTimeout(
        page.evaluate(
          ([missing]) => ({ state: window.__firstVisit ?? null, missing: document.querySelector(missing)?.textContent?.trim() ?? null }),
          [ACCOUNT_MISSING],
        ),
        2_000,
        "reading the page's state",
      );
    } catch (error) {
      lastError = error.message.split("\n")[0];
    }
    if (seen?.missing) throw new Failure(`the account page says: ${seen.missing}`, 1);
    if (seen?.state?.reactedAt != null) {
      const { state } = seen;
      // The click that worked: the last one before the message appeared.
      const before = state.clicks.filter((click) => click.at <= state.reactedAt);
      const working = before.at(-1) ?? null;
      return {
        attempts,
        msReaction: state.reactedAt,
        msClick: working?.at ?? null,
        clicksBefore: Math.max(0, before.length - 1),
        reaction: state.reaction,
      };
    }
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

function summarizeVisit(outcome) {
  const { state, navigation } = outcome.snapshot;
  const requests = outcome.requests;
  const bytes = requests.reduce((sum, request) => sum + request.bytes, 0);
  const byType = {};
  for (const request of requests) byType[kindOf(request)] = (byType[kindOf(request)] ?? 0) + request.bytes;
  const wasmReady = state.wasm.filter((call) => call.ok).map((call) => call.doneAt);
  return {
    condition: outcome.throttled ? "throttled" : "unthrottled",
    ms_first_click: Math.round(outcome.click.msReaction),
    ms_click_event: outcome.click.msClick === null ? null : Math.round(outcome.click.msClick),
    ms_hydrated: state.hydratedAt === null ? null : Math.round(state.hydratedAt),
    ms_wasm_ready: wasmReady.length ? Math.round(Math.min(...wasmReady)) : null,
    ms_wasm_instantiate_started: state.wasm.length ? Math.round(state.wasm[0].at) : null,
    ms_ttfb: navigation?.ttfb ?? null,
    ms_dom_content_loaded: navigation?.domContentLoaded ?? null,
    ms_load: navigation?.load ?? null,
    clicks_made: outcome.click.attempts,
    clicks_before_working: outcome.click.clicksBefore,
    native_submits_blocked: state.nativeSubmitsBlocked,
    reaction: outcome.click.reaction,
    bytes,
    bytes_decoded: requests.reduce((sum, request) => sum + request.decodedBytes, 0),
    requests: requests.length,
    bytes_by_type: sortedObject(byType),
    settled: outcome.settled,
    emulation: outcome.emulation,
    console_problems: outcome.problems.slice(0, 10),
  };
}

/** How the JS glue and the WASM arrived, from one visit: the page's script and link tags, the
 * Sec-Fetch headers of their requests (mode "cors" + dest "script" is a module script; a classic
 * one goes "no-cors"), and which WebAssembly API compiled the module. */
function loadingReport(outcome) {
  const { snapshot, requests } = outcome;
  const glue = requests.filter((request) => /\/pkg\/.*\.m?js(\?|$)/.test(request.url));
  const wasm = requests.filter((request) => kindOf(request) === "wasm");
  const streaming = snapshot.state.wasm.find((call) => call.api === "instantiateStreaming" || call.api === "compileStreaming");
  const bootstrap = snapshot.scripts.filter((script) => script.importsGlue);
  return {
    bootstrap_script_types: bootstrap.map((script) => script.type),
    js_glue_module: glue.length > 0 && glue.every((request) => request.secFetchMode === "cors" && request.secFetchDest === "script")
      ? true
      : glue.length > 0 && glue.some((request) => request.secFetchMode === "no-cors")
        ? false
        : null,
    js_glue_requests: glue.map((request) => ({ path: pathOf(request.url), mode: request.secFetchMode, dest: request.secFetchDest, type: request.type })),
    preload_links: snapshot.preloads,
    wasm_requests: wasm.map((request) => ({
      path: pathOf(request.url),
      mime: request.mimeType,
      encoding: request.encoding || "identity",
      mode: request.secFetchMode,
      dest: request.secFetchDest,
      type: request.type,
    })),
    wasm_streaming: streaming ? streaming.ok === true : snapshot.state.wasm.length ? false : null,
    wasm_calls: snapshot.state.wasm.map(({ api, on, ok, contentType, error, at, doneAt }) => ({
      api, on, ok, contentType: contentType ?? null, error: error ?? null,
      at: Math.round(at), done: doneAt === null ? null : Math.round(doneAt),
    })),
  };
}

function topFiles(requests, count) {
  return [...requests]
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, count)
    .map((request) => ({
      path: pathOf(request.url),
      type: kindOf(request),
      bytes: request.bytes,
      bytes_decoded: request.decodedBytes,
      encoding: request.encoding || "identity",
      status: request.status,
      open: request.open,
    }));
}

function median(values) {
  const known = values.filter((value) => value !== null && value !== undefined).sort((a, b) => a - b);
  if (!known.length) return null;
  const middle = Math.floor(known.length / 2);
  return known.length % 2 ? known[middle] : Math.round((known[middle - 1] + known[middle]) / 2);
}

const pathOf = (url) => {
  try {
    const parsed = new URL(url);
    return parsed.pathname + parsed.search;
  } catch {
    return url;
  }
};
const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
const sortedObject = (object) => Object.fromEntries(Object.entries(object).sort(([, a], [, b]) => b - a));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const settings = options();
  const visits = settings.warmup + 2 * settings.runs;
  // A backstop over every bounded wait below: nothing keeps this process alive for ever.
  const watchdogMs = 60_000 + visits * (settings.clickTimeoutMs + 30_000);
  setTimeout(() => {
    console.error(`first-visit: error: gave up after ${Math.round(watchdogMs / 1000)} s in all`);
    process.exit(1);
  }, watchdogMs).unref();

  await checkReachable(settings.baseURL);
  const { username, accountId, storageState } = await setUp(settings.baseURL);
  console.log(`server ${settings.baseURL}; user ${username}; account page /accounts/${accountId}`);
  console.log(
    "times are ms since the navigation started; first working click = a click on Deposit (empty amount, every " +
      `${settings.intervalMs} ms) whose validation message appeared, i.e. the hydrated form handled it`,
  );

  const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
  let browser;
  try {
    browser = await chromium.launch({
      executablePath,
      timeout: 30_000,
      // As in playwright.config.ts.
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
      ],
    });
  } catch (error) {
    throw new Failure(`cannot start Chromium at ${executablePath} (set CHROMIUM_PATH): ${error.message.split("\n")[0]}`, 1);
  }

  try {
    const common = { baseURL: settings.baseURL, accountId, storageState, clickTimeoutMs: settings.clickTimeoutMs, intervalMs: settings.intervalMs, settleMs: settings.settleMs };
    for (let i = 0; i < settings.warmup; i += 1) {
      const outcome = await visit(browser, { ...common, throttled: false });
      console.log(`warm-up ${i + 1}/${settings.warmup}: first working click ${Math.round(outcome.click.msReaction)} ms (not counted)`);
    }

    // Alternating, and swapping which goes first each round, so that neither condition always
    // follows the other (or gets a machine that has just warmed up or is busy elsewhere).
    const outcomes = [];
    for (let round = 0; round < settings.runs; round += 1) {
      for (const throttled of round % 2 ? [true, false] : [false, true]) {
        const outcome = await visit(browser, { ...common, throttled });
        const run = summarizeVisit(outcome);
        outcomes.push({ outcome, run });
        console.log(
          `run ${round + 1}/${settings.runs} ${run.condition.padEnd(11)}: first working click ${run.ms_first_click} ms` +
            ` (click at ${run.ms_click_event ?? "?"} ms; ${run.clicks_before_working} earlier clicks did nothing, ${run.native_submits_blocked} would have reloaded the page)` +
            `, hydrated ${run.ms_hydrated ?? "?"} ms, wasm ready ${run.ms_wasm_ready ?? "?"} ms, TTFB ${run.ms_ttfb ?? "?"} ms` +
            `, ${run.bytes} B in ${run.requests} requests${run.settled ? "" : " (network not quiet after 5 s)"}`,
        );
        for (const problem of run.console_problems) console.log(`    console ${problem}`);
      }
    }

    const runs = outcomes.map(({ run }) => run);
    const byCondition = (condition, key) => median(runs.filter((run) => run.condition === condition).map((run) => run[key]));
    // The bytes of the median visit by bytes (an actual visit, so that its parts add up to it);
    // they differ between visits only by what polls or the live stream happened to bring.
    const byBytes = [...outcomes].sort((a, b) => a.run.bytes - b.run.bytes);
    const typical = byBytes[Math.floor((byBytes.length - 1) / 2)];
    const files = topFiles(typical.outcome.requests, 10);
    const loading = loadingReport(typical.outcome);

    const result = {
      base_url: settings.baseURL,
      account_path: `/accounts/${accountId}`,
      runs_per_condition: settings.runs,
      warmup: settings.warmup,
      click_interval_ms: settings.intervalMs,
      throttle: { download_bytes_per_s: THROTTLED.downloadThroughput, upload_bytes_per_s: THROTTLED.uploadThroughput, latency_ms: THROTTLED.latency },
      bytes_first_visit: typical.run.bytes,
      bytes_first_visit_decoded: typical.run.bytes_decoded,
      requests_first_visit: typical.run.requests,
      bytes_by_type: typical.run.bytes_by_type,
      top_files: files,
      ms_first_click_throttled_median: byCondition("throttled", "ms_first_click"),
      ms_first_click_unthrottled_median: byCondition("unthrottled", "ms_first_click"),
      ms_hydrated_throttled_median: byCondition("throttled", "ms_hydrated"),
      ms_hydrated_unthrottled_median: byCondition("unthrottled", "ms_hydrated"),
      ms_wasm_ready_throttled_median: byCondition("throttled", "ms_wasm_ready"),
      ms_wasm_ready_unthrottled_median: byCondition("unthrottled", "ms_wasm_ready"),
      js_glue_module: loading.js_glue_module,
      wasm_streaming: loading.wasm_streaming,
      loading,
      runs,
    };

    console.log("");
    console.log(`First visit of an account page (empty cache, new context), median visit by bytes (${typical.run.condition}):`);
    console.log(`  ${result.bytes_first_visit} B (${kib(result.bytes_first_visit)}) on the wire, ${kib(result.bytes_first_visit_decoded)} decoded, ${result.requests_first_visit} requests`);
    console.log(`  by type: ${Object.entries(result.bytes_by_type).map(([type, bytes]) => `${type} ${kib(bytes)}`).join(", ")}`);
    console.log("  largest:");
    for (const file of files) {
      console.log(`    ${kib(file.bytes).padStart(11)}  ${file.encoding.padEnd(8)} ${file.type.padEnd(11)} ${file.path}${file.open ? " (still open)" : ""}`);
    }
    console.log(`First working click, median of ${settings.runs}: unthrottled ${result.ms_first_click_unthrottled_median} ms, throttled (10 Mbit/s, 40 ms) ${result.ms_first_click_throttled_median} ms`);
    console.log(`Hydrated, median: unthrottled ${result.ms_hydrated_unthrottled_median} ms, throttled ${result.ms_hydrated_throttled_median} ms`);
    console.log(
      `JS glue: bootstrap <script type=${loading.bootstrap_script_types.join("/") || "?"}> imports it; ` +
        loading.js_glue_requests.map((request) => `${request.path} fetched mode=${request.mode || "?"} dest=${request.dest || "?"}`).join("; ") +
        ` → loaded as a module: ${loading.js_glue_module ?? "unknown"}; modulepreload link: ${loading.preload_links.some((link) => link.rel === "modulepreload")}`,
    );
    console.log(
      `WASM: ${loading.wasm_requests.length} request(s) ` +
        loading.wasm_requests.map((request) => `${request.path} (${request.mime || "?"}, ${request.encoding}, ${request.type})`).join("; ") +
        `; preload as=fetch link: ${loading.preload_links.some((link) => link.rel === "preload" && link.as === "fetch")}` +
        `; compiled by ${loading.wasm_calls.map((call) => `${call.api}(${call.on})→${call.ok ? "ok" : `failed ${call.error ?? ""}`}`).join(", ") || "nothing seen"}` +
        ` → streaming: ${loading.wasm_streaming ?? "unknown"}`,
    );
    console.log(`RESULT ${JSON.stringify(result)}`);
  } finally {
    await withTimeout(browser.close(), 10_000, "closing the browser").catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`first-visit: error: ${error.message}`);
    process.exit(error instanceof Failure ? error.exitCode : 1);
  },
);
