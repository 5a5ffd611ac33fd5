// The README's API table: one grpcurl example per rpc. Each runs against a live `npm start`, with
// the placeholder ids (usr_…, prd_…, ord_…) replaced by ids the earlier examples created.
import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { ADMIN_TOKEN, tokenFor } from "./helpers/credentials.js";
import { exec } from "./helpers/exec.js";
import { launch } from "./helpers/launch.js";
import { shellSplit } from "./helpers/shell.js";

interface Example {
  rpc: string;
  command: string;
}

function readmeExamples(): Example[] {
  const readme = readFileSync(path.join(repoRoot, "README.md"), "utf8");
  return [...readme.matchAll(/^\| ([\w.]+) \| `(grpcurl [^`]+)` \|$/gm)].map(
    ([, rpc, command]) => ({
      rpc: rpc as string,
      command: command as string,
    }),
  );
}

const RPCS = [
  ...["CreateUser", "GetUser", "ListUsers", "UpdateUser", "DeleteUser"].map(
    (m) => `UserService.${m}`,
  ),
  ...["CreateProduct", "GetProduct", "ListProducts", "UpdateProduct"].map(
    (m) => `ProductService.${m}`,
  ),
  ...["ReserveStock", "CommitReservation", "ReleaseReservation"].map(
    (m) => `InventoryService.${m}`,
  ),
  ...["CreateOrder", "GetOrder", "ListOrders", "CancelOrder", "WatchOrder"].map(
    (m) => `OrderService.${m}`,
  ),
  "grpc.health.v1.Health.Check",
];

test("the README shows one grpcurl example for every rpc", (t) => {
  t.deepEqual(
    readmeExamples().map((example) => example.rpc),
    RPCS,
  );
});

test("every README grpcurl example answers against npm start", async (t) => {
  // As the quick start runs it: the services' TypeScript through tsx.
  const launcher = await launch(t, "start", { env: { SHOP_SEED: "false" }, runtime: "tsx" });
  const ids: Record<string, string> = {};
  const examples = readmeExamples();
  // DeleteUser last: the order examples need the user it deletes.
  const ordered = [
    ...examples.filter((example) => example.rpc !== "UserService.DeleteUser"),
    ...examples.filter((example) => example.rpc === "UserService.DeleteUser"),
  ];
  for (const { rpc, command } of ordered) {
    // As after the banner's export lines: $TOKEN signs in as the user the examples created.
    const line = command
      .replaceAll("$ADMIN_TOKEN", ADMIN_TOKEN)
      .replaceAll("$TOKEN", await tokenFor(ids.user ?? "missing-user"))
      .replaceAll("usr_…", ids.user ?? "missing-user")
      .replaceAll("prd_…", ids.product ?? "missing-product")
      .replaceAll("ord_…", ids.order ?? "missing-order")
      .replaceAll("127.0.0.1:50051", launcher.addresses.user)
      .replaceAll("127.0.0.1:50052", launcher.addresses.product)
      .replaceAll("127.0.0.1:50053", launcher.addresses.order);
    const [, ...args] = shellSplit(line);
    const result = await exec(tool("grpcurl"), args, { timeoutMs: 20_000 });
    t.is(result.code, 0, `${rpc}: ${line}\n${result.stdout}${result.stderr}`);
    if (/\.Create(User|Product|Order)$/.test(rpc)) {
      const reply = JSON.parse(result.stdout);
      ids.user ??= reply.user?.userId;
      ids.product ??= reply.product?.productId;
      ids.order ??= reply.order?.orderId;
    }
  }
});
