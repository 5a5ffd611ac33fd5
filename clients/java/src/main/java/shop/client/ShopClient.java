// ShopClient walks through shopmesh's order flow with grpc-java stubs generated from ../../proto,
// signed in as a customer (-user-id, -token) and, to stock a product, as an admin (-admin-token):
// it reads the customer's record, creates a product, places orders idempotently, pages through
// them, watches one and cancels it, and decodes the google.rpc.Status details of an order that
// cannot be filled. With -ca it speaks TLS (Envoy's listener), with -cert and -key mutual TLS (a
// service's own port); plaintext otherwise (the development profile).
//
// Every call has a deadline. The exit status is 1 when anything differs from the contract in
// proto/, so the command doubles as an end-to-end check (the same flow as clients/go).
package shop.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.ErrorInfo;
import com.google.rpc.PreconditionFailure;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.io.IOException;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import shop.order.v1.OrderOuterClass.CancelOrderRequest;
import shop.order.v1.OrderOuterClass.CreateOrderRequest;
import shop.order.v1.OrderOuterClass.ListOrdersRequest;
import shop.order.v1.OrderOuterClass.ListOrdersResponse;
import shop.order.v1.OrderOuterClass.Order;
import shop.order.v1.OrderOuterClass.OrderLine;
import shop.order.v1.OrderOuterClass.OrderState;
import shop.order.v1.OrderOuterClass.WatchOrderRequest;
import shop.order.v1.OrderOuterClass.WatchOrderResponse;
import shop.order.v1.OrderServiceGrpc;
import shop.product.v1.ProductOuterClass.CreateProductRequest;
import shop.product.v1.ProductOuterClass.GetProductRequest;
import shop.product.v1.ProductOuterClass.Product;
import shop.product.v1.ProductServiceGrpc;
import shop.type.v1.MoneyOuterClass.Money;
import shop.user.v1.UserOuterClass.GetUserRequest;
import shop.user.v1.UserOuterClass.User;
import shop.user.v1.UserServiceGrpc;

public final class ShopClient {
  private static final int INITIAL_STOCK = 5;
  private static final SecureRandom RANDOM = new SecureRandom();

  private final UserServiceGrpc.UserServiceBlockingStub users;
  private final ProductServiceGrpc.ProductServiceBlockingStub products;
  private final OrderServiceGrpc.OrderServiceBlockingStub orders;
  private final ProductServiceGrpc.ProductServiceBlockingStub adminProducts;
  private final String userId;
  private final Duration timeout;

  private ShopClient(
      UserServiceGrpc.UserServiceBlockingStub users,
      ProductServiceGrpc.ProductServiceBlockingStub products,
      OrderServiceGrpc.OrderServiceBlockingStub orders,
      ProductServiceGrpc.ProductServiceBlockingStub adminProducts,
      String userId,
      Duration timeout) {
    this.users = users;
    this.products = products;
    this.orders = orders;
    this.adminProducts = adminProducts;
    this.userId = userId;
    this.timeout = timeout;
  }

