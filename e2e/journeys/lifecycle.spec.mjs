// The subscription lifecycle of issue 15, as a customer and an admin live it: a plan change
// inside the product with Stripe's preview, the invoice list, a failed renewal (past-due banner,
// paid on the hosted invoice page), a promotion code made in the console and typed at Checkout,
// and a cancellation with a reason counted in the console. Screenshots at laptop and phone sizes.
import { test, expect } from '../support/fixtures.mjs';
import { signUp, signIn, choosePlan, pay, subscriptionPanel } from '../support/actions.mjs';

const CARD = '4242 4242 4242 4242';
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** Signs up and subscribes to `plan` with a good card; returns the customer's email. */
async function subscribed(page, step, tollgate, plan) {
  const email = await signUp(page, step, tollgate);
  await expect(page.getByText('Your account is ready')).toBeVisible();
  await choosePlan(page, step, tollgate, plan);
  await pay(page, step, CARD);
  await page.waitForURL(/\/billing\/success|\/account/);
  await step('checkout success');
  return email;
}

/** The account's subscription panel shows `plan` once Stripe's webhook has arrived. */
async function accountShows(page, tollgate, text) {
  await expect(async () => {
    const panel = await subscriptionPanel(page, tollgate);
    await expect(panel.getByText(text, { exact: true }).first()).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 10_000 });
  return subscriptionPanel(page, tollgate);
}

