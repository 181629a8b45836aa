// Bundles the progress page into dist/: index.html, app.js (Firebase SDK included, no CDN), style.css, firebase-config.json.
import { cp, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(root, "src", "main.js")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: true,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "warning",
});
await cp(join(root, "index.html"), join(dist, "index.html"));
await cp(join(root, "src", "style.css"), join(dist, "style.css"));
// The Firebase project the page signs in to (the one place to change for a real project).
await cp(join(root, "firebase-config.json"), join(dist, "firebase-config.json"));
console.log(`built ${dist}`);
