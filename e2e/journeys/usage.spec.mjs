// Usage-based billing (issue 16) as an admin and a customer live it: the admin adds a metered
// component to a new plan in the console, the pricing page shows it in words, a customer subscribes at
// the simulator's Checkout, a service reports usage (platform and with the customer's own key)
// through the internal API, and the customer reads /account/usage (usage against included, the
// estimate, the daily chart, BYOK apart), sets a spend alert and a cap, and downloads the CSV.
// Screenshots at laptop and phone sizes.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test, expect } from '../support/fixtures.mjs';
import { signIn, signUp, choosePlan, pay, subscriptionPanel } from '../support/actions.mjs';

const CARD = '4242 4242 4242 4242';
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const PRICE_LINE = '10,000 tokens included, then $2 per 1,000 tokens';

test.describe.configure({ mode: 'serial' });

/** The demo's database file (in the directory the worker's server runs in). */
const database = (tollgate) => path.join(tollgate.dir, 'tollgate-demo.db');

/** `tollgate service-token create` run as an operator would, next to the demo's .env. */
function serviceToken(tollgate, name) {
  const binary = process.env.TOLLGATE_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.resolve(import.meta.dirname, '../../target'), 'debug', 'tollgate');
  const out = spawnSync(binary, ['service-token', 'create', '--name', name, '--scope', 'usage:write'], {
    cwd: tollgate.dir,
    env: { PATH: process.env.PATH, DATABASE_URL: `sqlite://${database(tollgate)}` },
    encoding: 'utf8',
  });
  if (out.status !== 0) throw new Error(`service-token create failed (${out.status}): ${out.stderr}`);
  return out.stdout.trim();
}

/** The customer's user id, as a service would know it (it is the id Tollgate's API hands out). */
function userId(tollgate, email) {
  const out = spawnSync('sqlite3', [database(tollgate), `SELECT id FROM users WHERE email = '${email}'`], { encoding: 'utf8' });
  const id = Number(out.stdout.trim());
  if (!id) throw new Error(`no user ${email}: ${out.stderr}`);
  return id;
}

async function reportUsage(tollgate, token, records) {
  const response = await fetch(`${tollgate.base}/internal/v1/usage`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ records }),
  });
  const body = await response.json();
  expect(response.status, JSON.stringify(body)).toBe(200);
  return body;
}

let customer;

test('an admin adds metered tokens to a plan and the pricing page says what they cost', async ({ page, step, tollgate }) => {
  test.setTimeout(120_000);
  await signIn(page, step, tollgate, tollgate.admin);
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('admin console');
  await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: 'Plans' }).click();
  await step('plans');
  // A plan of its own: the other journeys on this server change plans between Starter and Pro,
  // which Tollgate refuses for plans billed by usage.
  await page.getByRole('link', { name: /new plan/i }).click();
  await step('new plan form');
  await page.getByLabel('Name', { exact: true }).fill('Agents');
  await page.getByLabel('Slug').fill(`agents-${test.info().workerIndex}-${Date.now().toString(36)}`);
  await page.getByLabel(/^(Monthly )?price/i).first().fill('2900');
  await page.getByLabel('Currency').fill('usd');
  await page.getByLabel('Trial days').fill('0');
  await page.getByLabel('Description').fill('Agents billed by the tokens they use.');
  await page.getByRole('button', { name: 'Save plan' }).click();
  await expect(page.getByRole('status')).toContainText('Agents');
  await step('plan Agents created');
  await page.getByRole('link', { name: 'Metering for Agents' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toContainText('Agents');
  await expect(page.getByText('No metered components yet')).toBeVisible();
  await step('metering: no components yet');
  await page.getByLabel('Feature key').fill('tokens');
  await page.getByLabel('Unit name (plural)').fill('tokens');
  await page.getByLabel('Included per period').fill('10000');
  await page.getByLabel(/Price per package/).fill('2.00');
  await page.getByLabel('Package size').fill('1000');
  await page.getByLabel(/Quota per period/).fill('1000000');
  await step('metering form filled');
  await page.getByRole('button', { name: 'Save component' }).click();
  const row = page.getByRole('region', { name: 'Metered components' }).locator('tbody tr', { hasText: 'tokens' });
  await expect(row).toBeVisible();
  await expect(row).toContainText(/\$2/);
  await step('metering: tokens saved');
  await page.setViewportSize(PHONE);
  await step('metering on a phone');
  await page.setViewportSize(LAPTOP);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await step('signed out');

  await page.goto(`${tollgate.base}/pricing`);
  await expect(page.getByText(PRICE_LINE).first()).toBeVisible();
  await step('pricing with usage on a laptop');
  await page.setViewportSize(PHONE);
  await step('pricing with usage on a phone');
  await page.setViewportSize(LAPTOP);

  // A customer subscribes to Agents at the simulator's Checkout.
  customer = await signUp(page, step, tollgate);
  await expect(page.getByText('Your account is ready')).toBeVisible();
  await page.goto(`${tollgate.base}/account/usage`);
  await expect(page.getByText('You have no subscription yet')).toBeVisible();
  await step('usage page before subscribing');
  await choosePlan(page, step, tollgate, 'Agents');
  await pay(page, step, CARD);
  await page.waitForURL(/\/billing\/success|\/account/);
  await step('checkout success');
  await expect(async () => {
    const panel = await subscriptionPanel(page, tollgate);
    await expect(panel.getByText('Agents', { exact: true }).first()).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 10_000 });
  await step('account with Agents');
  // Checkout carried the metered price: the subscription has two items.
  const sub = await tollgate.subscriptionOf(customer);
  expect(sub.items.data.length).toBeGreaterThanOrEqual(2);
});

