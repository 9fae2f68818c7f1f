// What a person does, step by step, in the words on the page (labels, button names).
import { expect, PASSWORD, newEmail } from './fixtures.mjs';

/**
 * Signs up a new customer on the sign-up page at `from` (`null`: the one already in view);
 * returns the address.
 */
export async function signUp(page, step, tollgate, { email = newEmail(), from = '/signup' } = {}) {
  if (from !== null) await page.goto(`${tollgate.base}${from}`);
  await step('sign-up form');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByLabel('Repeat the password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  return email;
}

/** Signs in from the sign-in page. */
export async function signIn(page, step, tollgate, email) {
  await page.goto(`${tollgate.base}/login`);
  await step('sign-in form');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** The simulator's checkout page: pays with `card` (4242… succeeds, 4000 0000 0000 0002 declines). */
export async function pay(page, step, card) {
  await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
  await step('simulated Stripe Checkout');
  await page.getByLabel('Card number').fill(card);
  const expiry = page.getByLabel(/expir/i);
  if (await expiry.count()) await expiry.first().fill('12 / 34');
  const cvc = page.getByLabel(/cvc|security code/i);
  if (await cvc.count()) await cvc.first().fill('123');
  const name = page.getByLabel(/name on card|cardholder/i);
  if (await name.count()) await name.first().fill('Ada Lovelace');
  await page.getByRole('button', { name: /subscribe|pay|start trial/i }).click();
}

/** Chooses `plan` on the pricing page (for a signed-in customer without a subscription). */
export async function choosePlan(page, step, tollgate, plan) {
  await page.goto(`${tollgate.base}/pricing`);
  await step('pricing');
  await page.getByRole('button', { name: `Choose ${plan}` }).click();
  const proceed = page.getByRole('button', { name: /continue to payment/i });
  if (await page.url().startsWith(tollgate.base) && (await proceed.count())) {
    await step('checkout confirmation');
    await proceed.click();
  }
}

/** The account page's subscription panel, as a customer reads it. */
export async function subscriptionPanel(page, tollgate) {
  await page.goto(`${tollgate.base}/account`);
  return page.getByRole('region', { name: 'Subscription' }).or(page.locator('section', { has: page.getByRole('heading', { name: 'Subscription' }) }));
}