  /** Metadata that signs a call in with a bearer token. */
  private static Metadata bearer(String token) {
    Metadata metadata = new Metadata();
    metadata.put(
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
    return metadata;
  }

  private static final String USAGE =
      String.join(
          "\n",
          "usage: java -jar target/shop-client.jar [flags]",
          "  -user ADDR      UserService address (default 127.0.0.1:50051)",
          "  -product ADDR   ProductService address (default 127.0.0.1:50052)",
          "  -order ADDR     OrderService address (default 127.0.0.1:50053)",
          "  -target ADDR    send every service through this one address (Envoy: 127.0.0.1:8080);",
          "                  overrides -user, -product and -order",
          "  -timeout D      deadline of each call: 5s, 500ms, 1m or plain seconds (default 5s)",
          "  -user-id ID     the signed-in customer's user_id (required)",
          "  -token T        the customer's bearer token (required)",
          "  -admin-token T  an admin's bearer token, to create the product (required)",
          "  -ca FILE        trust this CA and speak TLS (e.g. .certs/ca.crt); plaintext without",
          "  -cert FILE      client certificate for mutual TLS (a service's own port)",
          "  -key FILE       its private key (PKCS#8)");

  public static void main(String[] args) {
    Map<String, String> flags = new LinkedHashMap<>();
    flags.put("user", "127.0.0.1:50051");
    flags.put("product", "127.0.0.1:50052");
    flags.put("order", "127.0.0.1:50053");
    flags.put("target", "");
    flags.put("timeout", "5s");
    for (String name : List.of("user-id", "token", "admin-token", "ca", "cert", "key")) {
      flags.put(name, "");
    }
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      if (arg.equals("-h") || arg.equals("-help") || arg.equals("--help")) {
        System.out.println(USAGE);
        return;
      }
      String name = arg.replaceFirst("^--?", "");
      String value = null;
      int eq = name.indexOf('=');
      if (eq >= 0) {
        value = name.substring(eq + 1);
        name = name.substring(0, eq);
      }
      if (!arg.startsWith("-") || !flags.containsKey(name)) usage("unknown argument " + arg);
      if (value == null) {
        if (++i == args.length) usage("flag needs an argument: " + arg);
        value = args[i];
      }
      flags.put(name, value);
    }
    Duration timeout = parseDuration(flags.get("timeout"));
    if (!flags.get("target").isEmpty()) {
      for (String kind : List.of("user", "product", "order")) flags.put(kind, flags.get("target"));
    }

    for (String name : List.of("user-id", "token", "admin-token")) {
      if (flags.get(name).isEmpty()) usage("-" + name + " is required");
    }
    ChannelCredentials credentials = InsecureChannelCredentials.create();
    if (!flags.get("ca").isEmpty()) {
      try {
        TlsChannelCredentials.Builder tls =
            TlsChannelCredentials.newBuilder().trustManager(new File(flags.get("ca")));
        if (!flags.get("cert").isEmpty()) {
          tls.keyManager(new File(flags.get("cert")), new File(flags.get("key")));
        }
        credentials = tls.build();
      } catch (IOException e) {
        usage("cannot read the TLS files: " + e.getMessage());
      }
    }
    ChannelCredentials transport = credentials;
    Map<String, ManagedChannel> channels = new LinkedHashMap<>();
    for (String kind : List.of("user", "product", "order")) {
      channels.computeIfAbsent(
          flags.get(kind), addr -> Grpc.newChannelBuilder(addr, transport).build());
    }
    var customer = MetadataUtils.newAttachHeadersInterceptor(bearer(flags.get("token")));
    var admin = MetadataUtils.newAttachHeadersInterceptor(bearer(flags.get("admin-token")));
    new ShopClient(
            UserServiceGrpc.newBlockingStub(channels.get(flags.get("user"))).withInterceptors(customer),
            ProductServiceGrpc.newBlockingStub(channels.get(flags.get("product")))
                .withInterceptors(customer),
            OrderServiceGrpc.newBlockingStub(channels.get(flags.get("order")))
                .withInterceptors(customer),
            ProductServiceGrpc.newBlockingStub(channels.get(flags.get("product")))
                .withInterceptors(admin),
            flags.get("user-id"),
            timeout)
        .run();
    for (ManagedChannel channel : channels.values()) channel.shutdownNow();
    try {
      for (ManagedChannel channel : channels.values()) channel.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    System.out.println("ok: every step matched the contract");
  }

  // Stubs that carry the per-call deadline.
  private UserServiceGrpc.UserServiceBlockingStub users() {
    return users.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
  }

  private ProductServiceGrpc.ProductServiceBlockingStub products() {
    return products.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
  }

  private OrderServiceGrpc.OrderServiceBlockingStub orders() {
    return orders.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
  }

  private void run() {
    // 1. The signed-in customer's own record, and a product with a little stock (as an admin).
    User user =
        call(
                "GetUser",
                () -> users().getUser(GetUserRequest.newBuilder().setUserId(userId).build()))
            .getUser();
    step(1, "GetUser", "user_id=%s email=%s", user.getUserId(), user.getEmail());

    Product product =
        call(
                "CreateProduct",
                () ->
                    adminProducts
                        .withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS)
                        .createProduct(
                            CreateProductRequest.newBuilder()
                                .setProduct(
                                    Product.newBuilder()
                                        .setName("Demo widget")
                                        .setPrice(
                                            Money.newBuilder()
                                                .setCurrencyCode("EUR")
                                                .setAmountMinor(1250))
                                        .setStockQuantity(INITIAL_STOCK))
                                .build()))
            .getProduct();
    step(
        1,
        "CreateProduct",
        "product_id=%s stock=%d price=%s",
        product.getProductId(),
        product.getStockQuantity(),
        money(product.getPrice()));

    // 2. An order under a fresh request_id; a retry with the same id returns the same order.
    Order first = placeOrder(user.getUserId(), product.getProductId(), 2, randomText());
    step(
        2,
        "CreateOrder",
        "order_id=%s state=%s total=%s request_id=%s",
        first.getOrderId(),
        first.getState(),
        money(first.getTotal()),
        first.getRequestId());
    if (first.getState() != OrderState.ORDER_STATE_CONFIRMED) {
      fail("CreateOrder: state %s, want ORDER_STATE_CONFIRMED", first.getState());
    }
    long wantTotal = 2 * product.getPrice().getAmountMinor();
    if (first.getTotal().getAmountMinor() != wantTotal) {
      fail("CreateOrder: total %s, want %d", money(first.getTotal()), wantTotal);
    }
    Order again = placeOrder(user.getUserId(), product.getProductId(), 2, first.getRequestId());
    if (!again.getOrderId().equals(first.getOrderId())) {
      fail(
          "CreateOrder retry: order_id %s, want %s (same request_id)",
          again.getOrderId(), first.getOrderId());
    }
    step(2, "CreateOrder", "retry with the same request_id returned the same order");
    Order second = placeOrder(user.getUserId(), product.getProductId(), 1, randomText());
    step(
        2,
        "CreateOrder",
        "order_id=%s state=%s (a second order, for two pages)",
        second.getOrderId(),
        second.getState());

    // 3. The user's orders, one per page.
    List<String> listed = new ArrayList<>();
    int pages = 0;
    for (String token = ""; ; ) {
      ListOrdersRequest request =
          ListOrdersRequest.newBuilder()
              .setUserId(user.getUserId())
              .setPageSize(1)
              .setPageToken(token)
              .build();
      ListOrdersResponse resp = call("ListOrders", () -> orders().listOrders(request));
      pages++;
      if (resp.getOrdersCount() > 1) {
        fail("ListOrders: %d orders on a page of size 1", resp.getOrdersCount());
      }
      for (Order o : resp.getOrdersList()) {
        if (listed.contains(o.getOrderId())) fail("ListOrders: %s on two pages", o.getOrderId());
        listed.add(o.getOrderId());
      }
      token = resp.getNextPageToken();
      if (token.isEmpty()) break;
      if (pages > 1000) fail("ListOrders: still a next_page_token after %d pages", pages);
    }
    step(3, "ListOrders", "page_size=1: %d pages, orders %s", pages, String.join(", ", listed));
    // The user may have orders of earlier runs: this run's must be there, newest first.
    int at = listed.indexOf(second.getOrderId());
    int was = listed.indexOf(first.getOrderId());
    if (at < 0 || was < 0 || at > was) {
      fail(
          "ListOrders: got %s, want %s then %s among them",
          listed, second.getOrderId(), first.getOrderId());
    }

    // 4. and 5. Watch the first order, cancel it, and see the change on the stream.
    Iterator<WatchOrderResponse> stream =
        call(
            "WatchOrder",
            () ->
                orders
                    .withDeadlineAfter(3 * timeout.toMillis(), TimeUnit.MILLISECONDS)
                    .watchOrder(
                        WatchOrderRequest.newBuilder().setOrderId(first.getOrderId()).build()));
    if (!call("WatchOrder", stream::hasNext)) fail("WatchOrder: the stream ended at once");
    Order watched = stream.next().getOrder();
    step(4, "WatchOrder", "first message: state=%s", watched.getState());
    if (watched.getState() != OrderState.ORDER_STATE_CONFIRMED) {
      fail("WatchOrder: state %s, want ORDER_STATE_CONFIRMED", watched.getState());
    }

    Order cancelled =
        call(
                "CancelOrder",
                () ->
                    orders()
                        .cancelOrder(
                            CancelOrderRequest.newBuilder()
                                .setOrderId(first.getOrderId())
                                .build()))
            .getOrder();
    step(5, "CancelOrder", "order_id=%s state=%s", cancelled.getOrderId(), cancelled.getState());
    if (cancelled.getState() != OrderState.ORDER_STATE_CANCELLED) {
      fail("CancelOrder: state %s, want ORDER_STATE_CANCELLED", cancelled.getState());
    }
    while (true) {
      if (!call("WatchOrder after CancelOrder", stream::hasNext)) {
        fail("WatchOrder: the stream ended without showing ORDER_STATE_CANCELLED");
      }
      OrderState state = stream.next().getOrder().getState();
      if (state == OrderState.ORDER_STATE_CANCELLED) {
        step(5, "WatchOrder", "stream showed state=%s", state);
        break;
      }
    }
    boolean more;
    try {
      more = stream.hasNext();
    } catch (StatusRuntimeException e) {
      fail("WatchOrder: the stream went on after a final state (%s)", describe(e));
      return;
    }
    if (more) fail("WatchOrder: the stream went on after a final state (%s)", stream.next());
    step(5, "WatchOrder", "stream ended after the final state");

    // 6. An order beyond the stock fails with FAILED_PRECONDITION and says why in its details.
    StatusRuntimeException error = null;
    try {
      orders()
          .createOrder(
              CreateOrderRequest.newBuilder()
                  .setUserId(user.getUserId())
                  .addLines(
                      OrderLine.newBuilder()
                          .setProductId(product.getProductId())
                          .setQuantity(1000))
                  .setRequestId(randomText())
                  .build());
    } catch (StatusRuntimeException e) {
      error = e;
    }
    if (error == null) fail("CreateOrder beyond stock: it succeeded, want FAILED_PRECONDITION");
    Status st = error.getStatus();
    step(6, "CreateOrder", "quantity=1000 -> %s: %s", st.getCode(), st.getDescription());
    if (st.getCode() != Status.Code.FAILED_PRECONDITION) {
      fail("CreateOrder beyond stock: code %s, want FAILED_PRECONDITION", st.getCode());
    }
    com.google.rpc.Status details = StatusProto.fromThrowable(error);
    if (details == null) fail("CreateOrder beyond stock: no grpc-status-details-bin trailer");
    String reason = "";
    int violations = 0;
    for (Any detail : details.getDetailsList()) {
      try {
        if (detail.is(ErrorInfo.class)) {
          ErrorInfo info = detail.unpack(ErrorInfo.class);
          reason = info.getReason();
          step(
              6,
              "ErrorInfo",
              "reason=%s domain=%s metadata=%s",
              info.getReason(),
              info.getDomain(),
              info.getMetadataMap());
        } else if (detail.is(PreconditionFailure.class)) {
          for (PreconditionFailure.Violation v :
              detail.unpack(PreconditionFailure.class).getViolationsList()) {
            violations++;
            step(
                6,
                "PreconditionFailure",
                "type=%s subject=%s description=\"%s\"",
                v.getType(),
                v.getSubject(),
                v.getDescription());
          }
        } else {
          step(6, "detail", "%s", detail.getTypeUrl());
        }
      } catch (InvalidProtocolBufferException e) {
        step(6, "detail", "undecodable %s: %s", detail.getTypeUrl(), e.getMessage());
      }
    }
    if (!reason.equals("INSUFFICIENT_STOCK") || violations == 0) {
      fail(
          "CreateOrder beyond stock: want ErrorInfo reason INSUFFICIENT_STOCK and a"
              + " PreconditionFailure violation, got reason \"%s\" and %d violations",
          reason, violations);
    }

    // The cancelled order gave its stock back and the failed one held none.
    Product after =
        call(
                "GetProduct",
                () ->
                    products()
                        .getProduct(
                            GetProductRequest.newBuilder()
                                .setProductId(product.getProductId())
                                .build()))
            .getProduct();
    step(6, "GetProduct", "stock=%d", after.getStockQuantity());
    if (after.getStockQuantity() != INITIAL_STOCK - 1) {
      fail(
          "GetProduct: stock %d, want %d (only the second order stands)",
          after.getStockQuantity(), INITIAL_STOCK - 1);
    }
  }

