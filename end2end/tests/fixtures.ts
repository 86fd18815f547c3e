import { test as base, expect, type Page } from "@playwright/test";

/**
 * A page that fails its test on any console error or uncaught exception: a hydration mismatch
 * or a panic in the WASM shows up there and nowhere else.
 *
 * Chromium's own "Failed to load resource" line is not an error of the app: it is logged for
 * every 4xx answer, and the contract answers a refused withdrawal with 422 on purpose.
 */
export const test = base.extend<{ page: Page }>({
  page: async ({ page }, use) => {
    const errors = watchConsole(page);
    await use(page);
    expect(errors, "console errors").toEqual([]);
  },
});

export { expect };

/** Collects the page's console errors and uncaught exceptions. */
export function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" && !text.startsWith("Failed to load resource")) errors.push(text);
  });
  page.on("pageerror", (error) => errors.push(String(error)));
  return errors;
}

/** The app marks <body data-hydrated> once the WASM has taken over the server-rendered page. */
export async function gotoHydrated(page: Page, path: string) {
  await page.goto(path);
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
}

/** Opens an account through the UI, waits for its page and returns its id. */
export async function createAccount(page: Page, owner: string, initialBalance: string): Promise<string> {
  await gotoHydrated(page, "/");
  await page.getByLabel("Owner", { exact: true }).fill(owner);
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
  await page.screenshot({ path: `test-results/screenshots/${name}.png`, fullPage: true });
}
