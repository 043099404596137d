// A local three-node cluster (lib/cluster.mjs: its own Redis, a fresh Postgres database) behind
// nginx running the compose configuration, deploy/nginx.conf, with the compose service names
// (confab-1..3:3000) pointed at the local nodes and its paths moved into the cluster's directory.
// So the load tests exercise the very nginx configuration docker-compose.cluster.yml mounts.
//
//   node e2e/deploy/loadcluster.mjs     # starts one and prints its URLs until Ctrl-C
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { fatal, freePort, startCluster, until } from '../lib/cluster.mjs';
import { onExit, REPO_ROOT } from '../lib/server.mjs';

export const NGINX_CONF = path.join(REPO_ROOT, 'deploy', 'nginx.conf');

/** deploy/nginx.conf with the upstream names, the listen port and /tmp paths replaced. */
export function renderComposeNginx(conf, { port, upstreams, dir }) {
  let out = conf;
  upstreams.forEach((hostPort, i) => {
    const name = `server confab-${i + 1}:3000`;
    if (!out.includes(name)) throw new Error(`deploy/nginx.conf has no "${name}"`);
    out = out.replace(name, `server ${hostPort}`);
  });
  if (!/listen 8080;/.test(out)) throw new Error('deploy/nginx.conf does not listen on 8080');
  out = out.replace('listen 8080;', `listen 127.0.0.1:${port};`);
  out = out.replaceAll('/tmp/', `${dir}/`);
  // Logs to the run directory rather than the test's own output.
  out = out.replace('access_log /dev/stdout;', `access_log ${dir}/nginx-access.log;`);
  out = out.replace('error_log /dev/stderr warn;', `error_log ${dir}/nginx-error.log warn;`);
  return out;
}

export async function startLoadCluster({ env = {}, name = 'load' } = {}) {
  const cluster = await startCluster({ nodes: 3, env, name });
  try {
    const port = await freePort();
    const conf = renderComposeNginx(readFileSync(NGINX_CONF, 'utf8'), {
      port,
      dir: cluster.dir,
      upstreams: cluster.nodes.map((n) => `${n.host}:${n.port}`),
    });
    const confPath = path.join(cluster.dir, 'nginx-compose.conf');
    writeFileSync(confPath, conf);
    const child = spawn('nginx', ['-c', confPath, '-p', cluster.dir, '-e', path.join(cluster.dir, 'nginx-error.log'), '-g', 'daemon off;'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let exited = null;
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    child.on('error', () => {});
    const unregister = onExit(() => exited === null && child.kill('SIGKILL'));
    const exitPromise = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        exited = { code, signal };
        unregister();
        resolve(exited);
      }),
    );
    const url = `http://127.0.0.1:${port}`;
    await until(
      async () => {
        if (exited !== null) throw fatal(`nginx exited (${JSON.stringify(exited)}): ${out}`);
        return (await fetch(`${url}/nginx-health`, { signal: AbortSignal.timeout(1000) })).status === 200;
      },
      { timeoutMs: 10_000, what: `nginx (deploy/nginx.conf) on ${url}` },
    );
    const stopCluster = cluster.stop;
    return {
      ...cluster,
      nodes: cluster.nodes,
      nginxUrl: url,
      nginxOutput: () => out,
      async stop() {
        if (exited === null) {
          child.kill('SIGQUIT');
          const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
          await exitPromise;
          clearTimeout(timer);
        }
        await stopCluster();
      },
    };
  } catch (err) {
    await cluster.stop().catch(() => {});
    throw err;
  }
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const c = await startLoadCluster({ env: { CONFAB_DEV_TOKENS: 'true' } });
  console.log(`nginx (deploy/nginx.conf): ${c.nginxUrl}`);
  console.log(`nodes: ${c.nodes.map((n) => n.url).join(',')}`);
  console.log(`CONFAB_JWT_SECRET=${c.secret}`);
  await new Promise((resolve) => process.once('SIGINT', resolve));
  await c.stop();
}
