// Every service's handler suites again, on PostgreSQL: each test on a database of its own on a
// private server (test/helpers/storage.ts). `npm run new-service` adds a new service's suite here.
import "../test/helpers/on-postgres.js";
import "./user/create.test.js";
import "./user/get-list.test.js";
import "./user/update-delete.test.js";
import "./product/handlers.test.js";
import "./product/reservations.test.js";
import "./product/migrations.test.js";
import "./order/handlers.test.js";
import "./order/cancel-watch.test.js";
import "./order/reconcile.test.js";
import "./order/migrations.test.js";
import "./order/store.test.js";
