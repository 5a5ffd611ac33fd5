import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import type { ServiceModule } from "../../kit/main.js";
import { userHandlers } from "./handlers.js";
import { migrations } from "./migrations/index.js";
import { UserStore } from "./store.js";

export const userService: ServiceModule = {
  name: "user",
  defaultPort: 50051,
  migrations,
  implement: (db) => ({
    name: "shop.user.v1.UserService",
    definition: UserServiceService,
    handlers: userHandlers(new UserStore(db)),
  }),
};
