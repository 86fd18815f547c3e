import { test, expect, createAccount, gotoHydrated, signUp, watchConsole, screenshot } from "./fixtures";
import type { Locator } from "@playwright/test";

/** The steps a transfer's timeline marks as done, in order. */
async function doneSteps(transfer: Locator): Promise<string[]> {
  return transfer.locator(".step.done").evaluateAll((steps) => steps.map((step) => step.getAttribute("data-step") ?? ""));
}

/**
 * Two customers in two browsers: one sends, both see the transfer go through its steps, and a
 * transfer to a closed account comes back.
 */
test("a transfer between two customers' accounts, seen from both sides; a refused one is refunded", async ({
  page,
  browser,
}) => {
  test.slow(); // two browsers, three accounts, two transfers taken through their steps
  const recipientContext = await browser.newContext();
  const recipient = await signUp(recipientContext, "recipient");
  const recipientPage = await recipientContext.newPage();
  const recipientErrors = await watchConsole(recipientPage);
  const target = await createAccount(recipientPage, "5");
  const closing = await createAccount(recipientPage, "0");
  const closeAccount = recipientPage.getByTestId("close-account");
  await closeAccount.getByRole("button", { name: "Close account" }).click();
  await closeAccount.getByRole("button", { name: "Yes, close it" }).click();
  await expect(recipientPage.getByTestId("account-status")).toContainText("Closed");

  const source = await createAccount(page, "100");
  const form = page.getByTestId("transfer-form");
  const fill = async (to: string, amount: string) => {
    await form.getByLabel("Transfer to account").fill(to);
    await form.getByLabel("Transfer amount").fill(amount);
    await form.getByRole("button", { name: "Transfer" }).click();
  };
  // A typed account number: the form names its owner, and sends only once confirmed.
  const send = async (to: string, amount: string) => {
    await fill(to, amount);
    const confirm = form.getByTestId("transfer-confirm");
    await expect(confirm.getByTestId("recipient-owner")).toHaveText(recipient);
    await confirm.getByRole("button", { name: "Confirm transfer" }).click();
  };

  await send(target, "30.25");
  const sent = page.getByTestId("transfer").first();
  await expect(sent).toHaveAttribute("data-state", "completed", { timeout: 15_000 });
  await expect(sent).toContainText("Sent to");
  expect(await doneSteps(sent)).toEqual(["requested", "debited", "credited", "completed"]);
  await expect(page.getByTestId("transaction-count")).toHaveText("2");
  await expect(page.getByTestId("balance")).toHaveText("$69.75");

  // The recipient, in their own browser, sees it arrive.
  await gotoHydrated(recipientPage, `/accounts/${target}`);
  const received = recipientPage.getByTestId("transfer").first();
  await expect(received).toHaveAttribute("data-state", "completed");
  await expect(received).toContainText("Received from");
  await expect(recipientPage.getByTestId("balance")).toHaveText("$35.25");
  await expect(recipientPage.getByTestId("audit-trail")).toContainText("TransferCredited");

  // To a closed account: debited, refused at the credit, refunded.
  await send(closing, "10");
  const refunded = page.locator('[data-testid="transfer"][data-state="failed"]').first();
  await expect(refunded).toBeVisible({ timeout: 15_000 });
  await expect(refunded.getByTestId("transfer-state")).toHaveText("refunded");
  expect(await doneSteps(refunded)).toEqual(["requested", "debited", "refunded", "failed"]);
  await expect(refunded.getByTestId("transfer-reason")).toContainText("frozen or closed");
  // Debited, then refunded: two more events, and the balance where it was.
  await expect(page.getByTestId("transaction-count")).toHaveText("4");
  await expect(page.getByTestId("balance")).toHaveText("$69.75");
  await expect(page.getByTestId("audit-trail")).toContainText("TransferRefunded");
  await screenshot(page, "transfers");

  // Checked in the browser before any request.
  await fill("not-an-account", "1");
  await expect(page.getByTestId("transfer-error")).toHaveText("Enter the recipient's account number (a UUID)");
  await fill(source, "1");
  await expect(page.getByTestId("transfer-error")).toHaveText("Money cannot move from an account to itself");

  expect(recipientErrors, "console errors of the recipient's page").toEqual([]);
  await recipientContext.close();
});

test("a transfer to one of your own accounts is chosen from a list; a typed one can be cancelled", async ({ page }) => {
  const savings = await createAccount(page, "0");
  await createAccount(page, "50");
  const form = page.getByTestId("transfer-form");
  // A typed number shows whose account it is, and cancelling sends nothing.
  await form.getByLabel("Transfer to account").fill(savings);
  await form.getByLabel("Transfer amount").fill("5");
  await form.getByRole("button", { name: "Transfer" }).click();
  await form.getByTestId("transfer-confirm").getByRole("button", { name: "Cancel" }).click();
  await expect(form.getByTestId("transfer-confirm")).toHaveCount(0);
  // Chosen from the list of the sender's own accounts, it goes at once.
  await form.getByLabel("Transfer to", { exact: true }).selectOption({ value: savings });
  await expect(form.getByLabel("Transfer to account")).toHaveCount(0);
  await form.getByLabel("Transfer amount").fill("12.50");
  await form.getByRole("button", { name: "Transfer" }).click();
  await expect(page.getByTestId("transfer").first()).toHaveAttribute("data-state", "completed", { timeout: 15_000 });
  await expect(page.getByTestId("balance")).toHaveText("$37.50");
});
