// Every service's handler suites again, on SQLite through the sqlite3 driver (node-sqlite3, the
// driver the project was first specified with) instead of better-sqlite3, the default.
// `npm run new-service` adds a new service's suite here.
import "../test/helpers/on-sqlite3.js";
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