test('reported usage shows on the usage page; the customer sets an alert and a cap and exports CSV', async ({ page, step, tollgate }) => {
  test.setTimeout(120_000);
  test.skip(!customer, 'needs the subscribed customer of the previous journey');
  const token = serviceToken(tollgate, `agents-${Date.now()}`);
  const user_id = userId(tollgate, customer);
  const result = await reportUsage(tollgate, token, [
    { user_id, feature: 'tokens', quantity: 12_000, idempotency_key: 'run-1' },
    { user_id, feature: 'tokens', quantity: 6_500, idempotency_key: 'run-2' },
    { user_id, feature: 'tokens', quantity: 4_000, idempotency_key: 'run-byok-1', byok: true },
  ]);
  expect(result.accepted).toBe(3);
  // A retried call counts once.
  const retried = await reportUsage(tollgate, token, [
    { user_id, feature: 'tokens', quantity: 12_000, idempotency_key: 'run-1' },
  ]);
  expect(retried.duplicates).toBe(1);

  await signIn(page, step, tollgate, customer);
  await step('signed in');
  await page.getByRole('link', { name: 'Usage' }).first().click();
  await expect(page.getByRole('heading', { level: 1, name: 'Usage' })).toBeVisible();
  const feature = page.locator('.usage-feature').first();
  await expect(feature).toContainText('18,500');
  await expect(feature).toContainText('10,000');
  // 8,500 above the included 10,000 at $2 per 1,000 = $17.00.
  await expect(feature.locator('.usage-overage')).toContainText('$17');
  await expect(page.locator('.usage-chart')).toBeVisible();
  const byok = page.getByRole('region', { name: /own key/i }).or(page.locator('section', { has: page.getByRole('heading', { name: /own key/i }) }));
  await expect(byok).toContainText('4,000');
  await expect(page.locator('.usage-stats')).toContainText(/\$\d/);
  await step('usage page on a laptop');
  await page.setViewportSize(PHONE);
  await step('usage page on a phone');
  await page.setViewportSize(LAPTOP);

  // Spend alert and cap.
  await page.getByRole('textbox', { name: /Spend alert/ }).fill('50');
  await page.getByRole('textbox', { name: /Hard cap/ }).fill('120');
  await page.getByRole('button', { name: 'Save spend settings' }).click();
  await expect(page.locator('.usage-effective-cap')).toContainText('$120');
  await expect(page.getByRole('textbox', { name: /Spend alert/ })).toHaveValue(/^50(\.00)?$/);
  await expect(page.locator('.usage-stats')).toContainText('$50');
  await step('alert and cap saved');
  await page.setViewportSize(PHONE);
  await step('alert and cap on a phone');
  await page.setViewportSize(LAPTOP);

  // A cap below zero is refused with a message.
  await page.getByRole('textbox', { name: /Hard cap/ }).fill('-5');
  await page.getByRole('button', { name: 'Save spend settings' }).click();
  await expect(page.getByRole('alert').first()).toBeVisible();
  await step('invalid cap refused');

  // CSV download.
  await page.goto(`${tollgate.base}/account/usage`);
  await step('usage page again');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: /Download this period's usage/ }).click(),
  ]);
  const csv = await (await download.createReadStream()).toArray().then((chunks) => Buffer.concat(chunks).toString('utf8'));
  expect(csv.split('\n')[0]).toMatch(/feature/i);
  expect(csv).toContain('run-1');
  expect(csv).toContain('run-byok-1');
  expect(csv.trim().split('\n')).toHaveLength(4);
});
