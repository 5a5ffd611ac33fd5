// Builds the storefront (esbuild bundles src/storefront.ts for the browser) and serves it.
//
//   npx tsx examples/web/serve.ts [port]     # http://127.0.0.1:8090 by default
//
// Run the mesh with this origin allowed: SHOP_CORS_ORIGINS=http://127.0.0.1:8090 npm run mesh
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));

/** The page's script, bundled for the browser. */
export async function bundle(): Promise<string> {
  const result = await build({
    entryPoints: [here("./src/storefront.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  return (result.outputFiles[0] as { text: string }).text;
}

/** Serves index.html and storefront.js on 127.0.0.1:`port` (0: any free port). */
export async function serveStorefront(port = 0): Promise<{ origin: string; server: Server }> {
  const [html, script] = await Promise.all([readFile(here("./index.html"), "utf8"), bundle()]);
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === "/" || path === "/index.html") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    } else if (path === "/storefront.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const { port: bound } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${bound}`, server };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { origin } = await serveStorefront(Number(process.argv[2] ?? 8090));
  console.log(`storefront on ${origin}/?edge=https://localhost:8080 (Ctrl-C stops it)`);
}
