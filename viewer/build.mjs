// `npm run build`: src/ -> the page's two files in the Python package (npga/viewer/static/), which
// `npga export --web` copies. The same sources and lockfile give byte-identical files (`make web-check`).
import { copyFileSync, mkdirSync } from "node:fs";
import { build } from "esbuild";

const out = "../npga/viewer/static";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  outfile: `${out}/npga-web.js`,
  logLevel: "warning",
});
copyFileSync("src/index.html", `${out}/index.html`);
