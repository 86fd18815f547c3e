import { test, expect, createAccount, move, screenshot } from "./fixtures";
import { readFile } from "node:fs/promises";

test("a statement shows the month's movements and downloads as a CSV that adds up", async ({ page }) => {
  // Given an account with a deposit and a withdrawal,
  const accountId = await createAccount(page, "100");
  await move(page, "Deposit", "50.25");
  await expect(page.getByTestId("balance")).toHaveText("$150.25");
  await move(page, "Withdraw", "20");
  await expect(page.getByTestId("balance")).toHaveText("$130.25");

  // when the owner asks for the statement of the month the form offers,
  const form = page.getByTestId("statement-form");
  await form.getByRole("button", { name: "Show statement" }).click();
  await expect(page).toHaveURL(new RegExp(`/accounts/${accountId}/statement\\?from=`));

  // then it opens at zero, lists the three movements and closes at the balance;
  const statement = page.getByTestId("statement");
  await expect(statement.getByTestId("opening-balance")).toHaveText("$0.00");
  await expect(statement.getByTestId("closing-balance")).toHaveText("$130.25");
  await expect(statement.locator("tbody tr")).toHaveCount(5);
  await expect(statement.getByRole("cell", { name: "withdrawal" })).toBeVisible();
  await screenshot(page, "statement");

  // and its CSV says the same, each balance following from the one before.
  const download = page.waitForEvent("download");
  await statement.getByRole("link", { name: "Download CSV" }).click();
  const file = await (await download).path();
  const lines = (await readFile(file, "utf8")).trim().split("\r\n");
  expect(lines[0]).toBe("date,description,version,amount,balance");
  const rows = lines.slice(1).map((line) => line.split(","));
  let balance = Number(rows[0][4]);
  for (const row of rows.slice(1, -1)) {
    balance = Math.round((balance + Number(row[3])) * 100) / 100;
    expect(Number(row[4])).toBe(balance);
  }
  expect(rows.at(-1)?.[1]).toBe("closing balance");
  expect(Number(rows.at(-1)?.[4])).toBe(130.25);
});

test("a period the server refuses is said on the statement page", async ({ page }) => {
  const accountId = await createAccount(page, "1");
  await page.goto(`/accounts/${accountId}/statement?from=2026-02-01&to=2026-01-01`);
  await expect(page.getByTestId("statement-error")).toContainText("before its first");
});
