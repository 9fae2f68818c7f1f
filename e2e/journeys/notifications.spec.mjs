// The notification outbox in the admin console (issue 14, points 2 to 4): an admin registers an
// app-webhook endpoint (secret shown once, rotated, disabled and enabled again), a customer
// subscribes in another browser, and the admin follows what that queued: webhooks to an address
// where nothing listens (retrying) and e-mails "not sent: SMTP not configured" (the demo has no
// SMTP), filters them, redelivers one. Screenshots at laptop and phone sizes.
import { test, expect } from '../support/fixtures.mjs';
import { signIn, signUp, choosePlan, pay } from '../support/actions.mjs';

const HOOK_URL = 'http://127.0.0.1:9/hooks'; // the discard port: nothing listens, deliveries fail
const EVENTS = ['invoice.paid', 'subscription.activated', 'entitlements.changed'];
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** The admin nav's links all show on the page in view (they wrap; none is cut off). */
async function navFits(page) {
  const nav = page.getByRole('navigation', { name: 'Admin' });
  const links = nav.getByRole('link');
  await expect(links).toHaveCount(11);
  const width = page.viewportSize().width;
  for (const link of await links.all()) {
    await expect(link).toBeVisible();
    const box = await link.boundingBox();
    expect(box.x + box.width, `"${await link.textContent()}" fits the viewport`).toBeLessThanOrEqual(width);
  }
}

