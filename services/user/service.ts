import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { adminOnly, signedIn } from "../../kit/security/auth.js";
import { defineService } from "../../kit/service.js";
import { userHandlers } from "./handlers.js";
import { migrations } from "./migrations/index.js";
import { UserStore } from "./store.js";

export const userService = defineService({
  name: "user",
  serves: { UserService: UserServiceService },
  dependencies: {},
  migrations,
  // Users read and update their own record (checked in the handlers); the rest is administration.
  access: {
    UserService: {
      createUser: adminOnly,
      getUser: signedIn,
      listUsers: adminOnly,
      updateUser: signedIn,
      deleteUser: adminOnly,
    },
  },
  implement: (env) => ({ handlers: { UserService: userHandlers(new UserStore(env)) } }),
});