test('upgrade from Starter to Pro with a preview of the price, then the invoices', async ({ page, step, tollgate }) => {
  test.setTimeout(120_000);
  await subscribed(page, step, tollgate, 'Starter');
  let panel = await accountShows(page, tollgate, 'Starter');
  await step('account with Starter');

  // The account page offers the other plans; Pro monthly is previewed before anything changes.
  const change = page.locator('section.change-plan');
  await expect(change.getByRole('heading', { name: 'Change plan' })).toBeVisible();
  const pro = change.locator('li', { hasText: 'Pro' }).filter({ hasText: /month/i }).first();
  await pro.getByRole('button', { name: 'Preview' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Review your plan change' })).toBeVisible();
  await expect(page.locator('.change-effective')).toHaveText('Now');
  await expect(page.locator('.change-due-now')).toContainText(/\$\d/);
  await expect(page.locator('.change-next')).toContainText(/\$\d.* on /);
  const due = (await page.locator('.change-due-now').textContent()).match(/\$[\d.,]+/)[0];
  await step('preview: due now and the next invoice');
  await page.setViewportSize(PHONE);
  await step('preview on a phone');
  await page.setViewportSize(LAPTOP);

  await page.getByRole('button', { name: `Confirm and pay ${due}` }).click();
  await expect(page).toHaveURL(`${tollgate.base}/account`);
  await step('account right after the confirmation');
  panel = await accountShows(page, tollgate, 'Pro');
  await expect(panel.getByText('active', { exact: true })).toBeVisible();
  await step('account shows Pro');

  // The invoices: the first one and the proration, with their status and links.
  await page.getByRole('link', { name: 'Invoices and receipts' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Invoices' })).toBeVisible();
  const rows = page.getByRole('region', { name: 'Invoices' }).locator('tbody tr');
  await expect(async () => {
    await page.reload();
    await expect(rows).toHaveCount(2, { timeout: 500 });
  }).toPass({ timeout: 10_000 });
  for (const row of await rows.all()) {
    await expect(row.locator('.badge')).toHaveText('paid');
    await expect(row.getByRole('link', { name: 'View' })).toHaveAttribute('href', /^http/);
    await expect(row.getByRole('link', { name: 'PDF' })).toHaveAttribute('href', /^http/);
  }
  await step('invoices on a laptop');
  await page.setViewportSize(PHONE);
  await step('invoices on a phone');
  await page.goto(`${tollgate.base}/account`);
  await step('account with Pro on a phone');
});

test('a failed renewal shows the past-due banner until the invoice is paid', async ({ page, step, tollgate }) => {
  test.setTimeout(120_000);
  const email = await subscribed(page, step, tollgate, 'Starter');
  await accountShows(page, tollgate, 'Starter');
  await step('account with Starter');

  // Stripe renews the subscription and the card is declined.
  const sub = await tollgate.subscriptionOf(email);
  await tollgate.simControl(`/_sim/subscriptions/${sub.id}/renew?outcome=failed`);
  const banner = page.locator('.banner-past-due');
  await expect(async () => {
    await page.reload();
    await expect(banner).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 10_000 });
  await expect(banner).toContainText('Your last payment failed');
  await step('account with the past-due banner');
  await page.goto(`${tollgate.base}/account/keys`);
  await expect(banner).toBeVisible();
  await step('another page shows the banner too');
  await page.goto(`${tollgate.base}/account/invoices`);
  const open = page.getByRole('region', { name: 'Invoices' }).locator('tbody tr', { has: page.locator('.badge', { hasText: 'open' }) });
  await expect(open).toHaveCount(1);
  await expect(open.getByRole('link', { name: 'Pay' })).toBeVisible();
  await step('invoices with the open one');
  await page.setViewportSize(PHONE);
  await page.goto(`${tollgate.base}/account`);
  await expect(banner).toBeVisible();
  await step('past-due banner on a phone');
  await page.setViewportSize(LAPTOP);

  // Paying the open invoice on Stripe's hosted page ends it.
  await banner.getByRole('link', { name: 'Pay invoice' }).click();
  await expect(page).toHaveURL(new RegExp(`^${tollgate.sim}/i/`));
  await pay(page, step, CARD);
  await expect(page.getByText(/paid/i).first()).toBeVisible();
  await step('hosted invoice page after paying');
  await expect(async () => {
    await page.goto(`${tollgate.base}/account`);
    await expect(banner).toHaveCount(0, { timeout: 500 });
  }).toPass({ timeout: 10_000 });
  const panel = page.locator('section', { has: page.getByRole('heading', { name: 'Subscription' }) });
  await expect(panel.getByText('active', { exact: true })).toBeVisible();
  await step('account after paying: no banner');
});

test('an admin makes a promotion code and a customer redeems it at Checkout', async ({ page, step, tollgate }) => {
  test.setTimeout(120_000);
  const code = `SPRING${Date.now().toString(36).slice(-5).toUpperCase()}`;
  await signIn(page, step, tollgate, tollgate.admin);
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('admin console');
  await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: 'Coupons' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Coupons' })).toBeVisible();
  await step('coupons');
  await page.getByRole('link', { name: 'New coupon' }).click();
  await page.getByLabel('Name').fill('Spring offer');
  await page.getByLabel('Percent off').fill('20');
  await page.getByLabel('Duration').selectOption('forever');
  await step('new coupon form');
  await page.getByRole('button', { name: 'Create coupon' }).click();
  await expect(page.getByRole('cell', { name: /Spring offer/ })).toBeVisible();
  await step('coupon created');
  await page.getByRole('link', { name: 'New promotion code' }).click();
  const coupon = page.getByLabel('Coupon');
  await coupon.selectOption(await coupon.locator('option', { hasText: 'Spring offer' }).getAttribute('value'));
  await page.getByLabel('Code').fill(code);
  await step('new promotion code form');
  await page.getByRole('button', { name: 'Create code' }).click();
  const row = page.locator('tbody tr', { hasText: 'Spring offer' });
  await expect(row).toContainText(code);
  await expect(row.locator('.badge', { hasText: 'active' })).toBeVisible();
  await step('coupons with the code');
  await page.setViewportSize(PHONE);
  await step('coupons on a phone');
  await page.goto(`${tollgate.base}/admin/coupons/new`);
  await step('new coupon form on a phone');
  await page.setViewportSize(LAPTOP);

  // The admin signs out; a customer signs up and types the code at Checkout.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await step('signed out');
  await signUp(page, step, tollgate);
  await choosePlan(page, step, tollgate, 'Starter');
  await expect(page.getByLabel(/Promotion code/)).toBeVisible();
  await page.getByLabel(/Promotion code/).fill(code.toLowerCase());
  await pay(page, step, CARD);
  await page.waitForURL(/\/billing\/success|\/account/);
  await step('checkout success');
  await expect(async () => {
    await page.goto(`${tollgate.base}/account`);
    await expect(page.locator('dd.discount')).toContainText('20%', { timeout: 500 });
  }).toPass({ timeout: 10_000 });
  await expect(page.locator('dd.discount')).toContainText(new RegExp(code, 'i'));
  await step('account with the discount');
  await page.setViewportSize(PHONE);
  await step('account with the discount on a phone');
});

test('cancel with a reason, and the console counts it', async ({ page, step, tollgate }) => {
  test.setTimeout(120_000);
  await subscribed(page, step, tollgate, 'Pro');
  const panel = await accountShows(page, tollgate, 'Pro');
  await step('account with Pro');
  await panel.getByRole('link', { name: 'Cancel subscription' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Cancel your subscription?' })).toBeVisible();
  await page.getByLabel("It's too expensive").check();
  await page.getByLabel('Anything else we should know? (optional)').fill('Lovely product, but over budget this quarter.');
  await step('cancel page with a reason');
  await page.setViewportSize(PHONE);
  await step('cancel page on a phone');
  await page.setViewportSize(LAPTOP);
  await page.getByRole('button', { name: 'Cancel subscription' }).click();
  await expect(page.getByRole('status')).toContainText(/end at the close of the current period/);
  await expect(page.getByText(/ends at the close of this period/i)).toBeVisible();
  await step('account: ends at period end');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await step('signed out');
  await signIn(page, step, tollgate, tollgate.admin);
  await step('admin console');
  await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: 'Cancellations' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Cancellations' })).toBeVisible();
  const expensive = page.getByRole('region', { name: 'Cancellations by reason' }).locator('td[data-reason="too_expensive"]');
  await expect(expensive).toHaveText(/^[1-9]\d*$/);
  await expect(page.getByRole('region', { name: 'Latest cancellations' })).toContainText('over budget this quarter');
  await step('cancellations on a laptop');
  await page.setViewportSize(PHONE);
  await step('cancellations on a phone');
});
