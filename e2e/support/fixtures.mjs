// The fixtures every journey uses:
// - `tollgate`: the worker's running demo (see tollgate.mjs), with an admin account.
// - `page`: a page whose console errors, uncaught exceptions and CSP violations are collected;
//   the test fails at its end if there were any.
// - `step(name)`: a checkpoint on the page in view: screenshot under target/e2e/<test>/, an
//   axe-core scan that fails on any serious or critical violation, and the horizontal-overflow
//   check. Every page a journey loads must pass through a step, or the test fails at its end.
import { test as base, expect } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Tollgate, PASSWORD } from './tollgate.mjs';

export { expect, PASSWORD };

export const SCREENSHOTS = path.resolve(import.meta.dirname, '../../target/e2e');

const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 80);

/** Where the page's content is wider than its viewport: the widest offenders, for the message. */
export async function horizontalOverflow(page) {
  return page.evaluate(() => {
    const root = document.documentElement;
    const width = root.clientWidth;
    if (root.scrollWidth <= width) return null;
    const offenders = [...document.querySelectorAll('body *')]
      .filter((el) => !el.closest('.table-wrap, pre, .payload'))
      .filter((el) => {
        // Either the box sticks out, or its content spills out of a box that does not scroll.
        const box = el.getBoundingClientRect();
        const spills = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === 'visible';
        return box.right > width + 0.5 || (spills && box.left + el.scrollWidth > width + 0.5);
      })
      .slice(0, 5)
      .map((el) => `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className ? `.${String(el.className).trim().replace(/\s+/g, '.')}` : ''} (${Math.round(el.getBoundingClientRect().left + el.scrollWidth)}px wide)`);
    return { scrollWidth: root.scrollWidth, clientWidth: width, offenders };
  });
}

/** axe-core's serious and critical findings on the page in view (WCAG 2.1 A and AA rules). */
export async function seriousAccessibilityViolations(page) {
  const results = await new AxeBuilder({ page })
    .withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'])
    .analyze();
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact}: ${v.id} (${v.help}) at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
}

export const test = base.extend({
  tollgate: [
    async ({}, use, workerInfo) => {
      const server = await Tollgate.start();
      server.admin = `admin-${workerInfo.workerIndex}@example.test`;
      server.createAdmin(server.admin);
      await use(server);
      await server.stop();
    },
    { scope: 'worker', timeout: 60_000 },
  ],

  // What the browser reported: filled by the page fixture, read by the tests that check the
  // checks themselves (harness.spec.mjs) with `problems.expected = true`.
  problems: async ({}, use) => {
    await use({ console: [], csp: [], unchecked: [], expected: false });
  },

  page: async ({ page, problems }, use, testInfo) => {
    const loaded = new Set();
    const checked = new Set();
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      // Chromium reports every response >= 400 this way, the page's own too: a form refused with
      // 422 or a declined card's 402 is the right answer, not a fault. Sub-resources are checked
      // below, by their responses.
      const where = msg.location().url;
      if (msg.text().startsWith('Failed to load resource') && where === page.url()) return;
      problems.console.push(`${msg.text()} (${where || page.url()})`);
    });
    page.on('response', (response) => {
      if (response.status() >= 400 && response.request().resourceType() !== 'document') {
        problems.console.push(`${response.request().resourceType()} ${response.url()} answered ${response.status()}`);
      }
    });
    page.on('pageerror', (error) => problems.console.push(`uncaught: ${error.message} (on ${page.url()})`));
    await page.exposeBinding('__tollgateCspViolation', ({ frame }, violation) => {
      problems.csp.push(`${violation} (on ${frame.url()})`);
    });
    // Runs in every document before its own scripts, whatever its CSP says.
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__tollgateCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`);
      });
    });
    page.on('load', () => loaded.add(page.url()));
    page.markChecked = () => checked.add(page.url());
    await use(page);
    // A test that already failed has said why; the rest would only repeat it.
    if (problems.expected || testInfo.status !== testInfo.expectedStatus) return;
    problems.unchecked = [...loaded].filter((url) => !checked.has(url) && url !== 'about:blank');
    expect(problems.console, 'console errors').toEqual([]);
    expect(problems.csp, 'CSP violations').toEqual([]);
    expect(problems.unchecked, 'pages loaded without a step (screenshot + checks)').toEqual([]);
  },

  step: async ({ page }, use, testInfo) => {
    const dir = path.join(SCREENSHOTS, slug(testInfo.titlePath.slice(1).join(' ')));
    mkdirSync(dir, { recursive: true });
    let n = 0;
    await use(async (name, { overflow = true } = {}) => {
      n += 1;
      await page.waitForLoadState('load');
      await page.screenshot({ path: path.join(dir, `${String(n).padStart(2, '0')}-${slug(name)}.png`), fullPage: true });
      const a11y = await seriousAccessibilityViolations(page);
      expect(a11y, `accessibility on "${name}" (${page.url()})`).toEqual([]);
      if (overflow) {
        expect(await horizontalOverflow(page), `horizontal overflow on "${name}" (${page.url()})`).toBeNull();
      }
      page.markChecked();
    });
  },
});

let counter = 0;
/** A fresh customer address for this run. */
export function newEmail(label = 'customer') {
  counter += 1;
  return `${label}-${process.pid}-${Date.now().toString(36)}-${counter}@example.test`;
}
