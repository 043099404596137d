// Builds the server with `cargo build` at the repository root, unless CONFAB_BIN names a binary.
import { spawnSync } from 'node:child_process';
import { REPO_ROOT } from '../lib/server.mjs';

if (process.env.CONFAB_BIN) {
  console.log(`using CONFAB_BIN=${process.env.CONFAB_BIN}; not building`);
} else {
  const r = spawnSync('cargo', ['build', '--bin', 'confab'], { cwd: REPO_ROOT, stdio: 'inherit' });
  if (r.error) {
    console.error(`could not run cargo: ${r.error.message}`);
    process.exit(1);
  }
  if (r.status !== 0) process.exit(r.status ?? 1);
}
