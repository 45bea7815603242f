// Runs the browser tests: builds `comet` first when cargo is around (so the binary is never
// stale), then `node --test` on test/browser/ one file at a time, each bounded in time.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
if (!process.env.COMET_BIN && spawnSync('cargo', ['--version']).status === 0) {
  const b = spawnSync('cargo', ['build', '-p', 'comet', '--quiet'], { cwd: join(root, '../..'), stdio: 'inherit' });
  if (b.status !== 0) process.exit(b.status ?? 1);
}
const files = readdirSync(join(root, 'test/browser'))
  .filter((f) => f.endsWith('.test.mjs'))
  .map((f) => join(root, 'test/browser', f));
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=180000', ...files], {
  stdio: 'inherit',
  timeout: 600_000,
});
process.exit(r.status ?? 1);
