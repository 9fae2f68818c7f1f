// The security dashboard and the audit log (issue 13, points 4 and 9), with some events to show:
// failed sign-ins, webhook deliveries with a forged signature, a paid subscription (verified
// webhooks). Screenshots at laptop and phone sizes; the charts are SVG with no inline style.
import { test, expect } from '../support/fixtures.mjs';
import { signIn, signUp, choosePlan, pay } from '../support/actions.mjs';

/** Security events of several kinds and severities, made the way they happen. */
async function someTrouble(browser, request, tollgate) {
  const stranger = await browser.newContext();
  const page = await stranger.newPage();
  for (let i = 0; i < 3; i += 1) {
    await page.goto(`${tollgate.base}/login`);
    await page.getByLabel('Email').fill(tollgate.admin);
    await page.getByLabel('Password', { exact: true }).fill(`wrong password ${i}`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForLoadState('load');
  }
  await stranger.close();
  for (let i = 0; i < 4; i += 1) {
    const res = await request.post(`${tollgate.base}/webhooks/stripe`, {
      headers: { 'content-type': 'application/json', 'stripe-signature': `t=${Math.floor(Date.now() / 1000)},v1=${'0'.repeat(64)}` },
      data: JSON.stringify({ id: `evt_forged_${i}`, type: 'invoice.paid', object: 'event' }),
    });
    expect(res.status()).toBeGreaterThanOrEqual(400);
  }
}

test('the security dashboard reads well on a laptop and a phone', async ({ page, step, tollgate, browser, request }) => {
  await someTrouble(browser, request, tollgate);
  // A customer pays in another browser: Stripe's (simulated) webhooks arrive verified.
  const customer = await browser.newContext();
  const buyer = await customer.newPage();
  const quiet = async () => {};
  await signUp(buyer, quiet, tollgate);
  await choosePlan(buyer, quiet, tollgate, 'Pro');
  await pay(buyer, quiet, '4242 4242 4242 4242');
  await buyer.waitForURL(/\/billing\/success|\/account/);
  await customer.close();

  await signIn(page, step, tollgate, tollgate.admin);
  await expect(page).toHaveURL(`${tollgate.base}/admin`);
  await step('admin console');
  await page.getByRole('link', { name: 'Security dashboard' }).first().click();
  await expect(page.getByRole('heading', { level: 1, name: 'Security dashboard' })).toBeVisible();
  await expect(page.locator('svg.chart')).toHaveCount(2);
  await expect(page.getByRole('img', { name: /per hour/ })).toBeVisible();
  await expect(page.locator('section', { has: page.getByRole('heading', { name: /Webhook verification/ }) })).toContainText('verified');
  await step('security dashboard on a laptop');

  await page.getByRole('link', { name: 'Audit log' }).first().click();
  await step('audit log on a laptop');
  await page.getByLabel('Severity at least').selectOption('HIGH');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await expect(page).toHaveURL(/severity=HIGH/);
  await expect(page.locator('tbody tr').first()).toContainText('HIGH');
  await step('audit log filtered on a laptop');

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${tollgate.base}/admin/security/overview`);
  await step('security dashboard on a phone');
  await page.goto(`${tollgate.base}/admin/security?severity=MEDIUM`);
  await step('audit log on a phone');
});
