import { test as base, expect, type BrowserContext, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";

/** The password of every user the tests sign up. */
export const PASSWORD = "correct horse battery staple";

/**
 * Every test runs as a customer of its own, signed up before the page opens (`user` is their
 * name); `request` sends the API requests of another client of theirs (their session cookie).
 *
 * The page fails its test on any console error or uncaught exception: a hydration mismatch,
 * a panic in the WASM or a script the Content-Security-Policy blocked shows up there and nowhere
 * else. Chromium's own "Failed to load resource" line is not an error of the app: it is logged
 * for every 4xx answer, and the contract answers a refused withdrawal with 422 on purpose.
 */
export const test = base.extend<{ user: string }>({
  user: async ({ context }, use) => {
    await use(await signUp(context, "user"));
  },
  page: async ({ page, user: _signedUp }, use) => {
    const errors = await watchConsole(page);
    await use(page);
    expect(errors, "console errors").toEqual([]);
  },
  request: async ({ context, user: _signedUp }, use) => {
    await use(context.request);
  },
});

export { expect };

/** Signs a new customer up in this browser context (its cookie jar); returns their name. */
export async function signUp(context: BrowserContext, prefix: string): Promise<string> {
  const username = uniqueOwner(prefix);
  const response = await context.request.post("/api/auth/sign-up", { data: { username, password: PASSWORD } });
  expect(response.status(), await response.text()).toBe(200);
  return username;
}

/** Signs `username` in, in this browser context. */
export async function signIn(context: BrowserContext, username: string, password = PASSWORD) {
  const response = await context.request.post("/api/auth/sign-in", { data: { username, password } });
  expect(response.status(), await response.text()).toBe(200);
}

/** Signs the operator `scripts/test` made in, in this browser context. */
export async function signInAsOperator(context: BrowserContext) {
  const operator = process.env.E2E_OPERATOR;
  const password = process.env.E2E_OPERATOR_PASSWORD;
  if (!operator || !password) throw new Error("E2E_OPERATOR and E2E_OPERATOR_PASSWORD are set by scripts/test");
  await signIn(context, operator, password);
}

/**
 * Collects the page's console errors and uncaught exceptions, each with the address it was
 * logged at. A panic's stack is kept whole (V8 keeps 10 frames by default, five of them the
 * panic's own): the release bundle is built byte for byte alike, so its frames can be named.
 */
export async function watchConsole(page: Page): Promise<string[]> {
  const errors: string[] = [];
  await page.addInitScript(() => {
    Error.stackTraceLimit = 100;
  });
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" && !text.startsWith("Failed to load resource")) {
      errors.push(`${text}\n(at ${page.url()})`);
    }
  });
  page.on("pageerror", (error) => errors.push(`${String(error)}\n(at ${page.url()})`));
  return errors;
}

/** The app marks <body data-hydrated> once the WASM has taken over the server-rendered page. */
export async function gotoHydrated(page: Page, path: string) {
  await page.goto(path);
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
}

/** Opens an account of the signed-in user's through the UI, waits for its page and returns its id. */
export async function createAccount(page: Page, initialBalance: string): Promise<string> {
  await gotoHydrated(page, "/");
  const owner = (await page.getByTestId("new-account-owner").textContent()) ?? "";
  expect(owner).not.toBe("");
  await page.getByLabel("Initial balance").fill(initialBalance);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page).toHaveURL(/\/accounts\/[0-9a-f-]{36}/);
  await expect(page.getByTestId("account")).toContainText(owner);
  return accountIdOf(page);
}

export function accountIdOf(page: Page): string {
  return page.url().split("/accounts/")[1].split("?")[0];
}

/** Deposits or withdraws through the account page's form. */
export async function move(page: Page, kind: "Deposit" | "Withdraw", amount: string) {
  const form = page.getByTestId(`${kind.toLowerCase()}-form`);
  await form.getByLabel(`${kind} amount`).fill(amount);
  await form.getByRole("button", { name: kind }).click();
}

export function uniqueOwner(prefix: string) {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;
}

/** A full-page screenshot kept as a test artifact in test-results/screenshots/. */
export async function screenshot(page: Page, name: string) {
  const project = test.info().project.name;
  const suffix = project === "desktop" ? "" : `-${project}`;
  await page.screenshot({ path: `test-results/screenshots/${name}${suffix}.png`, fullPage: true });
}

/**
 * The page as axe-core judges it against WCAG 2.1 A and AA: no violation of serious or critical
 * impact (each is listed with the elements it concerns when there is one).
 */
export async function expectAccessible(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const serious = results.violations
    .filter((violation) => violation.impact === "serious" || violation.impact === "critical")
    .map((violation) => ({
      rule: violation.id,
      impact: violation.impact,
      help: violation.help,
      where: violation.nodes.slice(0, 5).map((node) => node.target.join(" ")),
    }));
  expect(serious, `accessibility of ${what}`).toEqual([]);
}
