import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { defineService } from "../../kit/service.js";
import { userHandlers } from "./handlers.js";
import { migrations } from "./migrations/index.js";
import { UserStore } from "./store.js";

export const userService = defineService({
  name: "user",
  serves: { UserService: UserServiceService },
  dependencies: {},
  migrations,
  implement: ({ db }) => ({ handlers: { UserService: userHandlers(new UserStore(db)) } }),
});