test('an admin follows the outbox: endpoints, notifications, redelivery', async ({ page, step, tollgate, browser }) => {
  test.setTimeout(180_000); // 22 checked steps (axe scans) and the worker's first attempts
  await signIn(page, step, tollgate, tollgate.admin);
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('admin console');

  // 1. Register an endpoint: its secret is shown once.
  await page.getByRole('link', { name: 'Endpoints', exact: true }).first().click();
  await expect(page.getByRole('heading', { level: 1, name: 'Webhook endpoints' })).toBeVisible();
  await step('endpoints before');
  await page.getByLabel('URL').fill(HOOK_URL);
  await page.getByLabel('Description (optional)').fill('Entitlements service (e2e)');
  for (const event of EVENTS) await page.getByLabel(event, { exact: true }).check();
  await page.getByRole('button', { name: 'Add endpoint' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText(HOOK_URL);
  await expect(page.getByRole('heading', { name: /copy its signing secret now/ })).toBeVisible();
  const secretBox = page.getByRole('textbox', { name: 'Signing secret' });
  await expect(secretBox).toHaveValue(/^whsec_[A-Za-z0-9+/=]{20,}$/);
  await expect(secretBox).toHaveAttribute('readonly', '');
  const first = await secretBox.inputValue();
  // Copyable: the whole secret selects in the box.
  await secretBox.selectText();
  expect(await page.evaluate(() => {
    const box = document.getElementById('new-secret');
    return box.value.slice(box.selectionStart, box.selectionEnd);
  })).toBe(first);
  await expect(page.getByText('This is the only time it is shown.')).toBeVisible();
  await step('endpoint added, secret shown once on a laptop');

  const id = (await page.locator('dt:has-text("Endpoint id") + dd').textContent()).trim();
  expect(id).toMatch(/^\S+$/);
  const endpointPage = `${tollgate.base}/admin/endpoints/${id}`;
  await page.goto(endpointPage);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText(HOOK_URL);
  await expect(page.getByRole('textbox', { name: 'Signing secret' })).toHaveCount(0);
  await expect(page.locator('body')).not.toContainText('whsec_');
  await expect(page.locator('body')).not.toContainText(first.slice(6, 20));
  await step('endpoint page again: the secret is gone');

  // Disable, then enable again.
  await page.getByRole('button', { name: 'Disable' }).click();
  await expect(page.getByRole('status')).toContainText('The endpoint is disabled');
  await expect(page.locator('dd .badge')).toHaveText('disabled');
  await step('endpoint disabled');
  await page.getByRole('button', { name: 'Enable' }).click();
  await expect(page.getByRole('status')).toContainText('The endpoint is enabled');
  await expect(page.locator('dd .badge')).toHaveText('enabled');
  await step('endpoint enabled again');

  await page.getByRole('link', { name: '← All webhook endpoints' }).click();
  const row = page.locator('tbody tr', { hasText: HOOK_URL });
  await expect(row).toContainText('enabled');
  for (const event of EVENTS) await expect(row).toContainText(event);
  await step('endpoints list on a laptop');

  // On a phone: the list, then a rotation (confirmation, the new secret once).
  await page.setViewportSize(PHONE);
  await page.goto(`${tollgate.base}/admin/endpoints`);
  await navFits(page);
  await step('endpoints list on a phone');
  await page.goto(endpointPage);
  await step('endpoint page on a phone');
  await page.getByRole('link', { name: 'Rotate secret…' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toContainText('Rotate the secret of');
  await expect(page.locator('.confirm')).toContainText('two signatures');
  await step('rotate confirmation on a phone');
  await page.getByRole('button', { name: 'Rotate secret' }).click();
  await expect(page.getByRole('heading', { name: /secret is rotated: copy the new one now/ })).toBeVisible();
  const rotated = await page.getByRole('textbox', { name: 'Signing secret' }).inputValue();
  expect(rotated).toMatch(/^whsec_/);
  expect(rotated).not.toBe(first);
  await expect(page.locator('.secret-once')).toContainText('signed with both the old and the new secret');
  const secretBoxPhone = await page.getByRole('textbox', { name: 'Signing secret' }).boundingBox();
  expect(secretBoxPhone.x + secretBoxPhone.width).toBeLessThanOrEqual(PHONE.width);
  await step('secret rotated, shown once on a phone');
  await page.goto(endpointPage);
  await expect(page.getByRole('textbox', { name: 'Signing secret' })).toHaveCount(0);
  await expect(page.locator('dl.facts')).toContainText('rotated; the previous secret also signs until');
  await step('endpoint page after rotation on a phone');

  // 2. A customer subscribes to Pro in another browser: receipts and app webhooks are queued.
  const customer = await browser.newContext();
  const buyer = await customer.newPage();
  const quiet = async () => {};
  await signUp(buyer, quiet, tollgate);
  await choosePlan(buyer, quiet, tollgate, 'Pro');
  await pay(buyer, quiet, '4242 4242 4242 4242');
  await buyer.waitForURL(/\/billing\/success|\/account/);
  await customer.close();

  // 3. The outbox, on a laptop: summary counts, filters, the SMTP error, a redelivery.
  await page.setViewportSize(LAPTOP);
  await page.goto(`${tollgate.base}/admin`);
  await step('admin console again');
  await page.getByRole('link', { name: 'Notifications', exact: true }).first().click();
  const counts = page.locator('.outbox-counts');
  // The worker polls every second: wait for the first attempts to be recorded.
  await expect(async () => {
    await page.reload();
    await expect(counts.locator('li', { hasText: 'E-mail' }).filter({ hasText: 'not sent' })).toBeVisible({ timeout: 500 });
    await expect(counts.locator('li', { hasText: 'App webhooks' }).filter({ hasText: /retrying|dead/ })).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 20_000 });
  await expect(page.getByRole('heading', { level: 1, name: 'Notifications' })).toBeVisible();
  const table = page.getByRole('region', { name: 'Notifications' });
  await expect(table.locator('tbody tr').first()).toBeVisible();
  await step('notifications on a laptop');

  await page.getByLabel('Status').selectOption('not_sent');
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(page).toHaveURL(/status=not_sent/);
  const notSent = table.locator('tbody tr');
  await expect(notSent.first()).toBeVisible();
  for (const r of await notSent.all()) {
    await expect(r.locator('.badge')).toHaveText('not sent');
    await expect(r).toContainText('E-mail');
  }
  await expect(notSent.filter({ hasText: 'receipt' }).first()).toContainText('not sent: SMTP not configured');
  await step('not-sent e-mails');

  await page.getByLabel('Status').selectOption('');
  await page.getByLabel('Channel').selectOption({ label: 'App webhooks' });
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(page).toHaveURL(/channel=app_webhook/);
  const hooks = table.locator('tbody tr');
  for (const event of EVENTS) await expect(hooks.filter({ hasText: event }).first()).toBeVisible();
  for (const r of await hooks.all()) await expect(r).toContainText('App webhooks');
  await expect(hooks.filter({ hasText: id }).first()).toBeVisible();
  await expect(hooks.locator('.badge', { hasText: /retrying|pending|sending/ }).first()).toBeVisible();
  await step('app webhooks retrying');

  await page.getByLabel('Channel').selectOption({ label: 'E-mail' });
  await page.getByLabel('Status').selectOption('not_sent');
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(page).toHaveURL(/channel=email/);
  await step('not-sent e-mails, filtered by channel');
  await table.locator('tbody tr').first().getByRole('button', { name: 'Redeliver' }).click();
  await expect(page).toHaveURL(`${tollgate.base}/admin/notifications`);
  await expect(page.getByRole('status')).toContainText(/Notification \d+ is back in the outbox/);
  await step('redelivered');

  await page.getByRole('link', { name: 'Dead letters' }).click();
  await expect(page).toHaveURL(/status=dead/);
  await expect(page.getByLabel('Status')).toHaveValue('dead');
  await expect(page.getByRole('heading', { level: 1, name: 'Notifications' })).toBeVisible();
  await step('dead letters');

  // 4. The outbox on a phone.
  await page.setViewportSize(PHONE);
  await page.goto(`${tollgate.base}/admin/notifications`);
  await navFits(page);
  await step('notifications on a phone');
  await page.goto(`${tollgate.base}/admin/notifications?status=not_sent`);
  await step('not-sent e-mails on a phone');
});
