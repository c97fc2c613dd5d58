#!/usr/bin/env node
// Copies the artifacts of contracts defined in src/ from a forge output folder into out/, keeping
// only what bindings need (abi, bytecode, deployedBytecode, methodIdentifiers) so that the
// committed out/ is small and byte-for-byte reproducible (no build ids, no source ids, no paths).
// Usage: node scripts/export-artifacts.js <forge-out-dir> <dest-dir>
'use strict';
const fs = require('fs');
const path = require('path');

const [from, to] = process.argv.slice(2);
if (!from || !to) {
  console.error('usage: export-artifacts.js <forge-out-dir> <dest-dir>');
  process.exit(2);
}
const srcFiles = new Set(fs.readdirSync('src').filter((f) => f.endsWith('.sol')));
fs.rmSync(to, { recursive: true, force: true });
let n = 0;
for (const dir of fs.readdirSync(from).sort()) {
  if (!srcFiles.has(dir)) continue;
  for (const file of fs.readdirSync(path.join(from, dir)).sort()) {
    if (!file.endsWith('.json')) continue;
    const a = JSON.parse(fs.readFileSync(path.join(from, dir, file), 'utf8'));
    const target = a.metadata && a.metadata.settings && a.metadata.settings.compilationTarget;
    if (!target || !Object.keys(target).some((k) => k === 'src/' + dir)) continue;
    const lean = {
      abi: a.abi,
      bytecode: { object: a.bytecode.object },
      deployedBytecode: { object: a.deployedBytecode.object },
      methodIdentifiers: a.methodIdentifiers || {},
    };
    fs.mkdirSync(path.join(to, dir), { recursive: true });
    fs.writeFileSync(path.join(to, dir, file), JSON.stringify(lean, null, 2) + '\n');
    n++;
  }
}
if (n === 0) {
  console.error('export-artifacts: no artifacts found in ' + from);
  process.exit(1);
}
console.error('export-artifacts: ' + n + ' artifacts -> ' + to);