  private Order placeOrder(String userId, String productId, int quantity, String requestId) {
    return call(
            "CreateOrder",
            () ->
                orders()
                    .createOrder(
                        CreateOrderRequest.newBuilder()
                            .setUserId(userId)
                            .addLines(
                                OrderLine.newBuilder()
                                    .setProductId(productId)
                                    .setQuantity(quantity))
                            .setRequestId(requestId)
                            .build()))
        .getOrder();
  }

  /** Runs a call that should succeed, and stops the program when it did not. */
  private static <T> T call(String rpc, java.util.function.Supplier<T> body) {
    try {
      return body.get();
    } catch (StatusRuntimeException e) {
      fail("%s: %s", rpc, describe(e));
      throw new AssertionError("unreachable");
    }
  }

  private static String describe(StatusRuntimeException e) {
    Status st = e.getStatus();
    return st.getCode() + ": " + (st.getDescription() == null ? "" : st.getDescription());
  }

  private static String money(Money m) {
    return m.getAmountMinor() + " " + m.getCurrencyCode() + " minor units";
  }

  /** 26 random base32 characters, like Go's crypto/rand.Text. */
  private static String randomText() {
    String alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    StringBuilder text = new StringBuilder(26);
    for (int i = 0; i < 26; i++) text.append(alphabet.charAt(RANDOM.nextInt(alphabet.length())));
    return text.toString();
  }

  private static Duration parseDuration(String text) {
    Matcher m = Pattern.compile("(\\d+(?:\\.\\d+)?)(ms|s|m)?").matcher(text.trim());
    if (!m.matches()) usage("invalid -timeout " + text + " (want 5s, 500ms, 1m or seconds)");
    double amount = Double.parseDouble(m.group(1));
    String unit = m.group(2) == null ? "s" : m.group(2);
    double millis =
        switch (unit) {
          case "ms" -> amount;
          case "m" -> amount * 60_000;
          default -> amount * 1_000;
        };
    if (millis < 1) usage("-timeout must be positive");
    return Duration.ofMillis((long) millis);
  }

  private static void step(int n, String rpc, String format, Object... args) {
    System.out.printf("%d %-19s %s%n", n, rpc, String.format(format, args));
  }

  private static void usage(String problem) {
    System.err.println(problem);
    System.err.println(USAGE);
    System.exit(2);
  }

  private static void fail(String format, Object... args) {
    System.out.flush();
    System.err.println("FAIL " + String.format(format, args));
    System.exit(1);
  }
}
