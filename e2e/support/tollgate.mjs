// One running `tollgate serve --with-stripe-sim` per Playwright worker: the real binary, its
// in-process Stripe simulator and a demo database of its own in a temporary directory, started
// as a person would start the demo (nothing inherited from the developer's environment but PATH).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const PASSWORD = 'correct horse battery staple';
/** The secret key `serve --with-stripe-sim` gives Tollgate (a dummy: the simulator's only). */
const DEMO_KEY = 'sk_test_DUMMYofflinedemo';

/** The tollgate binary `./scripts/test` built (TOLLGATE_BIN), else the default debug build. */
function binary() {
  if (process.env.TOLLGATE_BIN) return process.env.TOLLGATE_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.resolve(import.meta.dirname, '../../target');
  return path.join(target, 'debug', 'tollgate');
}

export class Tollgate {
  /** Starts the demo and waits until it says where it listens (at most 30 s). */
  static async start() {
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-e2e-'));
    const child = spawn(binary(), ['serve', '--with-stripe-sim', '--stripe-sim-port', '0'], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        BIND: '127.0.0.1:0',
        RUST_LOG: 'warn,tollgate=info',
        // Every journey signs up from 127.0.0.1: a budget per test run, not per person.
        RATE_LIMIT_SIGN_IN_PER_MINUTE: '600',
        RATE_LIMIT_SIGN_IN_BURST: '100',
        RATE_LIMIT_SIGN_UP_PER_MINUTE: '600',
        RATE_LIMIT_SIGN_UP_BURST: '100',
        RATE_LIMIT_DEFAULT_PER_MINUTE: '6000',
        RATE_LIMIT_DEFAULT_BURST: '1000',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const server = new Tollgate(child, dir);
    server.sim = (await server.#announced(/Stripe simulator at (\S+) /)).replace(/\/$/, '');
    server.base = await server.#announced(/tollgate: open (\S+)\s/);
    // The last line it prints at start-up: how to become an admin.
    await server.#announced(/from any directory: (.+)\n/);
    server.base = server.base.replace(/\/$/, '');
    return server;
  }

  constructor(child, dir) {
    this.child = child;
    this.dir = dir;
    this.log = '';
    this.exited = null;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => { this.log += chunk; });
    child.on('exit', (code, signal) => { this.exited = { code, signal }; });
  }

  #announced(pattern) {
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`tollgate did not start:\n${this.log}`)), 30_000);
      const look = () => {
        const found = this.log.match(pattern);
        if (found) {
          clearTimeout(deadline);
          this.child.stderr.off('data', look);
          resolve(found[1]);
        } else if (this.exited) {
          clearTimeout(deadline);
          reject(new Error(`tollgate exited (${JSON.stringify(this.exited)}):\n${this.log}`));
        }
      };
      this.child.stderr.on('data', look);
      this.child.on('exit', look);
      look();
    });
  }

  /** Runs the create-admin command the demo printed at start-up, with the password on stdin. */
  createAdmin(email) {
    const printed = this.log.split('\n').map((l) => l.split('from any directory: ')[1]).find(Boolean);
    if (!printed) throw new Error(`the demo did not print its create-admin command:\n${this.log}`);
    const [assignment, program, ...args] = printed.trim().split(/\s+/);
    const [name, value] = assignment.split(/=(.*)/s);
    args[args.indexOf('--email') + 1] = email;
    const out = spawnSync(program, args, {
      cwd: tmpdir(),
      env: { PATH: process.env.PATH, [name]: value },
      input: `${PASSWORD}\n`,
      encoding: 'utf8',
    });
    if (out.status !== 0) throw new Error(`create-admin failed (${out.status}): ${out.stderr}`);
  }

  /**
   * What only Stripe can do (time passing, a renewal): a POST to one of the simulator's
   * `/_sim/…` controls, e.g. `/_sim/subscriptions/sub_…/renew?outcome=failed`.
   */
  async simControl(path) {
    const response = await fetch(`${this.sim}${path}`, { method: 'POST' });
    if (!response.ok) throw new Error(`simulator control ${path} answered ${response.status}: ${await response.text()}`);
    return response.json();
  }

  /** A GET on the simulator's Stripe API with the demo's test key (`/v1/…`). */
  async stripeGet(path) {
    const response = await fetch(`${this.sim}${path}`, { headers: { Authorization: `Bearer ${DEMO_KEY}` } });
    if (!response.ok) throw new Error(`GET ${path} answered ${response.status}: ${await response.text()}`);
    return response.json();
  }

  /** The Stripe subscription of the customer with this email, as the simulator holds it. */
  async subscriptionOf(email) {
    const customers = await this.stripeGet('/v1/customers?limit=100');
    const customer = customers.data.find((c) => c.email === email);
    if (!customer) throw new Error(`no Stripe customer for ${email}`);
    const subs = await this.stripeGet(`/v1/subscriptions?customer=${customer.id}&status=all&limit=100`);
    const sub = subs.data.find((s) => s.customer === customer.id);
    if (!sub) throw new Error(`no Stripe subscription for ${email}`);
    return sub;
  }

  /** Lines the server logged at ERROR or WARN (a journey should cause none). */
  problems() {
    return this.log.split('\n').filter((l) => /\b(ERROR|WARN)\b/.test(l));
  }

  async stop() {
    if (!this.exited) {
      this.child.kill('SIGTERM');
      await new Promise((resolve) => {
        const force = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
        this.child.on('exit', () => { clearTimeout(force); resolve(); });
        if (this.exited) resolve();
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
