import { defineConfig, devices } from "@playwright/test";

// scripts/test starts the server (E2E_BASE_URL) and waits for /health before this suite runs;
// global-setup waits for it as well, for a server started by hand or by `cargo leptos end-to-end`.
const baseURL = process.env.E2E_BASE_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  testDir: "./tests",
  globalSetup: "./global-setup.ts",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  // Two cores: one browser at a time keeps timings honest.
  workers: 1,
  retries: 0,
  // A test.only left in would silently skip the rest: refused where the suite gates changes.
  forbidOnly: !!process.env.CI,
  // The HTML report (traces, screenshots) to read a failure with: scripts/test keeps it only
  // when a test failed, and says where.
  reporter: [["list"], ["html", { open: "never", outputFolder: "playwright-report" }]],
  outputDir: "test-results",
  use: {
    baseURL,
    // The pages write money and times as the viewer's browser does: the suite is one viewer,
    // pinned (locale.spec.ts is another).
    locale: "en-US",
    timezoneId: "UTC",
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    launchOptions: {
      // Debian's chromium: nothing is downloaded at test time.
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
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
    },
  },
  projects: [
    { name: "desktop", use: { viewport: { width: 1280, height: 800 } } },
    // A phone: the 700 px layout (style/main.css), touch, a narrow screen.
    {
      name: "mobile",
      use: { viewport: devices["Pixel 7"].viewport, isMobile: true, hasTouch: true, deviceScaleFactor: 2 },
      testMatch: ["accessibility.spec.ts", "account.spec.ts", "accounts.spec.ts", "statement.spec.ts"],
    },
  ],
});
