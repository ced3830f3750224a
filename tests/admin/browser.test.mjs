// The Socket.IO Admin UI itself (the npm package's static build, served by an
// edge's admin port) in headless Chromium against a 2-edge cluster: log in, see both servers and the sockets of
// the cluster change live, join a socket to a room and disconnect another from
// the page. Screenshots go to tests/admin/artifacts/ (not committed).
//
// Debian's chromium (scripts/test installs it when missing), driven by
// playwright-core: no downloaded browser. CHROMIUM_BIN overrides the path.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { httpGet } from '../e2e/lib/process.mjs';
import { ADMIN_NS, ADMIN_PASSWORD, ADMIN_USER, client, connect, startAdminCluster, waitFor } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const UI_DIST = path.join(HERE, 'node_modules', '@socket.io', 'admin-ui', 'ui', 'dist');
const ARTIFACTS = path.join(HERE, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const UI_TIMEOUT_MS = 15_000;

let cluster;
let browser;
const sockets = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  // Edge-1's admin port serves the UI's build at /admin-ui/.
  cluster = await startAdminCluster(['--admin-ui-static-dir', UI_DIST]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  for (const s of sockets) s.disconnect();
  await browser?.close();
  await cluster?.stop();
});

test('the admin UI logs in, shows both edges and the live sockets, joins and disconnects from the page', async () => {
  const [url1, url2] = cluster.httpUrls;
  const early = await connect(client(url1));
  sockets.push(early);

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  // Where the UI connects, as it would remember it: the first edge, WebSocket only.
  await page.addInitScript(([serverUrl, ns]) => {
    if (!localStorage.getItem('server_url')) {
      localStorage.setItem('server_url', serverUrl);
      localStorage.setItem('namespace', ns);
      localStorage.setItem('ws_only', 'true');
      localStorage.setItem('path', '/socket.io');
    }
  }, [url1, ADMIN_NS]);
  const uiUrl = `${cluster.edges[0].adminUrl}/admin-ui/`;
  await page.goto(uiUrl);

  // A wrong password: refused, the UI says so.
  await page.getByLabel('Username').fill(ADMIN_USER);
  await page.getByLabel('Password').fill('wrong');
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByText('Invalid credentials').waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, '01-refused.png') });

  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByText('Invalid credentials').waitFor({ state: 'detached' });

  // Servers: a row per edge, by node id.
  await page.goto(`${uiUrl}#/servers/`);
  await page.getByRole('cell', { name: 'edge-1' }).first().waitFor();
  await page.getByRole('cell', { name: 'edge-2' }).first().waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, '02-servers.png') });

  // Sockets: the earlier one, then live connects on both edges.
  await page.goto(`${uiUrl}#/sockets/`);
  await page.getByText(early.id).first().waitFor();
  const a = await connect(client(url1));
  const b = await connect(client(url2));
  sockets.push(a, b);
  await page.getByText(a.id).first().waitFor();
  await page.getByText(b.id).first().waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, '03-sockets.png') });

  // A client that leaves disappears.
  const earlyId = early.id;
  early.disconnect();
  await waitFor(async () => (await page.getByText(earlyId).count()) === 0, UI_TIMEOUT_MS, 'the early socket gone from the page');

  // Disconnect b from the page: the client hears it from the server.
  const bId = b.id;
  const bGone = new Promise((resolve) => b.once('disconnect', resolve));
  await page.getByRole('row', { name: new RegExp(bId) }).locator('button:has(.mdi-logout)').click();
  assert.equal(await bGone, 'io server disconnect');
  // (the click also opens the row's details page: back to the list)
  await page.goto(`${uiUrl}#/sockets/`);
  await page.getByText(a.id).first().waitFor();
  await waitFor(async () => (await page.getByText(bId).count()) === 0, UI_TIMEOUT_MS, 'b gone from the page');

  // Join a to a room from its details page: the socket is in it (an emit to
  // the room reaches it) and the page lists the room.
  await page.getByRole('row', { name: new RegExp(a.id) }).click();
  await page.getByLabel('Join a room').pressSequentially('lobby');
  await page.locator('button[type=submit]:has(.mdi-tag-plus-outline)').click();
  await page.getByRole('cell', { name: 'lobby' }).first().waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, '04-socket-joined.png') });
  const news = new Promise((resolve) => a.once('news', resolve));
  const admin = client(url2, ADMIN_NS, { auth: { username: ADMIN_USER, password: ADMIN_PASSWORD } });
  sockets.push(admin);
  await connect(admin);
  admin.emit('emit', '/', 'lobby', 'news', 'to the lobby');
  assert.equal(await waitFor(() => news, UI_TIMEOUT_MS, 'the emit to the joined room'), 'to the lobby');
  await page.close();
});

test('the admin port serves the UI build and nothing outside it', async () => {
  const admin = cluster.edges[0].adminUrl;
  const index = await httpGet(`${admin}/admin-ui/`);
  assert.equal(index.status, 200);
  assert.match(index.body, /<title>Socket.IO Admin UI<\/title>/i);
  for (const bad of ['/admin-ui/%2e%2e/index.html', '/admin-ui/..%2f..%2fCargo.toml', '/admin-ui/.hidden', '/admin-ui/nope.js']) {
    const r = await httpGet(`${admin}${bad}`);
    assert.equal(r.status, 404, `${bad}: ${r.body.slice(0, 80)}`);
  }
});
